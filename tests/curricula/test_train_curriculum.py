"""rl/train.py's run with the pass-rate Gaussian on the session's local Ray (echo, tiny policy): curriculum
metrics in metrics.jsonl and TensorBoard, the sampler state in the checkpoint, and a resume from a mid-run
checkpoint that draws exactly the batches of the uninterrupted run."""

from __future__ import annotations

import json
import shutil

import pytest

from curricula.split import is_heldout
from rl.config import build_config
from rl.metrics import read_jsonl
from rl.train import run

pytestmark = pytest.mark.slow


def _cfg(out, tiny_policy_dir):
    return build_config(envs="echo", overrides=[
        f"model.path={tiny_policy_dir}", f"run.output_dir={out}", "run.name=run", "run.steps=3",
        "run.prompts_per_step=4", "run.samples_per_prompt=4", "run.checkpoint_every=1", "rollout.max_new_tokens=16",
        "learner.micro_batch_size=8", "eval.tasks_per_env=0", "envs.echo.options.num_tasks=60",
        "envs.echo.options.partial_credit=true", "loss.overlong_filter=false",
        "curriculum.kind=pass_rate_gaussian", "curriculum.sigma=0.1"])


def test_train_with_the_curriculum_logs_checkpoints_and_resumes_identically(ray_session, tmp_path, tiny_policy_dir):
    cfg = _cfg(tmp_path / "a", tiny_policy_dir)
    cfg.run_dir.mkdir(parents=True)
    train = sorted(f"echo-{i}" for i in range(60) if not is_heldout("echo", f"echo-{i}"))
    rows = [{"header": {"samples": 8, "seed": 0}}] + [
        {"env": "echo", "task_id": t, "samples": 8, "passes": 8 if i % 10 == 0 else i % 8} for i, t in enumerate(train)]
    (cfg.run_dir / "profile.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    run(cfg)

    cur = [r for r in read_jsonl(cfg.run_dir / "metrics.jsonl") if "curriculum/echo/mu" in r]
    assert [r["step"] for r in cur] == [1, 2, 3]
    assert [round(r["curriculum/echo/mu"], 6) for r in cur] == [0.8, 0.5, 0.2]  # batches of steps 0, 1, 2 of 3
    assert all(r["curriculum/echo/removed_solved"] == len(train[::10]) for r in cur)
    assert cur[0]["curriculum/echo/drawn_mean"] > cur[-1]["curriculum/echo/drawn_mean"] + 0.2, "easy first, then hard"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(cfg.run_dir / "tensorboard"), size_guidance={"histograms": 0})
    events.Reload()
    assert {"curriculum/echo/target", "curriculum/echo/drawn", "curriculum/echo/observed"} <= set(events.Tags()["histograms"])
    ckpt = cfg.run_dir / "checkpoints" / "step_000001"
    state = json.loads((ckpt / "orchestrator.json").read_text())["sampler"]
    assert state["kind"] == "pass_rate_gaussian" and state["draws"]["echo"] == 2  # steps 0 and 1 drawn (staleness 1)

    # the same run, resumed from its step-1 checkpoint in a copy of the run directory
    resumed = _cfg(tmp_path / "b", tiny_policy_dir)
    shutil.copytree(cfg.run_dir, resumed.run_dir)
    (resumed.run_dir / "checkpoints" / "latest").write_text("step_000001")
    batches = resumed.run_dir / "batches.jsonl"
    batches.write_text("".join(line + "\n" for line in batches.read_text().splitlines()[:1]))
    assert run(resumed, resume=True)["steps"] == 3

    def by_step(run_dir):
        return {r["step"]: r["tasks"] for r in read_jsonl(run_dir / "batches.jsonl")}

    assert by_step(resumed.run_dir) == by_step(cfg.run_dir), "identical task draws after the resume"
