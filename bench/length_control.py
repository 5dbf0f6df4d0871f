"""Does group relative length control shorten responses without costing judge reward? rl/train.py on the chat
environment with and without it, several seeds, same settings otherwise (issue 7's training-run claim).

    python bench/length_control.py                               # 3 seeds x {off, on}, small settings
    python bench/length_control.py --seeds 0 1 --steps 20 --prompts 4 --samples 8

Each run gets its own GenRM server (python -m genrm.serve, the embedded judge unless --judge-path), so the
judge's counters are the run's: the base reward (mean judge score before length control) and mean thinking /
answer lengths are read from GenRM /metrics, snapshotted when the run reaches half its steps, and the figures
are over the second half (after the policy had time to react). Response length is the orchestrator's
env/chat/length (policy tokens) from metrics.jsonl, over the same steps.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def chat_policy(base: Path, out: Path, steps: int, log=print) -> Path:
    """The policy the chat runs start from: `base` (the default warm start, which has seen no chat) fine-tuned for
    `steps` on the chat environment's helpful references (environments/chat: on topic, short or padded with
    filler, some with a thinking part). RL on chat starts from an instruction-tuned model; without this step the
    tiny policy never names the topic, every judge score is 1, and the base reward cannot move either way.
    Cached at `out` (rebuilt when its settings change)."""
    from rl.warm_start import WarmStartConfig, is_current, train

    cfg = WarmStartConfig(envs=["chat"], env_options={"chat": {"num_tasks": 2000}},
                          difficulties=["easy", "medium", "hard"], exclude_rl_tasks=False, level_fraction={},
                          prompt_loss_weight={"default": 0.0}, steps=steps, lr=2e-3, warmup_steps=10)
    if not is_current(out, cfg, base):
        info = train(base, out, cfg, log=log)
        log(f"chat policy: {steps} steps on {json.dumps(info['examples'])} in {info['seconds']}s -> {out}")
    return out


def one_run(seed: int, control: bool, args) -> dict:
    from genrm.serve import GenRMClient, start_local, stop_local
    from genrm.service import GenRMConfig

    name = f"lc-{'on' if control else 'off'}-s{seed}"
    run_dir = Path(args.output_dir) / name
    proc, url = start_local(GenRMConfig(judge_path=args.judge_path), timeout_s=900)
    client = GenRMClient(url)
    overrides = [
        f"run.name={name}", f"run.output_dir={args.output_dir}", f"run.seed={seed}", f"run.steps={args.steps}",
        f"run.prompts_per_step={args.prompts}", f"run.samples_per_prompt={args.samples}", "run.checkpoint_every=0",
        "eval.tasks_per_env=0", f"rollout.max_new_tokens={args.max_new_tokens}", f"model.path={args.model}",
        f"envs.chat.options.genrm_url={url}", "envs.chat.timeout_s=900", "envs.chat.retries=1",
        f"envs.chat.options.length_control.enabled={'true' if control else 'false'}",
    ] + list(args.override)
    cmd = [sys.executable, str(REPO / "rl" / "train.py"), "--envs", "chat", *overrides]
    half: dict = {}
    metrics_file = run_dir / "metrics.jsonl"

    def watch():  # snapshot the judge's counters when the run has logged half its steps
        while "m" not in half and not stop.is_set():
            try:
                steps = sum(1 for line in metrics_file.read_text().splitlines() if '"env/chat/length"' in line)
            except OSError:
                steps = 0
            if steps >= args.steps // 2:
                half["m"] = client.metrics()
            time.sleep(1.0)

    stop = threading.Event()
    watcher = threading.Thread(target=watch, daemon=True)
    t0 = time.time()
    try:
        watcher.start()
        log_path = Path(args.output_dir) / f"{name}.log"
        for attempt in range(3):
            with open(log_path, "w") as log:
                rc = subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                    timeout=args.run_timeout_s).returncode
            # Ray waits a fixed 30 s for its raylet; on a saturated machine it can miss that: try again
            if rc == 0 or "timed out during startup" not in log_path.read_text(errors="replace"):
                break
            print(f"{name}: Ray did not start in time (attempt {attempt + 1}); retrying", flush=True)
        final = client.metrics()
    finally:
        stop.set()
        stop_local(proc)
    if rc != 0:
        raise RuntimeError(f"{name}: rl/train.py exited with {rc}; see {args.output_dir}/{name}.log")
    rows = [json.loads(line) for line in metrics_file.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "env/chat/length" in r]
    second = rows[len(rows) // 2:]
    h = half.get("m")
    d = lambda k: getattr(final, k) - (getattr(h, k) if h else 0)  # noqa: E731
    n = max(1, d("responses"))
    return {
        "name": name, "seed": seed, "length_control": control, "seconds": round(time.time() - t0, 1),
        "length_first_step": rows[0]["env/chat/length"], "length_second_half": statistics.mean(
            r["env/chat/length"] for r in second),
        "base_reward_second_half": d("reward_before_sum") / n, "reward_second_half": d("reward_after_sum") / n,
        "answer_tokens_second_half": d("answer_tokens_sum") / n, "think_tokens_second_half": d("think_tokens_sum") / n,
        "parse_failure_rate": final.parse_failures / max(1, final.comparisons),
        "verify_errors": sum(r.get("env/chat/verify_errors", 0) for r in rows),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=96)
    p.add_argument("--judge-path", default="tiny-judge")
    p.add_argument("--model", default="tiny", help="policy: 'tiny' (warm-started) or a model directory")
    p.add_argument("--chat-sft-steps", type=int, default=600,
                   help="fine-tune --model on chat references first (0: use --model as it is)")
    p.add_argument("--output-dir", default=str(REPO / "runs" / "bench-length-control"))
    p.add_argument("--run-timeout-s", type=float, default=3600)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("override", nargs="*", help="extra dotted overrides for rl/train.py (e.g. learner.lr=3e-4)")
    args = p.parse_args()
    os.makedirs(args.output_dir, exist_ok=True)
    if args.judge_path == "tiny-judge":
        from genrm.build_judge import ensure_judge

        ensure_judge()
    if args.chat_sft_steps:
        from rl.model import TINY_POLICY_DIR

        base = Path(args.model) if args.model != "tiny" else TINY_POLICY_DIR
        if not (base / "config.json").exists():
            raise SystemExit(f"{base}: no policy there (python -m rl.warm_start builds the tiny one)")
        args.model = str(chat_policy(base, Path(args.output_dir) / f"policy-chat{args.chat_sft_steps}",
                                     args.chat_sft_steps))
    results = []
    for seed in args.seeds:
        for control in (False, True):
            r = one_run(seed, control, args)
            results.append(r)
            print(json.dumps(r), flush=True)
    print("\n| seed | length control | length, step 1 | length, 2nd half | base reward, 2nd half | "
          "reward after control | verify errors |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['seed']} | {'on' if r['length_control'] else 'off'} | {r['length_first_step']:.1f} | "
              f"{r['length_second_half']:.1f} | {r['base_reward_second_half']:.3f} | {r['reward_second_half']:.3f} | "
              f"{r['verify_errors']} |")
    off = [r for r in results if not r["length_control"]]
    on = [r for r in results if r["length_control"]]
    lo, ln = statistics.mean(r["length_second_half"] for r in off), statistics.mean(r["length_second_half"] for r in on)
    bo, bn = (statistics.mean(r["base_reward_second_half"] for r in rs) for rs in (off, on))
    spread = statistics.pstdev([r["base_reward_second_half"] for r in off]) if len(off) > 1 else float("nan")
    print(f"\nmean length, second half: off {lo:.1f}, on {ln:.1f} -> {100 * (1 - ln / lo):.1f}% shorter with control")
    print(f"mean base reward, second half: off {bo:.3f}, on {bn:.3f} (difference {bn - bo:+.3f}; seed-to-seed "
          f"std without control {spread:.3f})")
    if args.json:
        args.json.write_text(json.dumps({"results": results, "length_reduction": 1 - ln / lo,
                                         "base_reward_off": bo, "base_reward_on": bn, "base_std_off": spread},
                                        indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
