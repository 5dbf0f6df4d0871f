"""environments/server.py and serve.py: endpoints through FastAPI's TestClient, and the real uvicorn subprocess."""

from __future__ import annotations

import json
import os
import statistics
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from environments.base import Environment, TaskRecord
from environments.echo import EchoEnvironment
from environments.serve import EnvStartError, main as serve_main, start_local
from environments.server import SECRET_HEADER, create_app, ensure_safe_bind
from rl.types import Message, Task, Verdict, WIRE_VERSION


# Test environments live at module level: verify pool workers (spawned processes) import them by name.
class TrickyEnvironment(Environment):
    """Reference "ref-secret-<i>"; responses "boom" raise, "none" return None, "sleep" hang, "die" kill the worker."""

    name = "tricky"
    difficulties = ("easy",)

    def load_tasks(self):
        return [TaskRecord(Task(env=self.name, task_id=f"t{i}", difficulty="easy",
                                prompt=(Message(role="user", content=f"question {i}"),)), reference=f"ref-secret-{i}")
                for i in range(int(self.options.get("num_tasks", 4)))]

    def verify(self, record, response):
        if response == "boom":
            raise ZeroDivisionError("kaboom in verify")
        if response == "none":
            return None
        if response == "sleep":
            time.sleep(60)
        if response == "die":
            os._exit(7)
        return Verdict(reward=float(response == record.reference), reason="checked")

    def reference_response(self, record):
        return record.reference


class CounterEnvironment(TrickyEnvironment):
    """Multi-turn: each step adds the action's number to a counter; the episode is right when it reaches 3."""

    name = "counter"
    multi_turn = True

    def __init__(self, options=None, seed=0):
        super().__init__(options, seed)
        self.counters: dict[str, int] = {}

    def reset(self, record, session_id):
        self.counters[session_id] = 0
        return "counter = 0"

    def step(self, session_id, action):
        self.counters[session_id] += int(action)
        return f"counter = {self.counters[session_id]}", self.counters[session_id] >= 3

    def verify_episode(self, record, session_id, response):
        return Verdict(reward=float(self.counters.pop(session_id) == 3), reason="final counter")


def _tasks(client, **body):
    return client.post("/tasks", content=json.dumps(body))


def _verify(client, *items):
    body = {"items": [{"task_id": t, "response": r} for t, r in items]}
    r = client.post("/verify", content=json.dumps(body))
    assert r.status_code == 200, r.text
    return r.json()["verdicts"]


@pytest.fixture(scope="module")
def echo():
    with TestClient(create_app(EchoEnvironment({"num_tasks": 30}))) as client:
        yield client


def test_health_and_info(echo):
    assert echo.get("/health").json() == {"status": "ok", "env": "echo"}
    info = echo.get("/info").json()
    assert (info["name"], info["task_count"], info["multi_turn"]) == ("echo", 30, False)
    assert info["difficulties"] == ["easy", "medium", "hard"]
    assert info["counts_by_difficulty"] == {"easy": 10, "medium": 10, "hard": 10}


def test_tasks_by_id_keep_order_and_unknown_id_is_404(echo):
    tasks = _tasks(echo, ids=["echo-5", "echo-1"]).json()["tasks"]
    assert [t["task_id"] for t in tasks] == ["echo-5", "echo-1"]
    Task.model_validate(tasks[0])
    r = _tasks(echo, ids=["echo-1", "no-such-task"])
    assert r.status_code == 404 and "no-such-task" in r.json()["detail"]


