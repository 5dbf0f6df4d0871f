r"""Short-answer QA scoring: normalised exact match and token F1 on the answer a response commits to.

Extraction: the response's final answer is whatever comes last of
- "Answer: ..." (any case, anywhere in a line; the rest of that line), and
- a \boxed{...} (braces balanced),
so a model may think out loud first. A response with neither scores 0 with the reason "no answer found":
the format is part of the task, as with math's \boxed{}.

Normalisation (SQuAD's): lower case, punctuation removed, the articles a/an/the removed, whitespace collapsed.
Several acceptable answers (aliases) may be given; the best match counts.

Exact match is 1.0 or 0.0; token F1 is the harmonic mean of token precision and recall (bag of words), in
[0, 1], with F1 1.0 exactly when the normalised token multisets are equal.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from rl.types import Verdict

MAX_RESPONSE_CHARS = 100_000  # beyond this a response is not an answer; bounds extraction time
MAX_ANSWER_CHARS = 300  # a short-answer task: longer "answers" are a dump of the context
_ANSWER_LINE = re.compile(r"(?im)\banswer[ \t]*[:=][ \t]*(.*?)[ \t]*$")
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)

__all__ = ["extract_answer", "normalize_answer", "exact_match", "token_f1", "QAVerifier"]


def _last_boxed(text: str) -> tuple[int, str] | None:
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 0, start + len("\\boxed")
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return start, text[i + 1 : j]
    return None  # unbalanced: not an answer


def extract_answer(response: str) -> str | None:
    r"""The answer a response commits to, or None.

    >>> extract_answer("The lead is Ann.\nAnswer: Ann Lee")
    'Ann Lee'
    >>> extract_answer("answer: Oslo, I think \\boxed{Rome}")
    'Rome'
    >>> extract_answer("I do not know") is None
    True
    """
    if len(response) > MAX_RESPONSE_CHARS:
        return None
    best: tuple[int, str] | None = None
    for m in _ANSWER_LINE.finditer(response):
        best = (m.start(), m.group(1))
    boxed = _last_boxed(response)
    if boxed is not None and (best is None or boxed[0] > best[0]):
        best = boxed
    if best is None:
        return None
    text = best[1].strip()
    return text if text else None


def normalize_answer(text: str) -> str:
    """
    >>> normalize_answer("  The Blue-Falcon! ")
    'bluefalcon'
    >>> normalize_answer("An   Oslo office.")
    'oslo office'
    """
    text = text.lower().translate(_PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def _aliases(answer: str | Sequence[str]) -> list[str]:
    return [answer] if isinstance(answer, str) else list(answer)


def _f1(pred: str, gold: str) -> float:
    p, g = pred.split(), gold.split()
    if not p or not g:
        return float(p == g)
    common = sum((Counter(p) & Counter(g)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(g)
    return 2 * precision * recall / (precision + recall)


def _extracted(response: str) -> tuple[str | None, Verdict | None]:
    answer = extract_answer(response)
    if answer is None:
        return None, Verdict(reward=0.0, reason="no answer found: end with 'Answer: ...' or \\boxed{...}")
    if len(answer) > MAX_ANSWER_CHARS:
        return None, Verdict(reward=0.0, reason=f"answer is {len(answer)} characters (limit {MAX_ANSWER_CHARS})")
    return answer, None


def exact_match(response: str, *, answer: str | Sequence[str]) -> Verdict:
    """1.0 when the extracted answer equals one of the aliases after normalisation.

    >>> exact_match("Answer: the Oslo.", answer="Oslo").reward
    1.0
    >>> exact_match("Answer: Oslo Norway", answer=["Rome", "Roma"]).reward
    0.0
    """
    pred, failed = _extracted(response)
    if failed:
        return failed
    norm = normalize_answer(pred)
    for alias in _aliases(answer):
        if norm == normalize_answer(alias):
            return Verdict(reward=1.0, components={"exact": 1.0}, reason=f"exact match {alias!r}")
    return Verdict(reward=0.0, components={"exact": 0.0},
                   reason=f"answer {pred[:60]!r} != {_aliases(answer)[0][:60]!r}")


def token_f1(response: str, *, answer: str | Sequence[str]) -> Verdict:
    """Token F1 of the extracted answer against the best alias (normalised bags of words).

    >>> token_f1("Answer: Ann Lee", answer="Ann Lee").reward
    1.0
    >>> round(token_f1("Answer: Ann", answer="Ann Lee").reward, 3)
    0.667
    """
    pred, failed = _extracted(response)
    if failed:
        return failed
    norm = normalize_answer(pred)
    scores = [(_f1(norm, normalize_answer(a)), a) for a in _aliases(answer)]
    score, alias = max(scores, key=lambda s: s[0])
    exact = float(norm == normalize_answer(alias))
    return Verdict(reward=score, components={"f1": score, "exact": exact},
                   reason=f"token F1 {score:.2f} of {pred[:60]!r} vs {alias[:60]!r}")


@dataclass(frozen=True)
class QAVerifier:
    """A picklable verifier: `QAVerifier("f1")(response, answer=...)`.

    >>> QAVerifier("exact")("\\\\boxed{1999}", answer="1999").reward
    1.0
    """

    metric: Literal["exact", "f1"] = "exact"

    def __call__(self, response: str, *, answer: str | Sequence[str]) -> Verdict:
        return (exact_match if self.metric == "exact" else token_f1)(response, answer=answer)
