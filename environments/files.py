"""Shared pieces of the environments' task-file loaders: id prefix, column choice, reading through `datasets`.

Each environment keeps its own columns, row parsing and messages about its rows; what every loader does the
same way lives here, with the environment's kind ("math", "code", ...) named in every error.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

_NAME_RE = re.compile(r"[^A-Za-z0-9_]+")


def id_prefix(path: str, name: str | None = None) -> str:
    """The task id prefix of a file: `name`, else the file name without its extension, as an identifier.

    >>> id_prefix("data/gsm8k-test.v2.jsonl"), id_prefix("x.jsonl", "math500")
    ('gsm8k_test_v2', 'math500')
    """
    return name or _NAME_RE.sub("_", Path(path).stem).strip("_") or "file"


def pick_column(given: str | None, candidates: tuple[str, ...], columns: list[str], *, kind: str, what: str,
                display: str, option: str, required: bool) -> str | None:
    """The column `given` in the file's entry (it must exist), else the first of `candidates` present; None
    when none is and the column is optional, a ValueError naming the option to set when it is required."""
    if given is not None:
        if given not in columns:
            raise ValueError(f"{kind} task file {display}: no {what} column {given!r} (columns: {columns}); "
                             f"set `{option}` in its files entry to one of them")
        return given
    found = next((c for c in candidates if c in columns), None)
    if found is None and required:
        raise ValueError(f"{kind} task file {display}: no {what} column (looked for {list(candidates)}; columns: "
                         f"{columns}); name it with `{option}` in the file's entry of the `files` option")
    return found


def check_json_file(path: Path, display: str, *, kind: str) -> None:
    """Every non-blank line of a .jsonl / .ndjson file is a JSON object, and a .json file starts with { or [;
    else a ValueError naming the file and the line. datasets reports a bad line only as "an error occurred while
    generating the dataset", and a file whose first value is `null` crashes the process (SIGSEGV in its pyarrow
    reader; found by fuzzing, issue 10), so the lines are checked before datasets sees them."""
    suffix = path.suffix.lower()
    if suffix == ".json":
        with path.open("rb") as f:
            head = f.read(1 << 16).lstrip(b" \t\r\n\xef\xbb\xbf")
        if head and head[:1] not in (b"{", b"["):
            raise ValueError(f"{kind} task file {display} could not be read: it starts with {head[:20]!r}, not "
                             "a JSON object or array; write one JSON object per line or a JSON array of objects")
        return
    if suffix not in (".jsonl", ".ndjson"):
        return
    with path.open("rb") as f:
        for n, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                value = json.loads(raw)  # bytes: invalid UTF-8 is a UnicodeDecodeError, a ValueError
            except (ValueError, RecursionError) as e:
                raise ValueError(f"{kind} task file {display} could not be read: JSON parse error on line {n} "
                                 f"({type(e).__name__}: {str(e)[:120]}); write one JSON object per line, UTF-8 "
                                 "encoded") from None
            if not isinstance(value, dict):
                raise ValueError(f"{kind} task file {display} could not be read: line {n} is a JSON "
                                 f"{type(value).__name__}, not an object; write one JSON object per line")


def read_table(path: Path, display: str, *, kind: str, builders: dict[str, str], fix: str) -> Any:
    """The file as a `datasets.Dataset` (builder by extension); every failure is a ValueError that names the file
    and ends with `fix`, what the user should change in the file."""
    import datasets  # heavy: imported only when a file is configured

    builder = builders.get(path.suffix.lower())
    if builder is None:
        raise ValueError(f"{kind} task file {display}: unsupported extension {path.suffix!r}; use one of "
                         f"{sorted(builders)}")
    if not path.is_file():
        raise ValueError(f"{kind} task file {display} does not exist; fix the path in the `files` option "
                         "(relative paths are relative to the server's working directory)")
    if builder == "json":
        check_json_file(path, display, kind=kind)
    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # one bar per file and per verify worker would flood the server log
    try:
        return datasets.load_dataset(builder, data_files=str(path), split="train")
    except Exception as e:
        raise ValueError(f"{kind} task file {display} could not be read as {builder} ({type(e).__name__}: "
                         f"{str(e)[:300]}); {fix}") from e
    finally:
        if bars:
            datasets.enable_progress_bars()
