"""polyrl vs TRL 1.16 GRPOTrainer: samples/s on the same model, reward, prompts and batch shape, on this machine.

    python bench/vs_trl.py                 # polyrl 12 steps, TRL 6 steps (math, 8 prompts x 8 samples, 96 tokens)
    python bench/vs_trl.py --quick         # polyrl 3 steps, TRL 2 steps (smoke run)
    python bench/vs_trl.py --polyrl-steps 20 --trl-steps 8 --model DIR

Target (issue 4): polyrl samples/s at least 3x TRL's.

TRL is installed only for this benchmark, into its own venv (.cache/bench-trl-venv, created here on first use:
torch 2.13.0 from the local CPU wheel, trl 1.16.0, the project's transformers 5.19.0, and the verifier's own
dependencies); it never enters the project's environment. Both sides get:

- the model: the same HF directory (default: the warm-started tiny policy if built, else the random-init one);
- the reward: the math environment's verifier (environments.math.MathEnvironment.verify, i.e. verifiers.math.verify
  with the environment's options), called by TRL through a plain reward function on the task's reference;
  polyrl calls it through the math environment server's /verify;
- the prompts: polyrl runs first (`--envs math`); TRL's dataset is polyrl's batches.jsonl, step by step, in order
  (shuffle_dataset=False), so step k of both trains on the same 8 tasks, chat-templated identically;
- the batch: 8 prompts x 8 samples per optimizer step, up to 96 new tokens, temperature 1, no top-p/top-k, lr 1e-4,
  no KL term, clip [0.2, 0.28], token-level loss normalisation, overlong (truncated) samples masked, one optimizer
  step per generation batch (TRL: per-device batch 32 x 2 accumulation steps = 64 samples = steps_per_generation).

polyrl runs rl/train.py with configs/tiny-cpu.yaml (async, max_staleness 1), rollout pinned to core 0 and learner to
core 1. TRL runs in one process with torch's default threads (both cores) and HF generate, as a user would run it
on this machine. samples/s on both sides: samples of steps 2..N over the time from the end of step 1 to the end of
step N (warm-up excluded). The step breakdown: polyrl's from metrics.jsonl (generation and weight load on the
rollout core, training and export on the learner core, overlapping), TRL's from timers wrapped around its
generation (`_generate`), reward (`_calculate_rewards`) and the rest of the step (training).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine_common import NICE, REPO, default_model, machine, run_polyrl, table, write_result  # noqa: E402

TARGET = 3.0
TRL_VENV = REPO / ".cache" / "bench-trl-venv"
# transformers, tokenizers and pydantic as pinned in pyproject.toml; sympy/math-verify for verifiers.math
TRL_REQUIREMENTS = ["torch==2.13.0", "trl==1.16.0", "transformers==5.19.0", "tokenizers==0.23.3", "datasets==5.2.0",
                    "pydantic==2.14.3", "sympy==1.14.0", "math-verify==0.9.0", "pyyaml==6.0.3"]
PROMPTS_PER_STEP, SAMPLES, MAX_NEW_TOKENS, LR = 8, 8, 96, 1e-4


def ensure_trl_venv() -> Path:
    """Create .cache/bench-trl-venv with TRL_REQUIREMENTS unless it already has exactly them."""
    py = TRL_VENV / "bin" / "python"
    stamp = TRL_VENV / ".bench-requirements"
    if py.exists() and stamp.is_file() and stamp.read_text().split() == TRL_REQUIREMENTS:
        return py
    print(f"creating {TRL_VENV} (TRL for this benchmark only; a few minutes) ...", flush=True)
    if not py.exists():
        subprocess.run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", str(TRL_VENV)], check=True)
    # pip finds torch's CPU wheel on the local disk (PLATFORM.md); nice: the machine is shared
    subprocess.run(["nice", "-n", "15", str(py), "-m", "pip", "install", "-q", *TRL_REQUIREMENTS], check=True,
                   timeout=1800)
    # PyPI's torchvision/torchaudio would break transformers' model classes (PLATFORM.md); none are needed
    subprocess.run([str(py), "-m", "pip", "uninstall", "-q", "-y", "torchvision", "torchaudio", "torchcodec"],
                   capture_output=True)
    stamp.write_text("\n".join(TRL_REQUIREMENTS) + "\n")
    return py


# ----------------------------------------------------------------------------------------------- TRL side
def trl_child(spec_path: str, out_path: str) -> int:
    """Runs in the TRL venv: GRPOTrainer on spec['steps'] (lists of math task ids), timed."""
    spec = json.loads(Path(spec_path).read_text())
    import torch
    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from environments.math import MathEnvironment

    env = MathEnvironment(spec["env_options"], seed=spec["env_seed"])
    records = {r.task.task_id: r for r in env.load_tasks()}
    tok = AutoTokenizer.from_pretrained(spec["model"])
    rows = []
    for step in spec["steps"]:
        for tid in step:
            msgs = [{"role": m.role, "content": m.content} for m in records[tid].task.prompt]
            rows.append({"prompt": tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False),
                         "task_id": tid})

    def math_reward(completions, task_id, **_):
        return [env.verify(records[t], c).reward for c, t in zip(completions, task_id)]

    timers = {"generate": [], "reward": [], "generate_and_score": []}

    def timed(name, fn):
        def wrapper(self, *a, **kw):
            t0 = time.perf_counter()
            try:
                return fn(self, *a, **kw)
            finally:
                timers[name].append(time.perf_counter() - t0)
        return wrapper

    GRPOTrainer._generate = timed("generate", GRPOTrainer._generate)
    GRPOTrainer._calculate_rewards = timed("reward", GRPOTrainer._calculate_rewards)
    GRPOTrainer._generate_and_score_completions = timed("generate_and_score",
                                                        GRPOTrainer._generate_and_score_completions)
    step_ends = []

    class StepClock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            step_ends.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kw):
            step_ends.append(time.perf_counter())

    mb = spec["samples_per_step"] // 2
    cfg = GRPOConfig(
        output_dir=spec["output_dir"], max_steps=len(spec["steps"]), per_device_train_batch_size=mb,
        gradient_accumulation_steps=2, num_generations=spec["samples"], max_completion_length=spec["max_new_tokens"],
        temperature=1.0, top_p=1.0, top_k=0, learning_rate=spec["lr"], beta=0.0, epsilon=0.2, epsilon_high=0.28,
        loss_type="dapo", mask_truncated_completions=True, max_grad_norm=1.0, shuffle_dataset=False, seed=spec["seed"],
        use_cpu=True, bf16=False, logging_steps=1, report_to="none", save_strategy="no", disable_tqdm=True,
        dataloader_num_workers=0, lr_scheduler_type="constant", warmup_steps=0,
    )
    model = AutoModelForCausalLM.from_pretrained(spec["model"], dtype=torch.float32)
    trainer = GRPOTrainer(model=model, reward_funcs=[math_reward], args=cfg, train_dataset=Dataset.from_list(rows),
                          processing_class=tok, callbacks=[StepClock()])
    t0 = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - t0
    rewards = [h.get("reward") for h in trainer.state.log_history if "reward" in h]
    step_s = [b - a for a, b in zip(step_ends, step_ends[1:])]
    out = {"trl_version": trl.__version__, "torch_threads": torch.get_num_threads(), "train_wall_seconds": wall,
           "step_seconds": step_s, "timers": timers, "rewards": rewards,
           "completion_lengths": [h.get("completions/mean_length") for h in trainer.state.log_history
                                  if "completions/mean_length" in h]}
    Path(out_path).write_text(json.dumps(out, indent=1))
    return 0


def run_trl(py: Path, model_dir: Path, steps: list[list[str]], seed: int, timeout_s: float) -> dict:
    work = REPO / "runs" / "bench" / "vs-trl-trl"
    work.mkdir(parents=True, exist_ok=True)
    spec = {"model": str(model_dir), "steps": steps, "env_options": {}, "env_seed": seed, "seed": seed,
            "samples": SAMPLES, "samples_per_step": PROMPTS_PER_STEP * SAMPLES, "max_new_tokens": MAX_NEW_TOKENS,
            "lr": LR, "output_dir": str(work / "trainer")}
    (work / "spec.json").write_text(json.dumps(spec))
    out = work / "result.json"
    out.unlink(missing_ok=True)
    log = work / "trl.log"
    envvars = {**os.environ, "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false"}
    print(f"TRL run: {len(steps)} steps in {TRL_VENV} (log {log})", flush=True)
    t0 = time.time()
    with open(log, "w") as f:
        proc = subprocess.run(["nice", "-n", str(NICE), str(py), str(Path(__file__).resolve()), "--trl-child", str(work / "spec.json"),
                               str(out)], cwd=REPO, env=envvars, stdout=f, stderr=subprocess.STDOUT, timeout=timeout_s)
    if proc.returncode != 0 or not out.is_file():
        tail = "\n".join(log.read_text().splitlines()[-30:])
        raise RuntimeError(f"TRL run failed (exit {proc.returncode}); last lines of {log}:\n{tail}")
    res = json.loads(out.read_text())
    res["process_wall_seconds"] = time.time() - t0
    return summarise_trl(res)


def summarise_trl(res: dict) -> dict:
    """samples/s and the mean step breakdown (steps 2..N) from the TRL child's raw timings."""
    st = res["step_seconds"]
    n = PROMPTS_PER_STEP * SAMPLES
    res["samples_per_s"] = n * len(st) / sum(st)
    res["steady_samples_per_s"] = n * (len(st) - 1) / sum(st[1:]) if len(st) > 1 else res["samples_per_s"]
    later = slice(1, None) if len(st) > 1 else slice(None)
    mean = lambda xs: sum(xs) / len(xs) if xs else 0.0  # noqa: E731
    t = res["timers"]
    gs = mean(t["generate_and_score"][later])
    res["per_step_mean_seconds"] = {
        "step_wall": mean(st[later]),
        "generation (HF generate)": mean(t["generate"][later]),
        "verification (reward fn)": mean(t["reward"][later]),
        "other scoring (advantages, logging)": gs - mean(t["generate"][later]) - mean(t["reward"][later]),
        "training (forward, backward, step)": mean(st[later]) - gs,
    }
    return res


