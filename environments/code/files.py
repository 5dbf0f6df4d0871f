"""Programming task sets from files: JSONL / JSON / Parquet with APPS- or CodeContests-like columns, via `datasets`.

One row is one task. Columns (the first that exists is used, or name one in the file's entry):
  question    question | prompt | problem | description                  required, the task statement
  tests       tests | input_output | test_cases                         required, unless CodeContests columns
              or public_tests + private_tests + generated_tests         (each {"input": [...], "output": [...]})
  reference   reference | solution | solutions | canonical_solution     optional: a program, or a list (first used)
  difficulty  difficulty | level                                        optional: easy/medium/hard, APPS's
                                                                        introductory/interview/competition, 1..5
  fn_name     fn_name                                                   optional: function-call style tests
A tests value may be a JSON string or structured data, in any of these shapes:
  [{"input": "1 2\\n", "output": "3\\n"}, ...]                         stdin/stdout
  [{"fn": "f", "args": [1, 2], "expected": 3}, ...]                    function call
  {"inputs": [...], "outputs": [...], "fn_name": "f"}                  APPS (fn_name: inputs are argument lists)
  {"input": [...], "output": [...]}                                    CodeContests
Rows with more than MAX_TESTS (50) tests keep the first 50 (Nemotron 3's cap). Tests and references never leave
the server: prompts carry the question only.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict

from environments.files import id_prefix, pick_column, read_table
from verifiers.sandbox import MAX_TESTS, as_test

log = logging.getLogger(__name__)

QUESTION_COLUMNS = ("question", "prompt", "problem", "description")
TESTS_COLUMNS = ("tests", "input_output", "test_cases")
CONTEST_COLUMNS = ("public_tests", "private_tests", "generated_tests")  # CodeContests: all of them are tests
REFERENCE_COLUMNS = ("reference", "solution", "solutions", "canonical_solution")
DIFFICULTY_COLUMNS = ("difficulty", "level")
BUILDERS = {".jsonl": "json", ".json": "json", ".ndjson": "json", ".parquet": "parquet"}
LEVELS = {"introductory": "easy", "interview": "medium", "competition": "hard",
          "1": "easy", "2": "easy", "3": "medium", "4": "hard", "5": "hard"}


class CodeTaskFile(BaseModel):
    """One task file in the code environment's `files` option (a bare string is just the path)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, frozen=True)

    path: str
    """A .jsonl, .json, .ndjson or .parquet file."""
    name: str | None = None
    """Task id prefix (ids are NAME-000012, by row); default: the file name without its extension."""
    question_column: str | None = None
    """Column of the task statement; default: the first of question, prompt, problem, description."""
    tests_column: str | None = None
    """Column of the tests; default: tests, input_output or test_cases, else CodeContests' *_tests columns."""
    reference_column: str | None = None
    """Column of a reference program; default: reference, solution, solutions or canonical_solution if any."""
    difficulty_column: str | None = None
    """Column of the difficulty; default: difficulty or level if present."""
    difficulty: str | None = None
    """Difficulty of every row when there is no difficulty column; default: the environment's default."""


class CodeRow(NamedTuple):
    task_id: str
    question: str
    tests: tuple  # StdioTest / CallTest
    reference: str | None
    difficulty: str


class _BadRow(Exception):
    pass


def file_name(spec: CodeTaskFile) -> str:
    """
    >>> file_name(CodeTaskFile(path="data/apps-test.jsonl"))
    'apps_test'
    """
    return id_prefix(spec.path, spec.name)


