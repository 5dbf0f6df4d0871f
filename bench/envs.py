"""Environment-server benchmarks: /verify throughput and /tasks latency against real local servers.

    python bench/envs.py                                 # ~45 s: math /verify, math /tasks, json_schema /verify
    python bench/envs.py --seconds 5 --json envs.json    # shorter runs, results also written as JSON

Targets (the issue): math /verify >= 2,000 verifications/s on 2 cores with 0 error verdicts; a 1,000-task /tasks
call (by count or by ids) under 100 ms. Servers are started with environments.serve.start_local exactly as the
orchestrator starts them and are stopped on exit. Inputs are seeded (--seed), so two runs send the same bytes.

Besides wall-clock figures the script reports CPU time per verification of each process (this client, the server's
main process, its verify workers), read with psutil over the measured window. CPU time, unlike throughput, hardly
depends on what else the machine runs, so "2 cores / total CPU per item" is the throughput ceiling of an otherwise
idle 2-core machine, and the split says where the time goes. Codec costs (pydantic JSON of the wire models, paid
on both sides) are measured in-process next to the verifier itself.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import random
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # a checkout that is not pip-installed

import psutil  # noqa: E402

from environments.base import Environment  # noqa: E402
from environments.client import EnvClient  # noqa: E402
from environments.serve import LocalServer, start_local  # noqa: E402
from rl.types import Verdict, VerifyItem, VerifyRequest, VerifyResponse  # noqa: E402

VERIFY_TARGET = 2000.0  # verifications/s, math, 2 cores (issue)
TASKS_TARGET_MS = 100.0  # one 1,000-task /tasks call (issue)
# Response mix of a policy early in training: right, wrong, right but not boxed, off the rails.
MIX = (("correct", 0.40), ("wrong_number", 0.30), ("unboxed", 0.15), ("garbage", 0.15))
WORDS = ("so", "we", "get", "the", "then", "hence", "compute", "first", "value", "total", "thus", "sum", "let",
         "each", "apples", "more", "wait", "maybe", "hmm", "answer", "is", "of", "and", "left", "check")


# ---------------------------------------------------------------------------------------------- inputs
def _garbage(rng: random.Random) -> str:
    # Letters only: the verifier's last-number fallback must not turn garbage into a lucky right answer.
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 60))) + rng.choice((".", "", "!", " \\boxed{"))


def math_items(env: Environment, n: int, rng: random.Random) -> tuple[list[VerifyItem], list[str]]:
    """n (item, category) pairs from the math environment's own tasks; see MIX."""
    records = env.load_tasks()
    items, cats = [], []
    for _ in range(n):
        record = rng.choice(records)
        ref = str(record.reference)
        cat = rng.choices([c for c, _ in MIX], [w for _, w in MIX])[0]
        if cat == "correct":
            text = env.reference_response(record)
        elif cat == "wrong_number":
            wrong = int(ref) + rng.choice((-1, 1)) * rng.randint(1, 20) if ref.lstrip("-").isdigit() \
                else rng.randint(-99, 999)
            text = env.reference_response(record).rsplit("\\boxed", 1)[0] + f"\\boxed{{{wrong}}}"
        elif cat == "unboxed":
            text = f"{env.reference_response(record).rsplit(' ', 1)[0]} So the answer is {ref}."
        else:
            text = _garbage(rng)
        items.append(VerifyItem(task_id=record.task.task_id, response=text))
        cats.append(cat)
    return items, cats


