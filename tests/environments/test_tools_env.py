"""tools environment (issue 5): gold episodes score 1.0, bad calls are error observations, episodes are isolated
and cleaned up, task files load, and a real multi-turn rollout with the tiny policy runs and is verified."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest
import uvicorn

from environments.client import SyncEnvClient
from environments.server import create_app
from environments.tools import ToolsEnvironment
from environments.tools.db import parse_calls
from rl.types import VerifyItem


def call(name: str, **arguments) -> str:
    return f"<tool_call>{json.dumps({'name': name, 'arguments': arguments})}</tool_call>"


def gold_turns(env: ToolsEnvironment, record) -> list[str]:
    return [f"<tool_call>{json.dumps(c)}</tool_call>" for c in record.reference.calls]


@pytest.fixture(scope="module")
def env():
    e = ToolsEnvironment({"num_tasks": 300})
    yield e
    e.close()


@pytest.fixture
def served():
    """A real tools server on a free port (uvicorn in a thread), and a client to it."""
    env = ToolsEnvironment({"num_tasks": 60})
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(env), host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.time() + 10
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port}"
    with SyncEnvClient("tools", url, timeout_s=10, retries=1) as client:
        yield env, client, url
    server.should_exit = True


def test_tasks_are_deterministic_levels_count_calls_and_easy_fits_the_tiny_context(env):
    records = env.load_tasks()
    again = ToolsEnvironment({"num_tasks": 300}).load_tasks()
    assert [r.task for r in records] == [r.task for r in again]
    calls = {"easy": set(), "medium": set(), "hard": set()}
    for r in records:
        calls[r.task.difficulty].add(len(r.reference.calls))
        assert r.task.meta["multi_turn"] and r.task.meta["max_turns"] == len(r.reference.calls) + 2
        assert r.task.prompt[-1].content.isascii()
    assert calls == {"easy": {1}, "medium": {2}, "hard": {3, 4}}
    for r in records:
        if r.task.difficulty == "easy":  # chat template + prompt + gold transcript + <eos> within 512 characters
            assert len(f"<|user|>{r.task.prompt[0].content}\n<|assistant|>") + len(env.reference_response(r)) < 512


def test_every_reference_transcript_scores_one_and_perturbed_ones_zero(env):
    for r in env.load_tasks():
        ref = env.reference_response(r)
        assert env.verify(r, ref).reward == 1.0, (r.task.task_id, ref)
        # drop the last gold call: the state misses a change
        last = ref.rfind("<tool_call>")
        assert env.verify(r, ref[:last] + "Done.").reward == 0.0
    # a changed argument: the event lands at another hour / a ticket goes to someone else
    r = next(r for r in env.load_tasks() if r.reference.calls[0]["name"] == "insert"
             and r.reference.calls[0]["arguments"]["table"] == "events")
    assert env.verify(r, env.reference_response(r).replace('"hour":', '"hour":1', 1)).reward == 0.0


def test_gold_episode_through_http_reset_step_verify_scores_one(served):
    env, client, _ = served
    by_level = {}
    for r in env.load_tasks():
        by_level.setdefault(r.task.difficulty, r)
    items = []
    for level, r in by_level.items():
        reset = client.reset(r.task.task_id)
        for turn in gold_turns(env, r):
            step = client.step(reset.session_id, turn)
            assert not step.done and not step.observation.startswith("error"), step.observation
        items.append(VerifyItem(task_id=r.task.task_id, response="Done.", session_id=reset.session_id))
    # and one perturbed episode: the right calls but the first one dropped
    r = by_level["medium"]
    reset = client.reset(r.task.task_id)
    client.step(reset.session_id, gold_turns(env, r)[1])
    items.append(VerifyItem(task_id=r.task.task_id, response="Done.", session_id=reset.session_id))
    verdicts = client.verify(items)
    assert [v.reward for v in verdicts] == [1.0, 1.0, 1.0, 0.0], verdicts
    assert all(v.status == "ok" for v in verdicts)
    assert env.live_sessions() == 0  # verified episodes release their databases


BAD_TURNS = {
    "no call": ("I will close the ticket.</tool_call>", "no tool call"),
    "bad json": ('<tool_call>{"name": "query", "arguments": {"table": "events"</tool_call>', "not valid JSON"),
    "NaN": ('<tool_call>{"name": "query", "arguments": {"table": "events", "limit": NaN}}</tool_call>', "not JSON"),
    "duplicate key": ('<tool_call>{"name": "query", "name": "delete", "arguments": {}}</tool_call>', "duplicate"),
    "not an object": ("<tool_call>[1, 2]</tool_call>", "JSON object"),
    "unknown tool": (call("drop_table", table="employees"), "unknown tool"),
    "missing argument": (call("update", table="tickets", values={"status": "closed"}), "bad arguments"),
    "extra argument": (call("delete", table="events", where={"id": 1}, cascade=True), "bad arguments"),
    "wrong type": (call("update", table="events", where={"id": 1}, values={"hour": "noon"}), "integer"),
    "out of range": (call("update", table="events", where={"id": 1}, values={"hour": 99}), "integer 8..18"),
    "unknown employee": (call("send_message", to="Mallory", body="hi"), "no employee"),
    "write the key": (call("update", table="tickets", where={"id": 1}, values={"id": 99}), "cannot be written"),
    "empty where": (call("delete", table="tickets", where={}), "bad arguments"),
    "insert missing column": (call("insert", table="events", values={"title": "X"}), "missing"),
    # SQL injection through every place model text could reach SQL
    "table injection": (call("query", table="events; DROP TABLE employees"), "bad arguments"),
    "column injection": (call("query", table="events", where={"1=1 OR id": 1}), "unknown column"),
    "columns injection": (call("query", table="events", columns=["*, sqlite_version()"]), "unknown column"),
    "key injection": (call("delete", table="events", where={"id": "1 OR 1=1"}), "must be an integer"),
    "huge key": (call("delete", table="events", where={"id": 10**30}), "must be an integer"),
    "5000-digit number": ('<tool_call>{"name": "query", "arguments": {"limit": ' + "9" * 5000 + "}}</tool_call>",
                          "not usable JSON"),
    "enum injection": (call("update", table="tickets", where={"id": 1}, values={"status": "closed' --"}), "one of"),
    "employee injection": (call("delete", table="events", where={"owner": "x' OR '1'='1"}), "no employee"),
}


@pytest.mark.parametrize("case", list(BAD_TURNS))
def test_bad_calls_are_error_observations_and_change_nothing(env, case):
    turn, expect = BAD_TURNS[case]
    record = env.load_tasks()[0]
    env.reset(record, f"bad-{case}")
    observation, done = env.step(f"bad-{case}", turn)
    assert observation.startswith("error:") and expect in observation, observation
    assert not done
    verdict = env.verify_episode(record, f"bad-{case}", "Done.")
    assert verdict.status == "ok" and verdict.reward == 0.0
    assert "lacks" in verdict.reason and "unexpected" not in verdict.reason  # nothing was changed or removed


def test_injection_in_free_text_is_stored_verbatim_never_executed(env):
    record = env.load_tasks()[0]
    env.reset(record, "inj")
    body = "x'); DROP TABLE employees; --"
    obs, _ = env.step("inj", call("send_message", to="Ann", body=body))
    assert obs.startswith("ok: message")
    obs, _ = env.step("inj", call("query", table="messages", where={"body": body}))
    assert obs.startswith("1 row") and "DROP TABLE" in obs
    obs, _ = env.step("inj", call("query", table="employees", limit=20))
    assert obs.startswith("8 rows")
    env.verify_episode(record, "inj", "")


def test_server_stays_healthy_after_hostile_turns(served):
    env, client, _ = served
    reset = client.reset(env.load_tasks()[0].task.task_id)
    for turn, _ in BAD_TURNS.values():
        assert client.step(reset.session_id, turn).observation.startswith("error:")
    huge = "<tool_call>" + "[" * 50_000 + "</tool_call>"
    assert client.step(reset.session_id, huge).observation.startswith("error:")
    deep = "<tool_call>" + "[" * 5_000 + "]" * 5_000 + "</tool_call>"
    assert client.step(reset.session_id, deep).observation.startswith("error:")
    assert client.health()
    fresh = client.reset(env.load_tasks()[0].task.task_id).session_id  # the hostile one used its call budget
    assert client.step(fresh, call("query", table="tickets", where={"id": 1})).observation.startswith("1 row")


def test_two_concurrent_episodes_never_see_each_others_database(served):
    env, _, url = served
    record = env.load_tasks()[0]
    barrier = threading.Barrier(2)
    seen: dict[str, list[str]] = {}

    def episode(name: str) -> None:
        with SyncEnvClient("tools", url, timeout_s=10, retries=1) as c:
            sid = c.reset(record.task.task_id).session_id
            barrier.wait()
            out = [c.step(sid, call("insert", table="tickets", values={"title": f"from {name}", "assignee": "Ann"})
                          ).observation]
            barrier.wait()  # both inserted before either reads
            out.append(c.step(sid, call("query", table="tickets", where={"assignee": "Ann"}, limit=20)).observation)
            out.append(c.step(sid, call("delete", table="tickets", where={"id": 1})).observation)
            barrier.wait()
            out.append(c.step(sid, call("query", table="tickets", where={"id": 1})).observation)
            seen[name] = out

    threads = [threading.Thread(target=episode, args=(n,)) for n in ("alpha", "beta")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for me, other in (("alpha", "beta"), ("beta", "alpha")):
        inserted, listed, deleted, after = seen[me]
        assert inserted == "ok: inserted tickets id 9"  # both got id 9: separate databases
        assert f"from {me}" in listed and f"from {other}" not in listed
        assert deleted == "ok: 1 row deleted in tickets" and after == "0 rows"  # each deleted its own row 1


def test_abandoned_episodes_are_cleaned_up_by_ttl_max_sessions_and_close():
    env = ToolsEnvironment({"num_tasks": 3, "session_ttl_s": 0.3, "max_sessions": 3})
    record = env.load_tasks()[0]
    for i in range(5):
        env.reset(record, f"s{i}")
    assert env.live_sessions() == 3 and env.expired == 2  # s0, s1 evicted (least recently used)
    obs, done = env.step("s0", call("query", table="events"))
    assert done and "gone" in obs
    assert env.verify_episode(record, "s1", "").status == "error"
    env.step("s2", call("query", table="events"))  # s2 is now the most recently used
    time.sleep(0.4)
    assert env.live_sessions() == 0 and env.expired == 5  # idle past the TTL
    env2 = ToolsEnvironment({"num_tasks": 3})
    for i in range(4):
        env2.reset(record, f"t{i}")
    conns = [ep.db.conn for ep in env2._sessions.values()]
    env2.close()
    assert env2.live_sessions() == 0
    with pytest.raises(Exception, match="closed"):
        conns[0].execute("SELECT 1")


def test_call_budget_ends_the_episode():
    env = ToolsEnvironment({"num_tasks": 3, "max_calls": 2})
    record = env.load_tasks()[0]
    env.reset(record, "b")
    assert not env.step("b", call("query", table="events"))[1]
    assert not env.step("b", call("query", table="events"))[1]
    obs, done = env.step("b", call("query", table="events"))
    assert done and "used" in obs


def test_partial_credit_counts_changes():
    env = ToolsEnvironment({"num_tasks": 30, "partial_credit": True})
    record = next(r for r in env.load_tasks() if r.task.difficulty == "medium"
                  and all(c["name"] != "query" for c in r.reference.calls))
    ref = env.reference_response(record)
    assert env.verify(record, ref).reward == 1.0
    half = ref[: ref.rfind("<tool_call>")]  # one of the two changes
    v = env.verify(record, half)
    assert 0 < v.reward < 1 and v.components["exact"] == 0.0
    assert env.verify(record, "Done.").reward == 0.0


def test_json_schema_mode_puts_full_schemas_in_a_system_message_and_meta():
    env = ToolsEnvironment({"num_tasks": 3, "tool_format": "json_schema"})
    task = env.load_tasks()[0].task
    assert task.prompt[0].role == "system" and '"additionalProperties":false' in task.prompt[0].content
    assert {t["function"]["name"] for t in task.meta["tools"]} == {"query", "insert", "update", "delete",
                                                                    "send_message"}
    compact = ToolsEnvironment({"num_tasks": 3}).load_tasks()[0].task
    assert len(compact.prompt) == 1 and len(compact.prompt[0].content) < 300


def test_transcript_parsing_ignores_calls_inside_observations():
    text = ('<tool_call>{"name":"query","arguments":{"table":"events"}}</tool_call>\n<|tool|>echo <tool_call>'
            '{"name":"delete","arguments":{"table":"events","where":{"id":1}}}</tool_call>\n<|assistant|>Done.')
    assert [c["name"] for c in parse_calls(text, transcript=True)] == ["query"]


def test_task_files_load_through_datasets_and_bad_rows_are_named(tmp_path):
    good = tmp_path / "hr.jsonl"
    rows = [
        {"instruction": "Close ticket 2.", "gold_calls": json.dumps(
            [{"name": "update", "arguments": {"table": "tickets", "where": {"id": 2}, "values": {"status": "closed"}}}])},
        {"instruction": "Tell Ann hi, then Ben hi.", "id": "greet", "gold_calls": json.dumps(
            [{"name": "send_message", "arguments": {"to": "Ann", "body": "hi"}},
             {"name": "send_message", "arguments": {"to": "Ben", "body": "hi"}}])},
    ]
    good.write_text("".join(json.dumps(r) + "\n" for r in rows))
    env = ToolsEnvironment({"num_tasks": 0, "files": [str(good)]})
    records = env.load_tasks()
    assert [(r.task.task_id, r.task.difficulty) for r in records] == [("hr-000000", "easy"), ("hr-greet", "medium")]
    assert all(env.verify(r, env.reference_response(r)).reward == 1.0 for r in records)
    bad = tmp_path / "bad.jsonl"
    bad_rows = rows + [{"instruction": "Message Bob.", "gold_calls": json.dumps(
        [{"name": "send_message", "arguments": {"to": "Bob", "body": "x"}}])},
        {"instruction": "", "gold_calls": "[]"}]
    bad.write_text("".join(json.dumps(r) + "\n" for r in bad_rows))
    with pytest.raises(ValueError, match=r"bad.jsonl, row 2 .*no employee named 'Bob'.*skip_bad_rows"):
        ToolsEnvironment({"num_tasks": 0, "files": [str(bad)]}).load_tasks()
    skipping = ToolsEnvironment({"num_tasks": 0, "files": [str(bad)], "skip_bad_rows": True})
    assert len(skipping.load_tasks()) == 2 and skipping.skipped_rows[str(bad)] == 2
    with pytest.raises(ValueError, match="no 'gold_calls' column"):
        (tmp_path / "x.jsonl").write_text('{"instruction": "a"}\n')
        ToolsEnvironment({"num_tasks": 0, "files": [str(tmp_path / "x.jsonl")]}).load_tasks()
    with pytest.raises(ValueError, match="Valid options"):
        ToolsEnvironment({"num_taks": 3})


@pytest.mark.slow
def test_multi_turn_tool_rollout_with_the_tiny_policy_is_verified(rollout_worker, served):
    env, client, url = served
    rollout_worker.set_environments({"tools": {"url": url}})
    # 8 tokens a turn: the random policy's turns end at the length limit, go to /step as (malformed) calls and
    # get error observations back, so the episodes have several turns
    tasks = [r.task.model_copy(update={"meta": {**r.task.meta, "max_new_tokens": 8}})
             for r in env.load_tasks() if r.task.difficulty == "easy"][:2]
    res = rollout_worker.generate(tasks, n=2)
    samples = [s for g in res["groups"] for s in g]
    assert any(t.role == "tool" and t.text.startswith("error:") for s in samples for t in s.turns)
    assert len(samples) == 4 and len({s.session_id for s in samples}) == 4
    for s in samples:
        assert s.turns and s.turns[0].role == "assistant"
        assert len(s.response_ids) == len(s.loss_mask) == len(s.logprobs)
        assert len(s.prompt_ids) + len(s.response_ids) <= 512
        for t in s.turns:
            mask = set(s.loss_mask[t.start:t.end])
            assert mask == ({0} if t.role == "tool" else {1}), (t.role, mask)
    verdicts = client.verify([VerifyItem(task_id=s.task_id, response=s.response_text, session_id=s.session_id)
                              for s in samples])
    assert len(verdicts) == 4 and all(v.status == "ok" for v in verdicts), verdicts
    assert all(v.reward in (0.0, 1.0) and "database state" in v.reason for v in verdicts)
    assert env.live_sessions() == 0


@pytest.mark.parametrize("module", ["environments.tools", "environments.tools.db", "environments.tools.schema",
                                    "environments.tools.generator", "environments.tools.files"])
def test_docstring_examples(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0
