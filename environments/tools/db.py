"""One episode's SQLite database and the tool calls that read and change it.

Each episode owns a private in-memory database (`sqlite3.connect(":memory:")`), copied from a template that
holds the fixtures (`Connection.backup`, ~0.1 ms): nothing is written to disk, so nothing can be left behind
there, and two episodes can never see each other's rows; the memory goes when the connection is closed
(at verify, at TTL expiry or eviction, or at close()).

Safety: tool calls are parsed as strict JSON, validated against the tool's JSON Schema and then column by
column (whitelisted identifiers, typed values, known employees, enums, bounds). SQL is built only from
whitelisted identifiers; values are bound parameters. As a second line of defence an SQLite authorizer allows
only reads and row writes on the four tables (no DDL, ATTACH, PRAGMA, ...). Every failure is an error
observation for the model ("error: ..."), never an exception out of `execute`.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from collections.abc import Sequence
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from environments.tools.schema import DDL, KEY, TABLES, TOOL_SCHEMAS, Column, Fixtures
from verifiers.db_state import Snapshot, snapshot

MAX_ACTION_CHARS = 20_000  # a turn longer than this is not a tool call worth parsing
MAX_CALLS_PER_TURN = 4
MAX_OBSERVATION_CHARS = 400  # observations go back into a context of 512 tokens on the tiny policy
_CALL_RE = re.compile(r"<tool_call>(.*?)</tool_call>", re.S)
# In a whole transcript (reference_response, single-turn verify) observations sit between <|tool|> and the next
# <|assistant|>; they are dropped before calls are read, so text echoed in an observation is never executed.
_OBSERVATION_RE = re.compile(r"<\|tool\|>.*?(?:<\|assistant\|>|\Z)", re.S)
_VALIDATORS = {name: Draft202012Validator(s["parameters"]) for name, s in TOOL_SCHEMAS.items()}
_ALLOWED_ACTIONS = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_INSERT, sqlite3.SQLITE_UPDATE,
                    sqlite3.SQLITE_DELETE, sqlite3.SQLITE_TRANSACTION}
_SYSTEM_TABLES = {"sqlite_sequence"}  # AUTOINCREMENT bookkeeping, written by SQLite itself on insert


class ToolError(Exception):
    """A bad call: its message is the observation the model sees (after 'error: ')."""


def _authorizer(action: int, arg1: str | None, arg2: str | None, db: str | None, trigger: str | None) -> int:
    if action == sqlite3.SQLITE_FUNCTION:
        return sqlite3.SQLITE_OK if arg2 == "count" else sqlite3.SQLITE_DENY
    if action not in _ALLOWED_ACTIONS:
        return sqlite3.SQLITE_DENY
    if action in (sqlite3.SQLITE_READ, sqlite3.SQLITE_INSERT, sqlite3.SQLITE_UPDATE, sqlite3.SQLITE_DELETE):
        if arg1 not in TABLES and arg1 not in _SYSTEM_TABLES:
            return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


def build_template(fixtures: Fixtures) -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", check_same_thread=False)
    conn.executescript(DDL)
    for table, rows in fixtures.rows.items():
        for row in rows:
            cols = list(row)
            conn.execute(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                         [row[c] for c in cols])
    conn.commit()
    return conn


def _strict_json(text: str) -> Any:
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
        keys = [k for k, _ in pairs]
        if len(set(keys)) != len(keys):
            raise ToolError(f"duplicate key in tool call JSON: {sorted({k for k in keys if keys.count(k) > 1})}")
        return dict(pairs)

    def no_constants(name: str) -> Any:
        raise ToolError(f"{name} is not JSON")

    try:
        return json.loads(text, object_pairs_hook=no_duplicates, parse_constant=no_constants)
    except json.JSONDecodeError as e:
        raise ToolError(f"tool call is not valid JSON ({e.msg} at char {e.pos})") from None
    except ValueError as e:  # e.g. an integer of more than 4,300 digits (Python's int-parsing limit)
        raise ToolError(f"tool call is not usable JSON ({str(e)[:80]})") from None
    except RecursionError:
        raise ToolError("tool call JSON is nested too deeply") from None


def parse_calls(action: str, *, transcript: bool = False) -> list[dict | ToolError]:
    """The tool calls of one turn, in order: each a dict {"name", "arguments"} or the ToolError describing why
    it is unusable. `transcript`: `action` is a whole episode; observations in it are ignored.

    >>> parse_calls('<tool_call>{"name": "query", "arguments": {"table": "events"}}</tool_call>')
    [{'name': 'query', 'arguments': {'table': 'events'}}]
    >>> parse_calls('<tool_call>{"name": "query"</tool_call>')[0]
    ToolError("tool call is not valid JSON (Expecting ',' delimiter at char 16)")
    """
    if len(action) > MAX_ACTION_CHARS:
        return [ToolError(f"turn is {len(action)} characters; the limit is {MAX_ACTION_CHARS}")]
    if transcript:
        action = _OBSERVATION_RE.sub("", action)
    out: list[dict | ToolError] = []
    for m in _CALL_RE.finditer(action):
        try:
            call = _strict_json(m.group(1).strip())
            if not isinstance(call, dict) or set(call) - {"name", "arguments"} or "name" not in call:
                raise ToolError('a tool call is a JSON object {"name": ..., "arguments": {...}} with no other keys')
            if not isinstance(call["name"], str):
                raise ToolError("tool call `name` must be a string")
            args = call.get("arguments", {})
            if not isinstance(args, dict):
                raise ToolError("tool call `arguments` must be a JSON object")
            out.append({"name": call["name"], "arguments": args})
        except ToolError as e:
            out.append(e)
    return out


def _check_value(table: str, col: str, value: Any, employees: set[str]) -> Any:
    spec: Column | None = TABLES[table].get(col)
    if col == KEY:
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**62:
            raise ToolError(f"{table}.id must be an integer 0..2^62, got {json.dumps(value)[:40]}")
        return value
    if spec is None:
        raise ToolError(f"unknown column {col[:40]!r} in {table}; columns: {', '.join((KEY, *TABLES[table]))}")
    if spec.kind == "int":
        if not isinstance(value, int) or isinstance(value, bool) or not spec.low <= value <= spec.high:
            raise ToolError(f"{table}.{col} must be an integer {spec.low}..{spec.high}, got {json.dumps(value)[:40]}")
        return value
    if not isinstance(value, str):
        raise ToolError(f"{table}.{col} must be a string, got {json.dumps(value)[:40]}")
    if spec.kind == "enum" and value not in spec.choices:
        raise ToolError(f"{table}.{col} must be one of {'|'.join(spec.choices)}, got {value[:40]!r}")
    if spec.kind == "employee" and value not in employees:
        raise ToolError(f"no employee named {value[:40]!r} (employees: {', '.join(sorted(employees))})")
    if spec.kind == "text" and not 0 < len(value) <= spec.max_len:
        raise ToolError(f"{table}.{col} must be 1..{spec.max_len} characters")
    return value


def _ascii(text: str) -> str:
    # The tiny policy's vocabulary is printable ASCII: anything else would become <unk> in the observation.
    return text.encode("ascii", "replace").decode()


class EpisodeDB:
    """A private database for one episode; thread-safe (a lock per episode: /step runs in worker threads)."""

    def __init__(self, template: sqlite3.Connection, template_lock: threading.Lock):
        self.conn = sqlite3.connect(":memory:", check_same_thread=False)
        with template_lock:  # one reader of the template connection at a time
            template.backup(self.conn)
        self.conn.set_authorizer(_authorizer)
        self.lock = threading.Lock()
        self.calls = 0  # tool calls executed, errors included

    def employees(self) -> set[str]:
        return {r[0] for r in self.conn.execute("SELECT name FROM employees")}

    def snapshot(self, tables: Sequence[str]) -> Snapshot:
        with self.lock:
            return snapshot(self.conn, tables)

    def close(self) -> None:
        with self.lock:
            self.conn.close()

    # -- tools -------------------------------------------------------------------------------------
    def execute(self, call: dict | ToolError) -> str:
        """Run one parsed call; the observation text ("ok: ...", "N rows: ..." or "error: ...")."""
        with self.lock:
            self.calls += 1
            try:
                if isinstance(call, ToolError):
                    raise call
                return _ascii(self._run(call["name"], call["arguments"]))[:MAX_OBSERVATION_CHARS]
            except ToolError as e:
                self.conn.rollback()
                return _ascii(f"error: {e}")[:MAX_OBSERVATION_CHARS]
            except sqlite3.Error as e:  # the authorizer or a constraint: the call did nothing
                self.conn.rollback()
                return f"error: database refused the call ({type(e).__name__}: {str(e)[:100]})"
            except Exception as e:  # a case the checks above missed must still cost one call, not the server
                self.conn.rollback()
                return _ascii(f"error: call failed ({type(e).__name__}: {str(e)[:100]})")

    def _run(self, name: str, args: dict) -> str:
        validator = _VALIDATORS.get(name)
        if validator is None:
            raise ToolError(f"unknown tool {name[:40]!r}; tools: {', '.join(TOOL_SCHEMAS)}")
        err = best_match(validator.iter_errors(args))
        if err is not None:
            where = "/".join(str(p) for p in err.absolute_path) or "arguments"
            raise ToolError(f"bad arguments for {name} ({where}): {err.message[:160]}")
        if name == "send_message":
            name, args = "insert", {"table": "messages", "values": {"recipient": args["to"], "body": args["body"]}}
        table = args["table"]
        employees = self.employees()
        where = {c: _check_value(table, c, v, employees) for c, v in args.get("where", {}).items()}
        clause = " AND ".join(f"{c} = ?" for c in where) or "1"
        params = list(where.values())
        if name == "query":
            cols = args.get("columns") or [KEY, *TABLES[table]]
            for c in cols:
                if c != KEY and c not in TABLES[table]:
                    raise ToolError(f"unknown column {c[:40]!r} in {table}; columns: {', '.join((KEY, *TABLES[table]))}")
            limit = args.get("limit", 5)
            (total,) = self.conn.execute(f"SELECT COUNT(*) FROM {table} WHERE {clause}", params).fetchone()
            rows = self.conn.execute(f"SELECT {', '.join(cols)} FROM {table} WHERE {clause} ORDER BY id LIMIT ?",
                                     [*params, limit]).fetchall()
            shown = " ".join(json.dumps(dict(zip(cols, r)), separators=(",", ":")) for r in rows)
            more = f" (first {len(rows)} of {total})" if total > len(rows) else ""
            return f"{total} row{'s' if total != 1 else ''}{more}: {shown}" if rows else "0 rows"
        values = {c: _check_value(table, c, v, employees) for c, v in args.get("values", {}).items()}
        if KEY in values:
            raise ToolError(f"{table}.id is assigned by the database and cannot be written")
        if name == "insert":
            for c, spec in TABLES[table].items():
                if c not in values:
                    if spec.required:
                        raise ToolError(f"insert into {table} needs {', '.join(TABLES[table])}; missing {c}")
                    values[c] = spec.default
            cur = self.conn.execute(f"INSERT INTO {table} ({', '.join(values)}) VALUES "
                                    f"({', '.join('?' * len(values))})", list(values.values()))
            self.conn.commit()
            if table == "messages":
                return f"ok: message {cur.lastrowid} sent to {values['recipient']}"
            return f"ok: inserted {table} id {cur.lastrowid}"
        if name == "update":
            cur = self.conn.execute(f"UPDATE {table} SET {', '.join(f'{c} = ?' for c in values)} WHERE {clause}",
                                    [*values.values(), *params])
        else:  # delete
            cur = self.conn.execute(f"DELETE FROM {table} WHERE {clause}", params)
        self.conn.commit()
        verb = "updated" if name == "update" else "deleted"
        n = cur.rowcount
        return f"ok: {n} row{'s' if n != 1 else ''} {verb} in {table}" + (" (none matched)" if n == 0 else "")
