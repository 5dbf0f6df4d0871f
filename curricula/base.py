"""The sampler interface the orchestrator uses to pick tasks (issue 6 adds the pass-rate Gaussian sampler)."""

from __future__ import annotations

from typing import Any, Protocol


class TaskSampler(Protocol):
    def sample(self, env: str, k: int) -> list[str]:
        """Next k task ids of environment `env`."""

    def update(self, env: str, task_id: str, rewards: list[float]) -> None:
        """A verified group of `task_id`: online pass-rate estimates follow the policy."""

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue with identical draws after a resume (JSON-serialisable)."""

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


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
