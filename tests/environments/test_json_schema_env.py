"""environments/json_schema: generated tasks (references score 1.0, perturbations 0.0, determinism, sizes) and
task files (JSONL / Parquet through `datasets`, and the errors bad files give)."""

from __future__ import annotations

import doctest
import json
import tomllib
from importlib import import_module
from pathlib import Path

import pandas as pd
import pytest

import environments.json_schema as env_pkg
import environments.json_schema.files as files
import environments.json_schema.generator as generator
import environments.json_schema.records as records
from environments.json_schema import JsonSchemaEnvironment
from environments.json_schema.records import PROMPT_PREFIX, compact

REPO = Path(__file__).resolve().parents[2]
N_PER_LEVEL = 150  # 450 generated tasks: ~1.5 s to generate and verify


@pytest.fixture(scope="module")
def generated():
    env = JsonSchemaEnvironment(options={"num_tasks": 3 * N_PER_LEVEL}, seed=0)
    return env, env.load_tasks()


@pytest.fixture(autouse=True)
def _datasets_cache(tmp_path, monkeypatch):
    # Keep the Arrow cache datasets writes for each loaded file inside the test's tmp dir.
    import datasets.config

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")


def test_doctests():
    for module in (env_pkg, files, generator, records):
        assert doctest.testmod(module).failed == 0, module.__name__


def test_plugin_entry_point():
    entry = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"]["polyrl.environments"]
    module, _, attr = entry["json_schema"].partition(":")
    cls = getattr(import_module(module), attr)
    assert cls is JsonSchemaEnvironment and cls.name == "json_schema"
    assert cls.difficulties == ("easy", "medium", "hard")


# ------------------------------------------------------------------------------------------ generated tasks


def test_counts_ids_and_order():
    tasks = [r.task for r in JsonSchemaEnvironment(options={"num_tasks": 10}, seed=3).load_tasks()]
    assert [t.task_id for t in tasks[:4]] == ["easy-000000", "medium-000000", "hard-000000", "easy-000001"]
    by_level = {d: sum(t.difficulty == d for t in tasks) for d in ("easy", "medium", "hard")}
    assert by_level == {"easy": 4, "medium": 3, "hard": 3}
    assert all(t.env == "json_schema" and t.task_id.startswith(t.difficulty + "-") for t in tasks)
    assert JsonSchemaEnvironment(options={"num_tasks": 0}).load_tasks() == []


def test_every_reference_scores_one(generated):
    env, recs = generated
    assert len(recs) == 3 * N_PER_LEVEL
    for r in recs:
        v = env.verify(r, env.reference_response(r))
        assert (v.reward, v.status) == (1.0, "ok"), (r.task.task_id, v.reason)


def test_prompts_fit_the_tiny_policy(generated):
    env, recs = generated
    for r in recs:
        prompt = r.task.prompt[0].content
        reference = env.reference_response(r)
        assert len(r.task.prompt) == 1 and r.task.prompt[0].role == "user"
        assert prompt == PROMPT_PREFIX + compact(r.reference.schema)
        assert len(prompt) <= generator.PROMPT_LIMITS[r.task.difficulty]
        assert len(reference) <= generator.EXAMPLE_LIMIT
        assert len(prompt) + len(reference) + 3 <= 512  # 3 chat-template markers, 512-character context
        assert (prompt + reference).isascii() and (prompt + reference).isprintable()
    easy = [len(r.task.prompt[0].content) for r in recs if r.task.difficulty == "easy"]
    hard = [len(r.task.prompt[0].content) for r in recs if r.task.difficulty == "hard"]
    assert max(easy) <= 160 and sum(hard) / len(hard) > sum(easy) / len(easy) + 100


def _features(schema: dict) -> set[str]:
    found = set()
    for sub in schema["properties"].values():
        if "$ref" in sub:
            found.add("$ref")
        elif sub.get("type") == "object":
            found.add("nested")
        for key in ("format", "pattern", "minItems", "enum", "minimum"):
            if key in sub:
                found.add(key)
        if sub.get("type") == "array":
            found.add("array")
    return found


def test_difficulty_levels_have_their_features(generated):
    _, recs = generated
    hard_features = {"$ref", "nested", "format", "pattern", "minItems"}
    seen = set()
    for r in recs:
        schema, level = r.reference.schema, r.task.difficulty
        feats = _features(schema)
        assert schema["type"] == "object" and schema["required"]
        if level == "easy":
            assert 1 <= len(schema["properties"]) <= 2 and not feats
            assert schema["required"] == list(schema["properties"])
        elif level == "medium":
            assert 3 <= len(schema["properties"]) <= 4 and feats & {"enum", "minimum", "array"}
            assert not feats & hard_features
        else:
            assert len(feats & hard_features) >= 2, schema
        seen |= feats
    assert hard_features <= seen


