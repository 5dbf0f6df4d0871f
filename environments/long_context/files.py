"""Multi-document QA task files: JSONL / JSON / Parquet read with `datasets`, one task per row.

Columns:

    question     the question (text)                                              required
    documents    a list of document texts, numbered [1], [2], ... in the prompt   one of documents / context
    context      the whole context as one text, used as is
    answer       the reference answer, or a list of acceptable answers (aliases)  required
    difficulty   easy | medium | hard; default: the `default_difficulty` option
    id           task id suffix; default: the row number

A bad row is a ValueError naming the file, the row and the fix; with `skip_bad_rows` it is skipped, counted and
logged.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, NamedTuple

from environments.files import check_json_file
from verifiers.qa import MAX_ANSWER_CHARS

log = logging.getLogger(__name__)

BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}
_NAME_RE = re.compile(r"[^A-Za-z0-9_]+")


class FileTask(NamedTuple):
    task_id: str
    context: str
    question: str
    answers: tuple[str, ...]
    difficulty: str


class _BadRow(Exception):
    pass


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _BadRow(f"{what} is {'missing' if value is None else 'empty or not text'}")
    return value.strip()


def _answers(value: Any) -> tuple[str, ...]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise _BadRow("answer must be a text or a non-empty list of texts")
    out = tuple(_text(a, "an answer") for a in items)
    if any(len(a) > MAX_ANSWER_CHARS for a in out):
        raise _BadRow(f"an answer is longer than {MAX_ANSWER_CHARS} characters: this is short-answer QA")
    return out


def _context(row: dict) -> str:
    docs, context = row.get("documents"), row.get("context")
    if docs is not None:
        if not isinstance(docs, list) or not docs:
            raise _BadRow("documents must be a non-empty list of texts")
        return "\n".join(f"[{k + 1}] {_text(d, f'documents[{k}]')}" for k, d in enumerate(docs))
    if context is not None:
        return _text(context, "context")
    raise _BadRow("the row has neither documents nor context")


def load_file(path: str, *, default_difficulty: str, difficulties: tuple[str, ...],
              skip_bad_rows: bool) -> tuple[list[FileTask], int]:
    """The file's tasks and the number of bad rows skipped.

    >>> import json, pathlib, tempfile
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "qa.jsonl"
    >>> _ = p.write_text(json.dumps({"question": "Who?", "documents": ["Ann did it."], "answer": "Ann"}) + "\\n")
    >>> load_file(str(p), default_difficulty="easy", difficulties=("easy",), skip_bad_rows=False)[0][0].context
    '[1] Ann did it.'
    """
    import datasets  # heavy: only when a file is configured

    p = Path(path).expanduser()
    builder = BUILDERS.get(p.suffix.lower())
    if builder is None:
        raise ValueError(f"long_context task file {path}: unsupported extension {p.suffix!r}; use one of "
                         f"{sorted(BUILDERS)}")
    if not p.is_file():
        raise ValueError(f"long_context task file {path} does not exist; fix the path in the `files` option")
    if builder == "json":
        check_json_file(p, path, kind="long_context")
    datasets.disable_progress_bars()
    try:
        table = datasets.load_dataset(builder, data_files=str(p), split="train")
    except Exception as e:
        raise ValueError(f"long_context task file {path} could not be read as {builder} ({type(e).__name__}: "
                         f"{str(e)[:300]}); write one JSON object per line, each column of a single type") from e
    for required in ("question", "answer"):
        if required not in table.column_names:
            raise ValueError(f"long_context task file {path}: no {required!r} column (columns: "
                             f"{table.column_names}); rows need question, answer and documents or context")
    name = _NAME_RE.sub("_", p.stem).strip("_") or "file"
    rows, skipped, seen = [], [], set()
    for i, row in enumerate(table):
        try:
            question = _text(row["question"], "question")
            context = _context(row)
            answers = _answers(row["answer"])
            difficulty = row.get("difficulty") or default_difficulty
            if difficulty not in difficulties:
                raise _BadRow(f"difficulty {difficulty!r} is not one of {list(difficulties)}")
            suffix = str(row["id"]) if row.get("id") is not None else f"{i:06d}"
            if f"{name}-{suffix}" in seen:
                raise _BadRow(f"id {suffix!r} appears twice")
        except _BadRow as e:
            where = f"long_context task file {path}, row {i} (0-based)"
            if not skip_bad_rows:
                raise ValueError(f"{where}: {e}. Fix or delete the row, or set skip_bad_rows: true") from None
            skipped.append(f"row {i}: {e}")
            continue
        seen.add(f"{name}-{suffix}")
        rows.append(FileTask(f"{name}-{suffix}", context, question, answers, difficulty))
    if skipped:
        log.warning("long_context task file %s: skipped %d bad row(s); first: %s", path, len(skipped),
                    "; ".join(skipped[:3]))
    if not rows:
        raise ValueError(f"long_context task file {path} has no usable rows ({len(skipped)} bad)")
    return rows, len(skipped)
