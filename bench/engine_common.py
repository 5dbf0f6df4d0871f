"""Shared plumbing of the engine benchmarks (issue 4): model choice, math prompts, tables, JSON results.

Used by bench/rollout_overhead.py, bench/weight_sync.py, bench/vs_trl.py and bench/async_vs_sync.py. Every bench
writes bench/results/<name>.json with the machine's state next to its figures, because on a shared 2-core machine
a number without the load average it was measured under is not worth much.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # a checkout that is not pip-installed

RESULTS_DIR = REPO / "bench" / "results"
NICE = int(os.environ.get("POLYRL_BENCH_NICE", "15"))  # see renice_tree


def default_model() -> Path:
    """The warm-started tiny policy if it exists, else the random-init one (built here in seconds if missing).

    Throughput benchmarks do not need a trained model, but output lengths do depend on it: a random model
    rarely emits <eos>, so its responses run to the length limit."""
    from rl.model import TINY_POLICY_DIR, TINY_POLICY_INIT_DIR

    if (TINY_POLICY_DIR / "config.json").is_file():
        return TINY_POLICY_DIR
    if not (TINY_POLICY_INIT_DIR / "config.json").is_file():
        from rl.tiny_policy import ensure_built

        print(f"building the random-init tiny policy into {TINY_POLICY_INIT_DIR} ...", flush=True)
        ensure_built(TINY_POLICY_INIT_DIR)
    return TINY_POLICY_INIT_DIR


def model_params(path: Path) -> int | None:
    marker = Path(path) / "polyrl_build.json"
    try:
        return int(json.loads(marker.read_text())["params"])
    except (OSError, KeyError, ValueError):
        return None


def math_tasks(n: int, seed: int = 0, offset: int = 0) -> list:
    """n math-environment Tasks (easy, medium, hard interleaved, as the generator lists them), in-process."""
    from environments.math import MathEnvironment

    env = MathEnvironment({"num_tasks": offset + n}, seed=seed)
    return [r.task for r in env.load_tasks()[offset : offset + n]]


def machine() -> dict[str, Any]:
    """What the figures were measured on, including how busy the machine was."""
    try:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = "?"
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "nice": os.nice(0),
        "bench_nice_after_ray_start": NICE,
        "python": platform.python_version(),
        "commit": commit,
    }


def write_result(name: str, result: dict[str, Any], path: str | None = None) -> Path:
    out = Path(path) if path else RESULTS_DIR / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {"bench": name, "machine_at_end": machine(), **result}
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"results written to {out}")
    return out


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    """A plain fixed-width table (also valid Markdown)."""
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in cells[1:]])


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.3f}" if abs(v) < 10 else f"{v:,.1f}"
    return str(v)


class Timer:
    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0


def renice_tree(niceness: int = NICE) -> None:
    """Lower this process and all its descendants (Ray's raylet, GCS, workers) to `niceness`.

    Why not just `nice -n 15 python bench/...`: Ray 2.60's raylet gives up when its dashboard agent (a Python
    process that spends ~10 s importing) has not written its port file within a hard-coded wait, and on a loaded
    shared machine a niced agent does not make it ("The current node timed out during startup",
    ray-project/ray#65983). So the benches start Ray at the caller's priority and drop to `niceness` right
    after; processes forked later (actors, vLLM, environment servers) inherit it. POLYRL_BENCH_NICE=0 keeps the
    caller's priority (the quiet-machine measurements)."""
    import psutil

    me = psutil.Process()
    for proc in [me] + me.children(recursive=True):
        try:
            if proc.nice() < niceness:
                proc.nice(niceness)
        except (psutil.Error, OSError):
            pass  # a process that just exited


def init_ray(attempts: int = 3) -> None:
    """A local Ray for a bench (then reniced, see renice_tree), retried on the start-up timeout."""
    import ray

    for i in range(attempts):
        try:
            ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=True,
                     runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})
            renice_tree()
            return
        except Exception as err:  # noqa: BLE001 - Ray raises a bare Exception here
            if "timed out during startup" not in str(err) or i == attempts - 1:
                raise
            print(f"ray.init failed ({err}); retrying ({i + 2}/{attempts})", flush=True)
            ray.shutdown()
            time.sleep(5)


