"""GenRMService: cohort assembly (out-of-order, partial, timeout), cross-group batching, retries, metrics.

The judge here is a scripted stand-in that writes judge-format text from a rule (or garbage, or raises): it
injects the faults and pins the outputs these tests need. The real judge engine is exercised end to end in
test_roundtrip.py.
"""

from __future__ import annotations

import asyncio
import re

import pytest

from genrm.judge import format_judgement
from genrm.service import CohortConflict, GenRMConfig, GenRMService
from genrm.wire import LengthControlParams, ScoreItem, ScoreRequest

OFF = LengthControlParams(enabled=False)


class ScriptedJudge:
    """Scores a response 5 if it contains 'good', else 1; `script` replaces outputs per call for fault injection."""

    def __init__(self, script=None):
        self.calls: list[tuple[int, float]] = []  # (prompts, temperature) per generate call
        self.script = list(script or [])

    def generate(self, prompts, temperature):
        self.calls.append((len(prompts), temperature))
        if self.script:
            action = self.script.pop(0)
            if isinstance(action, Exception):
                raise action
            if action is not None:
                return [action] * len(prompts)
        out = []
        for p in prompts:
            a, b = re.search(r"\nA: (.*)\nB: (.*)$", p, re.S).groups()
            sa, sb = (5 if "good" in a else 1), (5 if "good" in b else 1)
            out.append(format_judgement("rule.", sa, sb, "A" if sa > sb else "B" if sb > sa else "tie"))
        return out


def item(i, text="good", think=0, answer=None):
    return ScoreItem(index=i, response=text, think_tokens=think, answer_tokens=len(text) if answer is None else answer)


def req(cid, size, items, lc=OFF, prompt="Say something."):
    return ScoreRequest(cohort_id=cid, group_size=size, prompt=prompt, items=tuple(items), length_control=lc)


def run(coro_fn, cfg=None, judge=None):
    async def main():
        service = GenRMService(cfg or GenRMConfig(batch_wait_s=0.05), judge or ScriptedJudge())
        await service.start()
        try:
            return await asyncio.wait_for(coro_fn(service), timeout=30), service
        finally:
            await service.stop()

    return asyncio.run(main())


def test_out_of_order_parts_are_assembled_and_scored_once():
    judge = ScriptedJudge()
    texts = ["good a", "bad b", "good c", "bad d"]

    async def scenario(s):
        first = asyncio.create_task(s.score(req("c1", 4, [item(2, texts[2])])))
        await asyncio.sleep(0.2)
        assert s.pending() == {"c1": 1} and not first.done()  # waits for the rest
        second = asyncio.create_task(s.score(req("c1", 4, [item(3, texts[3]), item(0, texts[0])])))
        await asyncio.sleep(0.2)
        assert not first.done() and not second.done()
        third = await s.score(req("c1", 4, [item(1, texts[1])]))
        return await first, await second, third

    (r1, r2, r3), service = run(scenario, judge=judge)
    assert [r.index for r in r1.results] == [2] and [r.index for r in r2.results] == [3, 0]
    assert [r.index for r in r3.results] == [1]
    rewards = {r.index: r.reward for resp in (r1, r2, r3) for r in resp.results}
    assert rewards == {0: 5.0, 1: 1.0, 2: 5.0, 3: 1.0}  # circular: each compared with good/bad neighbours
    assert all(resp.complete for resp in (r1, r2, r3))
    assert judge.calls == [(4, 0.0)]  # one cohort, N = 4 judge calls, in one batch
    m = service.metrics()
    assert (m.cohorts, m.judge_calls, m.comparisons, m.incomplete_cohorts) == (1, 4, 4, 0)


def test_cohorts_ready_together_share_one_judge_call():
    judge = ScriptedJudge()

    async def scenario(s):
        return await asyncio.gather(*(s.score(req(f"g{k}", 3, [item(i, "good" if i == k else "x") for i in range(3)]))
                                      for k in range(3)))

    responses, service = run(scenario, judge=judge)
    assert judge.calls == [(9, 0.0)]  # 3 groups x 3 circular comparisons in one generate
    for k, resp in enumerate(responses):
        assert [r.reward for r in resp.results] == [5.0 if i == k else 1.0 for i in range(3)]
    assert service.metrics().summary()["judge_calls_per_group"] == 3.0


