"""Deterministic workplace tasks, each with the gold tool-call sequence that solves it.

A task is a function of (seed, difficulty, index) and the fixtures (themselves a function of the seed), so task
"medium-000042" is the same in every process. Difficulty is the number of tool calls the gold solution needs
(issue 5): easy 1, medium 2, hard 3 or 4. Tasks are built from "actions":

    direct  (one call)   send a message, add/cancel/move an event, open/close/assign a ticket, change a dept
    lookup  (two calls)  "send the owner of event 3 ..." / "tell the assignee of ticket 5 ...": a query first,
                         because the name is only in the database

easy    one direct action
medium  two direct actions on different rows, or one lookup action
hard    three direct actions, or a lookup action plus one or two direct ones

Actions of one task never touch the same row, so the gold calls can run in the order given.
"""

from __future__ import annotations

import random
from typing import Callable, NamedTuple

from environments.tools.schema import DAYS, DEPTS, EVENT_TITLES, NAMES, TICKET_TITLES, Fixtures

BODIES = ("Done", "Call me", "See you at 3", "Ticket fixed", "Meeting moved", "Thanks", "On it", "Please review")
LEVEL_OF_CALLS = {1: "easy", 2: "medium"}  # 3 calls or more: hard


def level_of(n_calls: int) -> str:
    """
    >>> [level_of(n) for n in (1, 2, 3, 7)]
    ['easy', 'medium', 'hard', 'hard']
    """
    return LEVEL_OF_CALLS.get(n_calls, "hard")


class Action(NamedTuple):
    text: str  # an instruction clause, lower-case start
    calls: tuple[dict, ...]
    rows: frozenset  # (table, id or name) the action touches


class GenTask(NamedTuple):
    instruction: str
    calls: tuple[dict, ...]


def _call(name: str, **arguments) -> dict:
    return {"name": name, "arguments": arguments}


def _free(r: random.Random, f: Fixtures, table: str, used: set, pred=lambda row: True) -> int | None:
    ids = [i + 1 for i, row in enumerate(f.rows[table]) if (table, i + 1) not in used and pred(row)]
    return r.choice(ids) if ids else None


# ------------------------------------------------------------------------------------------ direct
def _send(r, f, used):
    to, body = r.choice(NAMES), r.choice(BODIES)
    return Action(f"send {to} the message '{body}'", (_call("send_message", to=to, body=body),), frozenset())


def _add_event(r, f, used):
    v = {"title": r.choice(EVENT_TITLES), "owner": r.choice(NAMES), "day": r.choice(DAYS), "hour": r.randint(9, 17)}
    return Action(f"add event '{v['title']}' for {v['owner']} on {v['day']} at {v['hour']}",
                  (_call("insert", table="events", values=v),), frozenset())


def _cancel_event(r, f, used):
    i = _free(r, f, "events", used)
    if i is None:
        return None
    return Action(f"cancel event {i}", (_call("delete", table="events", where={"id": i}),), frozenset({("events", i)}))


def _move_event(r, f, used):
    i = _free(r, f, "events", used)
    if i is None:
        return None
    day = r.choice([d for d in DAYS if d != f.by_id("events", i)["day"]])
    return Action(f"move event {i} to {day}", (_call("update", table="events", where={"id": i}, values={"day": day}),),
                  frozenset({("events", i)}))


def _open_ticket(r, f, used):
    title, who = r.choice(TICKET_TITLES), r.choice(NAMES)
    return Action(f"open ticket '{title}' for {who}",
                  (_call("insert", table="tickets", values={"title": title, "status": "open", "assignee": who}),),
                  frozenset())


def _close_ticket(r, f, used):
    i = _free(r, f, "tickets", used, lambda row: row["status"] == "open")
    if i is None:
        return None
    return Action(f"close ticket {i}", (_call("update", table="tickets", where={"id": i}, values={"status": "closed"}),),
                  frozenset({("tickets", i)}))


