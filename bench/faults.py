"""Fault campaign (issue 10): inject each fault into real runs, count what was lost, time the recovery.

    python bench/faults.py                 # every section (~15 min on 2 cores)
    python bench/faults.py --only env,job  # some sections: env, rollout, resume, job

Sections (tiny policy, configs/tiny-cpu.yaml shapes scaled down; the math environment unless noted):
- env:     EnvChaos SIGKILLs the math server's process group every 3-8 s and restarts it 1 s later, during a
           20-step run. Lost = samples generated - samples verified; recovery = the client's longest outage.
- rollout: the rollout actor is SIGKILLed (ray.kill) three times while it generates; Ray restarts it and the
           orchestrator re-sends weights and re-queues prompts. Recovery = restart + re-sync seconds per kill.
- resume:  kills of the driver during a checkpoint write, between steps and mid learner step, each followed by a
           resume; the per-step metrics must equal an uninterrupted run's (timing figures aside).
- job:     the real thing: `python rl/train.py` in its own process group (with the local Ray it starts) is
           SIGKILLed mid-run, then `rl/train.py --resume` finishes it; compared with an uninterrupted process.
Results: bench/results/faults.json and a Markdown table (docs/reliability.md).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine_common import REPO, default_model, init_ray, machine, table, write_result  # noqa: E402

sys.path.insert(0, str(REPO))
from tests.faults.common import differences, per_step  # noqa: E402

WORK = REPO / "runs" / "bench" / "faults"


def _overrides(model: Path, name: str, steps: int, *extra: str) -> list[str]:
    return [f"model.path={model}", f"run.output_dir={WORK}", f"run.name={name}", f"run.steps={steps}",
            "run.prompts_per_step=8", "run.samples_per_prompt=4", "rollout.max_new_tokens=48",
            "learner.micro_batch_size=16", "eval.tasks_per_env=8", "eval.samples=2", *extra]


def _cfg(model: Path, name: str, steps: int, *extra: str, envs: str = "math"):
    import shutil

    from rl.config import build_config

    shutil.rmtree(WORK / name, ignore_errors=True)
    return build_config(envs=envs, overrides=_overrides(model, name, steps, *extra))


def env_section(model: Path) -> dict:
    from environments.serve import start_local
    from rl.faults import EnvChaos
    from rl.train import run

    server = start_local("math", seed=0)
    chaos = EnvChaos(server, interval_s=(3.0, 8.0), downtime_s=1.0, seed=0)
    try:
        c = _cfg(model, "env-chaos", 20, f"envs.math.url={server.url}", "run.checkpoint_every=0",
                 "eval.tasks_per_env=0")
        chaos.start()
        t0 = time.time()
        summary = run(c)
        wall = time.time() - t0
    finally:
        chaos.stop()
        server.stop()
    m = summary["client_metrics"]["math"]
    verified_ok = m["verify_items"] - m["verify_errors"] - m["verify_server_errors"]
    return {
        "fault": "environment server SIGKILL (process group) + restart after 1 s",
        "injected": len(chaos.kills), "steps": summary["steps"], "wall_seconds": wall,
        "samples_generated": summary["samples_generated"], "samples_verified": verified_ok,
        "lost": summary["samples_generated"] - verified_ok, "error_verdicts": summary["verify_errors"],
        "restart_seconds_max": max((k.get("restart_s", 0.0) for k in chaos.kills), default=0.0),
        "recovery_seconds_max": m["outage_seconds_max"], "outages_seen_by_client": m["outages"],
        "verify_waits": m["verify_waits"], "chaos_errors": chaos.errors,
    }


def rollout_section(model: Path) -> dict:
    from rl.faults import FaultPlan
    from rl.train import run

    plan = FaultPlan(kill_rollout_worker={3: 0.05, 8: 0.5, 13: 1.0})
    c = _cfg(model, "rollout-kills", 16, "run.checkpoint_every=0", "eval.tasks_per_env=0")
    t0 = time.time()
    summary = run(c, faults=plan)
    kills = len(plan.events)
    expected = 16 * 8 * 4
    return {
        "fault": "rollout actor SIGKILL (ray.kill) while generating; Ray restart",
        "injected": kills, "steps": summary["steps"], "wall_seconds": time.time() - t0,
        "samples_generated": summary["samples_generated"], "lost": expected - summary["samples_generated"],
        "worker_failures_seen": summary["rollout_worker_failures"], "requeued_prompts": summary["requeued_prompts"],
        "stale_groups_dropped": summary["stale_groups_dropped"],
        "recovery_seconds_mean": summary["rollout_recovery_seconds"] / max(1, kills),
    }


def resume_section(model: Path) -> dict:
    from rl.faults import FaultPlan, InjectedKill
    from rl.train import run

    steps = 6
    extra = ("run.checkpoint_every=1", "eval.every=2")
    ref = _cfg(model, "resume-reference", steps, *extra)
    run(ref)
    c = _cfg(model, "resume-killed", steps, *extra)
    recoveries = []

    def timed_resume(**kw):
        marks: list[float] = []
        t0 = time.time()

        def log(m: str) -> None:
            if m.startswith("step ") and not marks:
                marks.append(time.time())
            print(m, flush=True)
        try:
            return run(c, resume=True, log=log, **kw)
        finally:
            if marks:
                recoveries.append(marks[0] - t0)

    kills = []
    try:
        run(c, faults=FaultPlan(abort_in_checkpoint_at=2))
    except InjectedKill as e:
        kills.append(str(e))
    timed_resume(stop_after=3)
    kills.append("driver stopped after step 3")
    try:
        timed_resume(faults=FaultPlan(abort_in_train_at=5))
    except InjectedKill as e:
        kills.append(str(e))
    timed_resume()
    diffs = differences(per_step(ref.run_dir), per_step(c.run_dir))
    return {"fault": "driver killed during a checkpoint write, between steps, mid learner step; --resume each time",
            "injected": len(kills), "kills": kills, "steps": steps, "metric_differences": len(diffs),
            "differences": diffs[:20], "recovery_seconds": recoveries,
            "compared_values": sum(len(v) for v in per_step(ref.run_dir).values())}


def job_section(model: Path) -> dict:
    """Real process kill: rl/train.py in its own session (its local Ray's processes share the group)."""
    import psutil

    steps = 6

    def launch(name: str, *extra: str) -> subprocess.Popen:
        argv = [sys.executable, "rl/train.py", "--envs", "math", *_overrides(model, name, steps,
                "run.checkpoint_every=1", "eval.every=2", "cluster.num_cpus=2", *extra)]
        log = open(WORK / f"{name}.log", "a")
        return subprocess.Popen(argv, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    import shutil

    for name in ("job-reference", "job-killed"):
        shutil.rmtree(WORK / name, ignore_errors=True)
    WORK.mkdir(parents=True, exist_ok=True)
    if launch("job-reference").wait(timeout=1800) != 0:
        raise RuntimeError(f"reference run failed: see {WORK / 'job-reference.log'}")
    proc = launch("job-killed")
    metrics = WORK / "job-killed" / "metrics.jsonl"
    deadline = time.time() + 1200
    while time.time() < deadline:  # kill 0.5 s after step 3 was logged: during step 4's training or rollouts
        if metrics.is_file() and any('"learner/pg_loss"' in line and json.loads(line)["step"] == 3
                                     for line in metrics.read_text().splitlines()):
            break
        if proc.poll() is not None:
            raise RuntimeError("the run ended before it could be killed")
        time.sleep(0.2)
    time.sleep(0.5)
    # the driver and everything it started: Ray's GCS, raylet, dashboard agent, actors; environment servers
    tree = [psutil.Process(proc.pid)] + psutil.Process(proc.pid).children(recursive=True)
    group = [p for p in tree if _pgid(p.pid) == proc.pid]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    time.sleep(5)  # processes outside the group (own sessions) notice their parent's death
    survivors = []
    for p in tree:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                survivors.append(f"{p.pid} {' '.join(p.cmdline())[:120]}")
                p.kill()  # do not leave them to the next section
        except psutil.Error:
            pass
    killed_at = json.loads([x for x in metrics.read_text().splitlines() if "learner/pg_loss" in x][-1])["step"]
    t0 = time.time()
    resumed = launch("job-killed", "--resume")
    if resumed.wait(timeout=1800) != 0:
        raise RuntimeError(f"resume failed: see {WORK / 'job-killed.log'}")
    diffs = differences(per_step(WORK / "job-reference"), per_step(WORK / "job-killed"))
    return {"fault": "SIGKILL of the training job's process group (driver + its local Ray) mid-run; --resume",
            "injected": 1, "killed_after_step": killed_at, "processes_in_tree": len(tree),
            "processes_in_group": len(group),
            "survivors": survivors, "steps": steps, "metric_differences": len(diffs), "differences": diffs[:20],
            "resume_process_seconds": time.time() - t0}


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def markdown(sections: dict) -> str:
    rows = []
    if "env" in sections:
        s = sections["env"]
        rows.append([s["fault"], f"{s['injected']} in {s['steps']} steps", f"{s['lost']} samples "
                     f"({s['error_verdicts']} error verdicts)", f"{s['recovery_seconds_max']:.1f} s max outage"])
    if "rollout" in sections:
        s = sections["rollout"]
        rows.append([s["fault"], f"{s['injected']} in {s['steps']} steps", f"{s['lost']} samples, "
                     f"{s['stale_groups_dropped']} stale groups", f"{s['recovery_seconds_mean']:.1f} s per kill"])
    if "resume" in sections:
        s = sections["resume"]
        rows.append([s["fault"], f"{s['injected']} in {s['steps']} steps",
                     f"{s['metric_differences']} differing values of {s['compared_values']}",
                     " / ".join(f"{x:.0f} s" for x in s["recovery_seconds"]) + " to the first step"])
    if "job" in sections:
        s = sections["job"]
        rows.append([s["fault"], f"1 after step {s['killed_after_step']} of {s['steps']}",
                     f"{s['metric_differences']} differing values; {len(s['survivors'])} surviving processes",
                     f"{s['resume_process_seconds']:.0f} s (whole resumed process)"])
    return table(rows, ["fault", "injected", "lost", "time to recover"])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", default="env,rollout,resume,job")
    p.add_argument("--model", type=Path, default=None)
    p.add_argument("--merge", action="store_true", help="update these sections in bench/results/faults.json")
    args = p.parse_args(argv)
    model = args.model or default_model()
    wanted = args.only.split(",")
    WORK.mkdir(parents=True, exist_ok=True)
    result: dict = {"machine_at_start": machine(), "model": str(model), "sections": {}}
    previous = REPO / "bench" / "results" / "faults.json"
    if args.merge and previous.is_file():  # keep the other sections of an earlier run
        result["sections"] = json.loads(previous.read_text()).get("sections", {})
    if {"env", "rollout", "resume"} & set(wanted):
        init_ray()
        for name, fn in (("env", env_section), ("rollout", rollout_section), ("resume", resume_section)):
            if name in wanted:
                print(f"== {name}", flush=True)
                result["sections"][name] = fn(model)
                print(json.dumps(result["sections"][name], indent=1), flush=True)
                write_result("faults", result)  # a later section's failure keeps this one
        import ray

        ray.shutdown()
    if "job" in wanted:
        print("== job", flush=True)
        result["sections"]["job"] = job_section(model)
        print(json.dumps(result["sections"]["job"], indent=1), flush=True)
    result["markdown"] = markdown(result["sections"])
    print(result["markdown"])
    write_result("faults", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
