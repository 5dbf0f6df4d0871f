"""verifiers/json_schema.py: extraction rules, validation, formats, $ref, and hostile input."""

from __future__ import annotations

import doctest
import json
import time

import pytest

import verifiers.json_schema as js
from verifiers.json_schema import JsonExtractionError, extract_json, schema_error, verify

ID = {"type": "object", "properties": {"id": {"type": "integer"}}, "required": ["id"]}
HOSTILE_SECONDS = 1.0  # each hostile input must be scored well within this (measured: < 0.2 s)


def test_doctests():
    assert doctest.testmod(js).failed == 0


# ------------------------------------------------------------------------------------------ extraction


@pytest.mark.parametrize("response", [
    '{"id": 7}',
    '  \n{"id":7}\n ',
    '```json\n{"id": 7}\n```',
    '```JSON\n{"id": 7}\n```',
    '```\n{"id": 7}\n```',
    '```{"id": 7}```',
    '```json{"id": 7}```',
    '```json title="answer"\n{"id": 7}\n```',
    'Here you go:\n```json\n{"id": 7}\n```\nHope it helps {"not": "considered"}.',
    'The answer is {"id": 7}.',
    'Note [sic] and {braces}: {"id": 7}',
    '```json\n{"id": 7}\n```\n```json\n{ "id" : 7 }\n```',  # the same value twice is one candidate
    '```python\nx = [1, 2]\n```\n{"id": 7}',  # other-language blocks are ignored
])
def test_extracts_single_value(response):
    assert extract_json(response) == {"id": 7}
    v = verify(response, ID)
    assert (v.reward, v.status, v.components) == (1.0, "ok", {"parsed": 1.0, "valid": 1.0})


def test_whole_response_may_be_any_json_value():
    assert extract_json(" 7 ") == 7
    assert extract_json('"abc"') == "abc"
    assert extract_json("null") is None
    assert verify("7", {"type": "integer"}).reward == 1.0


@pytest.mark.parametrize("response", [
    '```json\n{"id": 1}\n```\n```json\n{"id": 2}\n```',
    '```json\n{"id": 1}\n```\n```\n[1]\n```',
    '{"id": 1} {"id": 2}',
    'Either {"id": 1} or maybe [1, 2]',
])
def test_several_candidates(response):
    v = verify(response, ID)
    assert v.reward == 0.0 and v.status == "ok"
    assert v.reason.startswith("several JSON candidates")


@pytest.mark.parametrize("response, reason", [
    ("", "empty response"),
    ("   \n", "empty response"),
    ("no json here", "no JSON found"),
    ('{"id": 7,}', "malformed JSON"),
    ("{'id': 7}", "malformed JSON"),
    ('```json\n{"id": 7\n```', "malformed JSON in fenced block 1"),
    ('```json\n{"id": 7}\n```\n```json\nnope\n```', "malformed JSON in fenced block 2"),
])
def test_no_usable_json(response, reason):
    v = verify(response, ID)
    assert v.reward == 0.0 and v.status == "ok" and v.components["parsed"] == 0.0
    assert v.reason.startswith(reason), v.reason


def test_extract_raises_named_error():
    with pytest.raises(JsonExtractionError, match="several JSON candidates"):
        extract_json("[1] [2]")


# ------------------------------------------------------------------------------------------ validation


def test_validation_failures_name_the_path():
    schema = {"type": "object", "properties": {"user": {"type": "object", "properties": {
        "tags": {"type": "array", "items": {"type": "string"}}}}}}
    v = verify('{"user": {"tags": ["a", 3]}}', schema)
    assert v.reward == 0.0 and v.status == "ok" and v.components == {"parsed": 1.0, "valid": 0.0}
    assert v.reason.startswith("schema violation at $.user.tags[1]:"), v.reason

    v = verify("{}", ID)
    assert v.reason == "schema violation at $: 'id' is a required property"
    assert verify('{"id": true}', ID).reward == 0.0  # booleans are not integers
    assert verify('{"id": 7.0}', ID).reward == 1.0  # 2020-12: a number with zero fraction is an integer


