"""curricula.profile on the echo environment: the tiny policy through the real rollout worker (the session's
in-process vLLM engine) and the real environment server's /verify; resumable file; the sampler loads it."""

from __future__ import annotations

import asyncio
import json
import subprocess

import pytest

from curricula.base import build_sampler
from curricula.profile import load_profile, profile
from curricula.split import is_heldout
from rl.config import build_config

pytestmark = pytest.mark.slow  # the session's vLLM engine (shared with tests/rl) plus three server start-ups


def _cfg(tmp_path, tiny_policy_dir, *extra):
    return build_config(envs="echo", overrides=[
        f"model.path={tiny_policy_dir}", f"run.output_dir={tmp_path}", "run.name=run", "rollout.max_new_tokens=16",
        "envs.echo.options.num_tasks=15", "envs.echo.options.partial_credit=true", *extra])


def test_profile_is_resumable_and_feeds_the_sampler(tmp_path, tiny_policy_dir, rollout_worker):
    cfg = _cfg(tmp_path, tiny_policy_dir, "curriculum.kind=pass_rate_gaussian")
    out = cfg.run_dir / "profile.jsonl"
    train_ids = sorted(f"echo-{i}" for i in range(15) if not is_heldout("echo", f"echo-{i}"))
    logs: list[str] = []

    first = asyncio.run(profile(cfg, 4, out, batch=4, max_tasks=5, worker=rollout_worker, log=logs.append))
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    header = rows[0]["header"]
    assert header["samples"] == 4 and header["max_new_tokens"] == 64  # the generating worker's setting, not cfg's
    assert [r["task_id"] for r in rows[1:]] == train_ids[:5]  # held-out tasks are never profiled
    for r in rows[1:]:
        assert r["samples"] == 4 and 0 <= r["passes"] <= 4 and r["pass_rate"] == r["passes"] / 4
        assert 0 <= r["mean_reward"] <= 1 and r["mean_reward"] >= r["pass_rate"]  # partial credit >= exact passes
    assert first["echo"]["profiled"] == 5

    with open(out, "a") as fh:
        fh.write('{"env": "echo", "task_id": "echo-9')  # a kill mid-write
    asyncio.run(profile(cfg, 4, out, batch=4, worker=rollout_worker, log=logs.append))
    assert any("resuming" in m and "5 tasks already profiled" in m for m in logs)
    assert any(f"{len(train_ids) - 5} tasks to profile" in m for m in logs), logs
    ids = [json.loads(line).get("task_id") for line in out.read_text().splitlines()[1:]]
    assert sorted(ids) == train_ids, "every training task exactly once, the first five not redone"

    with pytest.raises(ValueError, match="other settings.*samples 4 -> 2"):
        asyncio.run(profile(cfg, 2, out, worker=rollout_worker, log=logs.append))

    prof = load_profile(out)
    unsolved = sum(p == 0 for p, _ in prof["echo"].values())
    solved = sum(p == n for p, n in prof["echo"].values())
    sampler = build_sampler(cfg.curriculum, {"echo": train_ids}, seed=0, total_steps=5, run_dir=cfg.run_dir,
                            log=logs.append)
    assert sampler.removed["echo"] == {"solved": solved, "unsolved": 0}  # remove_unsolved is off by default
    assert len(sampler.ids["echo"]) == len(train_ids) - solved and unsolved <= len(sampler.ids["echo"])
    for tid in sampler.ids["echo"]:
        p, n = prof["echo"][tid]
        assert sampler.estimate("echo", tid) == pytest.approx((1 + p) / (2 + n))


def test_profile_cli_rejects_bad_arguments(tmp_path, python, repo, clean_env):
    r = subprocess.run([python, "-m", "curricula.profile", "--envs", "echo", "--samples", "0"], cwd=repo,
                       env=clean_env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--samples and --batch must be >= 1" in r.stderr
    r = subprocess.run([python, "-m", "curricula.profile", "--envs", "echo", f"model.path={tmp_path / 'nothing'}"],
                       cwd=repo, env=clean_env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "no policy at" in r.stderr