def json_schema_items(env: Environment, n: int, rng: random.Random) -> tuple[list[VerifyItem], list[str]]:
    """Same mix for json_schema: the example instance, a mutated instance, the instance in prose, garbage."""
    records = env.load_tasks()
    items, cats = [], []
    for _ in range(n):
        record = rng.choice(records)
        example = env.reference_response(record)
        cat = rng.choices([c for c, _ in MIX], [w for _, w in MIX])[0]
        if cat == "correct":
            text = example
        elif cat == "wrong_number":  # a field of the wrong type: usually, not always, invalid
            value = json.loads(example)
            if isinstance(value, dict) and value:
                key = rng.choice(sorted(value))
                value[key] = "x" if not isinstance(value[key], str) else rng.randint(0, 99)
            else:
                value = {"unexpected": rng.randint(0, 99)}
            text = json.dumps(value, separators=(",", ":"))
        elif cat == "unboxed":  # fenced inside prose, which the verifier accepts
            text = f"Here is the JSON:\n```json\n{example}\n```\nIt matches the schema."
        else:
            text = _garbage(rng)
        items.append(VerifyItem(task_id=record.task.task_id, response=text))
        cats.append(cat)
    return items, cats


# --------------------------------------------------------------------------------------------- helpers
def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile; enough for ~100s of samples."""
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * len(s)) - 1))] if s else float("nan")


def per_call_us(fn: Callable[[], Any], items: int, min_s: float = 0.5) -> float:
    """CPU microseconds per item of fn() (which handles `items` items), repeated for at least min_s.

    Process CPU time, not wall time: other users of the cores must not inflate it.
    """
    reps, start = 0, time.process_time()
    while True:
        fn()
        reps += 1
        elapsed = time.process_time() - start
        if elapsed >= min_s:
            return elapsed / (reps * items) * 1e6


def is_verify_worker(p: psutil.Process) -> bool:
    try:
        return "spawn_main" in " ".join(p.cmdline())  # not multiprocessing's resource tracker
    except psutil.Error:
        return False


class CpuMeter:
    """CPU seconds (user+system) of this process and of a server's process tree between start() and stop()."""

    def __init__(self, server: LocalServer):
        self.me = psutil.Process()
        self.server = psutil.Process(server.process.pid)

    def _read(self) -> dict[str, float]:
        def cpu(p: psutil.Process) -> float:
            try:
                t = p.cpu_times()
                return t.user + t.system
            except psutil.NoSuchProcess:
                return 0.0
        return {"client": cpu(self.me), "server": cpu(self.server),
                "workers": sum(cpu(c) for c in self.server.children(recursive=True))}

    def start(self) -> None:
        self._t0 = self._read()  # workers are up and warm by now, so the children list does not change

    def stop(self) -> dict[str, float]:
        t1 = self._read()
        return {k: t1[k] - self._t0[k] for k in t1}