def _assign_ticket(r, f, used):
    i = _free(r, f, "tickets", used)
    if i is None:
        return None
    who = r.choice([n for n in NAMES if n != f.by_id("tickets", i)["assignee"]])
    return Action(f"assign ticket {i} to {who}",
                  (_call("update", table="tickets", where={"id": i}, values={"assignee": who}),),
                  frozenset({("tickets", i)}))


def _change_dept(r, f, used):
    i = _free(r, f, "employees", used)
    if i is None:
        return None
    row = f.by_id("employees", i)
    dept = r.choice([d for d in DEPTS if d != row["dept"]])
    return Action(f"move {row['name']} to the {dept} team",
                  (_call("update", table="employees", where={"name": row["name"]}, values={"dept": dept}),),
                  frozenset({("employees", i)}))


# ------------------------------------------------------------------------------------------ lookup
def _notify_owner(r, f, used):
    i = _free(r, f, "events", used)
    if i is None:
        return None
    body = r.choice(BODIES)
    return Action(f"send the owner of event {i} the message '{body}'",
                  (_call("query", table="events", where={"id": i}),
                   _call("send_message", to=f.by_id("events", i)["owner"], body=body)), frozenset({("events", i)}))


def _notify_assignee(r, f, used):
    i = _free(r, f, "tickets", used)
    if i is None:
        return None
    body = r.choice(BODIES)
    return Action(f"tell the assignee of ticket {i} '{body}'",
                  (_call("query", table="tickets", where={"id": i}),
                   _call("send_message", to=f.by_id("tickets", i)["assignee"], body=body)),
                  frozenset({("tickets", i)}))


Maker = Callable[[random.Random, Fixtures, set], Action | None]
DIRECT: tuple[Maker, ...] = (_send, _add_event, _cancel_event, _move_event, _open_ticket, _close_ticket,
                             _assign_ticket, _change_dept)
LOOKUP: tuple[Maker, ...] = (_notify_owner, _notify_assignee)


def _compose(r: random.Random, f: Fixtures, makers: list[Maker]) -> GenTask:
    used: set = set()
    actions = []
    for make in makers:
        for _ in range(20):  # a maker returns None only when every row it could use is taken
            a = make(r, f, used)
            if a is not None and not (a.rows & used):
                break
            make = r.choice(DIRECT[:2])  # send / add never conflict
        used |= a.rows
        actions.append(a)
    clauses = [a.text for a in actions]
    text = clauses[0] if len(clauses) == 1 else ", then ".join(clauses)
    return GenTask(text[0].upper() + text[1:] + ".", tuple(c for a in actions for c in a.calls))


def generate(seed: int, difficulty: str, index: int, fixtures: Fixtures) -> GenTask:
    """The task at `index` of one difficulty; a pure function of its arguments.

    >>> from environments.tools.schema import make_fixtures
    >>> g = generate(0, "easy", 0, make_fixtures(0)); len(g.calls), g == generate(0, "easy", 0, make_fixtures(0))
    (1, True)
    >>> [level_of(len(generate(0, d, i, make_fixtures(0)).calls)) for d in ("medium", "hard") for i in range(3)]
    ['medium', 'medium', 'medium', 'hard', 'hard', 'hard']
    """
    r = random.Random(f"polyrl-tools:{seed}:{difficulty}:{index}")
    if difficulty == "easy":
        makers = [r.choice(DIRECT)]
    elif difficulty == "medium":
        makers = [r.choice(LOOKUP)] if r.random() < 0.3 else [r.choice(DIRECT), r.choice(DIRECT)]
    elif difficulty == "hard":
        kind = r.randrange(3)
        makers = ([r.choice(DIRECT) for _ in range(3)] if kind == 0 else
                  [r.choice(LOOKUP), r.choice(DIRECT)] if kind == 1 else
                  [r.choice(DIRECT), r.choice(LOOKUP), r.choice(DIRECT)])
    else:
        raise ValueError(f"tools: unknown difficulty {difficulty!r}")
    return _compose(r, f=fixtures, makers=makers)
