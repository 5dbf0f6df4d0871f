"""Sandboxed executions per second of a trivial program (issue 5 target: >= 20/s with bubblewrap on 2 cores).

    python bench/sandbox.py                          # ~30 s: bubblewrap and plain process, concurrency 2
    python bench/sandbox.py --seconds 5 --backends bubblewrap,process,docker --json sandbox.json

One execution = one `verifiers.sandbox.run` call: a sandbox start, the harness, one forked test process
running `print(sum(map(int, input().split())))` on one stdin test, and the comparison - what the code
environment pays per response with a one-test task. `--tests 5` measures the generated tasks' shape instead.
Calls are issued from `--concurrency` threads (2 = the code environment's two verify workers).

Besides wall-clock throughput the script reports CPU seconds per execution (this process and all sandbox
processes, from getrusage), which hardly depends on what else runs on the machine: "cores / CPU per execution"
is the ceiling on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # a checkout that is not pip-installed

from verifiers.sandbox import StdioTest, available, run  # noqa: E402

PROGRAM = "print(sum(map(int, input().split())))"


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def measure(backend: str, seconds: float, concurrency: int, n_tests: int) -> dict:
    tests = [StdioTest(f"{i} {i + 1}\n", f"{2 * i + 1}\n") for i in range(n_tests)]
    assert run(PROGRAM, tests, backend=backend).all_passed  # warm-up, and the program really passes
    latencies: list[float] = []
    failures = 0
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def worker() -> None:
        nonlocal failures
        while time.monotonic() < stop:
            t0 = time.monotonic()
            ok = run(PROGRAM, tests, backend=backend).all_passed
            with lock:
                latencies.append(time.monotonic() - t0)
                failures += not ok

    cpu0, t0 = _cpu(), time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall, cpu = time.monotonic() - t0, _cpu() - cpu0
    n = len(latencies)
    q = statistics.quantiles(latencies, n=20) if n >= 2 else [latencies[0]] * 19
    return {"backend": backend, "tests_per_run": n_tests, "concurrency": concurrency, "executions": n,
            "failures": failures, "wall_s": round(wall, 2), "executions_per_s": round(n / wall, 1),
            "latency_p50_ms": round(1000 * statistics.median(latencies), 1), "latency_p95_ms": round(1000 * q[18], 1),
            "cpu_ms_per_execution": round(1000 * cpu / n, 1),
            "idle_ceiling_per_s": round(os.cpu_count() / (cpu / n), 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=12.0, help="measured seconds per backend")
    p.add_argument("--concurrency", type=int, default=2)
    p.add_argument("--tests", type=int, default=1, help="stdin tests per execution (all in one sandbox start)")
    p.add_argument("--backends", default="bubblewrap,process")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    load = os.getloadavg()
    results = []
    for backend in args.backends.split(","):
        problem = available(backend)
        if problem:
            print(f"{backend}: skipped ({problem})")
            continue
        r = measure(backend, args.seconds, args.concurrency, args.tests)
        results.append(r)
        print(json.dumps(r))
    report = {"results": results, "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                              "loadavg_at_start": [round(x, 2) for x in load],
                                              "loadavg_at_end": [round(x, 2) for x in os.getloadavg()]}}
    print(json.dumps(report["machine"]))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0 if all(r["failures"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
