r"""tools environment: a workplace assistant that changes a database through tool calls, judged by the final state.

Each episode (/reset) gets its own in-memory SQLite database seeded with the fixtures (employees, events,
tickets, messages: environments/tools/schema.py). The model calls tools by writing

    <tool_call>{"name": "update", "arguments": {"table": "tickets", "where": {"id": 3}, "values": {"status": "closed"}}}</tool_call>

one call per turn (the rollout ends a turn at `</tool_call>`); /step runs it and returns the observation
("ok: 1 row updated in tickets", "2 rows: {...} {...}", "error: ..."), which the rollout appends as a <|tool|>
message. A turn without a call ends the episode; /verify with the session id then compares the database with
the state that the task's gold calls produce (verifiers/db_state.py): reward 1 if every table holds the same
rows (order-independent, ids ignored), else 0, or the partial credit with `partial_credit: true`.

Prompts (`tool_format`): "compact" (default, for the tiny policy's short context) lists only the tools
and tables the task needs, by signature, in one user message; "json_schema" puts every tool's JSON Schema and
the table definitions in a system message and Task.meta["tools"] (OpenAI-style), for real models.

Episode databases live in this process's memory; they are released at /verify, after `session_ttl_s` without a
call, when more than `max_sessions` are open (least recently used first), and at close().

reference_response(record) is the whole gold transcript, exactly as a rollout would produce it:

    <tool_call>{...call 1...}</tool_call>\n<|tool|>observation 1\n<|assistant|><tool_call>...</tool_call>...Done.

Single-turn `verify(record, transcript)` replays the transcript's calls (observations in it are ignored) on a
fresh database and scores the result, so a reference scores 1.0 through /verify too; multi-turn rollouts are
scored through `verify_episode` on the episode's own database.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field, ValidationError

from environments.base import Environment, TaskRecord
from environments.tools.db import EpisodeDB, build_template, parse_calls
from environments.tools.files import load_file
from environments.tools.generator import generate, level_of
from environments.tools.schema import (CALL_FORMAT, SIGNATURES, TABLES, full_description, make_fixtures,
                                       openai_tools, table_line)
from rl.section import Section
from rl.types import Message, Task, Verdict
from verifiers.db_state import db_state_equal

DIFFICULTIES = ("easy", "medium", "hard")
FINAL_ANSWER = "Done."


class ToolsOptions(Section):
    num_tasks: int = Field(3000, ge=0, le=1_000_000)
    """Generated tasks, round-robin over easy/medium/hard (ids easy-000000, medium-000000, ...); 0 = files only."""
    files: list[str] = []
    """Task files (.jsonl/.json/.parquet, read with `datasets`): instruction + gold_calls per row (files.py)."""
    skip_bad_rows: bool = False
    """False: a bad file row is an error naming file, row and fix. True: skip it, count and log it."""
    tool_format: Literal["compact", "json_schema"] = "compact"
    """compact: the task's tools by signature in one short user message (tiny policy, fits 512 characters);
    json_schema: every tool's JSON Schema in a system message and Task.meta['tools'] (real models)."""
    partial_credit: bool = False
    """False: reward 1 iff the final state equals the gold state. True: |expected & actual changes| /
    |expected | actual changes| (verifiers/db_state.py)."""
    max_calls: int = Field(12, ge=1, le=100)
    """Tool calls per episode; the call over it ends the episode with an error observation."""
    max_new_tokens: int = Field(160, ge=16)
    """Task.meta max_new_tokens: per-turn token limit (the longest gold call is ~130 characters)."""
    session_ttl_s: float = Field(600.0, gt=0)
    """An episode database unused for this long is dropped (an abandoned rollout); its verify is an error."""
    max_sessions: int = Field(1024, ge=1)
    """Open episode databases at most; the least recently used is dropped beyond it."""


@dataclass(frozen=True)
class ToolsReference:
    """The hidden part of a task: the gold calls (never sent to clients)."""

    calls: tuple[dict, ...]
    instruction: str


@dataclass(eq=False)
class _Episode:
    db: EpisodeDB
    task_id: str
    created: float = field(default_factory=time.monotonic)
    used: float = field(default_factory=time.monotonic)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


