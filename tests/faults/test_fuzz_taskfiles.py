"""Issue 10 item 5: hostile task files for every environment loader, fuzzed with hypothesis.

Loaders: math and code (through the shared environments/files.py), json_schema, tools and long_context. Files:
JSONL (and Parquet) with missing columns, wrong types, mixed types, huge rows, empty files, invalid JSON lines,
invalid UTF-8, rows that are not objects. Property: the loader returns (rows, skipped) with every row of the
file accounted for (loaded or counted as skipped, never silently dropped), or raises a ValueError whose message
names the file (and the row for a row-level problem); never another exception type. Files are real files read
through `datasets`, whose cache is redirected to a temporary directory.
"""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.faults.test_fuzz_verifiers import bounded, json_values, moderate_text

LEVELS = ("easy", "medium", "hard")
COLUMNS = {
    "math": ("question", "problem", "answer", "solution", "difficulty", "level"),
    "code": ("question", "tests", "input_output", "solutions", "fn_name", "difficulty", "public_tests"),
    "json_schema": ("schema", "example", "difficulty", "id"),
    "tools": ("instruction", "gold_calls", "difficulty", "id"),
    "long_context": ("question", "answer", "documents", "context", "difficulty", "id"),
}
GOOD = {  # one usable row per environment: fuzzed files mix it with hostile rows
    "math": {"question": "1+1?", "answer": "2"},
    "code": {"question": "Echo.", "tests": json.dumps({"inputs": ["a\n"], "outputs": ["a\n"]})},
    "json_schema": {"schema": json.dumps({"type": "integer"}), "example": "7"},
    "tools": {"instruction": "Send Ann hi.", "gold_calls": json.dumps(
        [{"name": "send_message", "arguments": {"to": "NAME", "body": "hi"}}])},
    "long_context": {"question": "Who?", "documents": ["Ann did it."], "answer": "Ann"},
}
HOSTILE_VALUES = st.one_of(
    json_values(8), moderate_text.map(lambda s: s.encode("utf-8", "replace").decode()),
    st.sampled_from(["", " ", "#### ", "\\boxed{", "Level 9", "[", "{\"inputs\": [1], \"outputs\": []}",
                     "[" * 5000, "9" * 5000, '{"type": "objekt"}', '{"a": 1, "a": 2}', "NaN", "null"]),
    st.builds(lambda n: "x" * n, st.sampled_from([100_000, 2 * 2**20])),  # huge cells
)


@pytest.fixture(scope="module", autouse=True)
def datasets_cache(tmp_path_factory):
    """Keep the fuzzed files' arrow caches out of ~/.cache/huggingface (datasets reads this at call time)."""
    import datasets

    old = datasets.config.HF_DATASETS_CACHE
    datasets.config.HF_DATASETS_CACHE = tmp_path_factory.mktemp("hf-datasets-cache")
    yield
    datasets.config.HF_DATASETS_CACHE = old


@pytest.fixture(scope="module")
def tools_check():
    from environments.tools import ToolsEnvironment

    env = ToolsEnvironment({"num_tasks": 1})
    GOOD["tools"]["gold_calls"] = GOOD["tools"]["gold_calls"].replace("NAME", sorted(env._fresh().employees())[0])
    yield env._gold_problem
    env.close()


def load(kind: str, path, skip: bool, tools_check):
    if kind == "math":
        from environments.math.files import TaskFile, load_file

        return load_file(TaskFile(path=str(path)), default_difficulty="easy", difficulties=LEVELS, skip_bad_rows=skip)
    if kind == "code":
        from environments.code.files import CodeTaskFile, load_file

        return load_file(CodeTaskFile(path=str(path)), default_difficulty="easy", difficulties=LEVELS,
                         skip_bad_rows=skip)
    if kind == "json_schema":
        from environments.json_schema.files import load_file

        return load_file(path, LEVELS, "easy", skip)
    if kind == "tools":
        from environments.tools.files import load_file

        return load_file(str(path), difficulties=LEVELS, skip_bad_rows=skip, check=tools_check)
    from environments.long_context.files import load_file

    return load_file(str(path), default_difficulty="easy", difficulties=LEVELS, skip_bad_rows=skip)


def rows_for(kind: str):
    row = st.dictionaries(st.sampled_from(COLUMNS[kind]) | st.text(max_size=6), HOSTILE_VALUES, max_size=5)
    mutated = st.builds(lambda base, drop, add: {**{k: v for k, v in base.items() if k not in drop}, **add},
                        st.just(GOOD[kind]), st.sets(st.sampled_from(list(GOOD[kind]))),
                        st.dictionaries(st.sampled_from(COLUMNS[kind]), HOSTILE_VALUES, max_size=2))
    return st.lists(st.one_of(st.just(GOOD[kind]), mutated, row), min_size=1, max_size=6)


def corrupt_line():
    return st.sampled_from([b"{not json", b"[1, 2]", b'"a string row"', b"\xff\xfe\x00{}", b"{\"question\": \"\xff\"}",
                            b"null", b"{" * 3000, b'{"question": "q", "answer": ' + b"9" * 5000 + b"}"])


