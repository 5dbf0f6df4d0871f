"""Held-out evaluation: pass rates of the current policy on tasks training never samples (curricula/split.py)."""

from __future__ import annotations

from pydantic import Field

from rl.section import Section


class EvalConfig(Section):
    every: int = Field(20, ge=0)
    """Steps between held-out evaluations (also at the start and the end); 0 = start and end only."""
    difficulty: str = "medium"
    """Difficulty level of the held-out split that is reported (README's learning figures use medium)."""
    tasks_per_env: int = Field(64, ge=0)
    """Held-out tasks per environment (0 disables evaluation)."""
    samples: int = Field(4, ge=1)
    """Samples per task at the rollout temperature; pass rate = mean reward over them."""


def pass_rate(rewards: list[float]) -> float:
    """Fraction of samples that fully solved their task (reward >= 1).

    >>> pass_rate([1.0, 0.0, 1.0, 0.5])
    0.5
    """
    return sum(r >= 1.0 - 1e-9 for r in rewards) / len(rewards) if rewards else 0.0