# ----------------------------------------------------------------------------------------------- polyrl runs

RUNS_DIR = REPO / "runs" / "bench"


def run_polyrl(name: str, envs: str, overrides: list[str], timeout_s: float = 3600, quiet: bool = True) -> dict:
    """Train with the real entry point (rl/train.py main) in a child process; returns the run's figures.

    The child is this module run as a script: it wraps Orchestrator.verify with a timer (the orchestrator records
    no verification time of its own) writing <run dir>/bench_verify.jsonl, then calls rl.train.main(argv)."""
    import shutil

    run_dir = RUNS_DIR / name
    if run_dir.exists():
        shutil.rmtree(run_dir)  # metrics.jsonl appends
    argv = ["--envs", envs, f"run.output_dir={RUNS_DIR}", f"run.name={name}", *overrides]
    log_path = RUNS_DIR / f"{name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    print(f"polyrl run {name}: rl/train.py {' '.join(argv)}  (log {log_path})", flush=True)
    for attempt in range(3):
        if run_dir.exists():
            shutil.rmtree(run_dir)
        t0 = time.time()
        with open(log_path, "w") as log:
            proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "train", *argv], cwd=REPO,
                                  stdout=log, stderr=subprocess.STDOUT, timeout=timeout_s)
        wall = time.time() - t0
        # see init_ray: Ray's start-up can time out on a loaded machine; anything else is a real failure
        if proc.returncode == 0 or "timed out during startup" not in log_path.read_text():
            break
        print(f"  Ray start-up timed out in the child; retrying ({attempt + 2}/3)", flush=True)
    if proc.returncode != 0:
        tail = "\n".join(log_path.read_text().splitlines()[-30:])
        raise RuntimeError(f"polyrl run {name} failed (exit {proc.returncode}); last lines of {log_path}:\n{tail}")
    import re

    # "env math: 3000 tasks (2700 train, 64 held-out easy for evaluation), ..." (rl/orchestrator.py load_tasks)
    heldout = {m[0]: int(m[1]) for m in re.findall(r"^env (\S+): \d+ tasks \(\d+ train, (\d+) held-out",
                                                    log_path.read_text(), re.M)}
    return analyse_run(run_dir) | {"process_wall_seconds": wall, "argv": argv, "heldout_tasks": heldout}


