"""Group relative length control on hand-computed groups (issue 7: equal lengths, N = 2, ties at the percentile)."""

from __future__ import annotations

import pytest

from genrm import length_control as lc


def test_equal_lengths_leave_rewards_unchanged_and_give_no_bonus():
    base = [1.0, 2.5, 4.0]
    out = lc.apply(base, [7, 7, 7], [20, 20, 20], beta_think=0.5, beta_answer=0.5)
    assert out == base


def test_n2_shorter_gets_plus_quarter_longer_minus_quarter_per_part():
    # w = [1, 0] -> centred [0.5, -0.5]; lambda 0.5 -> +-0.25 for each part
    assert lc.apply([3.0, 3.0], [10, 50], [5, 5]) == [3.25, 2.75]
    assert lc.apply([3.0, 3.0], [10, 50], [40, 20]) == [3.0, 3.0]  # shorter thinking, longer answer: cancel
    assert lc.apply([3.0, 3.0], [10, 50], [5, 9]) == [3.5, 2.5]


def test_n2_bonus_needs_the_80th_percentile():
    # percentile([2, 4], 80) = 2 + 0.8 * 2 = 3.6: only the response with 4 qualifies
    assert lc.apply([4.0, 2.0], [0, 0], [10, 30], beta_answer=0.5) == [4.0 + 0.25 + 0.5, 2.0 - 0.25]
    # the shortest has the lower reward: no bonus for anyone
    assert lc.apply([2.0, 4.0], [0, 0], [10, 30], beta_answer=0.5) == [2.0 + 0.25, 4.0 - 0.25]


def test_paper_worked_example():
    # Nano report summary: base [2.0, 1.8, 1.9, 2.1], thinking [100, 200, 400, 100]: dR = [1/6, 0, -1/3, 1/6]
    out = lc.apply([2.0, 1.8, 1.9, 2.1], [100, 200, 400, 100], [0, 0, 0, 0])
    assert out == pytest.approx([2.0 + 1 / 6, 1.8, 1.9 - 1 / 3, 2.1 + 1 / 6], abs=1e-6)


def test_ties_at_the_percentile_and_at_the_shortest_length():
    base = [1.0, 3.0, 3.0, 3.0, 3.0]
    assert lc.percentile(base, 80) == 3.0  # position 3.2 between 3 and 3
    # responses 1 and 2 tie at the shortest thinking length (10); both are at the threshold -> both get beta
    think = [10, 10, 10, 40, 70]
    # w = [1, 1, 1, 0.5, 0]; mean 0.7; w' = [.3, .3, .3, -.2, -.7]; lambda 0.5 -> [.15, .15, .15, -.1, -.35]
    out = lc.apply(base, think, [5] * 5, beta_think=0.5)
    assert out == pytest.approx([1.15, 3.65, 3.65, 2.9, 2.65], abs=1e-6)  # response 0 shortest but below p80


def test_percentile_definition_matches_numpy_linear():
    np = pytest.importorskip("numpy")
    import random

    rng = random.Random(0)
    for _ in range(200):
        xs = [rng.choice([1, 2, 3, 4, 5, 2.5]) for _ in range(rng.randint(1, 17))]
        p = rng.choice([0, 50, 80, 90, 100])
        assert lc.percentile(xs, p) == pytest.approx(float(np.percentile(xs, p)), abs=1e-9)


def test_group_mean_is_preserved_without_bonus():
    import random

    rng = random.Random(1)
    for _ in range(100):
        n = rng.randint(2, 16)
        base = [rng.uniform(1, 5) for _ in range(n)]
        out = lc.apply(base, [rng.randint(0, 300) for _ in range(n)], [rng.randint(0, 300) for _ in range(n)])
        assert sum(out) / n == pytest.approx(sum(base) / n, abs=1e-5)


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="one of each per response"):
        lc.apply([1.0, 2.0], [1], [1, 2])
    with pytest.raises(ValueError, match=">= 0"):
        lc.apply([1.0], [-1], [0])
    with pytest.raises(ValueError, match="non-finite"):
        lc.apply([float("nan")], [1], [1])
    assert lc.apply([], [], []) == []
    assert lc.apply([2.0], [5], [9], beta_think=0.5) == [2.0]
