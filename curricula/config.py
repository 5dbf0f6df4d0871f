"""Which task sampler feeds the orchestrator (issue 6 builds the pass-rate Gaussian sampler)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

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
    schedule: Literal["linear", "cosine"] = "linear"
    """How mu moves from mu_start to mu_end over the run."""
