"""Orchestrator logic without actors: staleness bound, zero-signal accounting, prompt split, sampler position."""

from types import SimpleNamespace

import pytest

from curricula.base import split_prompts
from curricula.uniform import UniformSampler
from rl.config import build_config
from rl.orchestrator import Orchestrator, RolloutBatch, Roles
from rl.types import Message, Sample, ScoredGroup, Task, Verdict


def _group(tid, version, rewards):
    task = Task(env="echo", task_id=tid, prompt=(Message(role="user", content="x"),), difficulty="easy")
    samples = tuple(Sample(env="echo", task_id=tid, sample_index=i, prompt_ids=(1,), response_ids=(2,), logprobs=(-1.0,),
                           loss_mask=(1,), policy_version=version, finish_reason="stop") for i in range(len(rewards)))
    return ScoredGroup(task=task, samples=samples, verdicts=tuple(Verdict(reward=r) for r in rewards))


def _orch(tmp_path, *overrides):
    cfg = build_config(envs="echo", overrides=[f"run.output_dir={tmp_path}", *overrides])
    return Orchestrator(cfg, Roles(rollout=[], learners=[], clients={}), tmp_path / "run", log=lambda m: None)


@pytest.mark.parametrize("max_staleness, kept", [(0, ["fresh"]), (1, ["fresh", "one"]), (2, ["fresh", "one", "two"])])
def test_staleness_bound_drops_and_counts_old_groups(tmp_path, max_staleness, kept):
    orch = _orch(tmp_path, f"run.max_staleness={max_staleness}")
    orch.version = 5
    groups = [_group("fresh", 5, [1, 0]), _group("one", 4, [1, 0]), _group("two", 3, [1, 0])]
    batch = RolloutBatch(step=0, tasks=[g.task for g in groups], groups=groups, tokens=0, seconds=1, submitted_at=0,
                         verify_errors=0)
    out = orch.accept(batch)
    assert [g.task.task_id for g in out] == kept
    assert orch.counters["stale_groups_dropped"] == 3 - len(kept)


@pytest.mark.parametrize("drop, expected", [(False, 2), (True, 1)])
def test_zero_signal_groups_are_counted_and_optionally_dropped(tmp_path, drop, expected):
    orch = _orch(tmp_path, f"loss.drop_zero_signal={str(drop).lower()}")
    groups = [_group("a", 0, [1, 1]), _group("b", 0, [1, 0])]
    batch = RolloutBatch(0, [g.task for g in groups], groups, 0, 1.0, 0.0, 0)
    assert len(orch.accept(batch)) == expected
    assert orch.counters["zero_signal_groups"] == 1


def test_learner_shards_have_equal_micro_batch_counts(tmp_path):
    orch = _orch(tmp_path, "learner.micro_batch_size=3")
    orch.roles.learners = [SimpleNamespace(), SimpleNamespace()]
    groups = [_group(f"t{i}", 0, [1, 0, 0]) for i in range(3)]  # 9 samples -> shards of 5 and 4
    shards, n = orch.build_shards(groups)
    assert n == 9 and len(shards) == 2
    assert [s["num_micro"] for s in shards] == [2, 2]
    assert [len(s["advantages"]) for s in shards] == [5, 4]


def test_learner_batch_mixes_environments_and_keeps_groups_whole(tmp_path):
    """Groups arrive env by env; cut as they came, mini-batch 1 of learner.mini_batches=2 would be all one env."""
    orch = _orch(tmp_path, "learner.micro_batch_size=2")
    orch.roles.learners = [SimpleNamespace()]
    groups = []
    for env_token, env in ((2, "a"), (3, "b")):
        for i in range(8):
            g = _group(f"{env}{i}", 0, [1, 0])
            groups.append(g.model_copy(update={"samples": tuple(s.model_copy(update={"response_ids": (env_token,)})
                                                                for s in g.samples)}))
    (shard,), n = orch.build_shards(groups)
    tokens = shard["input_ids"][:, 1].tolist()  # prompt (1,) then the one response token
    assert n == 32 and sorted(tokens) == [2] * 16 + [3] * 16
    assert tokens[0::2] == tokens[1::2]  # a group's samples stay next to each other (shared prompt)
    assert {2, 3} <= set(tokens[:16]) and {2, 3} <= set(tokens[16:])  # both halves mix the environments
    again, _ = orch.build_shards(groups)
    assert again[0]["input_ids"].tolist() == shard["input_ids"].tolist()  # seeded by run seed and step
    orch.step = 1
    assert orch.build_shards(groups)[0][0]["input_ids"][:, 1].tolist() != tokens


def test_split_prompts_follows_weights():
    assert split_prompts(16, {"a": 1, "b": 1}) == {"a": 8, "b": 8}
    assert split_prompts(10, {"a": 3, "b": 1}) == {"a": 8, "b": 2}
    assert sum(split_prompts(7, {"a": 1, "b": 1, "c": 1}).values()) == 7


def test_uniform_sampler_passes_without_replacement_and_resumes_exactly():
    s = UniformSampler({"m": [f"t{i}" for i in range(10)]}, seed=3)
    first = s.sample("m", 10)
    assert sorted(first) == [f"t{i}" for i in range(10)]  # one pass = every task once
    s.sample("m", 4)
    state = s.state_dict()
    expected = s.sample("m", 9)
    again = UniformSampler({"m": [f"t{i}" for i in range(10)]}, seed=3)
    again.load_state_dict(state)
    assert again.sample("m", 9) == expected
    with pytest.raises(ValueError, match="empty pool"):
        UniformSampler({"m": []})
    with pytest.raises(ValueError, match="does not match"):
        UniformSampler({"m": ["a"]}, seed=4).load_state_dict(state)