# ----------------------------------------------------------------------------------------------- main
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, default=None, help="policy directory (default: warm-started tiny policy "
                   "if built, else the random-init one)")
    p.add_argument("--polyrl-steps", type=int, default=12)
    p.add_argument("--trl-steps", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=3600, help="per run, seconds")
    p.add_argument("--quick", action="store_true", help="smoke run: polyrl 3 steps, TRL 2 steps")
    p.add_argument("--json", default=None, help="results path (default bench/results/vs_trl.json)")
    p.add_argument("--trl-child", nargs=2, metavar=("SPEC", "OUT"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.polyrl_steps, args.trl_steps = 3, 2
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.trl_child:
        return trl_child(*args.trl_child)
    model_dir = args.model or default_model()
    start = machine()
    py = ensure_trl_venv()
    print(f"model {model_dir}; {PROMPTS_PER_STEP} math prompts x {SAMPLES} samples, {MAX_NEW_TOKENS} new tokens; "
          f"load average {start['load_average']}", flush=True)
    overrides = [f"model.path={model_dir}", f"run.steps={args.polyrl_steps}", f"run.seed={args.seed}",
                 f"run.prompts_per_step={PROMPTS_PER_STEP}", f"run.samples_per_prompt={SAMPLES}",
                 f"rollout.max_new_tokens={MAX_NEW_TOKENS}", f"learner.lr={LR}", "rollout.cpu_affinity=[0]",
                 "learner.cpu_affinity=[1]", "run.checkpoint_every=0", "eval.tasks_per_env=0"]
    poly = run_polyrl("vs-trl-polyrl", "math", overrides, timeout_s=args.timeout)
    batches = [json.loads(x) for x in (Path(poly["run_dir"]) / "batches.jsonl").read_text().splitlines()]
    # task keys are "env/task_id"; TRL gets polyrl's first trl_steps batches in order
    steps = [[k.split("/", 1)[1] for k in b["tasks"]] for b in batches][: args.trl_steps]
    trl = run_trl(py, model_dir, steps, args.seed, args.timeout)
    ratio = poly["steady_samples_per_s"] / trl["steady_samples_per_s"]
    print()
    print(table([["polyrl (async, 1+1 cores, vLLM + DeepSpeed)", poly["steps"], f"{poly['steady_samples_per_s']:.2f}",
                  f"{poly['samples_per_s']:.2f}", f"{poly['per_step_mean_seconds']['step_wall']:.2f}"],
                 [f"TRL {trl['trl_version']} GRPOTrainer ({trl['torch_threads']} threads, HF generate)",
                  len(trl["step_seconds"]), f"{trl['steady_samples_per_s']:.2f}", f"{trl['samples_per_s']:.2f}",
                  f"{trl['per_step_mean_seconds']['step_wall']:.2f}"]],
                ["system", "steps", "samples/s (steady)", "samples/s (all steps)", "s/step"]))
    print("\nwhere a step's time goes (mean seconds per step; polyrl's roles overlap, TRL's run one after another):")
    print(table([["polyrl", k, f"{v:.2f}"] for k, v in poly["per_step_mean_seconds"].items()]
                + [["TRL", k, f"{v:.2f}"] for k, v in trl["per_step_mean_seconds"].items()], ["system", "part", "s"]))
    met = ratio >= TARGET
    print(f"\npolyrl / TRL samples/s: {ratio:.2f}x (target >= {TARGET}x): {'met' if met else 'NOT met'}")
    write_result("vs_trl", {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                            "model": str(model_dir), "machine_at_start": start, "polyrl": poly, "trl": trl,
                            "ratio_steady": ratio, "target_ratio": TARGET, "target_met": met,
                            "trl_requirements": TRL_REQUIREMENTS}, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
