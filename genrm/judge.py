r"""The judge's prompt and a strict parser of what it writes (issue 7, Nemotron 3 Nano report 3.3.1).

A generative reward model reads a prompt and two responses and writes a critique, a helpfulness score (1-5)
for each response and a ranking. polyrl asks for exactly one line shape:

    Critique: <free text> Scores: <score A> <score B>. Ranking: <A|B|tie>

and accepts nothing else: a missing or repeated field, a score outside 1-5, a ranking that contradicts the
scores, or an output longer than MAX_OUTPUT_CHARS is a parse failure with a reason. The service retries a
failure (sampling, since a greedy retry would repeat itself), then scores it as a tie and counts it
(genrm/comparisons.py); nothing here raises on model output.

Only the answer part of a response is judged: the thinking (<think>...</think>) is stripped first, as the
judge rates what the user would read; its length still counts in length control.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from genrm.comparisons import SCORE_MAX, SCORE_MIN, Judgement

# Long enough for a real GenRM critique of a few paragraphs; anything beyond is runaway generation, and the cap
# bounds the parser's work on hostile input.
MAX_OUTPUT_CHARS = 16_000
INSTRUCTION = "Judge the two responses."

_THINK = re.compile(r"<think>(.*?)(?:</think>|\Z)", re.S)
_NUM = r"([+-]?\d+(?:\.\d+)?)"
# Each field occurs exactly once (checked before matching), so the lazy critique scan is linear in the input.
_LINE = re.compile(
    r"Critique:(?P<critique>.*?)Scores:"
    rf"[ \t]*{_NUM}[ \t]*,?[ \t]*{_NUM}[ \t]*\.?\s*"
    r"Ranking:[ \t]*(?P<rank>A|B|tie)[ \t]*\.?",
    re.S,
)


def split_thinking(response: str) -> tuple[str, str]:
    """(thinking, answer): the text inside <think>...</think> blocks and everything outside them.

    An unclosed <think> runs to the end (the model never reached an answer).

    >>> split_thinking("<think>2+2 is 4</think>It is 4.")
    ('2+2 is 4', 'It is 4.')
    >>> split_thinking("no tags")
    ('', 'no tags')
    """
    thinking = "".join(m.group(1) for m in _THINK.finditer(response))
    answer = _THINK.sub("", response)
    return thinking, answer.strip()


def _clip(text: str, max_chars: int) -> str:
    text = text.strip()
    return text if len(text) <= max_chars else text[: max_chars - 3] + "..."


def build_prompt(prompt: str, response_a: str, response_b: str, *, max_response_chars: int = 2000) -> str:
    """The judge's user message for one comparison (the answer parts only, each clipped to max_response_chars).

    >>> print(build_prompt("Say hi.", "<think>easy</think>hi", "bye"))
    Judge the two responses.
    Prompt: Say hi.
    A: hi
    B: bye
    """
    a, b = split_thinking(response_a)[1], split_thinking(response_b)[1]
    return (f"{INSTRUCTION}\nPrompt: {prompt.strip()}\nA: {_clip(a, max_response_chars)}\n"
            f"B: {_clip(b, max_response_chars)}")


def format_judgement(critique: str, score_a: float, score_b: float, ranking: str) -> str:
    """The exact output shape the parser accepts (used to build the judge's training data).

    >>> format_judgement("A answers, B does not.", 5, 1, "A")
    'Critique: A answers, B does not. Scores: 5 1. Ranking: A'
    """
    fmt = lambda s: f"{s:g}"  # noqa: E731 - 5 not 5.0
    return f"Critique: {critique.strip()} Scores: {fmt(score_a)} {fmt(score_b)}. Ranking: {ranking}"


@dataclass(frozen=True)
class Parsed:
    judgement: Judgement | None
    error: str = ""


def parse(output: str) -> Parsed:
    """Parse one judge output strictly; never raises.

    >>> parse("Critique: A is right. Scores: 5 2. Ranking: A").judgement
    Judgement(score_a=5.0, score_b=2.0, ranking='A', critique='A is right.')
    >>> parse("Scores: 9 1. Ranking: A").error
    'no Critique: field'
    >>> parse("Critique: x Scores: 7 1. Ranking: A").error
    'score A 7 outside 1-5'
    """
    if not isinstance(output, str):
        return Parsed(None, f"output is {type(output).__name__}, not text")
    if len(output) > MAX_OUTPUT_CHARS:
        return Parsed(None, f"output of {len(output)} characters exceeds {MAX_OUTPUT_CHARS}")
    text = output.strip()
    for field in ("Critique:", "Scores:", "Ranking:"):
        count = text.count(field)
        if count == 0:
            return Parsed(None, f"no {field} field")
        if count > 1:
            return Parsed(None, f"{field} appears {count} times")
    m = _LINE.fullmatch(text)
    if m is None:
        return Parsed(None, "not of the form 'Critique: ... Scores: <1-5> <1-5>. Ranking: A|B|tie'")
    critique = m.group("critique").strip()
    if not critique:
        return Parsed(None, "empty critique")
    scores = []
    for label, raw in (("A", m.group(2)), ("B", m.group(3))):
        value = float(raw)
        if not SCORE_MIN <= value <= SCORE_MAX:
            return Parsed(None, f"score {label} {raw} outside {SCORE_MIN:g}-{SCORE_MAX:g}")
        scores.append(value)
    rank = m.group("rank")
    sa, sb = scores
    if (rank == "A" and sa < sb) or (rank == "B" and sb < sa) or (rank == "tie" and sa != sb):
        return Parsed(None, f"ranking {rank} contradicts scores {m.group(2)} {m.group(3)}")
    return Parsed(Judgement(sa, sb, rank, critique))
