"""environments/client.py: retries, backoff, EnvUnavailable, error verdicts, and a server restart mid-run."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time

import httpx
import pytest

from environments.client import EnvClient, EnvRequestError, EnvUnavailable, SyncEnvClient
from environments.config import EnvConfig
from environments.serve import start_local
from rl.types import EnvInfo, StepResponse, Verdict, VerifyItem, VerifyRequest, VerifyResponse

INFO = EnvInfo(name="echo", version="0", multi_turn=False, task_count=0, difficulties=())


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mock(handler, **kwargs) -> EnvClient:
    return EnvClient("echo", "http://env.test", backoff_s=0.01, transport=httpx.MockTransport(handler), **kwargs)


def _answers(tasks) -> list[VerifyItem]:
    return [VerifyItem(task_id=t.task_id, response=t.prompt[0].content.removeprefix("Repeat: ")) for t in tasks]


def test_closed_port_raises_env_unavailable_in_bounded_time():
    url = f"http://127.0.0.1:{_closed_port()}"
    client = EnvClient("echo", url, retries=3, backoff_s=0.05, timeout_s=2)
    t0 = time.monotonic()
    with pytest.raises(EnvUnavailable) as err:
        asyncio.run(client.info())
    assert time.monotonic() - t0 < 5
    assert "'echo'" in str(err.value) and url in str(err.value) and "4 attempt" in str(err.value)
    assert (err.value.name, err.value.url) == ("echo", url)
    assert client.metrics["requests"] == 4 and client.metrics["retries"] == 3 and client.metrics["failures"] == 1


def test_verify_against_a_dead_server_returns_counted_error_verdicts():
    url = f"http://127.0.0.1:{_closed_port()}"
    with SyncEnvClient("echo", url, retries=1, backoff_s=0.01) as client:
        verdicts = client.verify([VerifyItem(task_id=f"echo-{i}", response="x") for i in range(5)])
        assert client.health() is False
    assert len(verdicts) == 5 and all(v.status == "error" and v.reward == 0.0 for v in verdicts)
    assert url in verdicts[0].reason and "echo" in verdicts[0].reason
    assert client.metrics["verify_errors"] == 5 and client.metrics["verify_items"] == 5


def test_retries_5xx_but_not_4xx():
    calls: list[int] = []

    def flaky(request):
        calls.append(1)
        return httpx.Response(503, json={"detail": "warming up"}) if len(calls) < 3 else \
            httpx.Response(200, content=INFO.to_json())

    client = _mock(flaky, retries=3)
    assert asyncio.run(client.info()) == INFO
    assert client.metrics["requests"] == 3 and client.metrics["retries"] == 2

    client = _mock(lambda request: httpx.Response(404, json={"detail": "unknown task ids ['x']"}), retries=3)
    with pytest.raises(EnvRequestError, match=r"HTTP 404: unknown task ids \['x'\]"):
        asyncio.run(client.tasks(["x"]))
    assert client.metrics["requests"] == 1

    client = _mock(lambda request: httpx.Response(500, json={"detail": "bug"}), retries=2)
    with pytest.raises(EnvUnavailable, match="HTTP 500: bug"):
        asyncio.run(client.info())
    assert client.metrics["requests"] == 3


def test_step_is_retried_only_when_the_request_never_left():
    calls: list[int] = []

    def refused_once(request):
        calls.append(1)
        if len(calls) == 1:
            raise httpx.ConnectError("connection refused")
        return httpx.Response(200, content=StepResponse(observation="ok", done=True).to_json())

    assert asyncio.run(_mock(refused_once, retries=2).step("s", "a")).done is True

    def read_timeout(request):
        raise httpx.ReadTimeout("server took too long")

    client = _mock(read_timeout, retries=5)
    with pytest.raises(EnvUnavailable, match="ReadTimeout"):
        asyncio.run(client.step("s", "a"))
    assert client.metrics["requests"] == 1  # the action may have been applied: never replay it


def test_backoff_is_exponential_jittered_and_capped():
    client = EnvClient("echo", "http://x", backoff_s=0.1, max_backoff_s=0.5)
    for attempt, base in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.5), (9, 0.5)]:
        delays = [client._backoff(attempt) for _ in range(50)]
        assert all(0.5 * base <= d <= 1.5 * base for d in delays) and len(set(delays)) > 1


def test_verify_splits_batches_too_large_for_the_server_and_checks_counts():
    def limited(request):
        items = VerifyRequest.from_json(request.content).items
        if len(items) > 2 or any(i.response == "huge" for i in items):
            return httpx.Response(413, json={"detail": "request body exceeds the server limit"})
        return httpx.Response(200, content=VerifyResponse(verdicts=tuple(
            Verdict(reward=1.0) for _ in items)).to_json())

    client = _mock(limited)
    items = [VerifyItem(task_id=str(i), response="huge" if i == 3 else "ok") for i in range(7)]
    verdicts = asyncio.run(client.verify(items))
    assert [v.status for v in verdicts] == ["ok"] * 3 + ["error"] + ["ok"] * 3
    assert "server limit" in verdicts[3].reason and client.metrics["verify_errors"] == 1

    short = _mock(lambda request: httpx.Response(200, content=VerifyResponse(verdicts=()).to_json()))
    verdicts = asyncio.run(short.verify(items[:2]))
    assert all(v.status == "error" and "0 verdicts for 2 items" in v.reason for v in verdicts)


def test_from_config_reads_the_secret_from_the_environment(monkeypatch):
    cfg = EnvConfig(url="http://h:1", timeout_s=3, retries=1, secret_env="POLYRL_TEST_SECRET")
    monkeypatch.delenv("POLYRL_TEST_SECRET", raising=False)
    with pytest.raises(ValueError, match="POLYRL_TEST_SECRET"):
        EnvClient.from_config("echo", cfg)
    monkeypatch.setenv("POLYRL_TEST_SECRET", "abc")
    client = EnvClient.from_config("echo", cfg)
    assert (client.url, client.timeout_s, client.retries) == ("http://h:1", 3, 1)


def test_real_server_round_trip_with_secret():
    with start_local("echo", options={"num_tasks": 30}, secret="s3cret", timeout=30) as server:
        with SyncEnvClient("echo", server.url, secret="s3cret") as client:
            assert client.health() and client.info().task_count == 30
            tasks = client.tasks(count=12, seed=3)
            assert [t.task_id for t in client.tasks([t.task_id for t in tasks])] == [t.task_id for t in tasks]
            verdicts = client.verify(_answers(tasks) + [VerifyItem(task_id=tasks[0].task_id, response="no")])
            assert [v.reward for v in verdicts] == [1.0] * 12 + [0.0]
            assert client.metrics["verify_items"] == 13 and client.metrics["verify_errors"] == 0
        with SyncEnvClient("echo", server.url, retries=0) as no_secret:
            with pytest.raises(EnvRequestError) as err:
                no_secret.verify(_answers(tasks))  # a configuration error stops the run, it is not a reward 0
            assert err.value.status == 401
        with SyncEnvClient("math", server.url, secret="s3cret") as wrong:
            with pytest.raises(EnvRequestError, match="runs environment 'echo'"):
                wrong.info()


def test_server_killed_and_restarted_mid_run_loses_no_verdict():
    """A verify loop keeps running while the server is SIGKILLed and restarted on the same port: within the
    retry window every item still gets its real verdict."""
    with start_local("echo", options={"num_tasks": 40}, timeout=30) as server:
        port = server.port
        restarted = threading.Event()

        def crash_and_restart():
            server.kill()
            server.restart()
            restarted.set()

        async def run() -> tuple[list[Verdict], EnvClient, int]:
            # ~0.1 * (1 + 2 + 4 + 8) + 6 * 2 s of backoff: well past a restart of a few seconds.
            client = EnvClient("echo", server.url, retries=10, backoff_s=0.1, max_backoff_s=2.0, timeout_s=10,
                               verify_batch=8)
            items = _answers(await client.tasks(count=40))
            verdicts, rounds, after = [], 0, 0
            crasher = None
            deadline = time.monotonic() + 45
            while after < 3 and time.monotonic() < deadline:
                if rounds == 3:
                    crasher = asyncio.create_task(asyncio.to_thread(crash_and_restart))
                verdicts += await client.verify(items)
                rounds += 1
                after += restarted.is_set()
            await crasher
            await client.aclose()
            return verdicts, client, rounds

        verdicts, client, rounds = asyncio.run(run())
        assert restarted.is_set() and server.alive() and server.port == port
    assert len(verdicts) == rounds * 40
    assert all(v.status == "ok" and v.reward == 1.0 for v in verdicts), {v.reason for v in verdicts}
    assert client.metrics["retries"] > 0, "no verify overlapped the downtime"
    assert client.metrics["verify_errors"] == 0
