r"""Math problem sets from files: GSM8K- or MATH-style JSONL / JSON / Parquet, read with `datasets`.

One row is one task: a question column, an answer column and optionally a difficulty column. Answers may be
a bare final answer ("42", "\frac{1}{2}"), a GSM8K solution ending in "#### 42", or a MATH solution whose last
\boxed{...} holds the answer. Difficulty values may be easy/medium/hard, MATH's "Level 1".."Level 5" or 1..5.

A bad row (empty or non-string question, missing or over-long answer, unknown difficulty) raises a ValueError
naming the file, the row and the fix; with `skip_bad_rows` it is skipped instead, counted and logged.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict

from environments.files import id_prefix, pick_column, read_table
from verifiers.math import MAX_ANSWER_CHARS, extract_answer

log = logging.getLogger(__name__)

# Column names tried, in order, when the options do not name one (GSM8K: question/answer; MATH: problem/
# solution/level; MATH-500: problem/answer/level).
QUESTION_COLUMNS = ("question", "problem", "prompt")
ANSWER_COLUMNS = ("answer", "final_answer", "solution")
DIFFICULTY_COLUMNS = ("difficulty", "level")
BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}
LEVELS = {"1": "easy", "2": "easy", "3": "medium", "4": "hard", "5": "hard"}


class TaskFile(BaseModel):
    """One problem-set file in the math environment's `files` option (a bare string is just the path)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, frozen=True)

    path: str
    """A .jsonl, .json or .parquet file."""
    name: str | None = None
    """Task id prefix (ids are NAME-000012, by row); default: the file name without its extension."""
    question_column: str | None = None
    """Column holding the problem text; default: the first of question, problem, prompt that exists."""
    answer_column: str | None = None
    """Column holding the answer; default: the first of answer, final_answer, solution that exists."""
    difficulty_column: str | None = None
    """Column holding the difficulty; default: difficulty or level if present, else every row gets `difficulty`."""
    difficulty: str | None = None
    """Difficulty of every row when there is no difficulty column; default: the environment's default_difficulty."""


class FileRow(NamedTuple):
    task_id: str
    question: str
    answer: str
    difficulty: str


class _BadRow(Exception):
    pass


def file_name(spec: TaskFile) -> str:
    """The task id prefix of a file.

    >>> file_name(TaskFile(path="data/gsm8k-test.v2.jsonl")), file_name(TaskFile(path="x.jsonl", name="math500"))
    ('gsm8k_test_v2', 'math500')
    """
    return id_prefix(spec.path, spec.name)


def _column(given: str | None, candidates: tuple[str, ...], columns: list[str], what: str, display: str,
            option: str, required: bool) -> str | None:
    return pick_column(given, candidates, columns, kind="math", what=what, display=display, option=option,
                       required=required)


def _answer(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        raise _BadRow(f"answer is {value!r}")
    if isinstance(value, (int, float)):
        return repr(value) if isinstance(value, float) else str(value)
    if not isinstance(value, str):
        raise _BadRow(f"answer is a {type(value).__name__}, expected a string or a number")
    text = value.strip()
    if "####" in text:  # GSM8K: worked solution, then "#### 42"
        text = text.rsplit("####", 1)[1].strip()
    elif "\\boxed" in text or "\\fbox" in text:  # MATH: the solution's last box
        ext = extract_answer(text)
        if ext.answer is None:
            raise _BadRow(f"answer's last \\boxed{{}} cannot be read: {ext.note}")
        text = ext.answer
    if not text:
        raise _BadRow("answer is empty")
    if len(text) > MAX_ANSWER_CHARS:
        raise _BadRow(f"answer is {len(text)} characters with no '#### ' marker or \\boxed{{}}: point the "
                      "answer column at the final answer")
    return text


def _difficulty(value: Any, default: str, difficulties: tuple[str, ...]) -> str:
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    text = str(value).strip()
    if text.lower() in difficulties:
        return text.lower()
    level = text.lower().removeprefix("level").strip()
    if level in LEVELS:
        return LEVELS[level]
    raise _BadRow(f"difficulty {value!r} is not one of {list(difficulties)}, 'Level 1'..'Level 5' or 1..5")


def _read(path: Path, display: str) -> Any:
    return read_table(path, display, kind="math", builders=BUILDERS,
                      fix="fix the file: one JSON object per line (jsonl) or a Parquet table, each column holding "
                          "a single type")


def load_file(spec: TaskFile, *, default_difficulty: str, difficulties: tuple[str, ...],
              skip_bad_rows: bool) -> tuple[list[FileRow], int]:
    """The file's tasks and the number of bad rows skipped (always 0 unless `skip_bad_rows`).

    >>> import json, pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "gsm8k.jsonl"
    >>> _ = path.write_text(json.dumps({"question": "1+1?", "answer": "1+1=2\\n#### 2"}) + "\\n")
    >>> load_file(TaskFile(path=str(path)), default_difficulty="easy", difficulties=("easy",), skip_bad_rows=False)
    ([FileRow(task_id='gsm8k-000000', question='1+1?', answer='2', difficulty='easy')], 0)
    """
    path, display = Path(spec.path).expanduser(), spec.path
    table = _read(path, display)
    columns = list(table.column_names)
    q_col = _column(spec.question_column, QUESTION_COLUMNS, columns, "question", display, "question_column", True)
    a_col = _column(spec.answer_column, ANSWER_COLUMNS, columns, "answer", display, "answer_column", True)
    d_col = _column(spec.difficulty_column, DIFFICULTY_COLUMNS, columns, "difficulty", display,
                    "difficulty_column", False)
    default = spec.difficulty or default_difficulty
    if default not in difficulties:
        raise ValueError(f"math task file {display}: difficulty {default!r} is not one of {list(difficulties)}")
    name = file_name(spec)
    rows: list[FileRow] = []
    skipped: list[str] = []
    for i, row in enumerate(table):
        try:
            question = row[q_col]
            if not isinstance(question, str):
                raise _BadRow(f"question is {'empty' if question is None else 'a ' + type(question).__name__}, "
                              "expected text")
            if not question.strip():
                raise _BadRow("question is empty")
            answer = _answer(row[a_col])
            difficulty = _difficulty(row[d_col], default, difficulties) if d_col else default
        except _BadRow as e:
            line = f", line {i + 1}" if path.suffix.lower() == ".jsonl" else ""
            where = f"math task file {display}, row {i} (0-based{line})"
            if not skip_bad_rows:
                raise ValueError(f"{where}: {e}. Fix or delete the row, or set the option skip_bad_rows: true "
                                 "to skip bad rows (they are counted and logged)") from None
            skipped.append(f"row {i}: {e}")
            continue
        rows.append(FileRow(f"{name}-{i:06d}", question.strip(), answer, difficulty))
    if skipped:
        log.warning("math task file %s: skipped %d bad row(s) of %d; first: %s", display, len(skipped),
                    len(table), "; ".join(skipped[:3]))
    if not rows:
        raise ValueError(f"math task file {display} has no usable rows ({len(table)} rows, {len(skipped)} bad); "
                         "fix the file or remove it from the `files` option")
    return rows, len(skipped)