def test_references_are_minimal_instances(generated):
    """Required keys only, in order, each with its type's zero value, a range's minimum, an enum's first option."""
    env, recs = generated
    zero = {"integer": 0, "number": 0.0, "string": "", "boolean": False}
    for r in recs:
        schema, example = r.reference.schema, json.loads(env.reference_response(r))
        assert list(example) == schema["required"], r.task.task_id
        for key, value in example.items():
            sub = schema["properties"][key]
            if "$ref" in sub or "format" in sub or "pattern" in sub or sub.get("type") == "object":
                continue  # drawn strings and nested objects: covered by the references scoring 1.0
            if "enum" in sub:
                assert value == sub["enum"][0]
            elif sub["type"] == "array":
                assert value == [zero[sub["items"]["type"]]] * sub.get("minItems", 0)
            elif "minimum" in sub:
                assert value == sub["minimum"]
            else:
                assert value == zero[sub["type"]] and type(value) is type(zero[sub["type"]]), (r.task.task_id, key)


def _perturbations(r) -> list[tuple[str, str]]:
    """(name, response) pairs that must score 0: each required key dropped, or given a wrong-typed value."""
    example = r.reference.example
    out = []
    for key in r.reference.schema["required"]:
        dropped = {k: v for k, v in example.items() if k != key}
        out.append((f"drop {key}", compact(dropped)))
        wrong = dict(example, **{key: 12345 if isinstance(example[key], str) else "x"})
        out.append((f"retype {key}", compact(wrong)))
    return out


def test_perturbed_references_score_zero(generated):
    env, recs = generated
    for r in recs:
        for name, response in _perturbations(r):
            v = env.verify(r, response)
            assert v.reward == 0.0 and v.reason.startswith("schema violation"), (r.task.task_id, name, v.reason)


def test_generator_is_deterministic():
    def dump(seed, n):
        return [(r.task.model_dump(), r.reference.schema, r.reference.example_json)
                for r in JsonSchemaEnvironment(options={"num_tasks": n}, seed=seed).load_tasks()]

    assert dump(0, 60) == dump(0, 60)
    assert dump(0, 60) != dump(1, 60)
    # A task id names the same task whatever the number of tasks.
    assert dump(0, 60) == [t for t in dump(0, 300) if int(t[0]["task_id"][-6:]) < 20]


def test_bad_options():
    with pytest.raises(ValueError, match="json_schema: bad options.*num_taks"):
        JsonSchemaEnvironment(options={"num_taks": 3})
    with pytest.raises(ValueError, match="default_difficulty"):
        JsonSchemaEnvironment(options={"default_difficulty": "brutal"})


# ------------------------------------------------------------------------------------------ task files

SCHEMA_A = {"type": "object", "properties": {"a": {"type": "integer", "minimum": 1}}, "required": ["a"]}
SCHEMA_B = {"type": "array", "items": {"enum": [1, "x", None]}, "minItems": 1}


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _file_env(paths, **options) -> JsonSchemaEnvironment:
    return JsonSchemaEnvironment(options={"num_tasks": 0, "files": [str(p) for p in paths], **options})


def test_load_jsonl(tmp_path):
    path = _write_jsonl(tmp_path / "tasks.jsonl", [
        {"schema": SCHEMA_A, "difficulty": "easy", "example": {"a": 3}},  # schema as an object
        {"schema": json.dumps(SCHEMA_B), "example": '["x", null]'},  # as JSON strings
        {"schema": True, "id": "anything-goes"},  # mixed column types: datasets stores them as Json
    ])
    env = _file_env([path])
    recs = env.load_tasks()
    assert [r.task.task_id for r in recs] == ["tasks-000000", "tasks-000001", "anything-goes"]
    assert [r.task.difficulty for r in recs] == ["easy", "medium", "medium"]  # default_difficulty
    assert [r.reference.schema for r in recs] == [SCHEMA_A, SCHEMA_B, True]
    assert recs[0].task.prompt[0].content == PROMPT_PREFIX + compact(SCHEMA_A)
    assert env.reference_response(recs[0]) == '{"a":3}' and env.reference_response(recs[1]) == '["x",null]'
    for r in recs[:2]:
        assert env.verify(r, env.reference_response(r)).reward == 1.0
    assert env.verify(recs[0], '{"a": 0}').reward == 0.0
    with pytest.raises(ValueError, match="anything-goes .*no example instance.*add an `example` column"):
        env.reference_response(recs[2])
    assert env.skipped_rows == {}