def test_tasks_sampled_by_difficulty_and_seed(echo):
    a = [t["task_id"] for t in _tasks(echo, count=5, seed=1).json()["tasks"]]
    assert a == [t["task_id"] for t in _tasks(echo, count=5, seed=1).json()["tasks"]] and len(set(a)) == 5
    hard = _tasks(echo, count=4, difficulty="hard", seed=2).json()["tasks"]
    assert len(hard) == 4 and {t["difficulty"] for t in hard} == {"hard"}
    many = [t["task_id"] for t in _tasks(echo, count=25, difficulty="easy").json()["tasks"]]
    assert len(many) == 25 and len(set(many[:10])) == 10  # passes over the 10 easy tasks, each pass distinct
    r = _tasks(echo, count=1, difficulty="impossible")
    assert r.status_code == 400 and "easy" in r.json()["detail"]
    assert _tasks(echo, ids=["echo-1"], count=1).status_code == 400


def test_references_never_leave_the_server():
    with TestClient(create_app(TrickyEnvironment({"num_tasks": 4}))) as client:
        bodies = [client.get("/info").text, _tasks(client, count=4).text, _tasks(client, ids=["t0", "t3"]).text]
        assert not any("ref-secret" in b or "reference" in b for b in bodies)


def test_verify_keeps_order_and_turns_failures_into_error_verdicts():
    with TestClient(create_app(TrickyEnvironment())) as client:
        v = _verify(client, ("t0", "ref-secret-0"), ("t1", "wrong"), ("missing", "x"), ("t2", "boom"),
                    ("t3", "none"), ("t0", "ref-secret-0"))
    assert [x["reward"] for x in v] == [1.0, 0.0, 0.0, 0.0, 0.0, 1.0]
    assert [x["status"] for x in v] == ["ok", "ok", "error", "error", "error", "ok"]
    assert "missing" in v[2]["reason"]
    assert "ZeroDivisionError" in v[3]["reason"] and "kaboom" in v[3]["reason"]
    assert "NoneType" in v[4]["reason"]


def test_inline_verify_timeout_gives_an_error_verdict_not_a_hang():
    with TestClient(create_app(TrickyEnvironment(), verify_timeout_s=0.3)) as client:
        t0 = time.monotonic()
        v = _verify(client, ("t0", "ref-secret-0"), ("t1", "sleep"), ("t2", "ref-secret-2"))
    assert time.monotonic() - t0 < 10
    assert [x["status"] for x in v] == ["ok", "error", "ok"] and "timed out" in v[1]["reason"]
    assert v[2]["reward"] == 1.0


def test_pool_verify_recycles_stuck_and_dead_workers():
    app = create_app(TrickyEnvironment({"num_tasks": 40}), verify_workers=2, verify_timeout_s=1.0)
    with TestClient(app) as client:
        items = [(f"t{i}", f"ref-secret-{i}") for i in range(40)]
        items[5], items[17], items[30] = ("t5", "sleep"), ("t17", "boom"), ("t30", "die")
        t0 = time.monotonic()
        v = _verify(client, *items)
        assert time.monotonic() - t0 < 30
        bad = {5: "timed out", 17: "ZeroDivisionError", 30: "died"}
        for i, x in enumerate(v):
            if i in bad:
                assert x["status"] == "error" and bad[i] in x["reason"], (i, x)
            else:
                assert (x["status"], x["reward"]) == ("ok", 1.0), (i, x)
        assert app.state.pool.recycled == 2
        assert [x["reward"] for x in _verify(client, ("t1", "ref-secret-1"), ("t2", "no"))] == [1.0, 0.0]


def test_wire_errors_are_422_with_the_pydantic_message(echo):
    r = echo.post("/tasks", content=json.dumps({"wire_version": WIRE_VERSION + 1, "count": 1}))
    assert r.status_code == 422 and "wire_version" in r.json()["detail"]
    r = echo.post("/verify", content=json.dumps({"items": [], "bogus": 1}))
    assert r.status_code == 422 and "bogus" in r.json()["detail"]
    assert echo.post("/verify", content=b"not json").status_code == 422


def test_secret_required_everywhere_but_health():
    with TestClient(create_app(EchoEnvironment(), secret="s3cret")) as client:
        assert client.get("/health").status_code == 200
        assert client.get("/info").status_code == 401
        assert client.get("/info", headers={SECRET_HEADER: "wrong"}).status_code == 401
        assert _tasks(client, count=1).status_code == 401
        assert client.get("/info", headers={SECRET_HEADER: "s3cret"}).status_code == 200
        r = client.post("/verify", content='{"items": []}', headers={SECRET_HEADER: "s3cret"})
        assert r.status_code == 200


