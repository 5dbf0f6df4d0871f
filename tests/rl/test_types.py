import pickle

import pytest
from pydantic import ValidationError

from rl.types import WIRE_VERSION, Message, Sample, ScoredGroup, Task, TrainBatch, Turn, Verdict


def _task(tid="t1"):
    return Task(env="math", task_id=tid, prompt=(Message(role="user", content="1+1?"),), difficulty="easy", meta={"max_turns": 1})


def _sample(i=0, version=3, tid="t1"):
    return Sample(
        env="math", task_id=tid, sample_index=i, prompt_ids=(4, 20, 21), response_ids=(30, 31, 1),
        logprobs=(-0.5, -1.25, -0.01), loss_mask=(1, 0, 1), response_text="2", policy_version=version,
        finish_reason="stop", turns=(Turn(role="assistant", start=0, end=1, text="2"), Turn(role="tool", start=1, end=2)),
    )


def _group(rewards=(1.0, 0.0), version=3, tid="t1"):
    return ScoredGroup(
        task=_task(tid),
        samples=tuple(_sample(i, version, tid) for i in range(len(rewards))),
        verdicts=tuple(Verdict(reward=r, components={"correct": r}, reason="ok") for r in rewards),
    )


def _all_objects():
    batch = TrainBatch(step=5, policy_version=4, groups=(_group(), _group((1.0, 1.0), version=4, tid="t2")))
    return [_task(), _sample(), Verdict(reward=0.5, components={"a": 0.5}), Verdict.error("server down"), _group(), batch]


@pytest.mark.parametrize("obj", _all_objects(), ids=lambda o: type(o).__name__)
def test_json_round_trip(obj):
    again = type(obj).from_json(obj.to_json())
    assert again == obj
    assert again.wire_version == WIRE_VERSION


@pytest.mark.parametrize("obj", _all_objects(), ids=lambda o: type(o).__name__)
def test_pickle_round_trip_as_ray_does(obj):
    assert pickle.loads(pickle.dumps(obj)) == obj


def test_wire_types_are_frozen():
    t = _task()
    with pytest.raises(ValidationError):
        t.task_id = "other"


def test_newer_wire_version_is_rejected_with_a_named_reason():
    data = _task().model_dump()
    data["wire_version"] = WIRE_VERSION + 1
    with pytest.raises(ValidationError, match="Task has wire_version"):
        Task.model_validate(data)


def test_unknown_field_is_rejected():
    data = _task().model_dump()
    data["reference"] = "42"  # references never leave the environment server
    with pytest.raises(ValidationError, match="reference"):
        Task.model_validate(data)


def test_sample_lengths_must_align():
    with pytest.raises(ValidationError, match="same length"):
        Sample(env="m", task_id="t", sample_index=0, prompt_ids=(1,), response_ids=(1, 2), logprobs=(-1.0,),
               loss_mask=(1, 1), policy_version=0, finish_reason="stop")


def test_sample_rejects_positive_or_nan_logprobs():
    for bad in (0.5, float("nan")):
        with pytest.raises(ValidationError, match="log-probabilities"):
            Sample(env="m", task_id="t", sample_index=0, prompt_ids=(1,), response_ids=(1,), logprobs=(bad,),
                   loss_mask=(1,), policy_version=0, finish_reason="stop")


def test_turn_past_the_response_is_rejected():
    with pytest.raises(ValidationError, match="runs past"):
        Sample(env="m", task_id="t", sample_index=0, prompt_ids=(1,), response_ids=(1,), logprobs=(-1.0,),
               loss_mask=(1,), policy_version=0, finish_reason="stop", turns=(Turn(role="assistant", start=0, end=3),))


def test_verdict_never_silent():
    with pytest.raises(ValidationError):
        Verdict(reward=None)
    with pytest.raises(ValidationError, match="finite"):
        Verdict(reward=float("inf"))
    err = Verdict.error("timeout after 30s")
    assert err.status == "error" and err.reward == 0.0 and "timeout" in err.reason


def test_group_consistency_and_zero_signal():
    assert not _group((1.0, 0.0)).zero_signal
    assert _group((0.0, 0.0)).zero_signal
    with pytest.raises(ValidationError, match="2 samples but 1 verdicts"):
        ScoredGroup(task=_task(), samples=(_sample(0), _sample(1)), verdicts=(Verdict(reward=1.0),))
    with pytest.raises(ValidationError, match="in the group of"):
        ScoredGroup(task=_task("t1"), samples=(_sample(0, tid="t9"),), verdicts=(Verdict(reward=1.0),))


def test_batch_staleness_and_counts():
    batch = TrainBatch(step=5, policy_version=4, groups=(_group(version=3), _group(version=4, tid="t2")))
    assert batch.staleness() == [1, 1, 0, 0]
    assert len(batch.samples) == 4 and batch.num_tokens == 4 * 6
