"""rl/train.py with the multi-turn tools environment next to math: a few real steps end to end (issue 5).

The issue asks for `--envs math,code,tools`; the code environment is not registered in this checkout yet, so
this runs `--envs math,tools` (the same run() that rl/train.py calls, on the session's local Ray).
"""

from __future__ import annotations

import pytest

from rl.config import build_config
from rl.metrics import read_jsonl
from rl.train import run

pytestmark = pytest.mark.slow


def test_math_and_tools_train_two_steps(ray_session, tmp_path, tiny_policy_dir):
    cfg = build_config(envs="math,tools", overrides=[
        f"model.path={tiny_policy_dir}", f"run.output_dir={tmp_path}", "run.name=run",
        "run.steps=2", "run.prompts_per_step=4", "run.samples_per_prompt=2", "run.checkpoint_every=0",
        "rollout.max_new_tokens=16", "learner.micro_batch_size=8", "eval.tasks_per_env=0",
        "envs.math.options.num_tasks=60", "envs.tools.options.num_tasks=60",
        # short turns: the random policy's turns end at the limit and go to /step, so episodes have tool turns
        "envs.tools.options.max_new_tokens=16", "loss.overlong_filter=false",
    ])
    summary = run(cfg)
    assert summary["steps"] == 2
    rows = [r for r in read_jsonl(cfg.run_dir / "metrics.jsonl") if "learner/pg_loss" in r]
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        assert 0 <= r["env/tools/reward"] <= 1 and 0 <= r["env/math/reward"] <= 1
        assert r["env/tools/verify_errors"] == 0, "every tool episode was found and judged by its database"
        assert r["learner/valid_tokens"] > 0
    assert (cfg.run_dir / "final" / "model.safetensors").is_file()
