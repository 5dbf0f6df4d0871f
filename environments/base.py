"""The environment plugin interface: subclass `Environment`, register it, and polyrl serves it over HTTP.

A plugin never imports rl/ internals beyond rl/types.py. The smallest complete plugin
(see `python -m environments new NAME`):

    class Echo(Environment):
        name = "echo"

        def load_tasks(self):
            return [TaskRecord(Task(env=self.name, task_id=str(i), prompt=(Message(role="user", content=f"Say {i}"),),
                                    difficulty="easy"), reference=str(i)) for i in range(10)]

        def verify(self, record, response):
            ok = response.strip() == record.reference
            return Verdict(reward=float(ok), reason="match" if ok else "mismatch")

        def reference_response(self, record):
            return record.reference
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from rl.types import Task, Verdict


@dataclass(frozen=True)
class TaskRecord:
    """A task as the server holds it: the wire Task plus its hidden reference (never sent to clients)."""

    task: Task
    reference: Any


class Environment:
    """Base class of environment plugins.

    Subclasses set `name` and implement `load_tasks`, `verify` and `reference_response`; multi-turn
    environments also set `multi_turn = True` and implement `reset` / `step`.
    `verify` must not raise on any model output: bad output is a Verdict with reward 0 and a reason.
    """

    name: ClassVar[str] = ""
    version: ClassVar[str] = "0.1.0"
    multi_turn: ClassVar[bool] = False
    difficulties: ClassVar[tuple[str, ...]] = ("easy", "medium", "hard")
    # CPU-heavy verifiers (sympy) run in a process pool of this size on the server; 0 runs inline.
    verify_workers: ClassVar[int] = 0
    # Environments that must judge a prompt's responses together (chat: the GenRM compares them with each other)
    # set this and implement verify_batch; /verify then hands them all single-turn items of a request at once.
    batch_verify: ClassVar[bool] = False

    def __init__(self, options: dict[str, Any] | None = None, seed: int = 0):
        self.options = dict(options or {})
        self.seed = seed

    # -- tasks -----------------------------------------------------------------------------------
    def load_tasks(self) -> list[TaskRecord]:
        raise NotImplementedError(f"{type(self).__name__}.load_tasks: return the environment's TaskRecords")

    # -- scoring ---------------------------------------------------------------------------------
    def verify(self, record: TaskRecord, response: str) -> Verdict:
        raise NotImplementedError(f"{type(self).__name__}.verify: score one response, never raise")

    def verify_batch(self, items: list[tuple[TaskRecord, str]]) -> list[Verdict]:
        """batch_verify environments: one Verdict per (record, response), in order; never raise."""
        raise NotImplementedError(f"{type(self).__name__} sets batch_verify: implement verify_batch")

    def reference_response(self, record: TaskRecord) -> str:
        """A response that scores 1.0: used by the tiny policy's warm start and by tests."""
        raise NotImplementedError(f"{type(self).__name__}.reference_response")

    # -- multi-turn ------------------------------------------------------------------------------
    def reset(self, record: TaskRecord, session_id: str) -> str:
        """Start an episode; return the initial observation ('' for none)."""
        raise NotImplementedError(f"{type(self).__name__} is not multi-turn")

    def step(self, session_id: str, action: str) -> tuple[str, bool]:
        """Apply the model's turn; return (observation, done)."""
        raise NotImplementedError(f"{type(self).__name__} is not multi-turn")

    def verify_episode(self, record: TaskRecord, session_id: str, response: str) -> Verdict:
        """Multi-turn: judge the episode's final state (e.g. the database), then release it."""
        raise NotImplementedError(f"{type(self).__name__} is not multi-turn")

    def close(self) -> None:
        """Release resources (episode databases, pools)."""