# --------------------------------------------------------------------------------------------- /verify
async def verify_run(client: EnvClient, items: list[VerifyItem], cats: list[str], *, seconds: float, batch: int,
                     concurrency: int, meter: CpuMeter) -> dict[str, Any]:
    """`concurrency` loops each sending `batch` items per request, in turn through the pool, for `seconds`."""
    cursor = 0

    def take() -> tuple[int, list[VerifyItem]]:
        nonlocal cursor
        start = cursor
        cursor = (cursor + batch) % (len(items) - batch)
        return start, items[start:start + batch]

    # Warm-up, untimed: connections opened, worker imports and first-call paths paid.
    await asyncio.gather(*(client.verify(take()[1]) for _ in range(concurrency)))
    verdicts = 0
    latencies: list[float] = []
    rewards: dict[str, list[float]] = defaultdict(list)
    statuses: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    meter.start()
    t0 = time.perf_counter()
    deadline = t0 + seconds

    async def loop() -> None:
        nonlocal verdicts
        while time.perf_counter() < deadline:
            start, chunk = take()
            t = time.perf_counter()
            out = await client.verify(chunk)
            latencies.append(time.perf_counter() - t)
            verdicts += len(out)
            for v, cat in zip(out, cats[start:start + batch]):
                rewards[cat].append(v.reward)
                statuses[v.status] += 1
                if v.status == "error":
                    reasons[v.reason[:120]] += 1

    await asyncio.gather(*(loop() for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    cpu = meter.stop()
    return {
        "seconds": round(wall, 2), "batch": batch, "concurrency": concurrency, "requests": len(latencies),
        "verdicts": verdicts, "per_s": round(verdicts / wall, 1),
        "error_share": statuses["error"] / max(1, verdicts), "error_reasons": dict(reasons.most_common(3)),
        "p50_ms": round(pct(latencies, 50) * 1e3, 1), "p95_ms": round(pct(latencies, 95) * 1e3, 1),
        "mean_reward": {c: round(sum(r) / len(r), 3) for c, r in sorted(rewards.items())},
        "cpu_us_per_item": {k: round(v / max(1, verdicts) * 1e6, 1) for k, v in cpu.items()},
        "client_metrics": dict(client.metrics),
    }


def breakdown(env: Environment, items: list[VerifyItem], batch: int, sample_size: int) -> dict[str, float]:
    """In-process CPU microseconds per item of the work a /verify round trip does besides the HTTP machinery."""
    records = {r.task.task_id: r for r in env.load_tasks()}
    sample = items[:sample_size]
    # First pass over unseen responses (the verifier's lru caches see only the repeats a run has too), which
    # also warms those caches for the "cached" figure.
    t = time.process_time()
    verdicts = [env.verify(records[i.task_id], i.response) for i in sample]
    cold_us = (time.process_time() - t) / len(sample) * 1e6
    req = VerifyRequest(items=tuple(sample[:batch]))
    req_json = req.to_json()
    resp_json = VerifyResponse(verdicts=tuple(verdicts[:batch])).to_json().encode()
    verdict_json = [v.model_dump_json() for v in verdicts[:batch]]
    return {
        "verify_cold": cold_us,
        "verify_warm": per_call_us(lambda: [env.verify(records[i.task_id], i.response) for i in sample[:batch]],
                                   batch),
        # client: VerifyItem models -> request JSON, response JSON -> Verdict models
        "client_codec": per_call_us(lambda: (VerifyRequest(items=tuple(sample[:batch])).to_json(),
                                             VerifyResponse.from_json(resp_json)), batch),
        # server: parse the request, one model_dump_json per verdict in the worker and one
        # model_validate_json per verdict in the parent (pool IPC), then the response JSON
        "server_codec": per_call_us(lambda: (VerifyRequest.model_validate_json(req_json),
                                             [Verdict.model_validate_json(s) for s in verdict_json],
                                             [v.model_dump_json() for v in verdicts[:batch]],
                                             VerifyResponse(verdicts=tuple(verdicts[:batch])).to_json()), batch),
    }


def bench_verify(name: str, env: Environment, make_items: Callable, args: argparse.Namespace, *, pool: int,
                 verify_workers: int | None, breakdown_items: int) -> dict[str, Any]:
    rng = random.Random(args.seed)
    items, cats = make_items(env, pool, rng)
    server = start_local(name, options={}, seed=0, verify_workers=verify_workers)
    try:
        workers = sum(map(is_verify_worker, psutil.Process(server.process.pid).children(recursive=True)))
        client = EnvClient(name, server.url, verify_batch=args.batch, max_concurrency=args.concurrency)

        async def go() -> dict[str, Any]:
            try:
                return await verify_run(client, items, cats, seconds=args.seconds, batch=args.batch,
                                        concurrency=args.concurrency, meter=CpuMeter(server))
            finally:
                await client.aclose()
        result = {"env": name, "server_child_processes": workers, **asyncio.run(go())}
        result["ceiling_per_s_2_idle_cores"] = round(ceiling(result))
    finally:
        server.stop()
    result["in_process_us_per_item"] = {k: round(v, 1) for k, v in
                                        breakdown(env, items, args.batch, breakdown_items).items()}
    return result


# ---------------------------------------------------------------------------------------------- /tasks
def bench_tasks(args: argparse.Namespace) -> dict[str, Any]:
    """/tasks of 1,000 tasks, by count and by ids, through EnvClient (what the orchestrator sees: includes
    building 1,000 Task models) and as raw bytes (server and transport only)."""
    import httpx

    rng = random.Random(args.seed)
    server = start_local("math", options={}, seed=0, verify_workers=args.verify_workers)
    try:
        client = EnvClient("math", server.url)

        async def go() -> dict[str, Any]:
            ids = [t.task_id for t in await client.tasks(count=3000, seed=0)]
            id_sets = [rng.sample(ids, 1000) for _ in range(args.calls)]
            out: dict[str, list[float]] = defaultdict(list)
            raw = httpx.AsyncClient(trust_env=False, timeout=30)
            try:
                for i in range(args.calls):
                    for label, call in (("count", lambda: client.tasks(count=1000, seed=i)),
                                        ("ids", lambda: client.tasks(id_sets[i]))):
                        t = time.perf_counter()
                        got = await call()
                        out[f"client_by_{label}"].append(time.perf_counter() - t)
                        if len(got) != 1000:
                            raise RuntimeError(f"/tasks by {label} returned {len(got)} tasks, expected 1000")
                    for label, body in (("count", {"count": 1000, "seed": i}), ("ids", {"ids": id_sets[i]})):
                        content = json.dumps(body).encode()
                        t = time.perf_counter()
                        r = await raw.post(server.url + "/tasks", content=content,
                                           headers={"content-type": "application/json"})
                        out[f"raw_by_{label}"].append(time.perf_counter() - t)
                        r.raise_for_status()
            finally:
                await raw.aclose()
                await client.aclose()
            return {k: {"median_ms": round(pct(v, 50) * 1e3, 1), "max_ms": round(max(v) * 1e3, 1)}
                    for k, v in out.items()}
        return {"calls": args.calls, **asyncio.run(go())}
    finally:
        server.stop()


def ceiling(r: dict[str, Any], cores: int = 2) -> float:
    """Verifications/s an otherwise idle machine of `cores` cores could reach with this CPU cost per item.

    Bounded by all CPU over all cores, and by each single-threaded process on one core: the client, the server's
    main process (one GIL, so inline verification counts here too), each verify worker.
    """
    cpu = r["cpu_us_per_item"]
    bounds = [cores * 1e6 / sum(cpu.values()), 1e6 / cpu["client"], 1e6 / cpu["server"]]
    if r["server_child_processes"]:
        bounds.append(r["server_child_processes"] * 1e6 / cpu["workers"])
    return min(bounds)


# ------------------------------------------------------------------------------------------------ main
def report_verify(r: dict[str, Any]) -> None:
    cpu = r["cpu_us_per_item"]
    print(f"\n/verify {r['env']}: {r['per_s']:,.0f} verifications/s  ({r['verdicts']:,} verdicts, {r['requests']} "
          f"requests of {r['batch']}, {r['concurrency']} concurrent, {r['seconds']} s, "
          f"{r['server_child_processes']} verify workers)")
    print(f"  latency per request  p50 {r['p50_ms']} ms   p95 {r['p95_ms']} ms")
    print(f"  error verdicts       {r['error_share']:.2%}  {r['error_reasons'] or ''}")
    print(f"  mean reward by kind  {r['mean_reward']}")
    print(f"  CPU us / item        client {cpu['client']}  server {cpu['server']}  workers {cpu['workers']}  "
          f"= {sum(cpu.values()):.0f} -> ceiling on 2 idle cores {ceiling(r):,.0f}/s")
    if "in_process_us_per_item" in r:
        b = r["in_process_us_per_item"]
        print(f"  in-process CPU us / item  verify {b['verify_cold']} (unseen) / {b['verify_warm']} (cached)  "
              f"client codec {b['client_codec']}  server codec {b['server_codec']}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=8.0, help="length of each /verify measurement")
    p.add_argument("--json", metavar="PATH", help="also write the results here")
    p.add_argument("--seed", type=int, default=0, help="seeds the responses and the /tasks ids")
    # The orchestrator's EnvClient defaults are 128 x 8; 256 x 8 is the setting (larger, fewer requests).
    p.add_argument("--batch", type=int, default=256, help="items per /verify request")
    p.add_argument("--concurrency", type=int, default=8, help="/verify requests in flight")
    # More than a run sends, so no response is sent twice and the verifier's caches see only the repeats the
    # mix itself has (a correct answer to a task is always the same text), not a replay of the pool.
    p.add_argument("--pool", type=int, default=100_000, help="math responses generated and cycled through")
    p.add_argument("--calls", type=int, default=20, help="/tasks calls of each kind")
    p.add_argument("--verify-workers", type=int, help="math server's verify pool size (default: the plugin's, 2)")
    p.add_argument("--skip-json-schema", action="store_true", help="only the math benchmarks")
    args = p.parse_args(argv)

    from environments.json_schema import JsonSchemaEnvironment
    from environments.math import MathEnvironment

    machine = {"cpu_count": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)),
               "loadavg_before": [round(x, 2) for x in os.getloadavg()], "python": platform.python_version(),
               "date": datetime.datetime.now().isoformat(timespec="seconds")}
    print(f"cores: {machine['cpu_count']} (usable {machine['usable_cores']}), load average "
          f"{machine['loadavg_before']} at start, python {machine['python']}, {machine['date']}")
    results: dict[str, Any] = {"machine": machine, "args": vars(args)}
    started = time.monotonic()

    math_env = MathEnvironment(options={}, seed=0)
    results["math_verify"] = bench_verify("math", math_env, math_items, args, pool=args.pool,
                                          verify_workers=args.verify_workers, breakdown_items=2048)
    report_verify(results["math_verify"])

    results["math_tasks"] = tasks = bench_tasks(args)
    print(f"\n/tasks math, 1,000 tasks, {tasks['calls']} calls each (target < {TASKS_TARGET_MS:g} ms):")
    print(f"  {'':18}{'median ms':>10}{'max ms':>9}")
    for k, v in tasks.items():
        if isinstance(v, dict):
            print(f"  {k:18}{v['median_ms']:>10}{v['max_ms']:>9}")

    if not args.skip_json_schema:
        # A new schema costs ~1.3 ms (its meta-schema check), a seen one ~50 us: 256 unseen items are enough.
        js = bench_verify("json_schema", JsonSchemaEnvironment(options={}, seed=0), json_schema_items, args,
                          pool=16384, verify_workers=None, breakdown_items=256)
        results["json_schema_verify"] = js
        report_verify(js)

    machine["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    machine["total_seconds"] = round(time.monotonic() - started, 1)
    mv = results["math_verify"]
    worst_tasks = max(v["median_ms"] for v in tasks.values() if isinstance(v, dict) and "median_ms" in v)
    checks = {
        f"math /verify >= {VERIFY_TARGET:,.0f}/s": mv["per_s"] >= VERIFY_TARGET,
        "math /verify: no error verdicts": mv["error_share"] == 0,
        "math /verify: every correct response scored 1.0": mv["mean_reward"].get("correct") == 1.0,
        f"/tasks 1,000: every median < {TASKS_TARGET_MS:g} ms": worst_tasks < TASKS_TARGET_MS,
    }
    results["checks"] = checks
    print(f"\n(load average {machine['loadavg_after']} at end, {machine['total_seconds']} s in all)")
    for k, ok in checks.items():
        print(f"  {'ok  ' if ok else 'MISS'} {k}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.json}")
    # Errors or wrong scores mean the numbers measure something other than verification: fail loudly.
    return 0 if checks["math /verify: no error verdicts"] and checks[
        "math /verify: every correct response scored 1.0"] else 1


if __name__ == "__main__":
    sys.exit(main())
