"""Train / held-out split of every environment's tasks, by a hash of the task key.

The same function is used by the warm start (which never trains on held-out tasks), by RL task sampling and
by evaluation, so "held-out" means the same tasks everywhere. A hash (not a random draw) keeps the split
stable when an environment adds tasks.
"""

from __future__ import annotations

import hashlib

HELDOUT_PERCENT = 10


def is_heldout(env: str, task_id: str, percent: int = HELDOUT_PERCENT) -> bool:
    """True for about `percent`% of tasks, the same ones on every machine.

    >>> is_heldout("math", "easy-000001") in (True, False)
    True
    """
    digest = hashlib.sha256(f"{env}/{task_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % 100 < percent
