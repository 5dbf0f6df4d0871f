"""Uniform task sampling: each environment's pool in seeded shuffled passes, without replacement within a pass.

The position inside the current pass is the "data position" a resume must restore (issue 4, issue 10).
"""

from __future__ import annotations

import random
from typing import Any


class UniformSampler:
    def __init__(self, pools: dict[str, list[str]], seed: int = 0):
        for env, ids in pools.items():
            if not ids:
                raise ValueError(f"environment {env!r} has no training task to sample (empty pool)")
        self.pools = {env: list(ids) for env, ids in pools.items()}
        self.seed = seed
        self.epoch = {env: 0 for env in pools}
        self.position = {env: 0 for env in pools}
        self._orders = {env: self._order(env, 0) for env in pools}

    def _order(self, env: str, epoch: int) -> list[str]:
        ids = list(self.pools[env])
        random.Random(f"{self.seed}/{env}/{epoch}").shuffle(ids)
        return ids

    def sample(self, env: str, k: int, step: int = 0) -> list[str]:
        """k ids from the current pass (the step does not matter to uniform sampling)."""
        if env not in self.pools:
            raise KeyError(f"no task pool for environment {env!r} (have {sorted(self.pools)})")
        out = []
        while len(out) < k:
            order = self._orders[env]
            if self.position[env] >= len(order):
                self.epoch[env] += 1
                self.position[env] = 0
                self._orders[env] = order = self._order(env, self.epoch[env])
            take = min(k - len(out), len(order) - self.position[env])
            out.extend(order[self.position[env] : self.position[env] + take])
            self.position[env] += take
        return out

    def update(self, env: str, task_id: str, rewards: list[float]) -> None:
        """Uniform sampling ignores outcomes."""

    def metrics(self, step: int = 0) -> tuple[dict[str, float], dict[str, list[float]]]:
        return {f"curriculum/{env}/pool_size": float(len(ids)) for env, ids in self.pools.items()}, {}

    def state_dict(self) -> dict[str, Any]:
        return {"kind": "uniform", "seed": self.seed, "epoch": dict(self.epoch), "position": dict(self.position)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind") != "uniform" or state.get("seed") != self.seed:
            raise ValueError(f"sampler state {state.get('kind')}/seed {state.get('seed')} does not match "
                             f"uniform/seed {self.seed}: resume with the run's own config")
        for env in self.pools:
            self.epoch[env] = int(state["epoch"].get(env, 0))
            self.position[env] = int(state["position"].get(env, 0))
            self._orders[env] = self._order(env, self.epoch[env])
