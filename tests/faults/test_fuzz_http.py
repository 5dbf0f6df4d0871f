"""Issue 10 item 5: hostile HTTP requests to every environment endpoint and to the GenRM service, fuzzed.

The FastAPI apps run in-process through fastapi's TestClient (real routing, real body parsing, real verifiers;
no subprocess, no socket). Environments: echo, math, json_schema and tools (multi-turn), verified inline
(verify_workers=0) so one process holds everything. The GenRM app is the real genrm/serve.py app around the
real GenRMService; only its judge is a scripted function writing fuzzed judge outputs (the vLLM engine is the one
part that is not built here: hostile judge output is the injected fault).

Property for every request: a 4xx with a JSON `detail` (413 for a body over the limit), or a 200 whose body
parses as the endpoint's wire type; a /verify 200 has one Verdict per item, reward in [0, 1], errors and zero
rewards with reasons. Never a 500, never an exception out of the app, every request bounded in time.
"""

from __future__ import annotations

import json
import time

import pytest
from fastapi.testclient import TestClient
from hypothesis import event, example, given, settings
from hypothesis import strategies as st

from rl.types import (WIRE_VERSION, ResetResponse, StepResponse, TasksResponse, Verdict, VerifyResponse)
from tests.faults.test_fuzz_verifiers import WALL_LIMIT_S, check_verdict, json_values, moderate_text

SMALL_LIMIT = 64 * 1024  # one app per environment gets a small body limit, so "oversized" is cheap to send
ENVS = ("echo", "math", "json_schema", "tools")
# Lone surrogates cannot cross JSON into pydantic (a 422, tested below); surrogate-free text gets further.
wire_text = st.one_of(st.text(max_size=300), st.text(max_size=300), moderate_text)


def _make_env(name: str):
    from environments.echo import EchoEnvironment
    from environments.json_schema import JsonSchemaEnvironment
    from environments.math import MathEnvironment
    from environments.tools import ToolsEnvironment

    cls = {"echo": EchoEnvironment, "math": MathEnvironment, "json_schema": JsonSchemaEnvironment,
           "tools": ToolsEnvironment}[name]
    return cls({"num_tasks": 12} if name != "echo" else {"num_tasks": 12})


@pytest.fixture(scope="module")
def clients():
    from environments.server import create_app

    out, stack = {}, []
    for name in ENVS:
        app = create_app(_make_env(name), verify_workers=0, max_body_bytes=SMALL_LIMIT, verify_timeout_s=10.0)
        client = TestClient(app, raise_server_exceptions=True)
        client.__enter__()  # runs the lifespan
        stack.append(client)
        out[name] = client
    yield out
    for c in stack:
        c.__exit__(None, None, None)


def task_ids(client) -> list[str]:
    r = client.post("/tasks", content=json.dumps({"count": 12, "seed": 0}))
    assert r.status_code == 200, r.text
    return [t.task_id for t in TasksResponse.from_json(r.content).tasks]


def timed(client, method: str, path: str, body: bytes | None):
    t0 = time.monotonic()
    r = client.request(method, path, content=body, headers={"content-type": "application/json"})
    elapsed = time.monotonic() - t0
    assert elapsed < WALL_LIMIT_S, f"{method} {path} took {elapsed:.1f}s"
    return r


def check_response(r, path: str, body: bytes | None):
    """The shared property of every endpoint's answer."""
    assert r.status_code < 500, f"{path} -> {r.status_code}: {r.text[:500]}"
    if r.status_code >= 400:
        detail = r.json().get("detail")
        assert detail, f"{path} -> {r.status_code} without a JSON detail: {r.text[:200]}"
        if body is not None and len(body) > SMALL_LIMIT and path != "/health":
            assert r.status_code in (405, 413), f"{path}: oversized body answered {r.status_code}"
        return None
    wire = {"/tasks": TasksResponse, "/reset": ResetResponse, "/step": StepResponse, "/verify": VerifyResponse}
    if path in wire:
        parsed = wire[path].from_json(r.content)
        if path == "/verify":
            items = json.loads(body)["items"]
            assert len(parsed.verdicts) == len(items), "one Verdict per item, in order"
            for v in parsed.verdicts:
                check_verdict(v, path)
        return parsed
    return r.json()


# ------------------------------------------------------------------------------------------- bodies

def _wrong(value):
    """A value of another JSON type than `value`."""
    return st.sampled_from([None, True, -1, 2**70, 1.5, "x", [], {}, [value], {"v": value}]).filter(
        lambda w: type(w) is not type(value))