def _decode(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except (ValueError, RecursionError):  # RecursionError: nested too deep (issue 10 fuzzing)
            raise _BadRow(f"tests value is a string but not JSON: {value[:80]!r}") from None
    return value


def _text(value: Any) -> str:
    if isinstance(value, list):  # APPS stores some stdin inputs as a list of lines
        return "\n".join(str(v) for v in value) + "\n"
    if not isinstance(value, str):
        raise _BadRow(f"stdin/stdout test value is a {type(value).__name__}, expected text")
    return value


def parse_tests(value: Any, fn_name: str | None = None, allow_empty: bool = False) -> tuple:
    """Tests from one row's tests value (module docstring lists the shapes).

    >>> parse_tests('{"inputs": ["1 2\\\\n"], "outputs": ["3\\\\n"]}')
    (StdioTest(input='1 2\\n', output='3\\n'),)
    >>> parse_tests({"inputs": [[2, 3]], "outputs": [5], "fn_name": "add"})
    (CallTest(fn='add', args=(2, 3), expected=5),)
    """
    value = _decode(value)
    if isinstance(value, dict):
        fn_name = value.get("fn_name") or fn_name
        ins = value.get("inputs", value.get("input"))
        outs = value.get("outputs", value.get("output"))
        if not isinstance(ins, list) or not isinstance(outs, list) or len(ins) != len(outs):
            raise _BadRow("tests mapping needs equally long `inputs`/`outputs` (APPS) or `input`/`output` "
                          "(CodeContests) lists")
        items = [{"fn": fn_name, "args": i if isinstance(i, list) else [i], "expected": o} if fn_name
                 else {"input": _text(i), "output": _text(o)} for i, o in zip(ins, outs)]
    elif isinstance(value, list):
        items = []
        for t in value:
            t = _decode(t)
            if fn_name and isinstance(t, dict) and "fn" not in t and "input" in t:
                args = t["input"] if isinstance(t["input"], list) else [t["input"]]
                t = {"fn": fn_name, "args": args, "expected": t.get("output")}
            elif isinstance(t, dict) and "input" in t:
                t = {**t, "input": _text(t["input"]), "output": _text(t.get("output", ""))}
            items.append(t)
    else:
        raise _BadRow(f"tests is a {type(value).__name__}; expected a list of tests or an inputs/outputs mapping")
    try:
        tests = tuple(as_test(t) for t in items)
    except ValueError as e:
        raise _BadRow(str(e)) from None
    if not tests and not allow_empty:
        raise _BadRow("no tests")
    return tests[:MAX_TESTS]


def _column(given: str | None, candidates: tuple[str, ...], columns: list[str], what: str, display: str,
            option: str, required: bool) -> str | None:
    return pick_column(given, candidates, columns, kind="code", what=what, display=display, option=option,
                       required=required)


def _read(path: Path, display: str) -> Any:
    return read_table(path, display, kind="code", builders=BUILDERS,
                      fix="fix the file: one JSON object per line (jsonl) or a Parquet table; store tests as a JSON "
                          "string if their shape varies between rows")


def _difficulty(value: Any, default: str, difficulties: tuple[str, ...]) -> str:
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    text = str(value).strip().lower()
    if text in difficulties:
        return text
    level = text.removeprefix("level").strip()
    if level in LEVELS:
        return LEVELS[level]
    raise _BadRow(f"difficulty {value!r} is not one of {list(difficulties)}, introductory/interview/competition "
                  "or 1..5")


def _reference(value: Any) -> str | None:
    value = value if not isinstance(value, str) or not value.startswith("[") else _maybe_json(value)
    if isinstance(value, list):
        value = next((v for v in value if isinstance(v, str) and v.strip()), None)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        raise _BadRow(f"reference is a {type(value).__name__}, expected a program (text) or a list of programs")
    return value


def _maybe_json(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return text


def load_file(spec: CodeTaskFile, *, default_difficulty: str, difficulties: tuple[str, ...],
              skip_bad_rows: bool) -> tuple[list[CodeRow], int]:
    """The file's tasks and the number of bad rows skipped (always 0 unless `skip_bad_rows`)."""
    path, display = Path(spec.path).expanduser(), spec.path
    table = _read(path, display)
    columns = list(table.column_names)
    q_col = _column(spec.question_column, QUESTION_COLUMNS, columns, "question", display, "question_column", True)
    contest = [c for c in CONTEST_COLUMNS if c in columns]
    t_col = _column(spec.tests_column, TESTS_COLUMNS, columns, "tests", display, "tests_column", not contest)
    r_col = _column(spec.reference_column, REFERENCE_COLUMNS, columns, "reference", display, "reference_column",
                    False)
    d_col = _column(spec.difficulty_column, DIFFICULTY_COLUMNS, columns, "difficulty", display,
                    "difficulty_column", False)
    default = spec.difficulty or default_difficulty
    if default not in difficulties:
        raise ValueError(f"code task file {display}: difficulty {default!r} is not one of {list(difficulties)}")
    name = file_name(spec)
    rows: list[CodeRow] = []
    skipped: list[str] = []
    for i, row in enumerate(table):
        try:
            question = row[q_col]
            if not isinstance(question, str) or not question.strip():
                raise _BadRow("question is empty or not text")
            fn_name = row.get("fn_name") if isinstance(row.get("fn_name"), str) else None
            if t_col is not None:
                tests = parse_tests(row[t_col], fn_name)
            else:  # CodeContests: private + public + generated tests, each {"input": [...], "output": [...]}
                tests = tuple(t for c in contest if row[c]
                              for t in parse_tests(row[c], fn_name, allow_empty=True))[:MAX_TESTS]
                if not tests:
                    raise _BadRow(f"no tests in {contest}")
            reference = _reference(row[r_col]) if r_col else None
            difficulty = _difficulty(row[d_col], default, difficulties) if d_col else default
        except _BadRow as e:
            where = f"code task file {display}, row {i} (0-based)"
            if not skip_bad_rows:
                raise ValueError(f"{where}: {e}. Fix or delete the row, or set the option skip_bad_rows: true "
                                 "to skip bad rows (they are counted and logged)") from None
            skipped.append(f"row {i}: {e}")
            continue
        rows.append(CodeRow(f"{name}-{i:06d}", question.strip(), tests, reference, difficulty))
    if skipped:
        log.warning("code task file %s: skipped %d bad row(s) of %d; first: %s", display, len(skipped),
                    len(table), "; ".join(skipped[:3]))
    if not rows:
        raise ValueError(f"code task file {display} has no usable rows ({len(table)} rows, {len(skipped)} bad); "
                         "fix the file or remove it from the `files` option")
    return rows, len(skipped)
