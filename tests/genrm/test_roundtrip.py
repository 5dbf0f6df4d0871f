"""The GenRM service end to end with the real embedded judge: built by genrm.build_judge (the demo path's judge,
cached in .cache/tiny-judge like the tiny policy; built here first when missing, ~2 min on a quiet 2-core
machine), served by `python -m genrm.serve` (its own vLLM engine, the only one this test starts), reached by
the chat environment over HTTP."""

from __future__ import annotations

import pytest

from genrm.build_judge import ensure_judge
from genrm.serve import GenRMClient, start_local, stop_local
from genrm.service import GenRMConfig


@pytest.mark.slow
def test_chat_groups_scored_by_the_real_judge_engine():
    from environments.chat import ChatEnvironment

    judge_dir = ensure_judge()
    proc, url = start_local(GenRMConfig(judge_path=str(judge_dir), max_retries=1), timeout_s=600)
    try:
        env = ChatEnvironment({"num_tasks": 4, "genrm_url": url, "timeout_s": 300})
        records = env.load_tasks()
        items = []
        for rec in records[:2]:
            items += [(rec, f"<think>The topic is {rec.reference}.</think>Sure, {rec.reference} is nice."),
                      (rec, "\\boxed{12}"), (rec, f"I like {rec.reference}."), (rec, "")]
        verdicts = env.verify_batch(items)
        metrics = GenRMClient(url).metrics()
    finally:
        stop_local(proc)
    # every response got a verdict from the judge path: either scored or (never here) an explicit error
    assert len(verdicts) == 8 and all(v.status == "ok" for v in verdicts), [v.reason for v in verdicts]
    for v in verdicts:
        assert 1.0 <= v.components["genrm_base"] <= 5.0
        assert "judge mean score" in v.reason
    assert verdicts[0].components["think_tokens"] == len(f"The topic is {records[0].reference}.")
    assert metrics.cohorts == 2 and metrics.comparisons == 8  # circular: N = 4 comparisons per group
    assert 8 <= metrics.judge_calls <= 16 and metrics.parse_failures <= 8  # retries bounded by max_retries
    assert 1 <= metrics.judge_batches <= 2  # usually both groups share one call (exact batching: test_service.py)
    # the judge judges content: the on-topic responses (positions 0 and 2 of each group) outscore the others
    helpful = [v.components["genrm_base"] for i, v in enumerate(verdicts) if i % 4 in (0, 2)]
    unhelpful = [v.components["genrm_base"] for i, v in enumerate(verdicts) if i % 4 in (1, 3)]
    assert sum(helpful) / 4 >= sum(unhelpful) / 4 + 1.0, (helpful, unhelpful)
