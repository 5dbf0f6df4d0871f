"""Which task sampler feeds the orchestrator, and the pass-rate Gaussian's settings (issue 6, docs/curriculum.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from rl.section import Section


class CurriculumConfig(Section):
    kind: Literal["uniform", "pass_rate_gaussian"] = "uniform"
    """Task sampler: uniform over each environment's pool, or Nemotron 3's pass-rate Gaussian (Nano 3.2.2)."""
    mu_start: float = Field(0.8, ge=0, le=1)
    """Pass-rate Gaussian: target mean pass rate at the start (easy)."""
    mu_end: float = Field(0.2, ge=0, le=1)
    """Pass-rate Gaussian: target mean pass rate at the end (hard)."""
    sigma: float = Field(0.15, gt=0)
    """Pass-rate Gaussian: target standard deviation."""
    schedule: Literal["linear", "cosine", "step"] = "linear"
    """How mu moves from mu_start to mu_end over the run ('step': piecewise constant, see mu_steps)."""
    mu_steps: list[tuple[float, float]] = []
    """schedule 'step': [fraction of the run, mu] pairs, fractions ascending in [0, 1]; mu holds from its
    fraction on (mu_start before the first)."""
    bins: int = Field(10, ge=1, le=1000)
    """Pass-rate bins over [0, 1]: each bin receives the target's probability mass whatever its task count, so
    thin regions of the pool are still drawn from as often as the target asks."""
    profile: str | None = None
    """JSONL of per-task pass rates written by `python -m curricula.profile`; None uses
    <run dir>/profile.jsonl when it exists, else the prior for every task."""
    remove_solved: bool = True
    """Drop tasks the profile found always solved (pass rate 1.0): no learning signal (Nano 3.2.2)."""
    remove_unsolved: bool = False
    """Also drop tasks the profile found never solved (pass rate 0.0)."""
    prior: tuple[float, float] = (1.0, 1.0)
    """Beta(a, b) pseudo-counts of (passes, failures) every task starts from, before its profile counts."""
    forget: float = Field(0.5, ge=0, le=1)
    """Online update: a task's pass/fail pseudo-counts are multiplied by this before each verified group is
    added, so estimates follow the policy as it learns; 1 = plain Beta posterior, 0 = latest group only."""

    @model_validator(mode="after")
    def _check_steps(self) -> "CurriculumConfig":
        fracs = [f for f, _ in self.mu_steps]
        if self.schedule == "step" and not self.mu_steps:
            raise ValueError("curriculum.schedule 'step' needs curriculum.mu_steps, e.g. [[0, 0.8], [0.5, 0.5], [0.8, 0.2]]")
        if any(not 0 <= f <= 1 for f in fracs) or fracs != sorted(fracs):
            raise ValueError(f"curriculum.mu_steps fractions must be ascending and in [0, 1], got {fracs}")
        if any(not 0 <= m <= 1 for _, m in self.mu_steps):
            raise ValueError(f"curriculum.mu_steps values must be pass rates in [0, 1], got {self.mu_steps}")
        if min(self.prior) <= 0:
            raise ValueError(f"curriculum.prior pseudo-counts must be > 0, got {self.prior}")
        return self
