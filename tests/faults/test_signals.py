"""SIGTERM (what a scheduler sends before preempting a job) stops `rl/train.py` cleanly after the current step:
a checkpoint, a summary, every actor and server shut down, exit code 0, and `--resume` continues from there.
Before the handler, Ray's C++ SIGTERM handler aborted the process without any cleanup (docs/reliability-soak.md)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

pytestmark = pytest.mark.slow


def test_sigterm_stops_after_the_current_step_with_a_checkpoint(tmp_path, tiny_policy_dir, repo):
    run_dir = tmp_path / "run"
    argv = [sys.executable, "rl/train.py", "--envs", "echo", f"model.path={tiny_policy_dir}",
            f"run.output_dir={tmp_path}", "run.name=run", "run.steps=500", "run.prompts_per_step=4",
            "run.samples_per_prompt=4", "run.checkpoint_every=0", "rollout.max_new_tokens=16",
            "learner.micro_batch_size=8", "eval.tasks_per_env=0", "envs.echo.options.num_tasks=60",
            "loss.overlong_filter=false", "cluster.num_cpus=2"]
    proc = subprocess.Popen(argv, cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        metrics = run_dir / "metrics.jsonl"
        deadline = time.time() + 300
        while not (metrics.is_file() and '"learner/pg_loss"' in metrics.read_text()):
            assert proc.poll() is None, proc.stdout.read()[-3000:]
            assert time.time() < deadline, "no step within 300 s"
            time.sleep(0.3)
        tree = psutil.Process(proc.pid).children(recursive=True)
        t0 = time.time()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=180)
        stop_s = time.time() - t0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, out[-3000:]
    assert "SIGTERM: stopping after the current step" in out and "stopped after step" in out, out[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["stopped"] == "SIGTERM received" and 1 <= summary["steps"] < 500
    latest = (run_dir / "checkpoints" / "latest").read_text()
    assert latest == f"step_{summary['steps']:06d}", "the clean stop checkpointed its last step"
    time.sleep(3)
    alive = [p for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"left running after the stop: {[' '.join(p.cmdline())[:100] for p in alive]}"
    print(f"stopped {stop_s:.1f}s after SIGTERM at step {summary['steps']}")
