"""A short soak (issue 10, item 7): bench/soak.py's machinery on ~1 minute of the real training job (its own
Ray, in a subprocess) with the environments that make temporary state: sandboxed code, tools' in-memory SQLite
episodes, math's verify pool. The 30-minute figures are in docs/reliability-soak.md (`python bench/soak.py`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

import soak  # noqa: E402

pytestmark = pytest.mark.slow

ENVS = ("math", "code", "tools")


def test_short_soak_collects_every_role_and_leaks_nothing(tmp_path, tiny_policy_dir):
    s = soak.run_soak(0.9, envs=",".join(ENVS), out=tmp_path / "soak", interval=2.0, stop_timeout=60, min_steps=2,
                      log=print,
                      overrides=[f"model.path={tiny_policy_dir}", "run.prompts_per_step=6",
                                 "run.samples_per_prompt=2", "rollout.max_new_tokens=32", "run.checkpoint_every=2",
                                 "envs.tools.options.max_new_tokens=16", "learner.micro_batch_size=8"])
    print(soak.markdown(s))
    assert s["checks"]["run_ok"], f"the job failed or ignored SIGINT/SIGTERM: {s['stop']}\n{s['log_tail']}"
    assert s["throughput"]["steps"] >= 2, "fewer than 2 training steps: nothing was soaked"
    roles = s["memory"]
    for role in ("driver", "rollout_worker", "learner", "ray_system", *(f"env:{e}" for e in ENVS),
                 "env:math/child", "env:code/child"):  # the verify pools (the code env's sandboxes start there)
        assert role in roles and roles[role]["samples_total"] >= 5, (role, sorted(roles))
        assert roles[role]["peak_rss_mb"] > 1
    rows = [json.loads(line) for line in (tmp_path / "soak" / "samples.jsonl").read_text().splitlines()]
    assert {"rss_mb", "pss_mb", "fds"} <= set(rows[0]), "samples carry RSS, PSS and open fds"
    leaks = s["leaks"]
    assert leaks["tmp_entries"] == [], leaks["tmp_entries"]
    assert leaks["sandbox_dirs"] == [] and leaks["sqlite_files"] == [] and leaks["checkpoint_tmp"] == []
    assert leaks["processes_alive_after_exit"] == [], leaks["processes_alive_after_exit"]
    assert s["checks"]["vllm_file_stores_bounded"], (leaks["vllm_file_store"], s["vllm_engines_started"])
    # fds: a short run only catches fast leaks (one descriptor per request or per episode would show here)
    for role in ("driver", *(f"env:{e}" for e in ENVS)):
        assert roles[role]["fds_ok"], (role, roles[role])
    tools = s["sessions"]["tools"]
    assert tools["server_sessions_max"] is not None and tools["ok"], tools