class ToolsEnvironment(Environment):
    """Multi-turn tool use on a per-episode SQLite database; reward from the final database state.

    >>> env = ToolsEnvironment({"num_tasks": 3}); record = env.load_tasks()[0]
    >>> record.task.difficulty, env.verify(record, env.reference_response(record)).reward
    ('easy', 1.0)
    >>> sid = "s1"; _ = env.reset(record, sid)
    >>> env.step(sid, '<tool_call>{"name": "drop_table", "arguments": {}}</tool_call>')[0][:25]
    "error: unknown tool 'drop"
    >>> env.verify_episode(record, sid, "Done.").reward  # nothing changed yet
    0.0
    """

    name = "tools"
    version = "0.1.0"
    multi_turn = True
    difficulties = DIFFICULTIES

    def __init__(self, options: dict[str, Any] | None = None, seed: int = 0):
        super().__init__(options, seed)
        try:
            self.config = ToolsOptions(**self.options)
        except ValidationError as e:
            raise ValueError(f"tools: bad options {self.options}: {e}\nValid options: "
                             f"{', '.join(ToolsOptions.model_fields)}") from None
        self.fixtures = make_fixtures(seed)
        self._template = build_template(self.fixtures)
        self._template_lock = threading.Lock()
        self._sessions: OrderedDict[str, _Episode] = OrderedDict()
        self._lock = threading.Lock()
        self._gold: dict[str, dict] = {}  # task_id -> gold snapshot, filled lazily
        self._initial = self._fresh().snapshot(list(TABLES))
        self._records: list[TaskRecord] | None = None
        self.skipped_rows: dict[str, int] = {}
        self.expired = 0  # episodes dropped by TTL or max_sessions (never verified)

    # -- tasks -------------------------------------------------------------------------------------
    def load_tasks(self) -> list[TaskRecord]:
        if self._records is None:
            records = []
            for i in range(self.config.num_tasks):
                difficulty, index = DIFFICULTIES[i % 3], i // 3
                g = generate(self.seed, difficulty, index, self.fixtures)
                records.append(self._record(f"{difficulty}-{index:06d}", difficulty, g.instruction, g.calls))
            for path in self.config.files:
                rows, skipped = load_file(path, difficulties=DIFFICULTIES, skip_bad_rows=self.config.skip_bad_rows,
                                          check=self._gold_problem)
                self.skipped_rows[path] = skipped
                records += [self._record(r.task_id, r.difficulty or level_of(len(r.calls)), r.instruction, r.calls)
                            for r in rows]
            if not records:
                raise ValueError("tools: no tasks; set num_tasks > 0 or list task files in `files`")
            self._records = records
        return list(self._records)

    def _record(self, task_id: str, difficulty: str, instruction: str, calls: tuple[dict, ...]) -> TaskRecord:
        meta: dict[str, Any] = {"multi_turn": True, "max_turns": len(calls) + 2,
                                "max_new_tokens": self.config.max_new_tokens}
        if self.config.tool_format == "compact":
            tools = list(dict.fromkeys(c["name"] for c in calls))
            tables = list(dict.fromkeys(c["arguments"]["table"] for c in calls
                                        if isinstance(c["arguments"].get("table"), str)
                                        and c["arguments"]["table"] in TABLES))
            text = (f"Tools: {' '.join(SIGNATURES.get(t, t) for t in tools)}."
                    + (f" Tables: {table_line(tables)}." if tables else "")
                    + f" One {CALL_FORMAT} per turn, then Done.\nTask: {instruction}")
            prompt = (Message(role="user", content=text),)
        else:
            meta["tools"] = openai_tools()
            prompt = (Message(role="system", content=full_description()),
                      Message(role="user", content=instruction))
        task = Task(env=self.name, task_id=task_id, prompt=prompt, difficulty=difficulty, meta=meta)
        return TaskRecord(task=task, reference=ToolsReference(calls=calls, instruction=instruction))

    def _fresh(self) -> EpisodeDB:
        return EpisodeDB(self._template, self._template_lock)

    def _gold_problem(self, calls: tuple[dict, ...]) -> str | None:
        db = self._fresh()
        try:
            for c in calls:
                obs = db.execute(c)
                if obs.startswith("error:"):
                    return f"{_dumps(c)[:120]} -> {obs}"
            return None
        finally:
            db.close()

    def _gold_state(self, record: TaskRecord) -> dict:
        tid = record.task.task_id
        state = self._gold.get(tid)
        if state is None:
            db = self._fresh()
            for c in record.reference.calls:
                db.execute(c)
            state = db.snapshot(list(TABLES))
            db.close()
            self._gold[tid] = state
        return state

    def _score(self, record: TaskRecord, db: EpisodeDB) -> Verdict:
        return db_state_equal(db.snapshot(list(TABLES)), gold=self._gold_state(record), initial=self._initial,
                              partial=self.config.partial_credit)

    # -- single turn: a whole transcript ------------------------------------------------------------
    def verify(self, record: TaskRecord, response: str) -> Verdict:
        """Replay the transcript's tool calls on a fresh database (observations in it are ignored), then score."""
        db = self._fresh()
        try:
            calls = parse_calls(response, transcript=True)
            for c in calls[: self.config.max_calls]:
                db.execute(c)
            return self._score(record, db)
        finally:
            db.close()

    def reference_response(self, record: TaskRecord) -> str:
        """The full gold transcript: each call, its observation as the rollout appends it, then 'Done.'."""
        db = self._fresh()
        try:
            parts = [f"<tool_call>{_dumps(c)}</tool_call>\n<|tool|>{db.execute(c)}\n<|assistant|>"
                     for c in record.reference.calls]
        finally:
            db.close()
        return "".join(parts) + FINAL_ANSWER

    # -- multi turn --------------------------------------------------------------------------------
    def _sweep(self, now: float) -> list[_Episode]:
        """Pop expired and surplus episodes (caller holds the lock; close them outside it)."""
        dropped = []
        while self._sessions:
            sid, ep = next(iter(self._sessions.items()))  # least recently used first
            if now - ep.used > self.config.session_ttl_s or len(self._sessions) > self.config.max_sessions:
                dropped.append(self._sessions.pop(sid))
            else:
                break
        self.expired += len(dropped)
        return dropped

    def reset(self, record: TaskRecord, session_id: str) -> str:
        ep = _Episode(self._fresh(), record.task.task_id)
        with self._lock:
            self._sessions[session_id] = ep
            dropped = self._sweep(time.monotonic())
        for old in dropped:
            old.db.close()
        return ""

    def live_sessions(self) -> int:
        with self._lock:
            dropped = self._sweep(time.monotonic())
            n = len(self._sessions)
        for old in dropped:
            old.db.close()
        return n

    def step(self, session_id: str, action: str) -> tuple[str, bool]:
        with self._lock:
            dropped = self._sweep(time.monotonic())
            ep = self._sessions.get(session_id)
            if ep is not None:
                ep.used = time.monotonic()
                self._sessions.move_to_end(session_id)
        for old in dropped:
            old.db.close()
        if ep is None:
            return ("error: this episode's database is gone (unknown session, expired after "
                    f"{self.config.session_ttl_s:g}s idle, or evicted); the episode is over", True)
        calls = parse_calls(action)
        if not calls:
            return f"error: no tool call found; write {CALL_FORMAT}, or answer without one to finish", False
        out = []
        for c in calls[:4]:
            if ep.db.calls >= self.config.max_calls:
                out.append(f"error: all {self.config.max_calls} tool calls of this episode are used; it is over")
                return "\n".join(out), True
            out.append(ep.db.execute(c))
        if len(calls) > 4:
            out.append(f"error: at most 4 tool calls per turn; {len(calls) - 4} ignored")
        return "\n".join(out), False

    def verify_episode(self, record: TaskRecord, session_id: str, response: str) -> Verdict:
        with self._lock:
            ep = self._sessions.pop(session_id, None)
        if ep is None:
            return Verdict.error(f"tools: episode {session_id!r} has no database (expired after "
                                 f"{self.config.session_ttl_s:g}s idle, evicted beyond max_sessions="
                                 f"{self.config.max_sessions}, or already verified)")
        try:
            if ep.task_id != record.task.task_id:
                return Verdict.error(f"tools: episode {session_id!r} belongs to task {ep.task_id!r}")
            return self._score(record, ep.db)
        finally:
            ep.db.close()

    def close(self) -> None:
        with self._lock:
            episodes = list(self._sessions.values())
            self._sessions.clear()
        for ep in episodes:
            ep.db.close()
