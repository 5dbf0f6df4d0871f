"""tools environment benchmark: /step throughput with 16 concurrent episodes through the real HTTP server.

    python bench/tools.py                              # ~20 s: 16 concurrent gold episodes against a local server
    python bench/tools.py --concurrency 64 --seconds 30 --json tools.json

The server is started with environments.serve.start_local, exactly as rl/train.py starts it. Each of the
`--concurrency` loops runs whole episodes back to back: /reset, the task's gold tool calls one /step each (what a
policy that has learnt the task sends), then /verify with the session id. Every episode must score 1.0 (the bench
fails otherwise), so the figure is for correct, state-changing episodes, not for error paths. Task levels are
mixed round-robin (1, 2 and 3-4 calls per episode). Reported: steps/s (the issue's figure), episodes/s, and
p50/p95 latency of /step, /reset and /verify as seen by the client, and the server's CPU time per request
(psutil), from which `server_cpu_bound_steps_per_s` = steps / server CPU seconds (requests of all three kinds
included) is the ceiling on one idle core.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # a checkout that is not pip-installed

import psutil  # noqa: E402

from environments.client import EnvClient  # noqa: E402
from environments.serve import start_local  # noqa: E402
from environments.tools import ToolsEnvironment  # noqa: E402
from rl.types import VerifyItem  # noqa: E402


def _pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))] * 1000 if xs else float("nan")


async def _bench(url: str, episodes: list[tuple[str, list[str]]], concurrency: int, seconds: float) -> dict:
    client = EnvClient("tools", url, timeout_s=30, retries=1, max_concurrency=concurrency)
    lat: dict[str, list[float]] = {"reset": [], "step": [], "verify": []}
    counts = {"steps": 0, "episodes": 0, "wrong": 0}
    stop = time.monotonic() + seconds

    async def loop(k: int) -> None:
        i = k
        while time.monotonic() < stop:
            task_id, turns = episodes[i % len(episodes)]
            i += concurrency
            t = time.perf_counter()
            sid = (await client.reset(task_id)).session_id
            lat["reset"].append(time.perf_counter() - t)
            for turn in turns:
                t = time.perf_counter()
                obs = await client.step(sid, turn)
                lat["step"].append(time.perf_counter() - t)
                counts["steps"] += 1
                if obs.observation.startswith("error"):
                    raise RuntimeError(f"gold call failed: {obs.observation}")
            t = time.perf_counter()
            (verdict,) = await client.verify([VerifyItem(task_id=task_id, response="Done.", session_id=sid)])
            lat["verify"].append(time.perf_counter() - t)
            counts["episodes"] += 1
            counts["wrong"] += verdict.reward != 1.0

    t0 = time.monotonic()
    await asyncio.gather(*(loop(k) for k in range(concurrency)))
    wall = time.monotonic() - t0
    await client.aclose()
    return {
        "concurrency": concurrency, "seconds": round(wall, 2), "steps": counts["steps"],
        "episodes": counts["episodes"], "wrong_rewards": counts["wrong"],
        "steps_per_s": round(counts["steps"] / wall, 1), "episodes_per_s": round(counts["episodes"] / wall, 1),
        **{f"{k}_ms_p50": round(_pct(v, 0.5), 2) for k, v in lat.items()},
        **{f"{k}_ms_p95": round(_pct(v, 0.95), 2) for k, v in lat.items()},
        "step_ms_mean": round(statistics.mean(lat["step"]) * 1000, 2) if lat["step"] else None,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--concurrency", type=int, default=16, help="concurrent episodes (the issue: 16)")
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--tasks", type=int, default=300, help="tasks served (round-robin over the levels)")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)

    env = ToolsEnvironment({"num_tasks": args.tasks})
    episodes = [(r.task.task_id, [f"<tool_call>{json.dumps(c)}</tool_call>" for c in r.reference.calls])
                for r in env.load_tasks()]
    env.close()
    with start_local("tools", options={"num_tasks": args.tasks}) as server:
        asyncio.run(_bench(server.url, episodes, args.concurrency, 2.0))  # warm-up
        # CPU seconds per step, unlike steps/s, hardly depend on what else the machine runs: 1 / (server CPU
        # per step) is the ceiling of the (single-process) server on an otherwise idle core.
        proc, me = psutil.Process(server.process.pid), psutil.Process()
        cpu0 = (sum(proc.cpu_times()[:2]), sum(me.cpu_times()[:2]))
        result = asyncio.run(_bench(server.url, episodes, args.concurrency, args.seconds))
        cpu1 = (sum(proc.cpu_times()[:2]), sum(me.cpu_times()[:2]))
    calls = result["steps"] + 2 * result["episodes"]  # /step + /reset + /verify requests
    result.update(server_cpu_ms_per_request=round((cpu1[0] - cpu0[0]) / max(1, calls) * 1000, 3),
                  client_cpu_ms_per_request=round((cpu1[1] - cpu0[1]) / max(1, calls) * 1000, 3),
                  server_cpu_bound_steps_per_s=round(result["steps"] / max(1e-9, cpu1[0] - cpu0[0]), 1))
    result.update(date=datetime.datetime.now().isoformat(timespec="seconds"), host=platform.node(),
                  cpus=os.cpu_count(), load_avg_1m=round(os.getloadavg()[0], 2))
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    if result["wrong_rewards"]:
        print(f"error: {result['wrong_rewards']} gold episodes did not score 1.0", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
