"""The orchestrator with the pass-rate Gaussian: built from config in load_tasks (real echo server), draws move
with the step, verified groups feed the estimates, state through JSON resumes with identical draws."""

from __future__ import annotations

import asyncio
import hashlib
import json

import pytest

from curricula.pass_rate_gaussian import PassRateGaussianSampler
from curricula.split import is_heldout
from curricula.uniform import UniformSampler
from environments.client import EnvClient
from environments.serve import start_local
from rl.config import build_config
from rl.metrics import read_jsonl
from rl.orchestrator import Orchestrator, RolloutBatch, Roles
from rl.types import Sample, ScoredGroup, Verdict

NUM_TASKS = 90


@pytest.fixture(scope="module")
def echo_url():
    server = start_local("echo", options={"num_tasks": NUM_TASKS}, seed=0)
    yield server.url
    server.stop()


def _orch(tmp_path, url, *overrides) -> Orchestrator:
    cfg = build_config(envs="echo", overrides=[f"run.output_dir={tmp_path}", "run.name=run", "run.steps=10",
                                               "run.prompts_per_step=8", f"envs.echo.options.num_tasks={NUM_TASKS}",
                                               *overrides])
    orch = Orchestrator(cfg, Roles(rollout=[], learners=[], clients={"echo": EnvClient("echo", url)}), cfg.run_dir,
                        log=lambda m: None)
    asyncio.run(orch.load_tasks())
    return orch


def _rewards(task_id: str, step: int, g: int = 4) -> list[float]:
    h = hashlib.sha256(f"{task_id}/{step}".encode()).digest()
    return [float(b % 3 == 0) for b in h[:g]]


def _step(orch: Orchestrator, step: int) -> list[str]:
    """One step as the loop does it: draw for `step`, verified groups back through accept()."""
    tasks = orch.draw(step)
    groups = []
    for t in tasks:
        rewards = _rewards(t.task_id, step)
        samples = tuple(Sample(env=t.env, task_id=t.task_id, sample_index=i, prompt_ids=(1,), response_ids=(2,),
                               logprobs=(-1.0,), loss_mask=(1,), policy_version=0, finish_reason="stop")
                        for i in range(len(rewards)))
        verdicts = tuple(Verdict(reward=r) for r in rewards[:-1]) + (Verdict(reward=1.0, status="error"),)
        groups.append(ScoredGroup(task=t, samples=samples, verdicts=verdicts))
    orch.accept(RolloutBatch(step, tasks, groups, 0, 1.0, 0.0, 1))
    return [t.key for t in tasks]


def _write_profile(run_dir, train_ids):
    """Pass rates spread over [0, 1] by id; every 9th task always solved."""
    run_dir.mkdir(parents=True, exist_ok=True)
    rows = [{"header": {"samples": 8}}]
    for i, tid in enumerate(train_ids):
        passes = 8 if i % 9 == 0 else i % 8
        rows.append({"env": "echo", "task_id": tid, "samples": 8, "passes": passes})
    (run_dir / "profile.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")


def test_default_config_keeps_the_uniform_sampler(tmp_path, echo_url):
    orch = _orch(tmp_path, echo_url)
    assert isinstance(orch.sampler, UniformSampler)
    assert len({t.key for t in orch.draw(0)}) == 8  # one shuffled pass: no repeats


