"""verifiers/qa.py: answer extraction, normalisation, exact match and token F1 (issue 5)."""

from __future__ import annotations

import pytest

from verifiers.qa import QAVerifier, exact_match, extract_answer, normalize_answer, token_f1


@pytest.mark.parametrize("text, expected", [
    ("Answer: Oslo", "Oslo"),
    ("Let me think.\nFalcon is led by Ann.\nANSWER:  Ann Lee  ", "Ann Lee"),
    ("Answer: Rome\nno wait\nAnswer: Oslo", "Oslo"),  # the last one counts
    ("Answer: Rome, or \\boxed{Oslo}", "Oslo"),
    ("\\boxed{Rome} so the final answer: Lima", "Lima"),
    ("\\boxed{\\text{New {York}}}", "\\text{New {York}}"),  # nested braces
    ("\\boxed{unclosed", None),
    ("Answer:", None),
    ("the answer is Oslo", None),
    ("", None),
])
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_normalisation_is_squad_style():
    assert normalize_answer("The  Falcon!") == normalize_answer("falcon") == "falcon"
    assert normalize_answer("A. B.") == "b"  # 'a' is an article once punctuation is gone
    assert normalize_answer("2,010") == "2010"


def test_exact_match_and_aliases():
    assert exact_match("Answer: the Falcon.", answer="Falcon").reward == 1.0
    assert exact_match("Answer: Falcons", answer="Falcon").reward == 0.0
    assert exact_match("Answer: NYC", answer=["New York", "NYC"]).reward == 1.0
    v = exact_match("I think it is Falcon", answer="Falcon")
    assert v.reward == 0.0 and "no answer found" in v.reason and v.status == "ok"
    assert exact_match("Answer: " + "x" * 400, answer="x").reason.startswith("answer is 400 characters")


def test_token_f1():
    assert token_f1("Answer: Ann Lee", answer="Ann Lee").reward == 1.0
    assert token_f1("Answer: Lee Ann", answer="Ann Lee").reward == 1.0  # a bag of words
    v = token_f1("Answer: Ann Marie Lee", answer="Ann Lee")
    assert v.reward == pytest.approx(0.8) and v.components["exact"] == 0.0
    assert token_f1("Answer: Bob", answer="Ann Lee").reward == 0.0
    assert token_f1("nothing", answer="Ann").reward == 0.0
    assert token_f1("Answer: Ann", answer=["Ann Lee", "Ann"]).reward == 1.0  # best alias


def test_verifier_class_is_picklable_and_dispatches():
    import pickle

    f1 = pickle.loads(pickle.dumps(QAVerifier("f1")))
    assert f1("Answer: Ann", answer="Ann Lee").reward == pytest.approx(2 / 3)
    assert QAVerifier("exact")("Answer: Ann", answer="Ann Lee").reward == 0.0


@pytest.mark.parametrize("module", ["verifiers.qa", "verifiers.db_state"])
def test_docstring_examples(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0
