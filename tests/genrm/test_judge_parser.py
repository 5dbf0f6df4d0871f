"""The judge output parser: strict, never raises, bounded work (issue 7: garbage, partial, out-of-range)."""

from __future__ import annotations

import random
import string
import time

import pytest

from genrm.comparisons import Judgement
from genrm.judge import MAX_OUTPUT_CHARS, build_prompt, format_judgement, parse, split_thinking


@pytest.mark.parametrize("text, expected", [
    ("Critique: A is right. Scores: 5 2. Ranking: A", Judgement(5.0, 2.0, "A", "A is right.")),
    ("  Critique: both fine\nand long.\nScores: 4 4. Ranking: tie\n", Judgement(4.0, 4.0, "tie", "both fine\nand long.")),
    ("Critique: B wins Scores: 1.5, 3.5 Ranking: B.", Judgement(1.5, 3.5, "B", "B wins")),
    ("Critique: same score, A preferred. Scores: 3 3. Ranking: A", Judgement(3.0, 3.0, "A", "same score, A preferred.")),
])
def test_well_formed(text, expected):
    assert parse(text).judgement == expected


@pytest.mark.parametrize("text, reason", [
    ("", "no Critique: field"),
    ("asdf qwer zxcv", "no Critique: field"),
    ("Critique: fine", "no Scores: field"),                                   # partial: cut after the critique
    ("Critique: fine Scores: 5", "no Ranking: field"),                        # partial: cut inside the scores
    ("Critique: fine Scores: 5 1. Ranking:", "not of the form"),              # partial: ranking missing
    ("Critique: fine Scores: 5 1. Ranking: C", "not of the form"),
    ("Critique: fine Scores: five one. Ranking: A", "not of the form"),
    ("Critique: x Scores: 6 1. Ranking: A", "score A 6 outside 1-5"),         # out of range
    ("Critique: x Scores: 3 0. Ranking: A", "score B 0 outside 1-5"),
    ("Critique: x Scores: -2 1. Ranking: B", "score A -2 outside 1-5"),
    ("Critique: x Scores: 5 1. Ranking: B", "contradicts"),
    ("Critique: x Scores: 2 3. Ranking: tie", "contradicts"),
    ("Critique:  Scores: 5 1. Ranking: A", "empty critique"),
    ("Critique: a Scores: 5 1. Ranking: A Critique: b Scores: 1 5. Ranking: B", "appears 2 times"),
    ("Critique: x Scores: 5 1. Ranking: A and then more text", "not of the form"),
    ("preamble Critique: x Scores: 5 1. Ranking: A", "not of the form"),
])
def test_rejected_with_reason(text, reason):
    parsed = parse(text)
    assert parsed.judgement is None
    assert reason in parsed.error


def test_non_text_and_huge_inputs_are_rejected_quickly():
    assert "not text" in parse(None).error  # type: ignore[arg-type]
    assert "exceeds" in parse("x" * (MAX_OUTPUT_CHARS + 1)).error
    # adversarial shapes just under the cap: whitespace runs, near-miss fields; must stay fast
    nasty = ["Critique:" + " " * (MAX_OUTPUT_CHARS - 40) + "Scores: 5 1. Ranking: A",
             "Critique: " + "Scores " * 2200 + "Scores: 5 1. Ranking: A",
             "Critique: x Scores:" + " \t" * 7000 + "5 1. Ranking: A"]
    t0 = time.perf_counter()
    results = [parse(t) for t in nasty]
    assert time.perf_counter() - t0 < 1.0
    assert results[0].error == "empty critique"
    assert results[1].judgement is not None and results[1].judgement.score_a == 5.0


def test_random_garbage_never_raises():
    rng = random.Random(0)
    alphabet = string.printable + "ÄΩ漢\x00"
    pieces = ["Critique:", "Scores:", "Ranking:", " A", " B", " tie", " 5", " 1", ".", "\n", "3.5", "-1"]
    for _ in range(3000):
        text = "".join(rng.choice(pieces) if rng.random() < 0.4 else rng.choice(alphabet)
                       for _ in range(rng.randint(0, 80)))
        parsed = parse(text)
        assert (parsed.judgement is None) != (parsed.error == "")
        if parsed.judgement is not None:
            assert 1 <= parsed.judgement.score_a <= 5 and 1 <= parsed.judgement.score_b <= 5


def test_round_trip_of_the_training_format():
    for a, b, rank in [(5, 1, "A"), (2, 4, "B"), (3, 3, "tie"), (4.5, 4.5, "A")]:
        j = parse(format_judgement("some critique.", a, b, rank)).judgement
        assert (j.score_a, j.score_b, j.ranking) == (a, b, rank)


def test_prompt_judges_answers_only_and_clips():
    assert split_thinking("<think>a</think>b<think>c") == ("ac", "b")
    p = build_prompt("Q?", "<think>" + "x" * 500 + "</think>short", "y" * 50, max_response_chars=20)
    assert "x" not in p and "A: short\n" in p and "B: " + "y" * 17 + "..." in p
