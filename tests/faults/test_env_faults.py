"""Environment-server faults and stalls (issue 10, items 1 and 4) on the real stack.

The echo server is a real `python -m environments.serve` subprocess that the test starts itself (the run reaches
it by URL), so the test can SIGKILL its whole process group at the moment a step's responses are about to be
verified, and restart it on the same port, or not.
"""

from __future__ import annotations

import threading
import time

import pytest

from environments.client import EnvDown
from environments.echo import EchoEnvironment
from environments.serve import start_local
from environments.server import create_app
from rl.faults import EnvChaos, FaultPlan
from rl.metrics import read_jsonl
from rl.train import run
from rl.watchdog import StallError
from tests.faults.common import cfg, serve_in_thread

pytestmark = pytest.mark.slow


def _echo_server():
    return start_local("echo", options={"num_tasks": 60, "partial_credit": True}, seed=0)


def test_server_killed_before_verification_and_restarted_loses_nothing(ray_session, tmp_path, tiny_policy_dir):
    # The outage must outlast the client's own retries, or they bridge it and the grace-period path (outages,
    # verify_waits) is never taken: the default 3 retries back off 0.25+0.5+1.0 s, jittered up to 1.5x, which is
    # 2.6 s and raced the 2 s restart (one red CI). With retries=1 they are spent within 0.375 s.
    server = _echo_server()
    restarted = []

    def kill_then_restart_later():
        server.kill()

        def restart():
            server.restart()
            restarted.append(time.time())

        threading.Timer(2.0, restart).start()

    try:
        c = cfg(tmp_path, tiny_policy_dir, f"envs.echo.url={server.url}", "run.checkpoint_every=0",
                "eval.tasks_per_env=0", "envs.echo.grace_s=60", "envs.echo.retries=1", steps=3)
        faults = FaultPlan(before_verify={1: kill_then_restart_later})
        summary = run(c, faults=faults)
        assert restarted, "the server came back"
        assert summary["steps"] == 3
        metrics = summary["client_metrics"]["echo"]
        assert metrics["outages"] >= 1 and metrics["verify_waits"] >= 1, metrics
        # every sample accounted for: all 3 x 16 verified, none lost to the outage
        assert summary["samples_generated"] == 48
        assert metrics["verify_items"] == 48 and metrics["verify_errors"] == 0
        assert summary["verify_errors"] == 0 and summary["error_samples_dropped"] == 0
        rows = [r for r in read_jsonl(c.run_dir / "metrics.jsonl") if "learner/pg_loss" in r]
        assert [r["rollout/samples"] for r in rows] == [16, 16, 16]
    finally:
        server.stop()


def test_server_that_never_returns_raises_env_down_after_the_grace_period():
    """The client side of the grace period (no training run needed): verification waits, then EnvDown, which
    rl/train.py turns into exit code 1 and a message naming the environment, its URL and the grace period."""
    import asyncio

    from environments.client import EnvClient
    from rl.types import VerifyItem

    server = _echo_server()
    client = EnvClient("echo", server.url, retries=1, backoff_s=0.05, grace_s=3.0)

    async def scenario():
        tasks = await client.tasks(count=2, seed=0)
        server.kill()
        t0 = time.monotonic()
        with pytest.raises(EnvDown) as err:
            await client.verify([VerifyItem(task_id=t.task_id, response="x") for t in tasks])
        await client.aclose()
        return time.monotonic() - t0, str(err.value)

    try:
        waited, message = asyncio.run(scenario())
    finally:
        server.stop()
    assert 3.0 <= waited < 30, "waits out the grace period, then fails: no hang"
    assert "'echo'" in message and server.url in message and "grace_s=3" in message
    assert client.metrics["verify_waits"] >= 1 and client.metrics["verify_errors"] == 0, "no silent error verdicts"


@pytest.mark.faults_long
def test_random_server_kills_during_a_run(ray_session, tmp_path, tiny_policy_dir):
    """Chaos: kills at random moments (every 2-6 s, down 1 s) over a 10-step run."""
    server = _echo_server()
    chaos = EnvChaos(server, interval_s=(2.0, 6.0), downtime_s=1.0, seed=1)
    try:
        c = cfg(tmp_path, tiny_policy_dir, f"envs.echo.url={server.url}", "run.checkpoint_every=0",
                "eval.tasks_per_env=0", steps=10)
        chaos.start()
        summary = run(c)
        chaos.stop()
        assert not chaos.errors, chaos.errors
        assert len(chaos.kills) >= 2
        assert summary["steps"] == 10 and summary["samples_generated"] == 160
        assert summary["client_metrics"]["echo"]["verify_items"] == 160
        assert summary["verify_errors"] == 0
    finally:
        chaos.stop_event.set()
        server.stop()


class _HangingEcho(EchoEnvironment):
    """Verification that takes far longer than the watchdog's limit (a wedged verifier)."""

    name = "echo"

    def verify(self, record, response):
        time.sleep(1.0)
        return super().verify(record, response)


def test_watchdog_reports_what_a_stalled_run_waits_for_and_can_abort(ray_session, tmp_path, tiny_policy_dir):
    env = _HangingEcho(options={"num_tasks": 60}, seed=0)
    # one verify worker: 16 responses x 1 s = a 16 s verification per step
    server, url = serve_in_thread(create_app(env, verify_workers=1, verify_timeout_s=60))
    lines: list[str] = []
    try:
        c = cfg(tmp_path, tiny_policy_dir, f"envs.echo.url={url}", "run.checkpoint_every=0", "eval.tasks_per_env=0",
                "envs.echo.timeout_s=120", "run.watchdog_s=3", "run.watchdog_abort_s=8", steps=2)
        t0 = time.time()
        with pytest.raises(StallError) as err:
            run(c, log=lines.append)
        assert time.time() - t0 < 180
        reports = [m for m in lines if m.startswith("watchdog:")]
        # (a cold first generate call on a loaded machine may be reported too: it is a wait of the same kind)
        assert any("environment echo: verify 16 responses for" in r for r in reports), reports
        assert "environment echo: verify 16 responses" in str(err.value)
        assert "run.watchdog_abort_s=8" in str(err.value)
        rows = [r for r in read_jsonl(c.run_dir / "metrics.jsonl") if "watchdog/stalls" in r]
        assert rows and rows[-1]["watchdog/stalls"] == len(reports) and rows[-1]["watchdog/idle_seconds"] >= 3
    finally:
        server.should_exit = True
