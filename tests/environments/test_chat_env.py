"""The chat environment: tasks, length measurement, whole groups through /verify to a GenRM over HTTP, and a
GenRM that is down (error Verdicts with the reason, never None or a silent 0).

A GenRM server runs here in a thread on a real socket (uvicorn + httpx, as in production) with a scripted judge
(rule: 'mentions the topic' = 5, else 1) so the wiring is tested without a vLLM engine; the real judge engine is
tested in tests/genrm/test_roundtrip.py.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest
from fastapi.testclient import TestClient

from environments import registry
from environments.chat import ChatEnvironment
from environments.server import create_app as create_env_app
from genrm.serve import create_app as create_genrm_app
from genrm.service import GenRMConfig, GenRMService
from rl.types import VerifyRequest, VerifyResponse
from tests.genrm.test_service import ScriptedJudge


class _ThreadServer:
    def __init__(self, app):
        import uvicorn

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "GenRM test server did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def genrm_server():
    judge = ScriptedJudge()
    service = GenRMService(GenRMConfig(batch_wait_s=0.05, cohort_timeout_s=5), judge)
    with _ThreadServer(create_genrm_app(service)) as srv:
        srv.judge, srv.service = judge, service
        yield srv


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_registered_deterministic_and_options_checked():
    assert registry.load("chat") is ChatEnvironment
    a = [r.task for r in ChatEnvironment({"num_tasks": 50}, seed=3).load_tasks()]
    b = [r.task for r in ChatEnvironment({"num_tasks": 50}, seed=3).load_tasks()]
    assert a == b and len({t.task_id for t in a}) == 50
    assert {t.difficulty for t in a} == {"easy", "medium", "hard"}
    with pytest.raises(ValueError, match="num_taks"):
        ChatEnvironment({"num_taks": 3})


def test_lengths_split_thinking_from_answer():
    env = ChatEnvironment({"num_tasks": 1})
    assert env.lengths("<think>abcd</think> hi there") == (4, 8)
    assert env.lengths("no thinking") == (0, 11)
    assert env.lengths("<think>never closed") == (12, 0)


def test_whole_groups_through_verify_to_the_genrm(genrm_server):
    env = ChatEnvironment({"num_tasks": 6, "genrm_url": genrm_server.url,
                           "length_control": {"beta_think": 0, "beta_answer": 0}})
    records = env.load_tasks()
    topics = [r.reference for r in records]
    items = []
    for k in (0, 1):  # two tasks, 4 samples each, interleaved as a request may carry them
        for j in range(4):
            text = f"Sure, {topics[k]} is good." if j % 2 == 0 else "\\boxed{3}"
            items.append({"task_id": records[k].task.task_id, "response": text})
    with TestClient(create_env_app(env)) as client:
        r = client.post("/verify", content=VerifyRequest.model_validate({"items": items}).to_json())
    verdicts = VerifyResponse.model_validate_json(r.content).verdicts
    assert all(v.status == "ok" for v in verdicts)
    base = [v.components["genrm_base"] for v in verdicts]
    assert base == [5.0, 1.0] * 4  # helpful responses 5, unhelpful 1, per group
    # the helpful answer is longer than '\boxed{3}' (9): length control takes 0.25 back, gives 0.25
    assert [v.reward for v in verdicts] == pytest.approx([4.75, 1.25] * 4)
    assert genrm_server.judge.calls == [(8, 0.0)]  # both groups' 4 comparisons in one judge call
    m = genrm_server.service.metrics()
    assert m.cohorts == 2 and m.judge_calls == 8


def test_partial_groups_across_requests_join_one_cohort(genrm_server):
    env = ChatEnvironment({"num_tasks": 2, "genrm_url": genrm_server.url, "group_size": 4,
                           "length_control": {"enabled": False}})
    rec = env.load_tasks()[0]
    good, bad = f"I like {rec.reference}, good.", "nothing"

    async def both():  # the second half arrives later, as from another rollout worker
        first = asyncio.create_task(asyncio.to_thread(env.verify_batch, [(rec, good), (rec, bad)]))
        deadline = time.monotonic() + 10
        while not genrm_server.service.pending() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)
        assert not first.done() and genrm_server.service.pending() == {f"chat/{rec.task.task_id}/partial": 2}
        second = asyncio.to_thread(env.verify_batch, [(rec, bad), (rec, good)])
        return await asyncio.gather(first, second)

    v1, v2 = asyncio.run(both())
    assert [v.reward for v in v1 + v2] == [5.0, 1.0, 1.0, 5.0]
    assert genrm_server.service.metrics().cohorts == 1 and genrm_server.judge.calls == [(4, 0.0)]


def test_genrm_down_gives_error_verdicts_with_the_reason():
    env = ChatEnvironment({"num_tasks": 2, "genrm_url": f"http://127.0.0.1:{_free_port()}", "timeout_s": 5})
    rec = env.load_tasks()[0]
    verdicts = env.verify_batch([(rec, "a"), (rec, "b")])
    assert all(v.status == "error" and v.reward == 0.0 for v in verdicts)
    assert "unreachable" in verdicts[0].reason and "ConnectError" in verdicts[0].reason
    # a single response has nothing to be compared with: said so, through the same path
    genrm_free = env.verify(rec, "alone")
    assert genrm_free.status == "error"


def test_single_response_is_an_explicit_error(genrm_server):
    env = ChatEnvironment({"num_tasks": 2, "genrm_url": genrm_server.url})
    v = env.verify(env.load_tasks()[0], "alone")
    assert v.status == "error" and "nothing to compare" in v.reason