def test_curriculum_in_the_orchestrator_follows_mu_feeds_back_and_resumes(tmp_path, echo_url):
    train_ids = sorted(f"echo-{i}" for i in range(NUM_TASKS) if not is_heldout("echo", f"echo-{i}"))
    run_dir = tmp_path / "run"
    _write_profile(run_dir, train_ids)
    a = _orch(tmp_path, echo_url, "curriculum.kind=pass_rate_gaussian", "curriculum.sigma=0.1")
    s = a.sampler
    assert isinstance(s, PassRateGaussianSampler)
    solved = sum(1 for i in range(len(train_ids)) if i % 9 == 0)
    assert s.removed["echo"]["solved"] == solved and len(s.ids["echo"]) == len(train_ids) - solved

    est0 = {t: s.estimate("echo", t) for t in s.ids["echo"]}
    first = [k.split("/", 1)[1] for k in _step(a, 0)]
    assert s.draws["echo"] == 1
    touched = set(first)
    changed = {t for t in s.ids["echo"] if s.estimate("echo", t) != est0[t]}
    assert changed == touched, "exactly the drawn tasks' estimates moved"
    # the discounted Beta update with 3 of the 4 verdicts (the error verdict is no evidence about the policy)
    once = [t for t in first if first.count(t) == 1]
    t, i = once[0], s.index["echo"][once[0]]
    prior_passes = train_ids.index(t) % 8
    passes = sum(_rewards(t, 0)[:3])
    assert s.alpha["echo"][i] == pytest.approx(1 + 0.5 * prior_passes + passes)
    assert s.beta["echo"][i] == pytest.approx(1 + 0.5 * (8 - prior_passes) + 3 - passes)

    for step in range(1, 4):
        _step(a, step)
    state = json.loads(json.dumps(a.sampler.state_dict()))  # what orchestrator.json holds
    expected = [_step(a, step) for step in range(4, 10)]
    b = _orch(tmp_path, echo_url, "curriculum.kind=pass_rate_gaussian", "curriculum.sigma=0.1")
    b.sampler.load_state_dict(state)
    assert [_step(b, step) for step in range(4, 10)] == expected

    # the target moves from easy (0.8) to hard (0.2): the drawn tasks' estimates follow
    scalars, hists = a.sampler.metrics(9)
    assert scalars["curriculum/echo/mu"] == pytest.approx(0.2)
    fresh = _orch(tmp_path, echo_url, "curriculum.kind=pass_rate_gaussian", "curriculum.sigma=0.1")
    early = [fresh.sampler.estimate("echo", t.task_id) for t in fresh.draw(0)]
    late = [fresh.sampler.estimate("echo", t.task_id) for t in fresh.draw(9)]
    assert sum(early) / len(early) > sum(late) / len(late) + 0.2

    a.metrics.log(10, scalars, hists)
    a.metrics.close()
    row = [r for r in read_jsonl(run_dir / "metrics.jsonl") if "curriculum/echo/mu" in r][-1]
    assert row["curriculum/echo/removed_solved"] == solved and row["curriculum/echo/pool_size"] == len(s.ids["echo"])
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))


def test_env_difficulties_restrict_the_training_pool_not_the_evaluation(tmp_path, echo_url):
    full = _orch(tmp_path / "full", echo_url)
    orch = _orch(tmp_path / "easy", echo_url, "envs.echo.difficulties=[easy]")
    drawn = [t for s in range(5) for t in orch.draw(s)]
    assert drawn and {t.difficulty for t in drawn} == {"easy"}
    assert {t.difficulty for s in range(5) for t in full.draw(s)} > {"easy"}, "without the filter: every level"
    assert [t.task_id for t in orch.heldout["echo"]] == [t.task_id for t in full.heldout["echo"]]
    with pytest.raises(ValueError, match=r"envs.echo.difficulties: \['medum'\] not among echo's levels"):
        _orch(tmp_path / "typo", echo_url, "envs.echo.difficulties=[easy,medum]")


def test_training_tasks_is_the_one_filter_of_the_orchestrator_and_the_profiler():
    from types import SimpleNamespace

    from curricula.split import training_tasks

    tasks = [SimpleNamespace(task_id=f"t-{i}", difficulty=("easy", "hard")[i % 2]) for i in range(40)]
    easy = training_tasks("echo", tasks, ["easy"], ("easy", "medium", "hard"))
    assert easy and [t.task_id for t in easy] == sorted(t.task_id for t in tasks
                                                        if t.difficulty == "easy" and not is_heldout("echo", t.task_id))
    with pytest.raises(ValueError, match=r"envs.echo.difficulties: no training task at levels \['medium'\]"):
        training_tasks("echo", tasks, ["medium"], ("easy", "medium", "hard"))
    assert training_tasks("echo", [], None, ("easy",)) == [], "no filter: an empty pool is the sampler's error"