def _mutate(body: dict):
    """A valid-looking body with one field wrong: dropped, retyped, an extra key or another wire_version."""
    keys = list(body)
    if not keys:
        return st.just({"unknown_field": 1})
    return st.one_of(
        st.sampled_from(keys).map(lambda k: {x: v for x, v in body.items() if x != k}),
        st.sampled_from(keys).flatmap(lambda k: _wrong(body[k]).map(lambda w: {**body, k: w})),
        st.text(max_size=8).map(lambda k: {**body, k: 1}),
        st.sampled_from([0, 2, -1, "1", None, WIRE_VERSION + 1]).map(lambda v: {**body, "wire_version": v}),
    )


def bodies(path: str, ids: list[str], session_ids: list[str]):
    """Bodies for `path`: half valid-looking for that endpoint, a quarter with one field wrong, a quarter junk."""
    item = st.builds(lambda t, r, s: {"task_id": t, "response": r, **({"session_id": s} if s is not None else {})},
                     st.sampled_from(ids) | st.text(max_size=10), wire_text,
                     st.none() | st.none() | st.sampled_from(session_ids) | st.text(max_size=6))
    valid = {
        "/verify": st.lists(item, max_size=6).map(lambda xs: {"items": xs}),
        "/tasks": st.builds(lambda ids_, c, d, s: {k: v for k, v in (("ids", ids_), ("count", c), ("difficulty", d),
                                                                      ("seed", s)) if v is not None},
                            st.none() | st.lists(st.sampled_from(ids) | st.text(max_size=6), max_size=4),
                            st.none() | st.integers(-5, 100_001) | st.integers(0, 50),
                            st.none() | st.sampled_from(["easy", "hard", "x", ""]), st.none() | st.integers(-2**70, 2**70)),
        "/reset": st.builds(lambda t: {"task_id": t}, st.sampled_from(ids) | st.text(max_size=6)),
        "/step": st.builds(lambda s, a: {"session_id": s, "action": a},
                           st.sampled_from(session_ids) | st.text(max_size=6), wire_text),
    }.get(path, st.just({}))
    junk = st.one_of(
        json_values().map(json.dumps),
        st.binary(max_size=200),  # invalid UTF-8, not JSON at all
        valid.map(lambda b: json.dumps(b).encode()[:-1] + b"\xff\xfe}"),  # invalid UTF-8 inside JSON
        valid.map(lambda b: json.dumps(b).replace("\"", "\"\\ud800", 1)),  # a lone surrogate escape
        st.builds(lambda n: "[" * n + "]" * n, st.integers(1, 30_000)),  # deep nesting
        st.builds(lambda n: '{"items": [{"task_id": "x", "response": "' + "a" * n + '"}]}',
                  st.integers(SMALL_LIMIT - 100, SMALL_LIMIT + 100)),  # around the body limit
        st.builds(lambda n: '{"count": ' + "9" * n + "}", st.integers(1, 5000)),
        st.sampled_from(['{"count": 1e400}', '{"seed": NaN}', '{"items": null}', ""]),
    )
    return st.one_of(valid.map(json.dumps), valid.map(json.dumps), valid.flatmap(_mutate).map(json.dumps), junk
                     ).map(lambda b: b if isinstance(b, bytes) else b.encode("utf-8", "surrogatepass"))


PATHS = ("/verify", "/verify", "/tasks", "/reset", "/step", "/step", "/info", "/health", "/nope")


@pytest.mark.parametrize("env_name", ENVS)
@settings(max_examples=min(settings().max_examples, 40))  # x4 environments
@given(data=st.data())
def test_every_endpoint(clients, env_name, data):
    client = clients[env_name]
    ids = task_ids(client)
    session_ids = []
    if env_name == "tools":
        r = client.post("/reset", content=json.dumps({"task_id": ids[0]}))
        session_ids.append(ResetResponse.from_json(r.content).session_id)
    path = data.draw(st.sampled_from(PATHS), label="path")
    right = "GET" if path in ("/info", "/health") else "POST"
    method = data.draw(st.sampled_from([right] * 8 + ["GET", "PUT"]), label="method")  # mostly the right method
    body = data.draw(bodies(path, ids, session_ids or ["s"]), label="body")
    r = timed(client, method, path, body)
    event(f"{path} {r.status_code}")
    check_response(r, path, body)


@pytest.mark.parametrize("env_name", ENVS)
@settings(max_examples=min(settings().max_examples, 25))
@given(data=st.data())
def test_verify_batches(clients, env_name, data):
    """Well-formed /verify requests of hostile responses: always a 200 with one sound Verdict per item."""
    client = clients[env_name]
    ids = task_ids(client)
    items = data.draw(st.lists(st.builds(lambda t, r: {"task_id": t, "response": r},
                                         st.sampled_from(ids) | st.text(max_size=8),
                                         st.text(max_size=300) | moderate_text.map(
                                             lambda s: s.encode("utf-8", "replace").decode())),
                               min_size=1, max_size=8), label="items")
    body = json.dumps({"items": items}).encode()
    r = timed(client, "POST", "/verify", body)
    if len(body) > SMALL_LIMIT:
        assert r.status_code == 413
        return
    assert r.status_code == 200, r.text[:300]
    check_response(r, "/verify", body)


