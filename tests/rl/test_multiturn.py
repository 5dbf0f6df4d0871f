"""Multi-turn rollouts through an environment's /reset and /step (issue 4): turns, masks, verification."""

from __future__ import annotations

import json
import re
import socket
import threading
import time

import pytest
import uvicorn

from environments.base import Environment, TaskRecord
from environments.client import SyncEnvClient
from environments.server import create_app
from rl.types import Message, Task, Verdict, VerifyItem

pytestmark = pytest.mark.slow


class CounterEnv(Environment):
    """Tool use in miniature: an `add` tool changes a per-episode counter; reward when it ends at the target."""

    name = "counter"
    multi_turn = True

    def __init__(self, options=None, seed=0):
        super().__init__(options, seed)
        self.sessions: dict[str, int] = {}
        self.steps = 0

    def load_tasks(self):
        return [TaskRecord(Task(env="counter", task_id=f"c{i}", difficulty="easy",
                                prompt=(Message(role="user", content=f"Reach {i} with add."),),
                                meta={"multi_turn": True, "max_turns": 3, "max_new_tokens": 8}), i) for i in range(4)]

    def reset(self, record, session_id):
        self.sessions[session_id] = 0
        return "counter=0"

    def step(self, session_id, action):
        self.steps += 1
        m = re.search(r"<tool_call>(.*?)</tool_call>", action, re.S)
        if not m:
            return "error: no <tool_call> found", False
        try:
            call = json.loads(m.group(1))
            self.sessions[session_id] += int(call["arguments"]["n"])
        except (ValueError, KeyError, TypeError) as e:
            return f"error: bad tool call ({e})", False
        return f"counter={self.sessions[session_id]}", False

    def verify_episode(self, record, session_id, response):
        value = self.sessions.pop(session_id, None)
        if value is None:
            return Verdict(reward=0.0, reason="unknown or finished episode")
        return Verdict(reward=float(value == record.reference), reason=f"counter {value}, target {record.reference}")

    def verify(self, record, response):
        return Verdict(reward=0.0, reason="counter is judged by episode state only")

    def reference_response(self, record):
        return f'<tool_call>{{"name": "add", "arguments": {{"n": {record.reference}}}}}</tool_call>'


@pytest.fixture
def counter_server():
    env = CounterEnv()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(env), host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.time() + 10
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    yield env, f"http://127.0.0.1:{port}"
    server.should_exit = True


def test_multi_turn_episode_masks_observations_and_verifies(rollout_worker, counter_server):
    env, url = counter_server
    rollout_worker.set_environments({"counter": {"url": url}})
    tasks = [r.task for r in env.load_tasks()[:2]]
    res = rollout_worker.generate(tasks, n=3)
    tok = rollout_worker.tokenizer
    sessions = set()
    for task, group in zip(tasks, res["groups"]):
        assert len(group) == 3
        for s in group:
            assert s.session_id and s.session_id not in sessions
            sessions.add(s.session_id)
            assert s.turns[0].role == "tool" and s.turns[0].text == "counter=0"  # the reset observation
            roles = [t.role for t in s.turns[1:]]
            assert roles[0] == "assistant" and all(a != b for a, b in zip(roles, roles[1:])), roles
            assert 1 <= roles.count("assistant") <= 3  # max_turns from the task
            for t in s.turns:
                span_mask = s.loss_mask[t.start:t.end]
                span_lp = s.logprobs[t.start:t.end]
                if t.role == "tool":
                    assert set(span_mask) == {0} and set(span_lp) == {0.0}
                    assert t.text in tok.decode(s.response_ids[t.start:t.end])
                else:
                    assert set(span_mask) == {1} and all(lp <= 0 for lp in span_lp)
            assert s.turns[-1].end <= len(s.response_ids)
    # every assistant turn but the last of an episode went to /step
    assert env.steps >= 1
    with SyncEnvClient("counter", url) as client:
        verdicts = client.verify([VerifyItem(task_id=s.task_id, response=s.response_text, session_id=s.session_id)
                                  for g in res["groups"] for s in g])
    assert len(verdicts) == 6 and all(v.status == "ok" for v in verdicts)
    assert all("target" in v.reason for v in verdicts)  # judged by episode state
    assert not env.sessions  # verified episodes are released
