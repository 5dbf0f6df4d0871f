"""The pass-rate Gaussian sampler (issue 6): realised pass rates follow the target (KS), schedules, removal,
online update, resume determinism, degenerate pools."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from curricula.base import build_sampler
from curricula.config import CurriculumConfig
from curricula.pass_rate_gaussian import PassRateGaussianSampler, mu_at
from curricula.uniform import UniformSampler

# Kolmogorov-Smirnov at significance level 0.01: reject when sqrt(n) * D > 1.628 (asymptotic critical value).
KS_ALPHA_001 = 1.628
N_TASKS = 6000
N_DRAWS = 5000


def _cfg(**kw) -> CurriculumConfig:
    return CurriculumConfig(kind="pass_rate_gaussian", **kw)


def _phi(x: float, mu: float, sigma: float) -> float:
    return 0.5 * (1 + math.erf((x - mu) / (sigma * math.sqrt(2))))


def _reachable_cdf(mu: float, sigma: float, pool: list[float], bins: int):
    """The target as the sampler documents it can be realised from `pool`, written here independently of the
    sampler's code: N(mu, sigma^2) on [0, 1], conditioned on the bins that hold tasks, with a bin's mass below
    (above) its lowest (highest) task lumped onto that task. Returns (cdf, left_limit_cdf)."""
    edges = []  # per non-empty bin: (lo, hi, lowest task, highest task, mass)
    for b in range(bins):
        inside = [p for p in pool if min(bins - 1, math.floor(p * bins + 1e-9)) == b]
        if inside:
            lo, hi = b / bins, (b + 1) / bins
            edges.append((lo, hi, min(inside), max(inside), _phi(hi, mu, sigma) - _phi(lo, mu, sigma)))
    total = sum(e[-1] for e in edges)

    def cdf(x: float, left: bool = False) -> float:
        acc = 0.0
        for lo, hi, first, last, m in edges:
            if x > last or (x == last and not left):
                acc += m
            elif x > first or (x == first and not left):
                acc += _phi(x, mu, sigma) - _phi(lo, mu, sigma)
        return acc / total

    return cdf, lambda x: cdf(x, left=True)


def _ks(values: list[float], reference) -> float:
    """sup |F_n - F| with the reference's left limits (it has atoms where mass is lumped onto a task)."""
    cdf, left = reference
    x = np.sort(np.asarray(values))
    n = len(x)
    f = np.asarray([cdf(v) for v in x])
    f_left = np.asarray([left(v) for v in x])
    return float(max(np.max(np.arange(1, n + 1) / n - f), np.max(f_left - np.arange(n) / n)))


def _sampler(pass_rates, cfg=None, seed=0, total_steps=2, env="m"):
    """A pool whose tasks have exactly these pass-rate estimates (a profile with very many samples)."""
    ids = [f"t{i:05d}" for i in range(len(pass_rates))]
    n = 1e7
    profile = {env: {tid: (p * n, n) for tid, p in zip(ids, pass_rates)}}
    return PassRateGaussianSampler({env: ids}, cfg or _cfg(), seed=seed, total_steps=total_steps, profile=profile,
                                   log=lambda m: None), ids


def _quantile_pool(inverse_cdf, n=N_TASKS):
    return [float(inverse_cdf((i + 0.5) / n)) for i in range(n)]


POOLS = {
    # every pass rate equally represented
    "uniform": _quantile_pool(lambda u: u),
    # most tasks easy (density 2p), as for a warm-started policy
    "skewed": _quantile_pool(lambda u: u ** 0.5),
    # 95% of tasks in [0.5, 1], a thin 5% (300 tasks, 19x sparser) in [0, 0.5], where the late target is
    "thin": _quantile_pool(lambda u: u / 0.05 * 0.5 if u < 0.05 else 0.5 + (u - 0.05) / 0.95 * 0.5),
}