@pytest.mark.parametrize("env_name", ENVS)
def test_regressions_and_edges(clients, env_name):
    """Fixed bodies at the edges: just over the limit (with and without Content-Length), huge counts, big batches."""
    client = clients[env_name]
    ids = task_ids(client)
    over = b'{"items": [{"task_id": "x", "response": "' + b"a" * SMALL_LIMIT + b'"}]}'
    r = timed(client, "POST", "/verify", over)
    assert r.status_code == 413 and "limit" in r.json()["detail"]

    def chunks():  # no Content-Length: the server must count the streamed bytes itself
        for _ in range(SMALL_LIMIT // 1024 + 2):
            yield b"a" * 1024
    r = client.post("/verify", content=chunks())
    assert r.status_code == 413, r.text

    for body, want in ((b'{"count": 100001}', 422), (b'{"count": -1}', 422), (b"\xff\xfe", 422), (b"", 422),
                       (b'{"items": [{"task_id": "x", "response": "\\ud800"}]}', 422), (b"[" * 20_000, 422)):
        r = timed(client, "POST", "/tasks" if b"count" in body else "/verify", body)
        assert r.status_code == want and r.json()["detail"], (body[:40], r.status_code, r.text[:200])

    # The largest sample the wire allows: 100,000 tasks (the pool is walked in reshuffled passes).
    r = timed(client, "POST", "/tasks", b'{"count": 100000, "seed": 3}')
    assert r.status_code == 200 and len(TasksResponse.from_json(r.content).tasks) == 100_000

    # A batch as large as the body limit allows: 1,000 items, unknown and known ids, all answered in order.
    items = [{"task_id": ids[i % len(ids)] if i % 2 else f"nope-{i}", "response": "x" * 20} for i in range(1000)]
    body = json.dumps({"items": items}).encode()
    assert len(body) < SMALL_LIMIT
    resp = check_response(timed(client, "POST", "/verify", body), "/verify", body)
    assert all(v.status == "error" and "unknown task_id" in v.reason for v in resp.verdicts[0::2])


def test_default_body_limit_is_enforced(clients):
    """The production default (32 MiB): a 33 MiB body is a 413 before it is parsed."""
    from environments.server import DEFAULT_MAX_BODY_BYTES, create_app

    with TestClient(create_app(_make_env("echo"), verify_workers=0)) as client:
        body = b'{"items": [{"task_id": "echo-0", "response": "' + b"a" * (DEFAULT_MAX_BODY_BYTES + 2**20) + b'"}]}'
        r = timed(client, "POST", "/verify", body)
        assert r.status_code == 413 and str(DEFAULT_MAX_BODY_BYTES) in r.json()["detail"]


# ---------------------------------------------------------------------------------------------- GenRM

class FuzzJudge:
    """The GenRM judge replaced by a function writing the fuzzed outputs it is given (or well-formed ones)."""

    def __init__(self):
        self.outputs: list = []

    def generate(self, prompts, temperature):
        from genrm.judge import format_judgement

        out = []
        for i, _ in enumerate(prompts):
            out.append(self.outputs[i % len(self.outputs)] if self.outputs else format_judgement("ok.", 4, 2, "A"))
        return out


@pytest.fixture(scope="module")
def genrm_client():
    from genrm.serve import create_app
    from genrm.service import GenRMConfig, GenRMService

    judge = FuzzJudge()
    service = GenRMService(GenRMConfig(cohort_timeout_s=0.5, batch_wait_s=0.0, max_retries=1), judge)
    with TestClient(create_app(service)) as client:
        yield client, judge


def score_bodies(complete_only: bool = False):
    lc = st.fixed_dictionaries({}, optional={
        "enabled": st.booleans(), "lambda_think": st.floats(-2, 2) | st.floats(), "lambda_answer": st.floats(-1e308, 1e308),
        "beta_think": st.floats(-2, 2), "beta_answer": st.floats(-2, 2) | st.floats(), "percentile": st.floats(0, 100)})
    item = st.fixed_dictionaries({"index": st.integers(-1, 6), "response": wire_text,
                                  "think_tokens": st.integers(0, 10**6) | st.just(-1), "answer_tokens": st.integers(0, 10**6)})
    valid = st.builds(lambda cid, n, p, items, l: {"cohort_id": cid, "group_size": n, "prompt": p, "items": items,
                                                   "length_control": l},
                      st.text(max_size=6), st.integers(0, 5), st.text(max_size=40), st.lists(item, max_size=5), lc)
    def cohort(n: int):  # a complete, well-formed cohort: it reaches the judge and the parser of its outputs
        items = st.tuples(*[st.fixed_dictionaries({
            "index": st.just(i), "response": wire_text, "think_tokens": st.integers(0, 10**6),
            "answer_tokens": st.integers(0, 10**6)}) for i in range(n)]).map(list)
        return st.builds(lambda its, p, l: {"cohort_id": "c", "group_size": n, "prompt": p, "items": its,
                                            "length_control": l}, items, st.text(max_size=40), lc)
    if complete_only:
        return st.integers(2, 4).flatmap(cohort).map(json.dumps)
    return st.one_of(valid.map(json.dumps), valid.flatmap(_mutate).map(json.dumps), json_values().map(json.dumps),
                     st.integers(2, 4).flatmap(cohort).map(json.dumps),
                     st.binary(max_size=100), st.builds(lambda n: "{" * n, st.integers(1, 20_000)))


judge_texts = st.lists(st.one_of(moderate_text, st.sampled_from(
    ["Critique: a Scores: 5 1. Ranking: A", "Critique: b Scores: 1 5. Ranking: B", "Critique: c Scores: 3 3. Ranking: tie",
     "Critique: d Scores: 9 1. Ranking: A", ""])), max_size=3)


@settings(max_examples=min(settings().max_examples, 40))  # an incomplete cohort waits for its 0.5 s timeout
@given(body=score_bodies(), outputs=judge_texts)
@example(body=json.dumps({"cohort_id": "nan", "group_size": 2, "prompt": "p", "items": [
    {"index": 0, "response": "a", "think_tokens": 5, "answer_tokens": 3},
    {"index": 1, "response": "b", "think_tokens": 1, "answer_tokens": 9}],
    "length_control": {"lambda_think": float("nan")}}), outputs=[])
@example(body=json.dumps({"cohort_id": "inf", "group_size": 2, "prompt": "p", "items": [
    {"index": 0, "response": "a", "think_tokens": 5, "answer_tokens": 3},
    {"index": 1, "response": "b", "think_tokens": 1, "answer_tokens": 9}],
    "length_control": {"beta_answer": float("inf"), "lambda_answer": 1e308}}), outputs=[])
def test_genrm_score(genrm_client, body, outputs):
    _score(genrm_client, body, outputs)


@settings(max_examples=min(settings().max_examples, 30))
@given(body=score_bodies(complete_only=True), outputs=judge_texts)
def test_genrm_complete_cohorts_with_hostile_judge_output(genrm_client, body, outputs):
    """Every body reaches the judge: its fuzzed outputs go through the parser, retries and aggregation."""
    status = _score(genrm_client, body, outputs)
    assert status in (200, 422), status  # 422: a length-control weight out of range


def _score(genrm_client, body, outputs) -> int:
    from genrm.wire import ScoreResponse

    client, judge = genrm_client
    judge.outputs = outputs
    payload = body if isinstance(body, bytes) else body.encode("utf-8", "surrogatepass")
    try:  # a fresh cohort id per example: examples must not join each other's cohorts
        doc = json.loads(payload)
        if isinstance(doc, dict) and isinstance(doc.get("cohort_id"), str):
            doc["cohort_id"] += f"-{time.monotonic_ns()}"
            payload = json.dumps(doc).encode()
    except ValueError:
        pass
    r = timed(client, "POST", "/score", payload)
    event(f"status {r.status_code}")  # --hypothesis-show-statistics: how many bodies got how far
    assert r.status_code < 500, r.text[:500]
    if r.status_code >= 400:
        assert r.json()["detail"]
        return r.status_code
    resp = ScoreResponse.from_json(r.content)
    sent = json.loads(payload)["items"]
    assert [x.index for x in resp.results] == [i["index"] for i in sent]
    for x in resp.results:
        assert x.reward == x.reward and abs(x.reward) < float("inf"), f"reward {x.reward} is not finite"
        assert x.status == "ok" or x.reason, "an error result needs a reason"
    return r.status_code


def test_genrm_oversized_and_health(genrm_client):
    from genrm.serve import MAX_BODY_BYTES

    client, _ = genrm_client
    assert client.get("/health").status_code == 200
    r = timed(client, "POST", "/score", b"{" + b" " * (MAX_BODY_BYTES + 10) + b"}")
    assert r.status_code == 413 and r.json()["detail"]
