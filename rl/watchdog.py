"""Stall detection for the training loop (issue 10).

A run on a shared cluster can stop making progress without failing: a rollout worker wedged in a CUDA call, an
environment server that accepts connections but never answers, a learner waiting on a collective. The
orchestrator registers every remote operation it waits on with `Watchdog.op(...)`; a background task reports
(log line + `watchdog/*` metrics) when neither a sample batch nor an optimizer step has completed for `stall_s`
seconds, naming each pending operation and how long it has waited. With `abort_s > 0` it then fails the run with
`StallError` instead of waiting forever.

>>> dog = Watchdog(stall_s=60)
>>> with dog.op("learner: train_step (step 3)"):
...     dog.pending()[0][0]
'learner: train_step (step 3)'
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class StallError(RuntimeError):
    """No sample and no step completed within the watchdog's abort limit."""


class Watchdog:
    def __init__(self, stall_s: float, abort_s: float = 0.0, log: Callable[[str], None] = print,
                 on_stall: Callable[[dict[str, float]], None] | None = None, clock: Callable[[], float] = time.monotonic):
        self.stall_s, self.abort_s, self.log, self.on_stall, self.clock = stall_s, abort_s, log, on_stall, clock
        self._ops: dict[int, tuple[str, float]] = {}
        self._ids = itertools.count()
        self.last_progress = clock()
        self.last_progress_what = "start"
        self.stalls = 0  # stall episodes reported
        self._reported = False  # the current stall was already reported

    @contextmanager
    def op(self, what: str) -> Iterator[None]:
        """Register a pending operation for the duration of the block."""
        key = next(self._ids)
        self._ops[key] = (what, self.clock())
        try:
            yield
        finally:
            self._ops.pop(key, None)

    def progress(self, what: str) -> None:
        """A sample batch or a step completed: the loop is alive."""
        self.last_progress, self.last_progress_what = self.clock(), what
        self._reported = False

    def pending(self) -> list[tuple[str, float]]:
        """(operation, seconds waited), longest first."""
        now = self.clock()
        return sorted(((w, now - t) for w, t in self._ops.values()), key=lambda x: -x[1])

    def check(self) -> str | None:
        """The stall report if the loop is stalled and it was not reported yet; raises StallError past abort_s."""
        idle = self.clock() - self.last_progress
        if self.stall_s <= 0 or idle < self.stall_s:
            return None
        waits = "; ".join(f"{w} for {s:.0f}s" for w, s in self.pending()) or "nothing (the loop itself is stuck)"
        message = (f"watchdog: no sample batch and no step completed for {idle:.0f}s (run.watchdog_s="
                   f"{self.stall_s:g}; last progress: {self.last_progress_what}); waiting for: {waits}")
        if self.abort_s > 0 and idle >= self.abort_s:
            raise StallError(message + f". Aborting after run.watchdog_abort_s={self.abort_s:g}")
        if self._reported:
            return None
        self._reported = True
        self.stalls += 1
        return message

    async def run(self, interval_s: float | None = None) -> None:
        """Check periodically until cancelled; a StallError ends this task (the orchestrator re-raises it)."""
        interval = interval_s or max(0.2, min(10.0, self.stall_s / 4 if self.stall_s > 0 else 10.0))
        while True:
            await asyncio.sleep(interval)
            message = self.check()
            if message:
                self.log(message)
                if self.on_stall:
                    self.on_stall({"watchdog/stalls": float(self.stalls),
                                   "watchdog/idle_seconds": self.clock() - self.last_progress,
                                   "watchdog/pending_operations": float(len(self._ops))})
