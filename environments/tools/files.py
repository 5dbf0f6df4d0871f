"""Tool-use task files: JSONL / JSON / Parquet read with `datasets`, one task per row.

Columns:

    instruction   the task for the model (text)                                       required
    gold_calls    the calls that solve it: a list of {"name": ..., "arguments": {...}}  required
                  or that list as a JSON string (exact; recommended: Arrow turns a list of objects with
                  different keys into structs whose missing keys are null, which are dropped again here)
    difficulty    easy | medium | hard; default: from the number of gold calls (1, 2, 3+)
    id            task id suffix; default: the row number

Every row's gold calls are executed on a fresh copy of the fixtures when the file loads: a call that would
give an error observation (unknown tool, bad argument, unknown employee, ...) makes the row bad. A bad row is a
ValueError naming the file, the row and the fix; with `skip_bad_rows` it is skipped, counted and logged.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any, Callable, NamedTuple

from environments.files import check_json_file

log = logging.getLogger(__name__)

BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}
_NAME_RE = re.compile(r"[^A-Za-z0-9_]+")


class FileTask(NamedTuple):
    task_id: str
    instruction: str
    calls: tuple[dict, ...]
    difficulty: str | None


class _BadRow(Exception):
    pass


def _drop_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


def _calls(value: Any) -> tuple[dict, ...]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise _BadRow(f"gold_calls is a string but not JSON ({e.msg})") from None
        except (ValueError, RecursionError) as e:  # an int over 4,300 digits, nesting too deep (issue 10 fuzzing)
            raise _BadRow(f"gold_calls is a string but not usable JSON ({type(e).__name__})") from None
    else:
        value = _drop_nulls(value)
    if not isinstance(value, list) or not value:
        raise _BadRow("gold_calls must be a non-empty list of {\"name\": ..., \"arguments\": {...}}")
    for j, c in enumerate(value):
        if not isinstance(c, dict) or not isinstance(c.get("name"), str) or not isinstance(c.get("arguments", {}), dict):
            raise _BadRow(f"gold_calls[{j}] is not an object with a string `name` and an object `arguments`")
    return tuple({"name": c["name"], "arguments": c.get("arguments", {})} for c in value)


def file_name(path: str) -> str:
    """
    >>> file_name("data/hr-tasks.v1.jsonl")
    'hr_tasks_v1'
    """
    return _NAME_RE.sub("_", Path(path).stem).strip("_") or "file"


def load_file(path: str, *, difficulties: tuple[str, ...], skip_bad_rows: bool,
              check: Callable[[tuple[dict, ...]], str | None]) -> tuple[list[FileTask], int]:
    """The file's tasks and the number of bad rows skipped. `check(calls)` returns the error observation of the
    first gold call that fails on fresh fixtures, or None."""
    import datasets  # heavy: only when a file is configured

    p = Path(path).expanduser()
    builder = BUILDERS.get(p.suffix.lower())
    if builder is None:
        raise ValueError(f"tools task file {path}: unsupported extension {p.suffix!r}; use one of {sorted(BUILDERS)}")
    if not p.is_file():
        raise ValueError(f"tools task file {path} does not exist; fix the path in the `files` option")
    if builder == "json":
        check_json_file(p, path, kind="tools")
    datasets.disable_progress_bars()
    try:
        table = datasets.load_dataset(builder, data_files=str(p), split="train")
    except Exception as e:
        raise ValueError(f"tools task file {path} could not be read as {builder} ({type(e).__name__}: "
                         f"{str(e)[:300]}); write one JSON object per line, with gold_calls as a JSON string if "
                         "its rows mix argument types") from e
    for required in ("instruction", "gold_calls"):
        if required not in table.column_names:
            raise ValueError(f"tools task file {path}: no {required!r} column (columns: {table.column_names}); "
                             "each row needs instruction and gold_calls")
    name = file_name(path)
    rows, skipped, seen = [], [], set()
    for i, row in enumerate(table):
        try:
            text = row["instruction"]
            if not isinstance(text, str) or not text.strip():
                raise _BadRow("instruction is empty or not text")
            calls = _calls(row["gold_calls"])
            difficulty = row.get("difficulty")
            if difficulty is not None and difficulty not in difficulties:
                raise _BadRow(f"difficulty {difficulty!r} is not one of {list(difficulties)}")
            suffix = str(row["id"]) if row.get("id") is not None else f"{i:06d}"
            tid = f"{name}-{suffix}"
            if tid in seen:
                raise _BadRow(f"id {suffix!r} appears twice")
            problem = check(calls)
            if problem is not None:
                raise _BadRow(f"a gold call fails on the fixtures: {problem}")
        except _BadRow as e:
            where = f"tools task file {path}, row {i} (0-based{', line ' + str(i + 1) if builder == 'json' else ''})"
            if not skip_bad_rows:
                raise ValueError(f"{where}: {e}. Fix or delete the row, or set skip_bad_rows: true") from None
            skipped.append(f"row {i}: {e}")
            continue
        seen.add(tid)
        rows.append(FileTask(tid, text.strip(), calls, difficulty))
    if skipped:
        log.warning("tools task file %s: skipped %d bad row(s); first: %s", path, len(skipped), "; ".join(skipped[:3]))
    if not rows:
        raise ValueError(f"tools task file {path} has no usable rows ({len(skipped)} bad)")
    return rows, len(skipped)
