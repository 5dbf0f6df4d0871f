"""The sampler interface the orchestrator uses to pick tasks, and the factory that builds one from config.

Two samplers implement it: curricula/uniform.py (seeded shuffled passes, the default) and
curricula/pass_rate_gaussian.py (Nemotron 3's pass-rate curriculum, issue 6).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Protocol


class TaskSampler(Protocol):
    def sample(self, env: str, k: int, step: int = 0) -> list[str]:
        """Next k task ids of environment `env`, for training step `step` (curricula move with the step)."""

    def update(self, env: str, task_id: str, rewards: list[float]) -> None:
        """A verified group of `task_id`: online pass-rate estimates follow the policy."""

    def metrics(self, step: int = 0) -> tuple[dict[str, float], dict[str, list[float]]]:
        """(scalars, histograms) under curriculum/<env>/... for training step `step` (logged with its batch)."""

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue with identical draws after a resume (JSON-serialisable)."""

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def build_sampler(cfg, pools: dict[str, list[str]], *, seed: int, total_steps: int, run_dir: str | Path | None = None,
                  log: Callable[[str], None] = print) -> TaskSampler:
    """The sampler `cfg.kind` (a CurriculumConfig) names, over the training pools (task ids per environment).

    The pass-rate Gaussian reads its profile from cfg.profile, else <run_dir>/profile.jsonl when present, else
    starts every task at the prior (logged: without a profile it draws uniformly until groups come back).
    """
    from curricula.uniform import UniformSampler

    if cfg.kind == "uniform":
        return UniformSampler(pools, seed=seed)
    if cfg.kind == "pass_rate_gaussian":
        from curricula.pass_rate_gaussian import PassRateGaussianSampler
        from curricula.profile import load_profile, profile_path, read_header

        path = profile_path(cfg, run_dir)
        profile = None
        if path is not None and path.is_file():
            header = read_header(path) or {}
            if "seed" in header and header["seed"] != seed:
                raise ValueError(f"profile {path} was made on the tasks of run.seed={header['seed']}, this run has "
                                 f"run.seed={seed} (environments generate their tasks from the seed): profile again "
                                 f"with run.seed={seed}, or point curriculum.profile at that run's profile")
            profile = load_profile(path)
            log(f"curriculum: pass-rate profile {path} ({sum(len(v) for v in profile.values())} tasks)")
        elif cfg.profile is not None:
            raise FileNotFoundError(f"curriculum.profile={cfg.profile!r} does not exist; write it with "
                                    f"`python -m curricula.profile --envs {','.join(pools)} --samples 8` or unset it")
        else:
            log(f"curriculum: no profile at {path}; every task starts at the Beta{tuple(cfg.prior)} prior "
                "(run `python -m curricula.profile` first to start from measured pass rates)")
        return PassRateGaussianSampler(pools, cfg, seed=seed, total_steps=total_steps, profile=profile, log=log)
    raise ValueError(f"curriculum.kind={cfg.kind!r}: unknown sampler (allowed: uniform, pass_rate_gaussian)")


def split_prompts(total: int, weights: dict[str, float]) -> dict[str, int]:
    """Prompts per environment for one step, proportional to the mixing weights (largest remainder).

    >>> split_prompts(16, {"math": 1.0, "json_schema": 1.0})
    {'math': 8, 'json_schema': 8}
    >>> split_prompts(5, {"a": 2.0, "b": 1.0})
    {'a': 3, 'b': 2}
    """
    norm = sum(weights.values())
    exact = {k: total * w / norm for k, w in weights.items()}
    counts = {k: int(v) for k, v in exact.items()}
    for k in sorted(exact, key=lambda k: exact[k] - counts[k], reverse=True)[: total - sum(counts.values())]:
        counts[k] += 1
    return counts