def analyse_run(run_dir: Path) -> dict:
    """Throughput, time breakdown and idle fractions of a finished run, from metrics.jsonl (+ bench_verify.jsonl).

    Per step the orchestrator records rollout/seconds (generate inside the rollout actor), learner/wait_seconds
    (loop waiting for the batch: the learner is idle), learner/train_seconds, sync/export_seconds (rank 0's state
    dict into the object store) and sync/load_seconds (the reload inside the rollout actor, of the previous
    sync). The rollout role's idle time is not recorded; it is derived here as loop time minus generate and load
    time of the rollout actor (one worker)."""
    from rl.metrics import read_jsonl

    rows = read_jsonl(run_dir / "metrics.jsonl")
    # the loop's elapsed time was logged as time/elapsed_seconds, now as learner/elapsed_seconds (issue 9 names)
    ek = "learner/elapsed_seconds" if any("learner/elapsed_seconds" in r for r in rows) else "time/elapsed_seconds"
    steps = [r for r in rows if ek in r and "rollout/samples" in r]
    evals = [r for r in rows if any(k.startswith("eval/") for k in r)]
    if not steps:
        raise RuntimeError(f"{run_dir}: no step rows in metrics.jsonl")
    verify_path = run_dir / "bench_verify.jsonl"
    verifies = [json.loads(x) for x in verify_path.read_text().splitlines()] if verify_path.is_file() else []
    train_verifies = [v for v in verifies if not v["eval"]]
    n = len(steps)
    elapsed = steps[-1][ek]
    samples = [s["rollout/samples"] for s in steps]
    total = lambda k: sum(s.get(k, 0.0) for s in steps)  # noqa: E731
    gen, load = total("rollout/seconds"), total("sync/load_seconds")
    train, export, wait = total("learner/train_seconds"), total("sync/export_seconds"), total("learner/wait_seconds")
    ver = sum(v["seconds"] for v in train_verifies)
    steady_dt = elapsed - steps[0][ek]
    out = {
        "steps": n,
        "loop_seconds": elapsed,
        "samples": sum(samples),
        "samples_per_s": sum(samples) / elapsed,
        # from the end of step 1 on: the pipeline is full (async) and one-off warm-up costs are paid
        "steady_samples_per_s": sum(samples[1:]) / steady_dt if n > 1 and steady_dt > 0 else None,
        "per_step_mean_seconds": {
            "step_wall": elapsed / n,
            "generation (rollout actor)": gen / n,
            "verification (env servers)": ver / max(len(train_verifies), 1),
            "training (learner)": train / n,
            "sync export (learner)": export / n,
            "sync load (rollout actor)": load / n,
            "learner waiting for rollouts": wait / n,
        },
        "idle_fraction": {
            "learner": wait / elapsed,
            "rollout_derived": max(0.0, 1.0 - (gen + load) / elapsed),
        },
        "rollout_tokens_per_s_mean": sum(s["rollout/tokens_per_s"] for s in steps) / n,
        "staleness_mean": sum(s.get("buffer/staleness_mean", 0.0) for s in steps) / n,
        "stale_groups_dropped": steps[-1].get("buffer/stale_groups_dropped", 0.0),
        "eval_first": {k: v for k, v in evals[0].items() if k.endswith("pass_rate")} if evals else {},
        "eval_final": {k: v for k, v in evals[-1].items() if k.endswith("pass_rate")} if len(evals) > 1 else {},
        "train_reward_mean": {k.split("/")[1]: sum(s.get(k, 0.0) for s in steps) / n
                              for k in steps[0] if k.startswith("env/") and k.endswith("/reward")},
        "run_dir": str(run_dir),
    }
    return out


def _child_train(argv: list[str]) -> int:
    """`python bench/engine_common.py train ARGS...`: rl/train.py main with verification timed."""
    import rl.orchestrator as orch_mod
    import rl.train

    orig_verify, orig_evaluate = orch_mod.Orchestrator.verify, orch_mod.Orchestrator.evaluate

    async def verify(self, tasks, groups):
        t0 = time.time()
        try:
            return await orig_verify(self, tasks, groups)
        finally:
            with open(self.run_dir / "bench_verify.jsonl", "a") as f:
                f.write(json.dumps({"t": t0, "seconds": time.time() - t0, "tasks": len(tasks), "step": self.step,
                                    "eval": getattr(self, "_bench_in_eval", False)}) + "\n")

    async def evaluate(self, step):
        self._bench_in_eval = True
        try:
            return await orig_evaluate(self, step)
        finally:
            self._bench_in_eval = False

    orch_mod.Orchestrator.verify, orch_mod.Orchestrator.evaluate = verify, evaluate
    orig_init = rl.train._init_ray

    def init_ray_then_renice(cfg):
        started = orig_init(cfg)
        renice_tree()  # see renice_tree: Ray starts at the caller's priority, everything after runs niced
        return started

    rl.train._init_ray = init_ray_then_renice
    return rl.train.main(argv)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "train":
        raise SystemExit(_child_train(sys.argv[2:]))
    raise SystemExit("usage: python bench/engine_common.py train [rl/train.py arguments]")