def test_body_size_limit_is_413():
    with TestClient(create_app(EchoEnvironment(), max_body_bytes=1000)) as client:
        big = json.dumps({"items": [{"task_id": "echo-0", "response": "x" * 2000}]})
        assert client.post("/verify", content=big).status_code == 413
        # No Content-Length (chunked upload): the limit holds while streaming.
        r = client.post("/verify", content=(big[i:i + 100].encode() for i in range(0, len(big), 100)))
        assert r.status_code == 413
        assert _tasks(client, count=1).status_code == 200


def test_multi_turn_endpoints():
    with TestClient(create_app(EchoEnvironment())) as single:
        r = single.post("/reset", content='{"task_id": "echo-0"}')
        assert r.status_code == 409 and "single-turn" in r.json()["detail"]
        assert single.post("/step", content='{"session_id": "x", "action": "1"}').status_code == 409
    with TestClient(create_app(CounterEnvironment())) as client:
        assert client.post("/reset", content='{"task_id": "nope"}').status_code == 404
        sid = client.post("/reset", content='{"task_id": "t1"}').json()["session_id"]
        assert client.post("/step", content=json.dumps({"session_id": sid, "action": "1"})).json()["done"] is False
        assert client.post("/step", content=json.dumps({"session_id": sid, "action": "2"})).json() == {
            "wire_version": WIRE_VERSION, "observation": "counter = 3", "done": True}
        r = client.post("/step", content='{"session_id": "unknown", "action": "1"}')
        assert r.status_code == 400 and "/reset" in r.json()["detail"]
        body = {"items": [{"task_id": "t1", "response": "", "session_id": sid},
                          {"task_id": "t1", "response": "", "session_id": sid}]}  # second: released already
        v = client.post("/verify", content=json.dumps(body)).json()["verdicts"]
        assert (v[0]["reward"], v[0]["status"], v[1]["status"]) == (1.0, "ok", "error")


def test_bad_task_sets_fail_at_start_up():
    class Duplicated(TrickyEnvironment):
        def load_tasks(self):
            return super().load_tasks() * 2

    with pytest.raises(ValueError, match="twice"):
        create_app(Duplicated())


def test_non_loopback_without_secret_refuses_to_start(capsys):
    ensure_safe_bind("127.0.0.1", None)
    ensure_safe_bind("::1", None)
    ensure_safe_bind("0.0.0.0", "s3cret")
    with pytest.raises(ValueError, match="secret"):
        ensure_safe_bind("0.0.0.0", None)
    assert serve_main(["echo", "--host", "0.0.0.0"]) == 2
    assert "--secret-env" in capsys.readouterr().err


def test_start_local_reports_the_servers_stderr():
    with pytest.raises(EnvStartError, match="no environment plugin named 'nope'"):
        start_local("nope", timeout=30)


def test_real_server_url_line_latency_and_stop():
    with start_local("echo", options={"num_tasks": 2000}, timeout=30) as server:
        assert server.alive() and server.url.startswith("http://127.0.0.1:")
        with httpx.Client(base_url=server.url, timeout=10) as http:
            ids = [f"echo-{i}" for i in range(0, 2000, 2)]
            for body in ({"ids": ids}, {"count": 1000, "seed": 5}):
                times = []
                for _ in range(7):
                    t0 = time.perf_counter()
                    r = http.post("/tasks", content=json.dumps(body))
                    times.append(time.perf_counter() - t0)
                    assert r.status_code == 200 and len(r.json()["tasks"]) == 1000
                assert statistics.median(times) < 0.1, times
        pid = server.process.pid
    assert not server.alive()
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)  # signal 0 probes: the whole process group is gone
