"""rl/watchdog.py on a controlled clock: when it reports, what it names, when it aborts."""

from __future__ import annotations

import asyncio

import pytest

from rl.watchdog import StallError, Watchdog


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_reports_once_per_stall_naming_pending_operations_longest_first():
    clock = Clock()
    dog = Watchdog(stall_s=60, clock=clock)
    with dog.op("environment math: verify 128 responses"):
        clock.t += 10
        with dog.op("learners: train_step 4 (64 samples)"):
            clock.t += 45
            assert dog.check() is None, "55 s idle: under the limit"
            clock.t += 10
            message = dog.check()
    assert message is not None and "no sample batch and no step completed for 65s" in message
    assert message.index("environment math: verify 128 responses for 65s") < message.index("learners: train_step 4")
    assert dog.check() is None, "the same stall is reported once"
    assert dog.stalls == 1
    dog.progress("step 4")
    assert dog.check() is None
    clock.t += 61
    second = dog.check()
    assert second is not None and "last progress: step 4" in second and "nothing (the loop itself is stuck)" in second
    assert dog.stalls == 2


def test_no_report_before_the_limit_and_off_when_zero():
    clock = Clock()
    dog = Watchdog(stall_s=60, clock=clock)
    clock.t += 59.9
    assert dog.check() is None
    off = Watchdog(stall_s=0, clock=clock)
    clock.t += 10_000
    assert off.check() is None


def test_abort_raises_stall_error_with_the_report():
    clock = Clock()
    dog = Watchdog(stall_s=5, abort_s=20, clock=clock)
    with dog.op("rollout worker 0: generate 16 prompts x 8 (train, step 3)"):
        clock.t += 6
        assert dog.check() is not None
        clock.t += 14
        with pytest.raises(StallError, match=r"rollout worker 0: generate .* Aborting after run.watchdog_abort_s=20"):
            dog.check()


def test_background_task_logs_and_emits_metrics():
    lines, metrics = [], []
    dog = Watchdog(stall_s=0.2, log=lines.append, on_stall=metrics.append)

    async def main():
        task = asyncio.ensure_future(dog.run(interval_s=0.05))
        with dog.op("learner 0: export weights version 2"):
            await asyncio.sleep(0.5)
        task.cancel()

    asyncio.run(main())
    assert len(lines) == 1 and "learner 0: export weights version 2" in lines[0]
    assert metrics[0]["watchdog/stalls"] == 1 and metrics[0]["watchdog/idle_seconds"] >= 0.2
    assert metrics[0]["watchdog/pending_operations"] == 1
