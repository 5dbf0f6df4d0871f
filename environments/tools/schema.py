"""The workplace database schema, its fixtures, and the tools the model may call, with JSON argument schemas.

Tables (every one has an INTEGER PRIMARY KEY `id`, assigned by SQLite and never written by a tool):

    employees(name, dept)              names are unique; owner/assignee/recipient columns must name one
    events(title, owner, day, hour)    day Mon..Fri, hour 8..18
    tickets(title, status, assignee)   status open|closed (default open)
    messages(recipient, body)          what send_message writes

Tools (arguments are JSON objects, validated against TOOL_SCHEMAS, then column by column):

    query(table, where?, columns?, limit?)   read-only, equality filters AND-ed
    insert(table, values)
    update(table, where, values)             `where` must not be empty: no table-wide writes by accident
    delete(table, where)
    send_message(to, body)                   inserts into messages

Identifiers (tables, columns) only ever come from this file's whitelists; values are bound as SQL parameters,
so model text is never spliced into SQL.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any

DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri")
DEPTS = ("Sales", "IT", "HR", "Ops")
STATUSES = ("open", "closed")
NAMES = ("Ann", "Ben", "Eva", "Leo", "Mia", "Sam", "Tom", "Zoe")
EVENT_TITLES = ("Standup", "Review", "Sync", "Lunch", "Demo", "Retro", "Planning", "Interview", "Training",
                "Offsite")
TICKET_TITLES = ("VPN down", "Slow laptop", "Printer jam", "Reset password", "New monitor", "Email bounce",
                 "Access request", "Wifi issue", "Broken chair", "License renewal")


@dataclass(frozen=True)
class Column:
    kind: str  # "text" | "int" | "enum" | "employee"
    required: bool = True  # on insert
    choices: tuple = ()  # enum values
    low: int = 0  # int bounds
    high: int = 0
    max_len: int = 80  # text length
    default: Any = None


TABLES: dict[str, dict[str, Column]] = {
    "employees": {"name": Column("text", max_len=20), "dept": Column("enum", choices=DEPTS)},
    "events": {"title": Column("text"), "owner": Column("employee"), "day": Column("enum", choices=DAYS),
               "hour": Column("int", low=8, high=18)},
    "tickets": {"title": Column("text"), "status": Column("enum", required=False, choices=STATUSES, default="open"),
                "assignee": Column("employee")},
    "messages": {"recipient": Column("employee"), "body": Column("text", max_len=200)},
}
KEY = "id"

DDL = "\n".join(
    f"CREATE TABLE {table} (id INTEGER PRIMARY KEY AUTOINCREMENT, "
    + ", ".join(f"{col} {'INTEGER' if c.kind == 'int' else 'TEXT'} NOT NULL" for col, c in cols.items())
    + (", UNIQUE(name)" if table == "employees" else "") + ");"
    for table, cols in TABLES.items()
)

# -------------------------------------------------------------------------------------------- tools
_TABLE = {"type": "string", "enum": list(TABLES), "description": "table name"}
_ROW = {"type": "object", "additionalProperties": {"type": ["string", "integer"]}, "maxProperties": 8}
TOOL_SCHEMAS: dict[str, dict] = {
    "query": {
        "description": "Read rows: equality filters in `where` are AND-ed; returns at most `limit` rows as JSON.",
        "parameters": {"type": "object", "additionalProperties": False, "required": ["table"], "properties": {
            "table": _TABLE, "where": {**_ROW, "description": "column -> value filters"},
            "columns": {"type": "array", "items": {"type": "string"}, "maxItems": 8, "uniqueItems": True},
            "limit": {"type": "integer", "minimum": 1, "maximum": 20}}},
    },
    "insert": {
        "description": "Add one row; `id` is assigned automatically.",
        "parameters": {"type": "object", "additionalProperties": False, "required": ["table", "values"],
                       "properties": {"table": _TABLE, "values": {**_ROW, "minProperties": 1}}},
    },
    "update": {
        "description": "Set columns in `values` on every row matching `where` (not empty).",
        "parameters": {"type": "object", "additionalProperties": False, "required": ["table", "where", "values"],
                       "properties": {"table": _TABLE, "where": {**_ROW, "minProperties": 1},
                                      "values": {**_ROW, "minProperties": 1}}},
    },
    "delete": {
        "description": "Delete every row matching `where` (not empty).",
        "parameters": {"type": "object", "additionalProperties": False, "required": ["table", "where"],
                       "properties": {"table": _TABLE, "where": {**_ROW, "minProperties": 1}}},
    },
    "send_message": {
        "description": "Send a message to an employee (stored in the messages table).",
        "parameters": {"type": "object", "additionalProperties": False, "required": ["to", "body"],
                       "properties": {"to": {"type": "string", "minLength": 1, "maxLength": 40},
                                      "body": {"type": "string", "minLength": 1, "maxLength": 200}}},
    },
}
# Compact signatures for the tiny policy's short context (argument names only).
SIGNATURES = {"query": "query(table,where)", "insert": "insert(table,values)",
              "update": "update(table,where,values)", "delete": "delete(table,where)",
              "send_message": "send_message(to,body)"}
CALL_FORMAT = '<tool_call>{"name":...,"arguments":{...}}</tool_call>'


def openai_tools() -> list[dict]:
    """The tools in the OpenAI / HF chat-template `tools=` format (Task.meta["tools"] in json_schema mode)."""
    return [{"type": "function", "function": {"name": n, **s}} for n, s in TOOL_SCHEMAS.items()]


def table_line(tables: list[str]) -> str:
    """
    >>> table_line(["events"])
    'events(id,title,owner,day,hour)'
    """
    return " ".join(f"{t}({','.join((KEY, *TABLES[t]))})" for t in tables)


def full_description() -> str:
    """Every tool with its JSON argument schema, the tables and the call format: for real models."""
    cols = []
    for t, spec in TABLES.items():
        parts = []
        for c, col in spec.items():
            extra = {"enum": "|".join(map(str, col.choices)), "int": f"{col.low}..{col.high}",
                     "employee": "an employee name"}.get(col.kind, "text")
            parts.append(f"{c}: {extra}")
        cols.append(f"- {t}(id, {', '.join(parts)})")
    return ("You are a workplace assistant with a database. Tables:\n" + "\n".join(cols) +
            "\nTools (JSON Schema of the arguments):\n" +
            "\n".join(json.dumps({"name": n, **s}, separators=(",", ":")) for n, s in TOOL_SCHEMAS.items()) +
            f"\nCall one tool per turn as {CALL_FORMAT} and wait for its result. "
            "When the task is complete, reply with a short final answer and no tool call.")


# ----------------------------------------------------------------------------------------- fixtures
@dataclass(frozen=True)
class Fixtures:
    """The rows every episode's database starts with (ids 1..n in list order), a function of the seed."""

    rows: dict[str, tuple[dict, ...]]

    def by_id(self, table: str, row_id: int) -> dict:
        return self.rows[table][row_id - 1]


def make_fixtures(seed: int) -> Fixtures:
    """
    >>> f = make_fixtures(0); [len(f.rows[t]) for t in TABLES], f.rows["employees"][0]["name"]
    ([8, 8, 8, 2], 'Ann')
    >>> make_fixtures(0) == make_fixtures(0)
    True
    """
    r = random.Random(f"polyrl-tools-fixtures:{seed}")
    employees = tuple({"name": n, "dept": r.choice(DEPTS)} for n in NAMES)
    events = tuple({"title": t, "owner": r.choice(NAMES), "day": r.choice(DAYS), "hour": r.randint(9, 17)}
                   for t in r.sample(EVENT_TITLES, 8))
    tickets = tuple({"title": t, "status": "open" if i < 6 else "closed", "assignee": r.choice(NAMES)}
                    for i, t in enumerate(r.sample(TICKET_TITLES, 8)))
    messages = tuple({"recipient": r.choice(NAMES), "body": b} for b in ("Welcome aboard", "Lunch is at noon"))
    return Fixtures({"employees": employees, "events": events, "tickets": tickets, "messages": messages})