@pytest.mark.parametrize("schema, good, bad", [
    ({"enum": ["red", "blue"]}, '"red"', '"green"'),
    ({"type": "integer", "minimum": 2, "maximum": 5}, "5", "6"),
    ({"type": "array", "items": {"type": "integer"}, "minItems": 2}, "[1, 2]", "[1]"),
    ({"type": "string", "pattern": "^[A-Z]{2}[0-9]{2}$"}, '"AB12"', '"AB123"'),
    ({"type": "object", "additionalProperties": False, "properties": {"a": {}}}, '{"a": 1}', '{"a": 1, "b": 2}'),
    ({"type": "array", "uniqueItems": True}, '[1, "1", true, {"a": [1]}]',
     '[{"a": 1, "b": [2]}, {"b": [2.0], "a": 1}]'),
    ({"type": "array", "uniqueItems": True}, "[1, true]", "[1, 1.0]"),
])
def test_keywords(schema, good, bad):
    assert verify(good, schema).reward == 1.0
    assert verify(bad, schema).reward == 0.0


@pytest.mark.parametrize("fmt, good, bad", [
    ("date", ["2024-02-29", "1999-12-31"], ["2023-02-29", "2024-1-05", "2024-01-05\n", "24-01-05", "2024-01-05T00:00"]),
    ("email", ["ann@x.io", "a.b+c@sub.example.com", "te~st@example.com"],
     ["@", "ann@", "@x.io", "ann@@x.io", ".ann@x.io", "an..n@x.io", "ann@-x.io", "a b@x.io"]),
    ("ipv4", ["10.0.3.7", "255.255.255.255"], ["256.1.1.1", "10.0.3", "010.0.0.1", "1.2.3.4 "]),
    ("ipv6", ["::1", "2001:db8::8a2e:370:7334"], ["::g", "fe80::1%eth0", "1.2.3.4"]),
    ("uuid", ["123e4567-e89b-12d3-a456-426614174000"], ["123e4567e89b12d3a456426614174000"]),
    ("date-time", ["2024-02-29T12:30:00Z", "2024-02-29t12:30:00.5+05:30"],
     ["2024-02-29 12:30:00Z", "2024-02-29T25:00:00Z"]),
    ("time", ["12:30:00Z", "23:59:60+00:00"], ["12:30", "12:30:00"]),
])
def test_formats_are_asserted(fmt, good, bad):
    schema = {"type": "string", "format": fmt}
    for value in good:
        assert verify(json.dumps(value), schema).reward == 1.0, value
    for value in bad:
        v = verify(json.dumps(value), schema)
        assert v.reward == 0.0 and f"is not a '{fmt}'" in v.reason, value


def test_formats_apply_to_strings_only_and_unknown_formats_are_annotations():
    assert verify("3", {"format": "date"}).reward == 1.0
    assert verify('"anything"', {"format": "hostname-ish"}).reward == 1.0


def test_ref_and_defs():
    schema = {"type": "object", "properties": {"owner": {"$ref": "#/$defs/person"}}, "required": ["owner"],
              "$defs": {"person": {"type": "object", "properties": {"name": {"type": "string"}},
                                   "required": ["name"]}}}
    assert verify('{"owner": {"name": "ann"}}', schema).reward == 1.0
    v = verify('{"owner": {"name": 1}}', schema)
    assert v.reward == 0.0 and v.reason.startswith("schema violation at $.owner.name")
    tree = {"$defs": {"t": {"type": "array", "items": {"$ref": "#/$defs/t"}}}, "$ref": "#/$defs/t"}
    assert verify("[[[]], []]", tree).reward == 1.0
    assert verify("[" * 64 + "]" * 64, tree).reward == 1.0  # recursion to MAX_DEPTH stays within the stack


# ------------------------------------------------------------------------------------------ broken schemas


