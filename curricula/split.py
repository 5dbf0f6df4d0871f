"""Train / held-out split of every environment's tasks, by a hash of the task key.

The same function is used by the warm start (which never trains on held-out tasks), by RL task sampling and
by evaluation, so "held-out" means the same tasks everywhere. A hash (not a random draw) keeps the split
stable when an environment adds tasks.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

HELDOUT_PERCENT = 10


def is_heldout(env: str, task_id: str, percent: int = HELDOUT_PERCENT) -> bool:
    """True for about `percent`% of tasks, the same ones on every machine.

    >>> is_heldout("math", "easy-000001") in (True, False)
    True
    """
    digest = hashlib.sha256(f"{env}/{task_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % 100 < percent


def training_tasks(env: str, tasks: Iterable, levels: list[str] | None, known_levels: Iterable[str]) -> list:
    """The tasks RL may train on, sorted by id: not held-out and, given `levels` (`envs.NAME.difficulties`), at one
    of them. The orchestrator's pools and `curricula.profile` both use it. A level the environment does not have,
    or levels that leave no task, is a ValueError naming `envs.NAME.difficulties` (an empty pool without a filter
    is the samplers' error)."""
    if levels is not None and (unknown := sorted(set(levels) - set(known_levels))):
        raise ValueError(f"envs.{env}.difficulties: {unknown} not among {env}'s levels {list(known_levels)}")
    out = sorted((t for t in tasks if not is_heldout(env, t.task_id) and (levels is None or t.difficulty in levels)),
                 key=lambda t: t.task_id)
    if not out and levels is not None:
        raise ValueError(f"envs.{env}.difficulties: no training task at levels {levels}")
    return out
