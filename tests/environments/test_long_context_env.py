"""long_context environment (issue 5): references score 1.0, wrong answers 0, lengths fit, files and options."""

from __future__ import annotations

import json

import pytest

from environments.long_context import LongContextEnvironment
from environments.long_context.generator import FILLER

TEMPLATE = len("<|user|>\n<|assistant|>") + 1  # chat markers and <eos> of the tiny policy


@pytest.fixture(scope="module")
def records():
    env = LongContextEnvironment({"num_tasks": 600})
    return env, env.load_tasks()


def test_references_score_one_and_wrong_answers_zero(records):
    env, recs = records
    for r in recs:
        assert env.verify(r, env.reference_response(r)).reward == 1.0, r.task.task_id
        answer = r.reference["answers"][0]
        assert env.verify(r, env.reference_response(r).replace(f"Answer: {answer}", "Answer: Nobody")).reward == 0.0
        assert env.verify(r, answer).reward == 0.0  # the format is part of the task


def test_default_prompts_fit_the_tiny_policy_context_and_are_deterministic(records):
    env, recs = records
    for r in recs:
        assert len(r.task.prompt[0].content) + TEMPLATE + len(env.reference_response(r)) <= 512
        assert r.task.prompt[0].content.isascii()
    docs = {d: [r.task.meta["documents"] for r in recs if r.task.difficulty == d] for d in env.difficulties}
    assert max(docs["easy"]) <= 3 and min(docs["medium"]) >= 4 and min(docs["hard"]) >= 4
    assert [r.task for r in recs] == [r.task for r in LongContextEnvironment({"num_tasks": 600}).load_tasks()]


def test_answer_is_in_the_needed_documents_only(records):
    """Medium: the looked-up value is unique among the documents; hard: the answer needs two documents."""
    env, recs = records
    for r in recs:
        content = r.task.prompt[0].content
        docs, question = content.rsplit("\nQ: ", 1)
        if r.task.difficulty == "medium" and "based in" in question:
            city = question.split("based in ")[1].split("?")[0]
            assert docs.count(f"based in {city},") == 1
        if r.task.difficulty == "hard" and "the lead of" in question:
            project = question.split("the lead of ")[1].split(" ")[0].rstrip("?")
            lead = next(line for line in docs.split("\n") if f"] {project}:" in line).split("lead ")[1].split(",")[0]
            assert sum(f"] {lead}: lives in" in line for line in docs.split("\n")) == 1


def test_32k_token_setting_makes_long_article_contexts():
    env = LongContextEnvironment({"num_tasks": 3, "context_chars": 110_000, "doc_style": "article", "max_docs": {}})
    for r in env.load_tasks():
        content = r.task.prompt[0].content
        assert 100_000 < len(content) < 112_000 and r.task.meta["documents"] > 200
        assert any(f in content for f in FILLER)
        assert env.verify(r, env.reference_response(r)).reward == 1.0


def test_f1_metric_gives_partial_credit():
    env = LongContextEnvironment({"num_tasks": 30, "metric": "f1", "context_chars": 2000})
    r = next(r for r in env.load_tasks() if " " in r.reference["answers"][0])  # a two-word name
    first = r.reference["answers"][0].split()[0]
    assert 0 < env.verify(r, f"Answer: {first}").reward < 1
    assert env.verify(r, env.reference_response(r)).reward == 1.0


def test_judge_option_without_a_judge_is_a_clear_error():
    with pytest.raises(ValueError, match="no judge configured"):
        LongContextEnvironment({"judge": "genrm"})
    with pytest.raises(ValueError, match="Valid options"):
        LongContextEnvironment({"metrc": "f1"})


def test_task_files_load_and_bad_rows_are_named(tmp_path):
    path = tmp_path / "qa.jsonl"
    rows = [{"question": "Who built it?", "documents": ["Ann built the shed.", "Ben painted it."], "answer": ["Ann"]},
            {"question": "What colour?", "context": "The shed is red.", "answer": ["red", "crimson"],
             "difficulty": "easy", "id": "c"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    env = LongContextEnvironment({"num_tasks": 0, "files": [str(path)]})
    recs = env.load_tasks()
    assert [(r.task.task_id, r.task.difficulty) for r in recs] == [("qa-000000", "medium"), ("qa-c", "easy")]
    assert recs[0].task.prompt[0].content.startswith("[1] Ann built the shed.\n[2] Ben painted it.\nQ: Who built")
    assert env.verify(recs[1], "Answer: Crimson").reward == 1.0
    assert all(env.verify(r, env.reference_response(r)).reward == 1.0 for r in recs)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps(r) + "\n" for r in rows + [{"question": "Q?", "answer": ["x"]}]))
    with pytest.raises(ValueError, match=r"bad.jsonl, row 2 .*neither documents nor context.*skip_bad_rows"):
        LongContextEnvironment({"num_tasks": 0, "files": [str(bad)]}).load_tasks()
    skipping = LongContextEnvironment({"num_tasks": 0, "files": [str(bad)], "skip_bad_rows": True})
    assert len(skipping.load_tasks()) == 2 and skipping.skipped_rows[str(bad)] == 1
    with pytest.raises(ValueError, match="does not exist"):
        LongContextEnvironment({"num_tasks": 0, "files": [str(tmp_path / "nope.jsonl")]}).load_tasks()


def test_served_through_the_registry(tmp_path):
    from environments.client import SyncEnvClient
    from environments.serve import start_local
    from rl.types import VerifyItem

    with start_local("long_context", options={"num_tasks": 30}, timeout=60) as server:
        with SyncEnvClient("long_context", server.url, timeout_s=10, retries=1) as client:
            assert client.info().task_count == 30
            tasks = client.tasks(count=3, difficulty="hard")
            env = LongContextEnvironment({"num_tasks": 30})
            refs = {r.task.task_id: env.reference_response(r) for r in env.load_tasks()}
            verdicts = client.verify([VerifyItem(task_id=t.task_id, response=refs[t.task_id]) for t in tasks] +
                                     [VerifyItem(task_id=tasks[0].task_id, response="Answer: ?")])
    assert [v.reward for v in verdicts] == [1.0, 1.0, 1.0, 0.0]


@pytest.mark.parametrize("module", ["environments.long_context", "environments.long_context.generator",
                                    "environments.long_context.files"])
def test_docstring_examples(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0