@pytest.mark.parametrize("pool", sorted(POOLS))
@pytest.mark.parametrize("mu, sigma", [(0.8, 0.15), (0.5, 0.1), (0.2, 0.15)])
def test_realised_pass_rates_follow_the_target_ks(pool, mu, sigma):
    s, _ = _sampler(POOLS[pool], _cfg(mu_start=mu, mu_end=mu, sigma=sigma, bins=10))
    drawn = []
    for _ in range(N_DRAWS // 8):
        drawn += [s.estimate("m", t) for t in s.sample("m", 8)]
    d = _ks(drawn, _reachable_cdf(mu, sigma, s.estimates("m").tolist(), 10))
    crit = KS_ALPHA_001 / math.sqrt(len(drawn))
    assert d < crit, f"{pool} pool, mu {mu}: KS D={d:.4f} >= {crit:.4f} (alpha 0.01)"


def test_without_bin_normalisation_the_thin_region_would_be_missed():
    """The same KS test rejects draws proportional to the density alone (no per-bin normalisation): the test
    has the power to see the difference the bins make."""
    pool = np.asarray(POOLS["thin"])
    rng = np.random.default_rng(0)
    w = np.exp(-0.5 * ((pool - 0.2) / 0.15) ** 2)
    naive = pool[rng.choice(len(pool), size=N_DRAWS, p=w / w.sum())]
    assert _ks(naive.tolist(), _reachable_cdf(0.2, 0.15, pool.tolist(), 10)) > 3 * KS_ALPHA_001 / math.sqrt(N_DRAWS)


def test_a_bin_with_two_tasks_gets_its_full_target_mass():
    """Very thin: 10 tasks below 0.5 (two per bin), 2,990 above. Each bin's share of the draws is the target's
    mass for it (within 4 binomial standard deviations), however few tasks carry it."""
    pool = [0.025 + 0.05 * i for i in range(10)] + _quantile_pool(lambda u: 0.5 + 0.5 * u, 2990)
    s, _ = _sampler(pool, _cfg(mu_start=0.2, mu_end=0.2, sigma=0.15, bins=10))
    drawn = np.asarray([s.estimate("m", t) for _ in range(500) for t in s.sample("m", 10)])
    z = _phi(1, 0.2, 0.15) - _phi(0, 0.2, 0.15)
    for b in range(10):
        mass = (_phi((b + 1) / 10, 0.2, 0.15) - _phi(b / 10, 0.2, 0.15)) / z
        share = np.mean((drawn >= b / 10) & (drawn < (b + 1) / 10))
        assert abs(share - mass) < 4 * math.sqrt(mass * (1 - mass) / len(drawn)) + 1e-9, (b, share, mass)


def test_bins_without_tasks_pass_their_mass_to_the_others():
    """No task below 0.3: the realised distribution is the target conditioned on [0.3, 1] (documented)."""
    pool = _quantile_pool(lambda u: 0.3 + 0.7 * u)
    s, _ = _sampler(pool, _cfg(mu_start=0.3, mu_end=0.3, sigma=0.15, bins=10))
    drawn = [s.estimate("m", t) for _ in range(N_DRAWS // 10) for t in s.sample("m", 10)]
    cdf, _ = ref = _reachable_cdf(0.3, 0.15, s.estimates("m").tolist(), 10)
    assert cdf(0.3) == 0 and cdf(0.35) == pytest.approx(
        (_phi(0.35, 0.3, 0.15) - _phi(0.3, 0.3, 0.15)) / (_phi(1, 0.3, 0.15) - _phi(0.3, 0.3, 0.15)))
    d = _ks(drawn, ref)
    assert d < KS_ALPHA_001 / math.sqrt(len(drawn)), d


def test_drawn_pass_rates_move_with_mu_across_the_run():
    s, _ = _sampler(POOLS["uniform"], _cfg(mu_start=0.8, mu_end=0.2, sigma=0.1), total_steps=11)
    means = [np.mean([s.estimate("m", t) for t in s.sample("m", 400, step=step)]) for step in (0, 5, 10)]
    assert abs(means[0] - 0.8) < 0.03 and abs(means[1] - 0.5) < 0.03 and abs(means[2] - 0.2) < 0.03, means


@pytest.mark.parametrize("schedule, middle", [("linear", 0.5), ("cosine", 0.5)])
def test_schedule_endpoints(schedule, middle):
    c = _cfg(mu_start=0.8, mu_end=0.2, schedule=schedule)
    assert mu_at(0, 101, c) == pytest.approx(0.8) and mu_at(100, 101, c) == pytest.approx(0.2)
    assert mu_at(50, 101, c) == pytest.approx(middle)
    assert mu_at(500, 101, c) == pytest.approx(0.2), "past the end: mu_end"
    assert mu_at(0, 1, c) == pytest.approx(0.8), "a one-step run draws at mu_start"
    if schedule == "cosine":  # slow at both ends, unlike linear
        assert mu_at(10, 101, c) > 0.8 - 0.6 * 0.1


def test_step_schedule_holds_each_value_from_its_fraction():
    c = _cfg(mu_start=0.9, schedule="step", mu_steps=[[0.25, 0.6], [0.75, 0.3]])
    assert [mu_at(s, 101, c) for s in (0, 24, 25, 74, 75, 100)] == [0.9, 0.9, 0.6, 0.6, 0.3, 0.3]
    with pytest.raises(ValueError, match="needs curriculum.mu_steps"):
        _cfg(schedule="step")
    with pytest.raises(ValueError, match="ascending"):
        _cfg(schedule="step", mu_steps=[[0.5, 0.5], [0.2, 0.3]])


def test_profile_removal_of_solved_and_optionally_unsolved_tasks():
    ids = [f"t{i}" for i in range(6)]
    profile = {"m": {"t0": (8, 8), "t1": (8, 8), "t2": (0, 8), "t3": (4, 8), "t4": (1, 8)}}  # t5 not profiled
    s = PassRateGaussianSampler({"m": ids}, _cfg(), profile=profile, log=lambda m: None)
    assert s.ids["m"] == ["t2", "t3", "t4", "t5"] and s.removed["m"] == {"solved": 2, "unsolved": 0}
    assert s.unprofiled["m"] == 1 and s.estimate("m", "t5") == 0.5  # the Beta(1, 1) prior
    assert s.estimate("m", "t3") == pytest.approx(5 / 10)  # (1 + 4) / (2 + 8)
    s2 = PassRateGaussianSampler({"m": ids}, _cfg(remove_unsolved=True), profile=profile, log=lambda m: None)
    assert s2.ids["m"] == ["t3", "t4", "t5"] and s2.removed["m"] == {"solved": 2, "unsolved": 1}
    s3 = PassRateGaussianSampler({"m": ids}, _cfg(remove_solved=False), profile=profile, log=lambda m: None)
    assert len(s3.ids["m"]) == 6
    assert set(s.sample("m", 500)) <= {"t2", "t3", "t4", "t5"}, "removed tasks are never drawn"
    scalars, _ = s2.metrics(0)
    assert scalars["curriculum/m/removed_solved"] == 2 and scalars["curriculum/m/removed_unsolved"] == 1
    assert scalars["curriculum/m/pool_size"] == 3


def test_empty_pool_and_everything_removed_are_clear_errors():
    with pytest.raises(ValueError, match="empty pool"):
        PassRateGaussianSampler({"m": []}, _cfg())
    with pytest.raises(ValueError, match="all 2 training tasks were removed.*2 always solved"):
        PassRateGaussianSampler({"m": ["a", "b"]}, _cfg(), profile={"m": {"a": (4, 4), "b": (4, 4)}})


def test_single_task_is_drawn_every_time_and_logged():
    logs = []
    s = PassRateGaussianSampler({"m": ["only"]}, _cfg(), log=logs.append)
    assert s.sample("m", 5) == ["only"] * 5
    assert any("single task" in m for m in logs)


def test_online_update_is_a_discounted_beta_posterior():
    s = PassRateGaussianSampler({"m": ["a"]}, _cfg(forget=0.5), profile={"m": {"a": (2, 8)}}, log=lambda m: None)
    assert s.estimate("m", "a") == pytest.approx(3 / 10)
    s.update("m", "a", [1.0] * 8)  # a = 1 + 0.5 * 2 + 8 = 10, b = 1 + 0.5 * 6 + 0 = 4
    assert s.estimate("m", "a") == pytest.approx(10 / 14)
    s.update("m", "a", [0.5, 0.99, 1.0, 0.0])  # partial credit is not a pass (reward >= 1 is)
    assert s.alpha["m"][0] == pytest.approx(1 + 0.5 * 9 + 1) and s.beta["m"][0] == pytest.approx(1 + 0.5 * 3 + 3)
    s.update("m", "a", [])  # every verdict an error: no evidence, counted
    s.update("m", "elsewhere", [1.0])  # not in the pool: counted, not folded in
    scalars, hists = s.metrics(0)
    assert scalars["curriculum/m/skipped_groups"] == 1 and scalars["curriculum/m/updates_outside_pool"] == 1
    assert hists["curriculum/m/observed"] == [1.0, 0.25]
    stationary = PassRateGaussianSampler({"m": ["a"]}, _cfg(forget=1.0), log=lambda m: None)
    for _ in range(10):
        stationary.update("m", "a", [1.0, 0.0, 0.0, 0.0])
    assert stationary.estimate("m", "a") == pytest.approx((1 + 10) / (2 + 40))


def test_estimates_follow_a_policy_that_learns():
    """Tasks drawn at the target move: after the policy solves them, the sampler stops favouring them at mu 0.2."""
    ids = [f"t{i}" for i in range(100)]
    profile = {"m": {t: (2, 10) if i < 50 else (8, 10) for i, t in enumerate(ids)}}  # estimates 0.25 and 0.75
    s = PassRateGaussianSampler({"m": ids}, _cfg(mu_start=0.2, mu_end=0.2, sigma=0.1), profile=profile,
                                log=lambda m: None)
    before = s.sample("m", 2000)
    assert sum(t in ids[:50] for t in before) > 1900
    for t in ids[:50]:
        for _ in range(3):
            s.update("m", t, [1.0] * 8)  # solved now
    after = s.sample("m", 2000)
    assert sum(t in ids[:50] for t in after) < 1000


def test_state_dict_round_trip_gives_identical_draws():
    s, ids = _sampler(POOLS["skewed"], _cfg(mu_start=0.8, mu_end=0.2), total_steps=10)
    for step in range(4):
        for t in s.sample("m", 8, step=step):
            s.update("m", t, [1.0, 0.0, 1.0, 1.0])
    state = json.loads(json.dumps(s.state_dict()))  # exactly what orchestrator.json stores
    expected = []
    for step in range(4, 10):
        drawn = s.sample("m", 8, step=step)
        expected.append(drawn)
        for t in drawn:
            s.update("m", t, [0.0, 1.0, 0.0, 0.0])
    fresh, _ = _sampler(POOLS["skewed"], _cfg(mu_start=0.8, mu_end=0.2), total_steps=10)
    fresh.load_state_dict(state)
    again = []
    for step in range(4, 10):
        drawn = fresh.sample("m", 8, step=step)
        again.append(drawn)
        for t in drawn:
            fresh.update("m", t, [0.0, 1.0, 0.0, 0.0])
    assert again == expected
    other_seed, _ = _sampler(POOLS["skewed"], seed=1)
    with pytest.raises(ValueError, match="does not match"):
        other_seed.load_state_dict(state)
    other_pool, _ = _sampler(POOLS["skewed"][:-1])
    with pytest.raises(ValueError, match="task pool of 'm' differs"):
        other_pool.load_state_dict(state)
    with pytest.raises(ValueError, match="does not match"):
        UniformSampler({"m": ids}).load_state_dict(state)


def test_metrics_target_and_drawn_histograms_per_step():
    s, _ = _sampler(POOLS["uniform"], _cfg(mu_start=0.8, mu_end=0.2, sigma=0.1), total_steps=3)
    s.sample("m", 300, step=2)
    scalars, hists = s.metrics(2)
    assert scalars["curriculum/m/mu"] == pytest.approx(0.2)
    assert abs(np.mean(hists["curriculum/m/target"]) - scalars["curriculum/m/target_mean"]) < 1e-9
    assert abs(scalars["curriculum/m/target_mean"] - 0.2) < 0.02  # truncation at 0 moves it up a little
    assert len(hists["curriculum/m/drawn"]) == 300 and abs(scalars["curriculum/m/drawn_mean"] - 0.2) < 0.03
    assert "curriculum/m/drawn" not in s.metrics(2)[1], "each step's draws are reported once"


def test_build_sampler_picks_the_kind_and_reads_the_run_profile(tmp_path):
    logs = []
    pools = {"m": ["a", "b", "c"]}
    assert isinstance(build_sampler(CurriculumConfig(), pools, seed=0, total_steps=5), UniformSampler)
    no_profile = build_sampler(_cfg(), pools, seed=0, total_steps=5, run_dir=tmp_path, log=logs.append)
    assert isinstance(no_profile, PassRateGaussianSampler) and "no profile" in logs[-1]
    (tmp_path / "profile.jsonl").write_text(
        json.dumps({"header": {"samples": 4}}) + "\n"
        + "\n".join(json.dumps({"env": "m", "task_id": t, "samples": 4, "passes": p}) for t, p in [("a", 4), ("b", 1)])
        + "\n{\"env\": \"m\", \"task_id\": \"c\", \"sam")  # a line cut short by a kill is ignored
    s = build_sampler(_cfg(), pools, seed=0, total_steps=5, run_dir=tmp_path, log=logs.append)
    assert s.ids["m"] == ["b", "c"] and s.removed["m"]["solved"] == 1
    (tmp_path / "seeded.jsonl").write_text(json.dumps({"header": {"samples": 4, "seed": 3}}) + "\n")
    with pytest.raises(ValueError, match="run.seed=3, this run has run.seed=0"):
        build_sampler(_cfg(profile=str(tmp_path / "seeded.jsonl")), pools, seed=0, total_steps=5)
    with pytest.raises(FileNotFoundError, match="curriculum.profile"):
        build_sampler(_cfg(profile=str(tmp_path / "missing.jsonl")), pools, seed=0, total_steps=5)
