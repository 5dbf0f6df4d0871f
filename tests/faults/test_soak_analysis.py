"""bench/soak.py's memory analysis on synthetic samples: a leak under spikes is caught, spikes over a flat floor
are not, one window that missed the floor does not fail a flat role, and the learner's own after-step RSS
series takes over its check when the run logged it."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

import soak  # noqa: E402

BOUND = soak.DEFAULT_SLOPE_MB_PER_H


def _rows(role: str, floor_at, minutes: float = 30, interval: float = 10, seed: int = 0) -> list[dict]:
    """One sample per interval: the floor plus, in 2 of 3 samples, a 0.5-2 GB step spike."""
    rng = random.Random(seed)
    out = []
    for i in range(int(minutes * 60 / interval)):
        t = i * interval
        spike = rng.uniform(500, 2000) if i % 3 else 0.0
        out.append({"t": t, "pid": 1, "role": role, "rss_mb": floor_at(t) + spike, "pss_mb": 1.0, "fds": 10})
    return out


def test_a_leak_under_spikes_fails_and_spikes_over_a_flat_floor_pass():
    leak = soak.analyse_memory(_rows("learner", lambda t: 900 + 200 * t / 3600), BOUND)["learner"]
    flat = soak.analyse_memory(_rows("learner", lambda t: 900.0), BOUND)["learner"]
    assert not leak["slope_ok"] and 150 < leak["slope_mb_per_h"] < 250, leak
    assert flat["slope_ok"] and abs(flat["slope_mb_per_h"]) < 1, flat
    assert abs(flat["raw_slope_mb_per_h"]) > abs(flat["slope_mb_per_h"]), "the raw slope follows the spikes"
    assert len(flat["floor_mb"]) == soak.FLOOR_WINDOWS


def test_one_window_without_a_low_sample_does_not_fail_a_flat_role():
    rows = _rows("learner", lambda t: 900.0)
    for r in rows:  # the 5th sixth of the run: every sample mid-step
        if 1200 <= r["t"] < 1500:
            r["rss_mb"] = max(r["rss_mb"], 1100.0)
    m = soak.analyse_memory(rows, BOUND)["learner"]
    assert 1100 in m["floor_mb"] and m["slope_ok"], m
    assert soak.theil_sen_per_hour([(0, 0), (1, 1), (2, 2), (3, 300), (4, 4)]) == 3600.0  # the outlier ignored


def test_the_learners_after_step_rss_replaces_its_process_floor(tmp_path):
    memory = soak.analyse_memory(_rows("learner", lambda t: 900.0), BOUND)
    metrics = tmp_path / "metrics.jsonl"
    steps = [{"step": s, "learner/elapsed_seconds": 6.0 * s, "learner/rss_mb_after_step": 900 + 0.5 * s}
             for s in range(1, 301)]  # +0.5 MB per 6 s step = +300 MB/h
    metrics.write_text("\n".join(json.dumps(r) for r in steps) + "\n{\"step\": 301, \"learn")  # a torn last line
    soak.learner_after_step(memory, metrics, BOUND)
    m = memory["learner"]
    assert m["slope_source"] == "learner/rss_mb_after_step" and not m["slope_ok"]
    assert abs(m["slope_mb_per_h"] - 300) < 1 and abs(m["process_floor_slope_mb_per_h"]) < 1, m
