"""Circular / all-pairs comparison graphs and the aggregation of judgements into base rewards."""

from __future__ import annotations

from collections import Counter

import pytest

from genrm.comparisons import MIDPOINT, TIE_BREAK, Judgement, aggregate, pairs


@pytest.mark.parametrize("n", range(2, 33))
def test_circular_every_response_exactly_twice_once_in_each_position(n):
    ps = pairs(n, "circular")
    assert len(ps) == n
    firsts, seconds = Counter(a for a, _ in ps), Counter(b for _, b in ps)
    assert firsts == Counter(range(n)) and seconds == Counter(range(n))  # once first, once second
    assert all(a != b for a, b in ps)
    assert len(set(ps)) == n  # no comparison repeated


def test_circular_n2_compares_both_orders_and_default_is_circular():
    assert pairs(2) == [(0, 1), (1, 0)]
    assert pairs(5) == pairs(5, "circular")


@pytest.mark.parametrize("n", [2, 3, 8, 16])
def test_all_pairs_covers_every_unordered_pair_once(n):
    ps = pairs(n, "all_pairs")
    assert len(ps) == n * (n - 1) // 2
    assert {frozenset(p) for p in ps} == {frozenset((i, j)) for i in range(n) for j in range(n) if i < j}


def test_degenerate_and_bad_inputs():
    assert pairs(0) == [] and pairs(1) == [] and pairs(1, "all_pairs") == []
    with pytest.raises(ValueError, match="unknown strategy"):
        pairs(4, "round_robin")
    with pytest.raises(ValueError, match="non-negative int"):
        pairs(-1)


def test_aggregate_means_received_scores():
    ps = pairs(3)  # (0,1) (1,2) (2,0)
    js = [Judgement(5, 2, "A"), Judgement(3, 4, "B"), Judgement(1, 4, "B")]
    rewards, counts = aggregate(3, ps, js)
    assert rewards == [(5 + 4) / 2, (2 + 3) / 2, (4 + 1) / 2]
    assert counts["first_wins"] == 1 and counts["second_wins"] == 2 and counts["failed"] == 0


def test_aggregate_ties_broken_by_ranking_never_overturn_scores():
    rewards, counts = aggregate(2, [(0, 1), (1, 0)], [Judgement(4, 4, "B"), Judgement(4, 4, "A")])
    assert rewards == [4 - TIE_BREAK, 4 + TIE_BREAK]  # response 1 preferred both times
    assert counts["tie_breaks"] == 2 and counts["second_wins"] == 1 and counts["first_wins"] == 1
    # an explicit tie stays a tie
    rewards, counts = aggregate(2, [(0, 1)], [Judgement(3, 3, "tie")])
    assert rewards == [3.0, 3.0] and counts["ties"] == 1


def test_aggregate_failures_are_ties_at_the_group_mean_and_counted():
    rewards, counts = aggregate(3, pairs(3), [None, None, None])
    assert rewards == [MIDPOINT] * 3 and counts["failed"] == 3
    rewards, counts = aggregate(2, [(0, 1), (1, 0)], [Judgement(5, 1, "A"), None])
    assert rewards == [(5 + 3) / 2, (1 + 3) / 2] and counts["failed"] == 1


def test_aggregate_single_response_and_mismatch():
    assert aggregate(1, [], []) == ([MIDPOINT], {"failed": 0, "tie_breaks": 0, "first_wins": 0, "second_wins": 0,
                                                 "ties": 0, "uncompared": 1})
    with pytest.raises(ValueError, match="2 pairs but 1"):
        aggregate(2, [(0, 1), (1, 0)], [None])
    with pytest.raises(ValueError, match="distinct"):
        aggregate(2, [(0, 0)], [None])
