"""Database-state verification: does the final state of an episode's database equal the gold state?

The tools environment (environments/tools) judges an episode by what it did, not by what it said: the
reward is 1.0 when the relevant tables of the episode's database hold exactly the rows that the task's gold
tool calls produce, compared row-wise and order-independent (a multiset of rows per table), else 0.0.

Rows are compared without their surrogate key columns (`id` by default): two correct episodes that insert
the same two rows in a different order get different autoincrement ids, and both are right.

Partial credit (optional) counts changes rather than rows, so that untouched fixture rows do not inflate it:
with E the expected changes (gold state vs the initial state, each row tagged added or removed) and A the
actual changes (final state vs the initial state), partial = |E & A| / |E | A|. It is 1.0 exactly when the
state matches, 0.0 for an episode that changed nothing (or only wrong things), and it falls for every wrong
extra change: deleting a whole table to hit one row costs as much as it gains.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

from rl.types import Verdict

# A snapshot: table -> multiset of rows (each row a tuple of (column, value) pairs, sorted by column).
Row = tuple[tuple[str, object], ...]
Snapshot = dict[str, Counter]

__all__ = ["snapshot", "db_state_equal", "Snapshot"]


def snapshot(conn: sqlite3.Connection, tables: Iterable[str], *, ignore_columns: Sequence[str] = ("id",)) -> Snapshot:
    """The rows of `tables` as multisets, without `ignore_columns`. Table names must come from a whitelist
    (they are interpolated as identifiers; values never are).

    >>> conn = sqlite3.connect(":memory:")
    >>> _ = conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)")
    >>> _ = conn.executemany("INSERT INTO t (name) VALUES (?)", [("a",), ("b",), ("a",)])
    >>> snapshot(conn, ["t"])["t"] == Counter({(("name", "a"),): 2, (("name", "b"),): 1})
    True
    """
    out: Snapshot = {}
    for table in tables:
        cur = conn.execute(f'SELECT * FROM "{table}"')
        cols = [d[0] for d in cur.description]
        keep = [i for i, c in enumerate(cols) if c not in ignore_columns]
        out[table] = Counter(tuple(sorted((cols[i], row[i]) for i in keep)) for row in cur.fetchall())
    return out


def _changes(before: Counter, after: Counter) -> Counter:
    # Counter subtraction keeps positive counts only: rows added, then rows removed, tagged.
    added, removed = after - before, before - after
    return Counter({("+", r): n for r, n in added.items()}) + Counter({("-", r): n for r, n in removed.items()})


def _show(row: Row) -> str:
    return "{" + ", ".join(f"{k}={v!r}" for k, v in row) + "}"


def db_state_equal(got: Mapping[str, Counter], *, gold: Mapping[str, Counter],
                   initial: Mapping[str, Counter] | None = None, partial: bool = False) -> Verdict:
    """Reward 1.0 when every table of `gold` holds the same multiset of rows in `got`, else 0.0 (or the partial
    credit described in the module docstring when `partial` and `initial` are given).

    >>> row = lambda **kw: tuple(sorted(kw.items()))
    >>> init = {"t": Counter([row(name="a")])}
    >>> gold = {"t": Counter([row(name="a"), row(name="b")])}
    >>> db_state_equal({"t": Counter([row(name="b"), row(name="a")])}, gold=gold).reward
    1.0
    >>> v = db_state_equal({"t": Counter([row(name="a"), row(name="c")])}, gold=gold, initial=init, partial=True)
    >>> v.reward, v.components["partial"]
    (0.0, 0.0)
    >>> db_state_equal({"t": Counter([row(name="a"), row(name="b"), row(name="c")])}, gold=gold, initial=init,
    ...                partial=True).reward
    0.5
    """
    missing = [t for t in gold if t not in got]
    if missing:
        return Verdict.error(f"db_state: tables {missing} missing from the episode snapshot")
    mismatched: list[str] = []
    detail: list[str] = []
    for table, want in gold.items():
        have = got[table]
        if have != want:
            mismatched.append(table)
            extra, lacking = have - want, want - have
            if lacking:
                detail.append(f"{table} lacks {_show(next(iter(lacking)))}" + (f" (+{sum(lacking.values()) - 1} more)"
                                                                             if sum(lacking.values()) > 1 else ""))
            if extra:
                detail.append(f"{table} has unexpected {_show(next(iter(extra)))}" +
                              (f" (+{sum(extra.values()) - 1} more)" if sum(extra.values()) > 1 else ""))
    exact = not mismatched
    components = {"exact": float(exact)}
    reward = float(exact)
    if partial and initial is not None:
        expected, actual = Counter(), Counter()
        for table in gold:
            base = initial.get(table, Counter())
            expected += Counter({(table, k): n for k, n in _changes(base, gold[table]).items()})
            actual += Counter({(table, k): n for k, n in _changes(base, got[table]).items()})
        union = sum((expected | actual).values())
        share = 1.0 if union == 0 else sum((expected & actual).values()) / union
        components["partial"] = share
        reward = share
    if exact:
        return Verdict(reward=reward, components=components, reason=f"database state matches ({len(gold)} tables)")
    return Verdict(reward=reward, components=components,
                   reason=("database state differs: " + "; ".join(detail))[:300])