def test_all_pairs_costs_n_n_minus_1_over_2():
    judge = ScriptedJudge()
    _, service = run(lambda s: s.score(req("a", 6, [item(i) for i in range(6)])),
                     cfg=GenRMConfig(strategy="all_pairs", batch_wait_s=0), judge=judge)
    assert judge.calls == [(15, 0.0)] and service.metrics().judge_calls == 15


def test_incomplete_cohort_is_scored_at_its_timeout_and_counted():
    async def scenario(s):
        three = s.score(req("t", 4, [item(0, "good"), item(1, "bad"), item(2, "good")]))
        lone = s.score(req("u", 4, [item(1, "good")]))
        return await asyncio.gather(three, lone)

    (three, lone), service = run(scenario, cfg=GenRMConfig(cohort_timeout_s=0.3, batch_wait_s=0))
    assert not three.complete and [r.status for r in three.results] == ["ok"] * 3
    assert "incomplete cohort: 3 of 4" in three.results[0].reason
    assert [r.reward for r in three.results] == [5.0, 1.0, 5.0]
    assert lone.results[0].status == "error" and "1 of 4" in lone.results[0].reason
    assert service.metrics().incomplete_cohorts == 2


def test_unparseable_output_is_retried_then_scored_as_tie_and_counted():
    # first attempt garbage, first retry garbage, second retry valid (the rule)
    judge = ScriptedJudge(script=["Scores: none", "Critique: x Scores: 9 9. Ranking: tie"])
    resp, service = run(lambda s: s.score(req("r", 2, [item(0, "good"), item(1, "bad")])), judge=judge)
    assert judge.calls == [(2, 0.0), (2, 0.8), (2, 0.8)]  # retries sample
    assert [r.reward for r in resp.results] == [5.0, 1.0]
    m = service.metrics()
    assert (m.retries, m.parse_failures, m.judge_calls) == (4, 0, 6)

    judge = ScriptedJudge(script=["garbage"] * 3)
    resp, service = run(lambda s: s.score(req("r", 2, [item(0, "good"), item(1, "bad")])), judge=judge)
    assert [r.reward for r in resp.results] == [3.0, 3.0]  # a tie at the midpoint (no valid score in the group)
    assert [r.failed for r in resp.results] == [2, 2] and "unparseable" in resp.results[0].reason
    assert service.metrics().parse_failures == 2


def test_judge_crash_gives_error_results_and_the_service_keeps_going():
    judge = ScriptedJudge(script=[RuntimeError("engine died")])

    async def scenario(s):
        bad = await s.score(req("x", 2, [item(0), item(1)]))
        good = await s.score(req("y", 2, [item(0, "good"), item(1, "no")]))
        return bad, good

    (bad, good), _ = run(scenario, judge=judge)
    assert all(r.status == "error" and "engine died" in r.reason for r in bad.results)
    assert [r.reward for r in good.results] == [5.0, 1.0]


def test_conflicting_requests_are_rejected():
    async def scenario(s):
        t = asyncio.create_task(s.score(req("c", 3, [item(0)])))
        await asyncio.sleep(0.05)
        with pytest.raises(CohortConflict, match="group_size 3"):
            await s.score(req("c", 4, [item(1)]))
        with pytest.raises(CohortConflict, match="sent twice"):
            await s.score(req("c", 3, [item(0)]))
        with pytest.raises(CohortConflict, match="index 5"):
            await s.score(req("c", 3, [item(5)]))
        await s.score(req("c", 3, [item(1), item(2)]))
        return await t

    resp, _ = run(scenario)
    assert resp.complete and resp.results[0].index == 0


def test_position_bias_and_length_control_metrics():
    judge = ScriptedJudge(script=[format_judgement("first is better.", 4, 2, "A")])
    lc = LengthControlParams(beta_think=0.0, beta_answer=0.0)
    resp, service = run(lambda s: s.score(req("p", 2, [item(0, "a" * 10), item(1, "b" * 30)], lc=lc)), judge=judge)
    # each response won once (in position A) and lost once: base 3 each; the shorter answer gains 0.25
    assert [r.base for r in resp.results] == [3.0, 3.0] and [r.reward for r in resp.results] == [3.25, 2.75]
    summary = service.metrics().summary()
    assert summary["first_position_win_rate"] == 1.0
    assert summary["reward_before_length_control"] == 3.0 and summary["reward_after_length_control"] == 3.0
    assert summary["answer_tokens_mean"] == 20.0 and summary["think_tokens_mean"] == 0.0
