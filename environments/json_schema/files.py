"""Task files: JSONL / JSON / Parquet read through `datasets`, one task per row.

Columns:
- `schema` (required): the JSON Schema, as a JSON string (recommended: exact round trip) or as an object.
- `difficulty` (optional): easy / medium / hard; missing or null -> the `default_difficulty` option.
- `example` (optional): an instance valid under the schema, used as the reference response. A string is read
  as JSON text, so a string instance is written JSON-encoded ("\\"abc\\""); null or missing means no example.
- `id` (optional): the task id; default "<file stem>-<row, 6 digits>". Ids must be unique over all tasks.

A bad row (unparsable or invalid schema, unknown difficulty, example failing its schema) raises ValueError
naming the file, the row and the fix; with skip_bad_rows it is skipped instead, counted and logged.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from environments.base import TaskRecord
from environments.files import check_json_file
from environments.json_schema.records import compact, make_record
from verifiers.json_schema import schema_error, verify

log = logging.getLogger(__name__)

_BUILDERS = {".jsonl": "json", ".json": "json", ".ndjson": "json", ".parquet": "parquet"}


class BadRow(ValueError):
    """One row that cannot become a task; the message says what is wrong with it."""


def _strict_json(text: str, what: str) -> Any:
    def pairs(items: list) -> dict:
        obj = dict(items)
        if len(obj) != len(items):  # json.loads would keep the last value silently
            dup = next(k for i, (k, _) in enumerate(items) if any(k == other for other, _ in items[:i]))
            raise BadRow(f"{what} has the duplicate key {dup!r}")
        return obj

    def constant(name: str) -> Any:
        raise BadRow(f"{what} contains {name}, which is not JSON")

    try:
        return json.loads(text, object_pairs_hook=pairs, parse_constant=constant)
    except BadRow:
        raise
    except (ValueError, RecursionError) as err:  # ValueError: also an int over 4,300 digits (issue 10 fuzzing)
        raise BadRow(f"{what} is not valid JSON text ({str(err)[:200]})") from None


def read_rows(path: Path) -> list[dict[str, Any]]:
    """All rows of one task file as dicts; ValueError naming the file when it cannot be read."""
    builder = _BUILDERS.get(path.suffix.lower())
    if builder is None:
        raise ValueError(f"json_schema: task file {path} has an unsupported extension {path.suffix!r}; "
                         f"use one of {sorted(_BUILDERS)} (JSON Lines or Parquet)")
    if not path.is_file():
        raise ValueError(f"json_schema: task file {path} does not exist; fix the path in options.files "
                         "(relative paths are resolved from the server's working directory)")
    if path.stat().st_size == 0:
        raise ValueError(f"json_schema: task file {path} is empty; remove it from options.files or add tasks")
    if builder == "json":
        try:
            check_json_file(path, str(path), kind="json_schema")
        except ValueError as err:
            raise ValueError(f"json_schema: cannot read task file {path} as json ({err}); check that it is valid "
                             "JSON Lines (one object per line)") from None
    import datasets  # heavy import, only when task files are configured

    try:
        ds = datasets.load_dataset(builder, data_files=str(path), split="train")
    except Exception as err:  # datasets raises many types (DatasetGenerationError, ArrowInvalid, StopIteration)
        detail = " ".join(str(e) for e in (err, err.__cause__) if e is not None and str(e))
        raise ValueError(f"json_schema: cannot read task file {path} as {builder} ({type(err).__name__}: "
                         f"{detail or 'no detail'}); check that it is valid "
                         f"{'JSON Lines (one object per line)' if builder == 'json' else 'Parquet'}") from err
    if "schema" not in ds.column_names:
        raise ValueError(f"json_schema: task file {path} has no `schema` column (columns: {ds.column_names}); "
                         "add a `schema` column holding each task's JSON Schema as a JSON string or object")
    if len(ds) == 0:
        raise ValueError(f"json_schema: task file {path} has no rows; remove it from options.files or add tasks")
    return [dict(row) for row in ds]


def row_to_record(row: dict[str, Any], path: Path, index: int, difficulties: tuple[str, ...],
                  default_difficulty: str) -> TaskRecord:
    """One row as a TaskRecord; BadRow with the reason when the row is unusable.

    >>> r = row_to_record({"schema": '{"type": "integer"}', "example": "7"}, Path("t.jsonl"), 0, ("easy",), "easy")
    >>> r.task.task_id, r.task.prompt[0].content, r.reference.example_json
    ('t-000000', 'Return JSON matching this schema: {"type":"integer"}', '7')
    """
    schema = row.get("schema")
    if isinstance(schema, str):
        schema = _strict_json(schema, "the schema")
    if schema is None:
        raise BadRow("the schema is empty")
    problem = schema_error(schema)
    if problem is not None:
        raise BadRow(problem)

    difficulty = row.get("difficulty")
    difficulty = default_difficulty if difficulty is None else difficulty
    if difficulty not in difficulties:
        raise BadRow(f"difficulty {difficulty!r} is not one of {difficulties}")

    example_json = None
    example = row.get("example")
    if example is not None:
        if isinstance(example, str):
            example = _strict_json(example, "the example")
        example_json = compact(example)
        verdict = verify(example_json, schema)
        if verdict.reward != 1.0:
            raise BadRow(f"the example does not satisfy the schema: {verdict.reason}")

    task_id = row.get("id")
    if task_id is None:
        task_id = f"{path.stem}-{index:06d}"
    elif not isinstance(task_id, str) or not task_id:
        raise BadRow(f"id {task_id!r} is not a non-empty string")
    return make_record(task_id, difficulty, schema, example_json, source=f"{path} row {index}")


def load_file(path: str | Path, difficulties: tuple[str, ...], default_difficulty: str,
              skip_bad_rows: bool) -> tuple[list[TaskRecord], int]:
    """(records, number of skipped bad rows) of one task file."""
    path = Path(path)
    records, skipped, first_problem = [], 0, ""
    for index, row in enumerate(read_rows(path)):
        try:
            records.append(row_to_record(row, path, index, difficulties, default_difficulty))
        except BadRow as err:
            if not skip_bad_rows:
                raise ValueError(f"json_schema: task file {path} row {index} (0-based): {err}. Fix the row, or "
                                 "set options.skip_bad_rows=true to skip bad rows (they are counted and logged)"
                                 ) from None
            skipped += 1
            first_problem = first_problem or f"row {index}: {err}"
    if skipped:
        log.warning("json_schema: skipped %d of %d rows of %s (skip_bad_rows); first: %s",
                    skipped, skipped + len(records), path, first_problem)
    return records, skipped
