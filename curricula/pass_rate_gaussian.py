"""Nemotron 3's pass-rate curriculum (Nano report 3.2.2, issue 6): draw tasks so that the pass rates of the drawn
tasks follow a Gaussian whose mean moves from easy to hard over the run.

Per environment, every training task carries a pass-rate estimate (a Beta posterior, below). At step t the target
density over pass rate p is N(mu_t, sigma^2) truncated to [0, 1]. [0, 1] is cut into `bins` equal bins; bin b
gets the target's probability mass M_b, shared by the tasks whose estimates fall in it in proportion to the target
density at their estimates:

    w_i = M_b(i) * f(p_i) / sum_{j in b(i)} f(p_j)

so the drawn tasks' pass rates follow the target whatever the pool's shape: a bin with 3 tasks is drawn from as
often as a bin with 3,000 where the target puts the same mass there. Bins with no task have their mass
redistributed over the others in proportion (the target conditioned on the pass rates the pool has). Draws are
independent (with replacement): a thin region can only follow the target by reusing its tasks, so a task may
appear twice in a step. If the target's mass underflows to zero at every task (a tiny sigma far from every
estimate), the tasks nearest mu are drawn.

Online update, a discounted Beta posterior rather than an EMA: a task starts at Beta(a0 + passes, b0 + failures)
from its profile (K samples), and each verified group of G samples does
    a <- a0 + forget * (a - a0) + passes,   b <- b0 + forget * (b - b0) + failures
and the estimate is a / (a + b). Counts weigh evidence by its size (a 16-sample profile against an 8-sample
group), the prior keeps one all-fail group from pinning a task at exactly 0, and `forget` < 1 lets the estimate
follow the policy as it learns, as an EMA would (forget = 1 is the stationary posterior).

Resume: the RNG of the n-th draw of an environment is seeded from (seed, env, n), so the state is the draw
counters plus the (a, b) counts (exact floats in JSON), and a restored sampler draws exactly what the
uninterrupted one would.
"""

from __future__ import annotations

import math
import zlib
from typing import Any, Callable

import numpy as np

# A sample passes when reward >= 1, the definition rl/evaluate.py's pass_rate uses for every reported pass rate.
PASS_THRESHOLD = 1.0 - 1e-9


def normal_cdf(x: float, mu: float, sigma: float) -> float:
    return 0.5 * (1.0 + math.erf((x - mu) / (sigma * math.sqrt(2.0))))


def truncated_normal_cdf(x: float, mu: float, sigma: float) -> float:
    """CDF of N(mu, sigma^2) truncated to [0, 1].

    >>> round(truncated_normal_cdf(0.5, 0.5, 0.15), 6), truncated_normal_cdf(1.0, 0.2, 0.1)
    (0.5, 1.0)
    """
    lo, hi = normal_cdf(0.0, mu, sigma), normal_cdf(1.0, mu, sigma)
    x = min(1.0, max(0.0, x))
    return (normal_cdf(x, mu, sigma) - lo) / (hi - lo)


def bin_masses(mu: float, sigma: float, bins: int) -> np.ndarray:
    """Target probability of each of `bins` equal pass-rate bins over [0, 1]; sums to 1."""
    edges = [truncated_normal_cdf(i / bins, mu, sigma) for i in range(bins + 1)]
    return np.diff(np.asarray(edges, dtype=np.float64))  # [bins]


def target_quantiles(mu: float, sigma: float, n: int = 200) -> list[float]:
    """n evenly spaced quantiles of the target: a TensorBoard histogram of them draws the target's shape."""
    grid = np.linspace(0.0, 1.0, 2001)
    cdf = np.asarray([truncated_normal_cdf(x, mu, sigma) for x in grid])
    return np.interp((np.arange(n) + 0.5) / n, cdf, grid).tolist()


