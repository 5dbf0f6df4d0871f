"""Which pairs of a group the judge compares, and how its judgements become one base reward per response.

Nemotron 3 Nano (report 3.3.2): comparing all pairs of N responses costs N(N-1)/2 judge calls (120 for N = 16);
a circular comparison costs N: response i is compared with response (i+1) mod N, so every response is judged
exactly twice, once as response A (first position) and once as response B (second position), which also
balances the judge's position bias out of every response's reward.

Aggregation (documented here, tested in tests/genrm/test_comparisons.py):

- base reward of response i = mean of the helpfulness scores (1-5) it received over its comparisons;
- tie-breaking by ranking: when a judgement gives both responses the same score but its ranking names a
  winner, the winner is credited score + TIE_BREAK and the loser score - TIE_BREAK for that comparison.
  TIE_BREAK = 0.25 is below any real score difference (scores are whole points), so a ranking never
  overturns scores; it only separates responses the scores could not;
- an unparseable judgement (after its retries) is scored as a tie: both responses get the same credit, the
  mean of every valid score in the group (3.0, the scale's midpoint, if the group has none), so a failure
  moves neither response relative to the other and is counted, never a crash;
- a response that was in no comparison (a group of 1) gets the midpoint 3.0 and the caller gets told.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Strategy = Literal["circular", "all_pairs"]
STRATEGIES: tuple[str, ...] = ("circular", "all_pairs")
SCORE_MIN, SCORE_MAX = 1.0, 5.0
MIDPOINT = (SCORE_MIN + SCORE_MAX) / 2
TIE_BREAK = 0.25


def pairs(n: int, strategy: Strategy = "circular") -> list[tuple[int, int]]:
    """The (first, second) response indices the judge compares for a group of n responses.

    circular: (i, (i+1) mod n) for every i: n comparisons, each response twice, once in each position.
    all_pairs: every unordered pair once, (i, j) with i < j: n(n-1)/2 comparisons (positions not balanced).
    A group of 0 or 1 has nothing to compare.

    >>> pairs(4)
    [(0, 1), (1, 2), (2, 3), (3, 0)]
    >>> pairs(2)
    [(0, 1), (1, 0)]
    >>> len(pairs(16, "all_pairs")), len(pairs(16, "circular"))
    (120, 16)
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"pairs: n must be a non-negative int, got {n!r}")
    if strategy == "circular":
        return [(i, (i + 1) % n) for i in range(n)] if n >= 2 else []
    if strategy == "all_pairs":
        return [(i, j) for i in range(n) for j in range(i + 1, n)]
    raise ValueError(f"pairs: unknown strategy {strategy!r}; use one of {STRATEGIES}")


@dataclass(frozen=True)
class Judgement:
    """One parsed judge output for the pair (first, second): scores of each and the preferred position."""

    score_a: float
    score_b: float
    ranking: Literal["A", "B", "tie"]
    critique: str = ""


def aggregate(n: int, compared: Sequence[tuple[int, int]],
              judgements: Sequence[Judgement | None]) -> tuple[list[float], dict[str, int]]:
    """Base reward per response from the judgements of `compared` (None = unparseable, scored as a tie).

    Returns (rewards, counts) where counts has 'failed' (None judgements), 'tie_breaks' (equal scores
    separated by the ranking), 'first_wins' / 'second_wins' / 'ties' (the position-bias estimate's inputs)
    and 'uncompared' (responses in no comparison).

    >>> r, c = aggregate(2, [(0, 1), (1, 0)], [Judgement(5, 2, "A"), Judgement(1, 4, "B")])
    >>> r  # response 0 got 5 and 4, response 1 got 2 and 1
    [4.5, 1.5]
    >>> aggregate(2, [(0, 1), (1, 0)], [Judgement(3, 3, "A"), None])[0]  # tie broken by ranking; a failure
    [3.125, 2.875]
    """
    if len(compared) != len(judgements):
        raise ValueError(f"aggregate: {len(compared)} pairs but {len(judgements)} judgements")
    valid = [s for j in judgements if j is not None for s in (j.score_a, j.score_b)]
    tie_score = sum(valid) / len(valid) if valid else MIDPOINT
    received: list[list[float]] = [[] for _ in range(n)]
    counts = {"failed": 0, "tie_breaks": 0, "first_wins": 0, "second_wins": 0, "ties": 0, "uncompared": 0}
    for (a, b), j in zip(compared, judgements):
        if not (0 <= a < n and 0 <= b < n) or a == b:
            raise ValueError(f"aggregate: pair ({a}, {b}) is not two distinct indices below {n}")
        if j is None:
            counts["failed"] += 1
            received[a].append(tie_score)
            received[b].append(tie_score)
            continue
        sa, sb = float(j.score_a), float(j.score_b)
        if sa == sb and j.ranking != "tie":
            counts["tie_breaks"] += 1
            sign = 1.0 if j.ranking == "A" else -1.0
            sa, sb = sa + sign * TIE_BREAK, sb - sign * TIE_BREAK
        if sa > sb:
            counts["first_wins"] += 1
        elif sb > sa:
            counts["second_wins"] += 1
        else:
            counts["ties"] += 1
        received[a].append(sa)
        received[b].append(sb)
    rewards = []
    for got in received:
        if not got:
            counts["uncompared"] += 1
        rewards.append(sum(got) / len(got) if got else MIDPOINT)
    return rewards, counts
