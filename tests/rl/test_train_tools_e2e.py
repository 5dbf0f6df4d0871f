"""rl/train.py --envs math,code,tools: a few real steps end to end (issue 5), through the same run() that
rl/train.py calls, on the session's local Ray: single-turn math, sandboxed code and the multi-turn tools env.
"""

from __future__ import annotations

import pytest

from rl.config import build_config
from rl.metrics import read_jsonl
from rl.train import run

pytestmark = pytest.mark.slow


def test_math_code_and_tools_train_two_steps(ray_session, tmp_path, tiny_policy_dir):
    cfg = build_config(envs="math,code,tools", overrides=[
        f"model.path={tiny_policy_dir}", f"run.output_dir={tmp_path}", "run.name=run",
        "run.steps=2", "run.prompts_per_step=6", "run.samples_per_prompt=2", "run.checkpoint_every=0",
        "rollout.max_new_tokens=16", "learner.micro_batch_size=8", "eval.tasks_per_env=0",
        "envs.math.options.num_tasks=60", "envs.tools.options.num_tasks=60", "envs.code.options.num_tasks=60",
        # short turns: the random policy's turns end at the limit and go to /step, so episodes have tool turns
        "envs.tools.options.max_new_tokens=16", "loss.overlong_filter=false",
    ])
    summary = run(cfg)
    assert summary["steps"] == 2
    rows = [r for r in read_jsonl(cfg.run_dir / "metrics.jsonl") if "learner/pg_loss" in r]
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        assert 0 <= r["env/tools/reward"] <= 1 and 0 <= r["env/math/reward"] <= 1 and 0 <= r["env/code/reward"] <= 1
        assert r["env/tools/verify_errors"] == 0, "every tool episode was found and judged by its database"
        assert r["env/code/verify_errors"] == 0, "every program ran in the sandbox and got a verdict"
        assert r["learner/valid_tokens"] > 0
    assert (cfg.run_dir / "final" / "model.safetensors").is_file()
