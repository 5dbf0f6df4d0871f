"""Group relative length control (Nemotron 3 Nano report 3.3.2, equations 4-6).

RLHF with a reward model drifts towards longer responses. The correction is relative to the other responses
to the same prompt: within a group of N, for each part (thinking, answer)

    w_i  = 1 - (l_i - l_min) / (l_max - l_min)        (all w_i = 0 when l_max = l_min: no length signal)
    w'_i = w_i - mean_j(w_j)                          (centred: the group's mean reward is unchanged)
    R_i  = base_i + lambda_think * w'_think_i + lambda_answer * w'_answer_i

plus an optional conciseness bonus: the response with the shortest thinking part gets + beta_think if its base
reward is at or above the group's p-th percentile of base rewards (same for the answer part with beta_answer).
The paper (and the RL config of the chat environment) uses lambda 0.5, beta 0.5, p 80.

Conventions this module fixes (the paper does not say):
- percentile: linear interpolation between order statistics (numpy's default, Hyndman-Fan type 7):
  position (N-1) * p / 100 in the sorted base rewards. "At or above" compares with a 1e-9 tolerance, so a
  reward equal to the threshold qualifies (for base [1, 3, 3, 3, 3] and p = 80 the threshold is 3).
- shortest-length ties: every response tied at the minimum length that qualifies gets the bonus; when all
  lengths of a part are equal there is no shortest response and no bonus (as w = 0: length says nothing).
- lengths are token counts of the policy tokenizer, supplied by the caller (characters for the tiny policy).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

_TOL = 1e-9


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile with linear interpolation (numpy's default method).

    >>> percentile([1, 2, 3, 4, 5], 80)
    4.2
    >>> percentile([2.0, 7.0], 80)
    6.0
    """
    if not values:
        raise ValueError("percentile of an empty group")
    if not 0 <= p <= 100:
        raise ValueError(f"percentile p must be in [0, 100], got {p}")
    xs = sorted(float(v) for v in values)
    pos = (len(xs) - 1) * p / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return round(xs[lo] + (xs[hi] - xs[lo]) * (pos - lo), 12)


def centred_weights(lengths: Sequence[float]) -> list[float]:
    """w'_i: 1 for the shortest, 0 for the longest, linear between, minus the group mean.

    >>> [round(x, 4) for x in centred_weights([100, 200, 400, 100])]  # the paper summary's example
    [0.3333, 0.0, -0.6667, 0.3333]
    >>> centred_weights([5, 5, 5])
    [0.0, 0.0, 0.0]
    """
    lo, hi = min(lengths), max(lengths)
    if hi - lo <= 0:
        return [0.0] * len(lengths)
    w = [1.0 - (l - lo) / (hi - lo) for l in lengths]
    mean = sum(w) / len(w)
    return [x - mean for x in w]


def _bonus_targets(base: Sequence[float], lengths: Sequence[float], p: float) -> list[bool]:
    lo, hi = min(lengths), max(lengths)
    if hi == lo:
        return [False] * len(lengths)
    threshold = percentile(base, p)
    return [l == lo and b >= threshold - _TOL for l, b in zip(lengths, base)]


def apply(base: Sequence[float], think_lengths: Sequence[float], answer_lengths: Sequence[float], *,
          lambda_think: float = 0.5, lambda_answer: float = 0.5, beta_think: float = 0.0, beta_answer: float = 0.0,
          percentile: float = 80) -> list[float]:
    """Length-controlled rewards R_i for one group (module docstring: formula and conventions), rounded to 1e-6.

    >>> apply([2.0, 1.8, 1.9, 2.1], [100, 200, 400, 100], [10, 10, 10, 10], lambda_answer=0.5)
    [2.166667, 1.8, 1.566667, 2.266667]
    >>> apply([4.0, 4.0], [0, 0], [30, 60])  # N = 2: the shorter answer +0.25, the longer -0.25
    [4.25, 3.75]
    >>> apply([4.0, 2.0], [0, 0], [30, 60], beta_answer=0.5)  # shorter and at/above the 80th percentile
    [4.75, 1.75]
    """
    p = percentile
    n = len(base)
    if len(think_lengths) != n or len(answer_lengths) != n:
        raise ValueError(f"length_control.apply: {n} rewards but {len(think_lengths)} thinking and "
                         f"{len(answer_lengths)} answer lengths; give one of each per response")
    if n == 0:
        return []
    for name, xs in (("base", base), ("think_lengths", think_lengths), ("answer_lengths", answer_lengths)):
        if any(not math.isfinite(float(x)) for x in xs):
            raise ValueError(f"length_control.apply: {name} has a non-finite value")
    if any(l < 0 for l in list(think_lengths) + list(answer_lengths)):
        raise ValueError("length_control.apply: lengths must be >= 0")
    wt, wa = centred_weights(think_lengths), centred_weights(answer_lengths)
    out = [float(b) + lambda_think * t + lambda_answer * a for b, t, a in zip(base, wt, wa)]
    if beta_think:
        out = [r + beta_think * q for r, q in zip(out, _bonus_targets(base, think_lengths, p))]
    if beta_answer:
        out = [r + beta_answer * q for r, q in zip(out, _bonus_targets(base, answer_lengths, p))]
    return [round(r, 6) + 0.0 for r in out]
