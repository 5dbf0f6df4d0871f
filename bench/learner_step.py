"""Seconds per learner train_step, and where they go: the learner in-process, no Ray (issue 4 follow-up).

One `rl.learner.Learner` (world size 1, DeepSpeed ZeRO from its config, gloo) on a fixed, realistic batch: groups
of G samples sharing a prompt of 100-200 tokens, responses of 40-96 tokens, rollout logprobs from the model
itself (importance weights ~1, as on-policy rollouts give). The variants toggle the learner's own switches:

    baseline      no length_bucketing, no reuse_forward, no share_prompts   (the learner before this bench)
    bucketing     length_bucketing only
    reuse         reuse_forward only (logp_old from the training forward)
    bucket+reuse  both of those
    shared        share_prompts only (each distinct prompt once per micro-batch)
    optimized     all three (the defaults; with shared prompts the bucketing keeps groups together)

Repeats alternate the variants (round robin), so load changes on a shared machine hit all of them alike; the
table reports medians of wall seconds and of process CPU seconds (with one torch thread the CPU time is the
work done, and it stays meaningful when other jobs take the core). lr is 0 by default, so every step starts
from the same weights and the variants' metrics can be compared: `same` says whether pg_loss, grad_norm and the
IS metrics equal the baseline's (bitwise: "exact", else the largest relative difference).

    .venv/bin/python bench/learner_step.py                 # 64 samples, 5 repeats of each variant
    .venv/bin/python bench/learner_step.py --quick         # 16 samples, 2 repeats
    .venv/bin/python bench/learner_step.py --phases        # plus a per-phase breakdown (forward, backward, step)
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.engine_common import default_model, machine, table, write_result  # noqa: E402

VARIANTS = {
    "baseline": {"length_bucketing": False, "reuse_forward": False, "share_prompts": False},
    "bucketing": {"length_bucketing": True, "reuse_forward": False, "share_prompts": False},
    "reuse": {"length_bucketing": False, "reuse_forward": True, "share_prompts": False},
    "bucket+reuse": {"length_bucketing": True, "reuse_forward": True, "share_prompts": False},
    "shared": {"length_bucketing": False, "reuse_forward": False, "share_prompts": True},
    "optimized": {"length_bucketing": True, "reuse_forward": True, "share_prompts": True},
}
COMPARED = ("pg_loss", "grad_norm", "is_weight_mean", "is_weight_max", "kl_rollout_learner", "entropy", "valid_tokens")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_learner(model: Path, micro_batch_size: int, zero_stage: int, lr: float):
    from rl.learner import Learner, LearnerConfig
    from rl.loss import LossConfig
    from rl.model import ModelConfig

    cfg = LearnerConfig(lr=lr, micro_batch_size=micro_batch_size, zero_stage=zero_stage)
    learner = Learner(0, 1, ModelConfig(path=str(model)), cfg, LossConfig(), seed=0)
    learner.setup("127.0.0.1", _free_port())
    return learner


def make_samples(learner, n: int, group: int, prompt_len: tuple[int, int], response_len: tuple[int, int],
                 max_new_tokens: int, seed: int) -> list:
    """n Samples in groups of `group` sharing a prompt; token ids drawn from the tiny tokenizer's characters;
    rollout logprobs = the model's own (so the IS weights are ~1 and no token is masked, as on-policy)."""
    import torch

    from rl.loss import token_logprobs
    from rl.types import Sample

    rng = random.Random(seed)
    vocab = learner.engine.module.config.vocab_size
    lo_id, hi_id = 4, min(103, vocab - 1)  # the tiny policy's printable characters (special tokens below 4)
    out = []
    for g in range(-(-n // group)):
        prompt = tuple(rng.randint(lo_id, hi_id) for _ in range(rng.randint(*prompt_len)))
        for k in range(min(group, n - g * group)):
            r = rng.randint(*response_len)
            resp = tuple(rng.randint(lo_id, hi_id) for _ in range(r))
            ids = torch.tensor([prompt + resp])  # [1, P+R]
            with torch.no_grad():
                logits = learner.engine.module(input_ids=ids).logits[:, :-1]  # [1, P+R-1, V]
                lp = token_logprobs(logits, ids[:, 1:])[0, len(prompt) - 1 :]  # [R]
            out.append(Sample(env="bench", task_id=f"t{g}", sample_index=k, prompt_ids=prompt, response_ids=resp,
                              logprobs=tuple(min(0.0, float(x)) for x in lp), loss_mask=(1,) * r,
                              policy_version=0, finish_reason="length" if r >= max_new_tokens else "stop"))
    return out


class PhaseTimer:
    """Wraps the learner's forward, backward and optimizer step with process-CPU and wall timers."""

    def __init__(self, learner):
        self.learner, self.cpu, self.wall = learner, {}, {}
        self._orig = (learner._logprobs, learner.engine.backward, learner.engine.step)
        fwd, bwd, step = self._orig

        def timed(name, fn):
            def inner(*args, **kwargs):
                c, w = time.process_time(), time.perf_counter()
                try:
                    return fn(*args, **kwargs)
                finally:
                    self.cpu[name] = self.cpu.get(name, 0.0) + time.process_time() - c
                    self.wall[name] = self.wall.get(name, 0.0) + time.perf_counter() - w
            return inner

        def logprobs(mb, grad):
            return timed("forward (grad)" if grad else "forward (no grad, logp_old)", fwd)(mb, grad)

        learner._logprobs = logprobs
        learner.engine.backward = timed("backward (incl. ZeRO-2 grad hooks)", bwd)
        learner.engine.step = timed("optimizer step (ZeRO-2 + torch AdamW)", step)

    def close(self) -> None:
        self.learner._logprobs, self.learner.engine.backward, self.learner.engine.step = self._orig
        for name in ("_logprobs",):
            self.learner.__dict__.pop(name, None)
        for name in ("backward", "step"):
            self.learner.engine.__dict__.pop(name, None)


class ModuleTimer:
    """Forward CPU seconds of the model's parts, by forward pre/post hooks (backward is timed as a whole)."""

    PARTS = (("attention (q/k/v/o, RoPE, SDPA)", "self_attn"), ("MoE router (gate, top-k)", "mlp.gate"),
             ("MoE experts (grouped_mm)", "mlp.experts"), ("lm head", "lm_head"))

    def __init__(self, model):
        self.cpu: dict[str, float] = {}
        self._handles, self._start = [], {}
        for name, module in model.named_modules():
            for label, suffix in self.PARTS:
                if name == suffix or name.endswith("." + suffix):
                    self._handles.append(module.register_forward_pre_hook(self._pre(name)))
                    self._handles.append(module.register_forward_hook(self._post(name, label)))

    def _pre(self, name):
        def hook(module, inputs):
            self._start[name] = time.process_time()
        return hook

    def _post(self, name, label):
        def hook(module, inputs, output):
            self.cpu[label] = self.cpu.get(label, 0.0) + time.process_time() - self._start.pop(name)
        return hook

    def close(self) -> None:
        for h in self._handles:
            h.remove()


def run_step(learner, batch: dict, num_micro: int, variant: str) -> dict:
    from rl.learner import LearnerConfig

    learner.cfg = LearnerConfig(**{**learner.cfg.model_dump(), **VARIANTS[variant]})
    b = dict(batch)
    b["num_micro"] = num_micro
    c, w = time.process_time(), time.perf_counter()
    metrics = learner.train_step(b, 1)
    return {"wall": time.perf_counter() - w, "cpu": time.process_time() - c, "metrics": metrics}


def _same(a: dict, b: dict) -> str:
    worst = 0.0
    for k in COMPARED:
        x, y = a.get(k, 0.0), b.get(k, 0.0)
        if x != y:
            worst = max(worst, abs(x - y) / max(abs(x), abs(y), 1e-30))
    return "exact" if worst == 0.0 else f"rel {worst:.1e}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None, help="HF policy directory (default: the tiny policy)")
    ap.add_argument("--samples", type=int, default=64, help="samples in the step's batch (8 prompts x 8)")
    ap.add_argument("--group", type=int, default=8, help="samples per prompt")
    ap.add_argument("--prompt-len", type=int, nargs=2, default=(100, 200), metavar=("MIN", "MAX"))
    ap.add_argument("--response-len", type=int, nargs=2, default=(40, 96), metavar=("MIN", "MAX"))
    ap.add_argument("--max-new-tokens", type=int, default=96, help="responses this long count as cut (overlong)")
    ap.add_argument("--micro-batch-size", type=int, default=32, help="configs/tiny-cpu.yaml's value")
    ap.add_argument("--zero-stage", type=int, default=2)
    ap.add_argument("--lr", type=float, default=0.0, help="0 keeps the weights, so variants are comparable")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the learner gets one core)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--variants", default="baseline,bucketing,reuse,bucket+reuse,shared,optimized")
    ap.add_argument("--phases", action="store_true", help="also time forward / backward / optimizer per variant")
    ap.add_argument("--quick", action="store_true", help="16 samples, 2 repeats, variants baseline,optimized")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="output path (default bench/results/learner_step.json)")
    args = ap.parse_args(argv)
    if args.quick:
        args.samples, args.repeats, args.variants = 16, 2, "baseline,optimized"
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown variants {unknown}; choose from {list(VARIANTS)}")

    import torch

    torch.set_num_threads(args.threads)
    start = machine()
    model = args.model or default_model()
    print(f"model {model}; torch threads {torch.get_num_threads()}; load average {start['load_average']}", flush=True)
    learner = make_learner(model, args.micro_batch_size, args.zero_stage, args.lr)
    from rl.learner import collate

    t = time.perf_counter()
    samples = make_samples(learner, args.samples, args.group, tuple(args.prompt_len), tuple(args.response_len),
                           args.max_new_tokens, args.seed)
    print(f"{len(samples)} samples built in {time.perf_counter() - t:.1f} s", flush=True)
    advantages = [random.Random(args.seed + 1).gauss(0.0, 1.0) for _ in samples]
    c = time.process_time()
    batch = collate(samples, advantages)
    collate_s = time.process_time() - c
    num_micro = -(-len(samples) // args.micro_batch_size)
    real = int(batch["attention"].sum())
    print(f"collate {collate_s * 1e3:.1f} ms CPU; batch {tuple(batch['input_ids'].shape)}, {real} real tokens, "
          f"{num_micro} micro-batches of {args.micro_batch_size}", flush=True)

    for v in variants:  # warm-up: allocator, DeepSpeed's first-step set-up, share_prompts' one-time check
        run_step(learner, batch, num_micro, v)
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    for rep in range(args.repeats):
        for v in variants[rep % len(variants):] + variants[: rep % len(variants)]:
            r = run_step(learner, batch, num_micro, v)
            runs[v].append(r)
            print(f"  repeat {rep + 1} {v:10s} wall {r['wall']:6.2f} s  cpu {r['cpu']:6.2f} s", flush=True)

    phases: dict[str, dict] = {}
    if args.phases:
        for v in variants:
            timer, parts = PhaseTimer(learner), ModuleTimer(learner.engine.module)
            try:
                r = run_step(learner, batch, num_micro, v)
            finally:
                timer.close()
                parts.close()
            timed_cpu = sum(timer.cpu.values())
            forward = sum(x for k, x in timer.cpu.items() if k.startswith("forward"))
            within = {f"  of which {k}": x for k, x in parts.cpu.items()}
            within["  of which rest (embeddings, norms, log-softmax, entropy)"] = forward - sum(parts.cpu.values())
            phases[v] = {"cpu": {**timer.cpu, **within, "rest (slicing, loss, bucketing, routing counts)":
                                 r["cpu"] - timed_cpu}, "wall": timer.wall, "step_cpu": r["cpu"]}

    base = runs[variants[0]][0]["metrics"]
    rows, summary = [], {}
    base_cpu = statistics.median(x["cpu"] for x in runs[variants[0]])
    for v in variants:
        wall = statistics.median(x["wall"] for x in runs[v])
        cpu = statistics.median(x["cpu"] for x in runs[v])
        same = _same(base, runs[v][0]["metrics"])
        summary[v] = {"median_wall_s": wall, "median_cpu_s": cpu, "tokens_per_wall_s": real / wall,
                      "tokens_per_cpu_s": real / cpu, "speedup_cpu_vs_first": base_cpu / cpu,
                      "same_metrics_as_first": same, "walls": [x["wall"] for x in runs[v]],
                      "cpus": [x["cpu"] for x in runs[v]], "metrics": runs[v][0]["metrics"]}
        rows.append([v, wall, cpu, real / wall, real / cpu, f"{base_cpu / cpu:.2f}x", same])
    print()
    print(table(rows, ["variant", "wall s (median)", "CPU s (median)", "tok/s wall", "tok/s CPU",
                       f"speed-up vs {variants[0]} (CPU)", f"metrics vs {variants[0]}"]))
    if phases:
        names = list(dict.fromkeys(k for p in phases.values() for k in p["cpu"]))
        rank = lambda k: 0 if k.startswith("forward") else 1 if k.startswith("  of which") else 2  # noqa: E731
        names.sort(key=rank)  # stable: forward passes, their parts, then backward, step, rest
        print()
        print(table([[n] + [phases[v]["cpu"].get(n, 0.0) for v in variants] for n in names]
                    + [["total step"] + [phases[v]["step_cpu"] for v in variants]],
                    ["CPU seconds, one step"] + variants))
    end = machine()
    print(f"\nload average start {start['load_average']} end {end['load_average']}")
    write_result("learner_step", {
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}, "model": str(model),
        "machine_at_start": start, "batch": {"shape": list(batch["input_ids"].shape), "real_tokens": real,
                                             "num_micro": num_micro, "collate_cpu_s": collate_s},
        "variants": summary, "phases": phases}, args.json)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
