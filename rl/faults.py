"""Fault injection (issue 10): the kills tests/faults/ and bench/faults.py inflict on a real run.

Nothing here fakes a component: faults are real kills of real processes at chosen moments.
- `FaultPlan`, handed to the Orchestrator: abort the driver in the middle of a learner step or of a checkpoint
  write (the actors are then SIGKILLed by rl/train.py's cleanup, as when a job dies), or SIGKILL a rollout actor
  while it generates (Ray restarts it).
- `EnvChaos`, a thread that SIGKILLs an environment server (its whole process group) at random moments and
  restarts it on the same port after a downtime, or never.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any


class InjectedKill(BaseException):
    """The driver 'dies' here. A BaseException, so no `except Exception` on the way up can swallow it."""


@dataclass
class FaultPlan:
    abort_in_train_at: int | None = None
    """Abort the driver while the learners execute the train_step that produces step N (mid-step kill)."""
    abort_in_checkpoint_at: int | None = None
    """Abort the driver after step N's checkpoint files were written but before they were published."""
    kill_rollout_worker: dict[int, float] = field(default_factory=dict)
    """step -> seconds after that step's generate call was submitted: SIGKILL rollout worker 0 (Ray restarts it)."""
    before_verify: dict[int, Any] = field(default_factory=dict)
    """step -> callable run just before that step's responses are sent to the environments (e.g. kill a server)."""
    train_abort_delay_s: float = 0.3
    """How long after submitting train_step the mid-step abort fires (the learner is busy by then)."""
    events: list[dict[str, Any]] = field(default_factory=list)
    """What was injected, when (for reports)."""

    async def in_train(self, step: int) -> None:
        if self.abort_in_train_at == step:
            await asyncio.sleep(self.train_abort_delay_s)
            self.events.append({"fault": "abort_mid_step", "step": step, "t": time.time()})
            raise InjectedKill(f"injected: driver killed during learner step {step}")

    def in_checkpoint(self, step: int) -> None:
        if self.abort_in_checkpoint_at == step:
            self.events.append({"fault": "abort_checkpoint_write", "step": step, "t": time.time()})
            raise InjectedKill(f"injected: driver killed while writing the step-{step} checkpoint")

    def verifying(self, step: int) -> None:
        action = self.before_verify.pop(step, None)
        if action is not None:
            self.events.append({"fault": getattr(action, "__name__", "before_verify"), "step": step, "t": time.time()})
            action()

    def after_generate_submitted(self, step: int, label: str, worker: Any) -> None:
        delay = self.kill_rollout_worker.get(step)
        if delay is None or label != "train":
            return
        del self.kill_rollout_worker[step]  # once: the re-queued call must be allowed to finish

        def kill() -> None:
            import ray

            self.events.append({"fault": "kill_rollout_worker", "step": step, "t": time.time()})
            ray.kill(worker, no_restart=False)  # SIGKILL of the actor process; Ray restarts it (max_restarts)

        threading.Timer(delay, kill).start()


class EnvChaos(threading.Thread):
    """Kill `server` (environments.serve.LocalServer) every uniform(*interval_s) seconds; restart it after
    `downtime_s` on the same port, or never when `restart` is False (then after the first kill)."""

    def __init__(self, server: Any, *, interval_s: tuple[float, float] = (3.0, 8.0), downtime_s: float = 1.0,
                 restart: bool = True, max_kills: int | None = None, seed: int = 0):
        super().__init__(daemon=True, name=f"env-chaos-{server.name}")
        self.server, self.interval_s, self.downtime_s, self.restart = server, interval_s, downtime_s, restart
        self.max_kills = max_kills
        self.rng = random.Random(seed)
        self.stop_event = threading.Event()
        self.kills: list[dict[str, float]] = []  # {"killed_at", "restarted_at", "restart_s"}
        self.errors: list[str] = []

    def run(self) -> None:
        while not self.stop_event.wait(self.rng.uniform(*self.interval_s)):
            if self.max_kills is not None and len(self.kills) >= self.max_kills:
                return
            killed = time.time()
            self.server.kill()
            record = {"killed_at": killed}
            self.kills.append(record)
            if not self.restart:
                return
            if self.stop_event.wait(self.downtime_s):
                break
            try:
                t0 = time.time()
                self.server.restart()
                record["restarted_at"] = time.time()
                record["restart_s"] = time.time() - t0
            except Exception as e:  # a failed restart is a finding of the run, reported, not a crash of the thread
                self.errors.append(f"{type(e).__name__}: {e}")
                return
        # leave the server up when stopped mid-downtime, so the run can finish
        if self.restart and not self.server.alive():
            self.server.restart()

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=60)
