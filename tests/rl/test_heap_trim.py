"""rl/engine.py HeapTrimmer: glibc's malloc_trim on a schedule (soak finding, docs/reliability-soak.md)."""

from __future__ import annotations

import platform

import pytest

from rl.engine import HeapTrimmer


def test_trims_every_n_calls_and_on_demand():
    trimmer = HeapTrimmer(every=3)
    calls = []
    trimmer._trim = lambda pad: calls.append(pad) or 1  # count the calls; the real one is exercised below
    for _ in range(7):
        trimmer.tick()
    assert calls == [0, 0], "calls 3 and 6"
    trimmer.tick(force=True)
    assert len(calls) == 3


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_real_trim_returns_freed_memory_to_the_os():
    import psutil

    trimmer = HeapTrimmer(every=1)
    assert trimmer._trim is not None
    rss = psutil.Process().memory_info().rss
    blocks = [bytearray(100_000) for _ in range(2000)]  # ~200 MB of heap (below glibc's mmap threshold)
    top = blocks.pop()  # stays alive at the top of the heap, so free() alone cannot shrink it
    blocks.clear()
    held = psutil.Process().memory_info().rss
    trimmer.tick()
    after = psutil.Process().memory_info().rss
    del top
    assert held - rss > 100e6, "the freed blocks are still resident before the trim"
    assert after < held - 100e6, (rss, held, after)