def _check_outcome(kind: str, path, n_rows: int | None, skip: bool, tools_check):
    try:
        rows, skipped = bounded(load, kind, path, skip, tools_check)
    except ValueError as e:
        msg = str(e)
        assert str(path) in msg or path.name in msg, f"{kind}: error does not name the file: {msg[:300]}"
        if re.search(r"\brow \d", msg):
            assert "row" in msg
        return "error"
    assert isinstance(rows, list) and isinstance(skipped, int) and skipped >= 0
    # json_schema returns ([], n) for a file whose rows were all skipped (logged and counted); the others raise.
    assert rows or (kind == "json_schema" and skipped), f"{kind}: no usable rows and no error"
    if not skip:
        assert skipped == 0
    if n_rows is not None:  # nothing silently dropped: every row loaded or counted as skipped
        assert len(rows) + skipped == n_rows, f"{kind}: {n_rows} rows in the file, {len(rows)} loaded + {skipped} skipped"
    return "ok"


KINDS = tuple(COLUMNS)


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=min(settings().max_examples, 25))  # x5 loaders, each a real datasets read
@given(data=st.data(), skip=st.booleans())
def test_jsonl_rows(tmp_path_factory, tools_check, kind, data, skip):
    rows = data.draw(rows_for(kind), label="rows")
    path = tmp_path_factory.mktemp(kind) / "tasks.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    _check_outcome(kind, path, len(rows), skip, tools_check)


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=min(settings().max_examples, 15))
@given(data=st.data(), skip=st.booleans())
def test_corrupt_jsonl_files(tmp_path_factory, tools_check, kind, data, skip):
    """Invalid JSON lines, non-object rows, invalid UTF-8, blank lines and empty files."""
    good = json.dumps(GOOD[kind]).encode()
    lines = data.draw(st.lists(st.one_of(st.just(good), corrupt_line(), st.just(b""), st.binary(max_size=40)),
                               max_size=5), label="lines")
    path = tmp_path_factory.mktemp(kind) / "tasks.jsonl"
    path.write_bytes(b"\n".join(lines) + (b"\n" if lines and data.draw(st.booleans()) else b""))
    _check_outcome(kind, path, None, skip, tools_check)


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=min(settings().max_examples, 8))
@given(data=st.data(), skip=st.booleans())
def test_parquet_rows(tmp_path_factory, tools_check, kind, data, skip):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = data.draw(rows_for(kind), label="rows")
    try:
        table = pa.Table.from_pylist(rows)
    except (pa.ArrowException, ValueError, TypeError, OverflowError):
        table = pa.Table.from_pylist([{k: json.dumps(v) for k, v in r.items()} for r in rows])  # all-string cells
    path = tmp_path_factory.mktemp(kind) / "tasks.parquet"
    try:
        pq.write_table(table, path)
    except pa.ArrowException:  # e.g. an empty struct: Parquet cannot store it
        table = pa.Table.from_pylist([{k: json.dumps(v) for k, v in r.items()} for r in rows])
        pq.write_table(table, path)
    _check_outcome(kind, path, table.num_rows, skip, tools_check)


@pytest.mark.parametrize("kind", KINDS)
def test_fixed_edges(tmp_path, tools_check, kind):
    """Empty files, a file of one huge row, a missing file and a wrong extension: named errors."""
    for name, content in (("empty.jsonl", b""), ("blank.jsonl", b"\n\n"), ("bad.csv", b"a,b\n"),
                          ("null.jsonl", b"null\n{}\n"),  # bug: the first value null crashed datasets (SIGSEGV)
                          ("null.json", b" null"),
                          ("utf8.jsonl", b'{"question": "\xff"}\n')):  # was loaded with the byte replaced
        path = tmp_path / name
        path.write_bytes(content)
        assert _check_outcome(kind, path, None, False, tools_check) == "error"
    assert _check_outcome(kind, tmp_path / "missing.jsonl", None, False, tools_check) == "error"
    huge = {**GOOD[kind], "padding": "x" * (8 * 2**20)}
    path = tmp_path / "huge.jsonl"
    path.write_text(json.dumps(huge) + "\n" + json.dumps(GOOD[kind]) + "\n")
    _check_outcome(kind, path, 2, True, tools_check)


@pytest.mark.parametrize("kind", KINDS)
def test_regression_rows(tmp_path, tools_check, kind):
    """Rows that once escaped as bare exceptions (the row not named) must be named ValueErrors or skips."""
    bad = {
        "math": {"question": "q", "answer": "\\boxed{" * 3000},
        "code": {"question": "q", "tests": "[" * 5000},  # RecursionError from json.loads
        "json_schema": {"schema": '{"type": "integer", "maximum": ' + "9" * 5000 + "}"},  # int digit limit
        "tools": {"instruction": "i", "gold_calls": "[" * 5000},  # RecursionError from json.loads
        "long_context": {"question": "q", "documents": ["d"], "answer": ["a", 5]},
    }[kind]
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps(GOOD[kind]) + "\n" + json.dumps(bad) + "\n")
    assert _check_outcome(kind, path, 2, True, tools_check) == "ok"
    assert _check_outcome(kind, path, 2, False, tools_check) == "error"