def test_load_parquet_alongside_generated(tmp_path):
    path = tmp_path / "more.parquet"
    pd.DataFrame({"schema": [json.dumps(SCHEMA_A), json.dumps(SCHEMA_B)], "difficulty": ["hard", None],
                  "example": ['{"a": 9}', None]}).to_parquet(path)
    env = JsonSchemaEnvironment(options={"num_tasks": 3, "files": [str(path)], "default_difficulty": "easy"})
    recs = env.load_tasks()
    assert [r.task.task_id for r in recs] == ["easy-000000", "medium-000000", "hard-000000", "more-000000",
                                              "more-000001"]
    assert [r.task.difficulty for r in recs[3:]] == ["hard", "easy"]
    assert env.verify(recs[3], env.reference_response(recs[3])).reward == 1.0
    assert env.verify(recs[4], '["x"]').reward == 1.0


@pytest.mark.parametrize("rows, message", [
    ([{"schema": SCHEMA_A}, {"schema": "{not json"}], r"bad\.jsonl row 1 \(0-based\): the schema is not valid JSON"),
    ([{"schema": json.dumps({"type": "objekt"})}], r"row 0 \(0-based\): invalid schema at \$\.type"),
    ([{"schema": '{"type": "object", "type": "array"}'}], "row 0.*duplicate key 'type'"),
    ([{"schema": SCHEMA_A, "difficulty": "brutal"}], "row 0.*difficulty 'brutal' is not one of"),
    ([{"schema": SCHEMA_A, "example": {"a": 0}}], r"row 0.*example does not satisfy the schema: .*\$\.a"),
    ([{"schema": SCHEMA_A, "example": "abc"}], "row 0.*the example is not valid JSON text"),
    ([{"schema": SCHEMA_A}, {"schema": None}], "row 1.*the schema is empty"),
])
def test_bad_rows_are_named(tmp_path, rows, message):
    path = _write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(ValueError, match=message) as info:
        _file_env([path]).load_tasks()
    assert "skip_bad_rows" in str(info.value) and str(path) in str(info.value)


def test_skip_bad_rows_counts_them(tmp_path, caplog):
    path = _write_jsonl(tmp_path / "mixed.jsonl", [
        {"schema": json.dumps(SCHEMA_A)}, {"schema": "{oops"}, {"schema": json.dumps({"minimum": "3"})},
    ])
    env = _file_env([path], skip_bad_rows=True)
    assert [r.task.task_id for r in env.load_tasks()] == ["mixed-000000"]
    assert env.skipped_rows == {str(path): 2}
    assert "skipped 2 of 3 rows" in caplog.text


def test_bad_files_are_named(tmp_path):
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(ValueError, match=f"task file {missing} does not exist; fix the path in options.files"):
        _file_env([missing]).load_tasks()

    csv = tmp_path / "tasks.csv"
    csv.write_text("schema\n{}\n")
    with pytest.raises(ValueError, match="unsupported extension '.csv'"):
        _file_env([csv]).load_tasks()

    no_column = _write_jsonl(tmp_path / "nocol.jsonl", [{"schema_json": "{}"}])
    with pytest.raises(ValueError, match=r"nocol\.jsonl has no `schema` column \(columns: \['schema_json'\]\)"):
        _file_env([no_column]).load_tasks()

    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"schema": "{}"}\n{"schema": \n')
    with pytest.raises(ValueError, match=r"cannot read task file .*broken\.jsonl as json .*parse error.*JSON Lines"):
        _file_env([broken]).load_tasks()

    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(ValueError, match=r"empty\.jsonl is empty"):
        _file_env([empty]).load_tasks()

    parquet = tmp_path / "nocol.parquet"
    pd.DataFrame({"prompt": ["x"]}).to_parquet(parquet)
    with pytest.raises(ValueError, match=r"nocol\.parquet has no `schema` column"):
        _file_env([parquet]).load_tasks()


def test_duplicate_task_ids_are_an_error(tmp_path):
    a = _write_jsonl(tmp_path / "a.jsonl", [{"schema": "{}", "id": "easy-000000"}])
    with pytest.raises(ValueError, match="task id 'easy-000000' of .*a.jsonl row 0 is already used by generated"):
        JsonSchemaEnvironment(options={"num_tasks": 3, "files": [str(a)]}).load_tasks()
    (tmp_path / "sub").mkdir()
    b = _write_jsonl(tmp_path / "sub" / "a.jsonl", [{"schema": "{}"}])
    c = _write_jsonl(tmp_path / "a.jsonl", [{"schema": "{}"}])
    with pytest.raises(ValueError, match="task id 'a-000000'.*rename one of the files"):
        _file_env([b, c]).load_tasks()