@pytest.mark.parametrize("schema, reason", [
    ({"type": "objekt"}, "invalid schema at $.type"),
    ({"pattern": "("}, "invalid schema at $.pattern"),
    ({"minimum": "3"}, "invalid schema at $.minimum"),
    ("not a schema", "invalid schema: a schema is an object or a boolean"),
    ({"minimum": float("nan")}, "invalid schema: not JSON-serialisable"),
    ({"x": object()}, "invalid schema: not JSON-serialisable"),
    ({"$ref": "#/$defs/missing"}, "invalid schema: unresolvable $ref"),
    ({"$ref": "https://example.com/remote.json"}, "invalid schema: unresolvable $ref"),  # never fetched
    ({"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}, "invalid schema: $ref recursion"),
])
def test_invalid_schema_is_an_error_verdict(schema, reason):
    v = verify('{"id": 7}', schema)
    assert (v.reward, v.status) == (0.0, "error")
    assert v.reason.startswith(reason), v.reason


def test_schema_error():
    assert schema_error({"type": "object", "properties": {"a": {"$ref": "#/$defs/a"}}, "$defs": {"a": {}}}) is None
    assert schema_error({"type": "objekt"}).startswith("invalid schema at $.type")
    assert schema_error([1]).startswith("invalid schema: a schema is an object or a boolean")


def test_boolean_schemas():
    assert verify("1", True).reward == 1.0
    assert verify("1", False).reward == 0.0


# ------------------------------------------------------------------------------------------ hostile input

HOSTILE = {
    "too large": ('{"id": 1, "pad": "' + "x" * js.MAX_RESPONSE_CHARS + '"}', "response too large"),
    "deep arrays": ("[" * 100_000, "JSON nested deeper"),
    "deep closed": ("[" * 40_000 + "]" * 40_000, "JSON nested deeper"),
    "depth 65": ("[" * 65 + "]" * 65, "JSON nested deeper"),
    "deep objects in text": ("ok: " + '{"a":' * 500 + "1" + "}" * 500, "JSON nested deeper"),
    "deep in fence": ("```json\n" + "[" * 5000 + "]" * 5000 + "\n```", "JSON nested deeper"),
    "NaN": ('{"id": NaN}', "NaN literal"),
    "Infinity": ('{"id": Infinity}', "Infinity literal"),
    "-Infinity in text": ('answer: {"id": -Infinity}', "-Infinity literal"),
    "overflow": ('{"id": 1e999}', "number 1e999 overflows"),
    "huge int": ('{"id": ' + "9" * 5000 + "}", "integer literal of 5000 digits"),
    "duplicate key": ('{"id": "x", "id": 1}', "duplicate key 'id'"),
    "nested duplicate key": ('{"id": 1, "o": {"k": 1, "k": 1}}', "duplicate key 'k'"),
    "unclosed nesting": (("[0," * 900 + "0," * 50_000)[:99_000], "malformed JSON"),
    "many open braces": ("{ " * 49_000, "malformed JSON"),
    "many prose brackets": ("see [x] " * 12_000, "no JSON found"),
    "many bad spans": ('[1 {"a" ' * 12_000, "malformed JSON"),
    "many fences": ("```" * 33_000, "malformed JSON in fenced block"),
    "many quotes": ('"' * 99_999, "malformed JSON"),
    "not a string": (None, "response is a NoneType"),
    "control chars": ('{"id": "\x00"}', "malformed JSON"),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_input_scores_zero_quickly(name):
    response, reason = HOSTILE[name]
    start = time.perf_counter()
    v = verify(response, ID)
    elapsed = time.perf_counter() - start
    assert v.reward == 0.0 and v.reason.startswith(reason), v.reason
    assert elapsed < HOSTILE_SECONDS, f"{name} took {elapsed:.2f}s"


def test_many_distinct_unique_items_is_linear():
    response = json.dumps([{"a": i} for i in range(7000)])  # jsonschema's own check takes ~1 min on this
    start = time.perf_counter()
    assert verify(response, {"type": "array", "uniqueItems": True}).reward == 1.0
    assert time.perf_counter() - start < HOSTILE_SECONDS


def test_long_validation_messages_are_clipped():
    v = verify(json.dumps(["x" * 5000]), {"type": "array", "items": {"type": "integer"}})
    assert v.reward == 0.0 and len(v.reason) < 400


def test_never_raises_on_internal_error(monkeypatch):
    def boom(response):
        raise KeyError("bug")

    monkeypatch.setattr(js, "extract_json", boom)
    v = verify('{"id": 1}', ID)
    assert (v.reward, v.status) == (0.0, "error") and "internal verifier error: KeyError" in v.reason
