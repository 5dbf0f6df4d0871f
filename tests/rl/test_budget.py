"""Thinking budget in rollouts (issue 8, Nemotron 3 budget control): thinking cut at the budget, `</think>`
appended as non-policy tokens, the answer generated after it and verified."""

from __future__ import annotations

import pytest
import torch

from rl.rollout import THINK_CLOSE, THINK_OPEN, RolloutConfig
from rl.types import Message, Task

pytestmark = pytest.mark.slow

BUDGET, MAX_NEW = 12, 48


def _answer(text: str) -> str:
    """The answer part of a response: what follows the last `</think>` (the whole text if none)."""
    return text.rsplit(THINK_CLOSE, 1)[-1]


def test_budget_truncates_thinking_and_the_answer_is_verified(rollout_worker, tiny_policy_dir):
    from environments.echo import EchoEnvironment

    env = EchoEnvironment(options={"num_tasks": 3, "partial_credit": True}, seed=0)
    records = env.load_tasks()
    # the random tiny policy never writes <think> by itself: the prompt opens it, as thinking chat templates do
    tasks = [r.task.model_copy(update={"meta": {"thinking_budget": BUDGET, "assistant_prefix": THINK_OPEN,
                                                "max_new_tokens": MAX_NEW}}) for r in records]
    res = rollout_worker.generate(tasks, n=8)
    close = rollout_worker.tokenizer(THINK_CLOSE, add_special_tokens=False)["input_ids"]
    think_open = rollout_worker.tokenizer(THINK_OPEN, add_special_tokens=False)["input_ids"]
    assert rollout_worker.prompt_ids(tasks[0])[-len(think_open):] == think_open
    truncated = 0
    for record, group in zip(records, res["groups"]):
        for s in group:
            assert len(s.response_ids) <= MAX_NEW and len(s.logprobs) == len(s.loss_mask) == len(s.response_ids)
            masked = [i for i, m in enumerate(s.loss_mask) if m == 0]
            if not masked:
                # ended (<eos>) before reaching the budget: nothing appended
                assert len(s.response_ids) < BUDGET and s.finish_reason == "stop", s
                continue
            truncated += 1
            # exactly BUDGET thinking tokens, then the appended </think>: not policy samples
            assert masked == list(range(BUDGET, BUDGET + len(close)))
            assert list(s.response_ids[BUDGET : BUDGET + len(close)]) == close
            assert all(s.logprobs[i] == 0.0 for i in masked)
            assert all(lp < 0 for lp in s.logprobs[: BUDGET]), "thinking tokens are policy samples"
            assert THINK_CLOSE in s.response_text
            # the answer was generated after </think> (at least one policy token, or cut by the length limit)
            assert len(s.response_ids) > BUDGET + len(close) or s.finish_reason == "length"
            verdict = env.verify(record, _answer(s.response_text))
            assert verdict.reason and 0.0 <= verdict.reward <= 1.0
            direct = env.verify(record, record.reference)
            assert direct.reward == 1.0  # the verifier itself works on an answer
    assert res["thinking_truncated"] == truncated
    assert truncated >= 12, f"only {truncated} of 24 samples reached the budget"


def test_answer_logprobs_after_appended_close_are_the_policy_s(rollout_worker, tiny_policy_dir):
    """Pass 2 continues from prompt + thinking + </think>: its logprobs are the target model's given that prefix."""
    from transformers import AutoModelForCausalLM

    task = Task(env="echo", task_id="b0", prompt=(Message(role="user", content="Repeat: abc"),), difficulty="easy",
                meta={"thinking_budget": 6, "assistant_prefix": THINK_OPEN, "max_new_tokens": 24})
    samples = [s for s in rollout_worker.generate([task], n=6)["groups"][0] if 0 in s.loss_mask]
    assert samples, "no sample reached the 6-token budget"
    model = AutoModelForCausalLM.from_pretrained(tiny_policy_dir, dtype=torch.float32).eval()
    worst = 0.0
    for s in samples:
        ids = torch.tensor([s.prompt_ids + s.response_ids])  # [1, P+R]
        with torch.no_grad():
            logits = model(ids).logits[0, len(s.prompt_ids) - 1 : -1]  # [R, V]
        hf = torch.log_softmax(logits, -1).gather(-1, torch.tensor(s.response_ids)[:, None])[:, 0]  # [R]
        keep = torch.tensor(s.loss_mask, dtype=torch.bool)  # [R]
        worst = max(worst, float((hf[keep] - torch.tensor(s.logprobs)[keep]).abs().max()))
    assert worst < 1e-4


def test_budget_resolution_config_overrides_task_meta():
    from rl.rollout import RolloutWorker

    worker = RolloutWorker.__new__(RolloutWorker)  # the resolution rule only, no engine
    worker.cfg = RolloutConfig(thinking_budget={"math": 64})
    t = lambda env, meta: Task(env=env, task_id="x", prompt=(Message(role="user", content="q"),),  # noqa: E731
                               difficulty="easy", meta=meta)
    assert worker.thinking_budget(t("math", {"thinking_budget": 8})) == 64
    assert worker.thinking_budget(t("echo", {"thinking_budget": 8})) == 8
    assert worker.thinking_budget(t("echo", {})) == 0