def mu_at(step: int, total_steps: int, cfg) -> float:
    """Target mean pass rate for training step `step` of `total_steps` (0-based: step 0 is mu_start and the last
    step, total_steps - 1, is mu_end; 'step' schedules hold each mu_steps value from its fraction of the run on).

    >>> from curricula.config import CurriculumConfig
    >>> c = CurriculumConfig(mu_start=0.8, mu_end=0.2)
    >>> mu_at(0, 11, c), round(mu_at(5, 11, c), 6), mu_at(10, 11, c)
    (0.8, 0.5, 0.2)
    """
    progress = 0.0 if total_steps <= 1 else min(1.0, max(0.0, step / (total_steps - 1)))
    if cfg.schedule == "linear":  # written so both endpoints are exact floats
        return cfg.mu_start * (1.0 - progress) + cfg.mu_end * progress
    if cfg.schedule == "cosine":
        return cfg.mu_end + (cfg.mu_start - cfg.mu_end) * (1.0 + math.cos(math.pi * progress)) / 2.0
    mu = cfg.mu_start
    for frac, value in cfg.mu_steps:
        if progress >= frac - 1e-12:
            mu = value
    return mu


def _crc(ids: list[str]) -> int:
    return zlib.crc32("\n".join(ids).encode())


class PassRateGaussianSampler:
    """Pools of training task ids per environment -> task ids drawn to follow the moving pass-rate target.

    profile: {env: {task_id: (passes, samples)}} from curricula/profile.py (None: every task at the prior).
    Tasks the profile found always solved are removed (cfg.remove_solved), never solved too if
    cfg.remove_unsolved; both are counted. An environment left without tasks is an error; one left with a
    single task is drawn every time (logged: the target cannot be followed with one pass rate).
    """

    kind = "pass_rate_gaussian"

    def __init__(self, pools: dict[str, list[str]], cfg, seed: int = 0, total_steps: int = 1,
                 profile: dict[str, dict[str, tuple[float, float]]] | None = None, log: Callable[[str], None] = print):
        self.cfg, self.seed, self.total_steps = cfg, seed, total_steps
        a0, b0 = cfg.prior
        self.ids: dict[str, list[str]] = {}
        self.index: dict[str, dict[str, int]] = {}
        self.alpha: dict[str, np.ndarray] = {}
        self.beta: dict[str, np.ndarray] = {}
        self.removed: dict[str, dict[str, int]] = {}
        self.unprofiled: dict[str, int] = {}
        self.draws: dict[str, int] = {}  # sample() calls so far per env: the position in the RNG streams
        self.updates_outside_pool: dict[str, int] = {}
        self.skipped_groups: dict[str, int] = {}
        self._drawn: dict[str, dict[int, list[float]]] = {}  # step -> estimates of the tasks drawn for it (logging)
        self._observed: dict[str, list[float]] = {}  # group pass rates since the last metrics() (logging)
        self._version: dict[str, int] = {}  # bumped by every update: invalidates the cached weights
        self._cache: dict[str, tuple] = {}
        for env, pool in pools.items():
            if not pool:
                raise ValueError(f"environment {env!r} has no training task to sample (empty pool)")
            prof = (profile or {}).get(env, {})
            keep, alpha, beta = [], [], []
            removed = {"solved": 0, "unsolved": 0}
            unprofiled = 0
            for tid in pool:
                passes, n = prof.get(tid, (0.0, 0.0))
                if tid not in prof:
                    unprofiled += 1
                elif n > 0 and passes >= n and cfg.remove_solved:
                    removed["solved"] += 1
                    continue
                elif n > 0 and passes <= 0 and cfg.remove_unsolved:
                    removed["unsolved"] += 1
                    continue
                keep.append(tid)
                alpha.append(a0 + passes)
                beta.append(b0 + n - passes)
            if not keep:
                raise ValueError(
                    f"environment {env!r}: all {len(pool)} training tasks were removed by the pass-rate profile "
                    f"({removed['solved']} always solved, {removed['unsolved']} never solved): nothing left to learn "
                    "from. Use harder tasks (envs.NAME.options), set curriculum.remove_solved=false / "
                    "remove_unsolved=false, or drop the environment.")
            if len(keep) == 1:
                log(f"curriculum: environment {env!r} has a single task left ({keep[0]}); every draw is that task "
                    "and the pass-rate target cannot be followed")
            self.ids[env] = keep
            self.index[env] = {tid: i for i, tid in enumerate(keep)}
            self.alpha[env] = np.asarray(alpha, dtype=np.float64)
            self.beta[env] = np.asarray(beta, dtype=np.float64)
            self.removed[env], self.unprofiled[env] = removed, unprofiled
            self.draws[env] = self._version[env] = 0
            self.updates_outside_pool[env] = self.skipped_groups[env] = 0
            self._drawn[env], self._observed[env] = {}, []
            if profile is not None:
                log(f"curriculum: env {env}: {len(keep)} tasks in the pool, removed {removed['solved']} at pass rate "
                    f"1.0 and {removed['unsolved']} at 0.0, {unprofiled} not in the profile (prior)")

    # ------------------------------------------------------------------------------------------ sampling
    def mu(self, step: int) -> float:
        return mu_at(step, self.total_steps, self.cfg)

    def estimates(self, env: str) -> np.ndarray:
        return self.alpha[env] / (self.alpha[env] + self.beta[env])  # [N]

    def estimate(self, env: str, task_id: str) -> float:
        i = self.index[env][task_id]
        return float(self.alpha[env][i] / (self.alpha[env][i] + self.beta[env][i]))

    def weights(self, env: str, mu: float) -> np.ndarray:
        """Draw probability of every task of `env` (sums to 1) for target mean `mu`; cached until an update."""
        key = (mu, self._version[env])
        if self._cache.get(env, (None,))[0] == key:
            return self._cache[env][1]
        p = self.estimates(env)  # [N]
        bins, sigma = self.cfg.bins, self.cfg.sigma
        b = np.minimum(bins - 1, np.floor(p * bins + 1e-9).astype(np.int64))  # [N] bin of each task
        order = np.lexsort((p, b))  # [N] by bin, then by estimate
        ps, bs = p[order], b[order]
        new = np.ones(len(p), dtype=bool)
        new[1:] = (bs[1:] != bs[:-1]) | (ps[1:] != ps[:-1])
        group = np.cumsum(new) - 1  # [N] distinct (bin, estimate) value of each sorted task
        gv, gb = ps[new], bs[new]  # [G]
        first = np.ones(len(gv), dtype=bool)
        first[1:] = gb[1:] != gb[:-1]
        last = np.ones(len(gv), dtype=bool)
        last[:-1] = gb[:-1] != gb[1:]
        mid = (gv[1:] + gv[:-1]) / 2  # [G-1]
        lo = np.where(first, gb / bins, np.concatenate([[0.0], mid]))  # [G] region of each value: the bin,
        hi = np.where(last, (gb + 1) / bins, np.concatenate([mid, [1.0]]))  # cut halfway between values
        cdf = np.frompyfunc(lambda x: truncated_normal_cdf(x, mu, sigma), 1, 1)
        mass = (cdf(hi) - cdf(lo)).astype(np.float64)  # [G] target mass of each value's region
        share = mass[group] / np.bincount(group)[group]  # [N] shared by the tasks at that value
        w = np.empty(len(p))
        w[order] = share
        total = w.sum()
        if not np.isfinite(total) or total <= 0:
            dist = np.abs(p - mu)
            w = (dist <= dist.min() + 1e-12).astype(np.float64)
            total = w.sum()
        w = w / total
        self._cache[env] = (key, w)
        return w

    def sample(self, env: str, k: int, step: int = 0) -> list[str]:
        if env not in self.ids:
            raise KeyError(f"no task pool for environment {env!r} (have {sorted(self.ids)})")
        cdf = np.cumsum(self.weights(env, self.mu(step)))  # [N]
        rng = np.random.default_rng([self.seed, zlib.crc32(env.encode()), self.draws[env]])
        idx = np.minimum(np.searchsorted(cdf, rng.random(k) * cdf[-1], side="right"), len(cdf) - 1)  # [k]
        self.draws[env] += 1
        p = self.estimates(env)
        self._drawn[env].setdefault(step, []).extend(float(p[i]) for i in idx)
        return [self.ids[env][i] for i in idx]

    # ------------------------------------------------------------------------------------------ online update
    def update(self, env: str, task_id: str, rewards: list[float]) -> None:
        """Fold one verified group (error verdicts already left out by the caller) into the task's estimate."""
        if env not in self.ids:
            raise KeyError(f"no task pool for environment {env!r} (have {sorted(self.ids)})")
        if not rewards:
            self.skipped_groups[env] += 1  # every sample's verification failed: no evidence about the policy
            return
        i = self.index[env].get(task_id)
        if i is None:  # e.g. resumed with a different profile that removed it: counted, not an error
            self.updates_outside_pool[env] += 1
            return
        passes = float(sum(r >= PASS_THRESHOLD for r in rewards))
        a0, b0 = self.cfg.prior
        f = self.cfg.forget
        self.alpha[env][i] = a0 + f * (self.alpha[env][i] - a0) + passes
        self.beta[env][i] = b0 + f * (self.beta[env][i] - b0) + (len(rewards) - passes)
        self._observed[env].append(passes / len(rewards))
        self._version[env] += 1

    # ------------------------------------------------------------------------------------------ metrics
    def metrics(self, step: int = 0) -> tuple[dict[str, float], dict[str, list[float]]]:
        """Scalars and histograms for training step `step`: the target at mu(step) against the estimates of the
        tasks drawn for that step, and the pass rates of the groups verified since the previous call."""
        mu = self.mu(step)
        target = target_quantiles(mu, self.cfg.sigma)
        scalars: dict[str, float] = {}
        hists: dict[str, list[float]] = {}
        for env in self.ids:
            drawn = self._drawn[env].pop(step, [])
            for old in [s for s in self._drawn[env] if s < step]:
                del self._drawn[env][old]  # steps whose batch was never recorded (resume)
            observed, self._observed[env] = self._observed[env], []
            p = self.estimates(env)
            pre = f"curriculum/{env}/"
            scalars.update({pre + "mu": mu, pre + "target_mean": float(np.mean(target)),
                            pre + "pool_size": float(len(p)), pre + "estimate_mean": float(p.mean()),
                            pre + "removed_solved": float(self.removed[env]["solved"]),
                            pre + "removed_unsolved": float(self.removed[env]["unsolved"]),
                            pre + "unprofiled": float(self.unprofiled[env]),
                            pre + "skipped_groups": float(self.skipped_groups[env]),
                            pre + "updates_outside_pool": float(self.updates_outside_pool[env])})
            hists[pre + "target"] = target
            if drawn:
                scalars[pre + "drawn_mean"] = float(np.mean(drawn))
                hists[pre + "drawn"] = drawn
            if observed:
                scalars[pre + "observed_mean"] = float(np.mean(observed))
                hists[pre + "observed"] = observed
        return scalars, hists

    # ------------------------------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "seed": self.seed, "draws": dict(self.draws),
                "pool_crc": {env: _crc(ids) for env, ids in self.ids.items()},
                "alpha": {env: a.tolist() for env, a in self.alpha.items()},
                "beta": {env: b.tolist() for env, b in self.beta.items()},
                "updates_outside_pool": dict(self.updates_outside_pool), "skipped_groups": dict(self.skipped_groups)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind") != self.kind or state.get("seed") != self.seed:
            raise ValueError(f"sampler state {state.get('kind')}/seed {state.get('seed')} does not match "
                             f"{self.kind}/seed {self.seed}: resume with the run's own config")
        for env, ids in self.ids.items():
            if state["pool_crc"].get(env) != _crc(ids):
                raise ValueError(f"curriculum: the checkpoint's task pool of {env!r} differs from this run's "
                                 "(another profile, environment options or removal settings): resume with the "
                                 "run's own config and profile")
            self.draws[env] = int(state["draws"][env])
            self.alpha[env] = np.asarray(state["alpha"][env], dtype=np.float64)
            self.beta[env] = np.asarray(state["beta"][env], dtype=np.float64)
            self.updates_outside_pool[env] = int(state.get("updates_outside_pool", {}).get(env, 0))
            self.skipped_groups[env] = int(state.get("skipped_groups", {}).get(env, 0))
            self._version[env] += 1
