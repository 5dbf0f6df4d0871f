"""JSON Schema adherence: is the JSON value in a response valid under a draft 2020-12 schema?

The reward is schema adherence only (1.0 valid, 0.0 otherwise), as in the structured-output environment of
Nemotron 3 (Nano report, section 3.2): no credit for "almost valid" JSON, no judgement of content.

Extraction rules, applied in order (the first rule that finds something decides):
1. Fenced code blocks tagged ```json (any case) or untagged ``` are the candidates and text outside them is
   ignored. Every candidate block must parse and all must hold the same JSON value (repeating the answer is
   fine); different values are "several JSON candidates" -> 0, so a policy cannot hedge with alternatives.
   Blocks tagged with another language (```python) are removed before rules 2 and 3.
2. Otherwise the whole response, stripped, if it parses as one JSON value (any type: 7 and "a" included).
3. Otherwise a top-level {...} or [...] span embedded in text ("Here it is: {...}."). Spans that do not parse
   are skipped; two different parsable spans are "several JSON candidates" -> 0.

Parsing is stricter than `json.loads`, because lenient parsing is a reward-hacking surface:
- NaN / Infinity / -Infinity literals and numbers overflowing to infinity are rejected (not JSON, RFC 8259 s6);
- duplicate object keys are rejected: RFC 8259 s4 leaves their meaning to the parser (Python keeps the last
  value, others the first), so `{"id":"x","id":1}` could pass here and fail downstream;
- responses over MAX_RESPONSE_CHARS and values nested deeper than MAX_DEPTH are rejected before validation,
  which bounds the time of parsing and validating (json.loads alone raises RecursionError near depth 1000).

Formats: the checker asserts the formats the json_schema environment generates and a few common ones
(date, date-time, time, email, ipv4, ipv6, uuid; see FORMATS). Other formats are annotations and are not
checked, as the 2020-12 specification allows. Email is a dot-atom local part and a hostname: quoted local
parts and IP-literal domains, legal but rare, score 0.

A schema that is not a valid 2020-12 schema, whose $ref cannot be resolved, or whose $refs loop gives a
Verdict with status "error": the task is broken, not the model. $refs are resolved inside the schema only,
never fetched over the network. Time is bounded in the size of the response for the schemas the environment
generates; a schema from a task file can still be slow by itself (a catastrophic `pattern` such as "(a+)+$",
deeply nested unevaluatedProperties), so task files are trusted input.
"""

from __future__ import annotations

import datetime
import functools
import ipaddress
import json
import re
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker, ValidationError
from jsonschema.exceptions import SchemaError
from jsonschema.validators import extend
from jsonschema_specifications import REGISTRY as METASCHEMAS
from referencing.exceptions import Unresolvable

from rl.types import Verdict

MAX_RESPONSE_CHARS = 100_000  # policy responses are a few hundred characters; this only stops abuse
MAX_DEPTH = 64  # nesting levels of arrays/objects; generated tasks use at most 3
MAX_INT_DIGITS = 4300  # Python's own int-parsing limit (CVE-2020-10735), turned into a reason, not a crash
_REASON_CHARS = 300  # validation messages repr the instance: keep reasons short for logs and the wire

__all__ = ["verify", "extract_json", "schema_error", "JsonExtractionError", "FORMATS", "MAX_DEPTH",
           "MAX_RESPONSE_CHARS"]


class JsonExtractionError(ValueError):
    """The response holds no single, acceptable JSON value; the message is the reason."""


# ------------------------------------------------------------------------------------------ parsing


def _reject_constant(name: str) -> Any:
    raise JsonExtractionError(f"{name} literal is not JSON (RFC 8259 numbers are finite)")


def _parse_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise JsonExtractionError(f"number {text[:40]} overflows to infinity")
    return value


def _parse_int(text: str) -> int:
    if len(text) > MAX_INT_DIGITS:
        raise JsonExtractionError(f"integer literal of {len(text)} digits (limit {MAX_INT_DIGITS})")
    return int(text)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise JsonExtractionError(f"duplicate key {key[:40]!r} in an object")
            seen.add(key)
    return obj


_DECODER = json.JSONDecoder(
    parse_float=_parse_float, parse_int=_parse_int, parse_constant=_reject_constant,
    object_pairs_hook=_unique_keys,
)


def _depth_exceeds(value: Any, limit: int) -> bool:
    """True if arrays/objects nest deeper than `limit` (iterative: no recursion on hostile input)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list)):
            if depth > limit:
                return True
            children = node.values() if isinstance(node, dict) else node
            stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def _decode(text: str, start: int = 0) -> tuple[Any, int]:
    """Strict raw_decode: (value, end). JSONDecodeError if malformed, JsonExtractionError if rejected."""
    try:
        value, end = _DECODER.raw_decode(text, start)
    except RecursionError:
        raise JsonExtractionError(f"JSON nested deeper than {MAX_DEPTH} levels") from None
    if _depth_exceeds(value, MAX_DEPTH):
        raise JsonExtractionError(f"JSON nested deeper than {MAX_DEPTH} levels")
    return value, end


def _parse_whole(text: str) -> Any:
    value, end = _decode(text)
    if text[end:].strip():
        raise json.JSONDecodeError("Extra data", text, end)
    return value


def _malformed(err: json.JSONDecodeError, where: str) -> JsonExtractionError:
    return JsonExtractionError(f"malformed JSON in {where}: {err.msg} (line {err.lineno} column {err.colno})")


def _canonical(value: Any) -> str:
    # Candidates are "the same" when equal as JSON values: key order and spacing do not matter.
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


# A fence opens with ```, an optional language tag (and after a space an info string: ```json title), and
# closes at the next ```. The tag stops at "{" or "[", so one-line fences (```json{"id":7}```) work too.
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+.-]*)(?:[ \t][^\n`]*)?\n?(.*?)```", re.DOTALL)
# Where a span can start: "{" before a key or "}", "[" before a value or "]". Skips prose brackets ("[sic]",
# "{x}") without the cost of a failed parse.
_SPAN_START = re.compile(r'\{[ \t\n\r]*["}]|\[[ \t\n\r]*[-"{\[\]0-9tfn]')
_MAX_SPAN_FAILURES = 200
_MAX_SPAN_SCAN = 1_000_000  # characters re-scanned by failed attempts, ~10 ms of C parsing


def extract_json(response: str) -> Any:
    """The single JSON value of `response` (rules in the module docstring); raises JsonExtractionError.

    >>> extract_json('Sure:\\n```json\\n{"id": 7}\\n```')
    {'id': 7}
    >>> extract_json('The answer is [1, 2].')
    [1, 2]
    >>> extract_json('{"a": 1} or {"a": 2}')
    Traceback (most recent call last):
    ...
    verifiers.json_schema.JsonExtractionError: several JSON candidates: 2 different JSON values in the text
    """
    if not isinstance(response, str):
        raise JsonExtractionError(f"response is a {type(response).__name__}, not a string")
    if len(response) > MAX_RESPONSE_CHARS:
        raise JsonExtractionError(f"response too large: {len(response)} characters > {MAX_RESPONSE_CHARS}")

    # Rule 1: fenced blocks.
    blocks = [m.group(2) for m in _FENCE.finditer(response) if m.group(1).lower() in ("", "json")]
    if blocks:
        values: dict[str, Any] = {}
        for i, block in enumerate(blocks):
            try:
                value = _parse_whole(block.strip())
            except json.JSONDecodeError as err:
                raise _malformed(err, f"fenced block {i + 1}") from None
            values.setdefault(_canonical(value), value)
        if len(values) > 1:
            raise JsonExtractionError(f"several JSON candidates: {len(values)} fenced blocks with different JSON")
        return next(iter(values.values()))

    # Rule 2: the whole response, without code blocks in other languages (all fences left are such blocks).
    text = _FENCE.sub("", response).strip()
    if not text:
        raise JsonExtractionError("empty response: no JSON found")
    try:
        return _parse_whole(text)
    except json.JSONDecodeError as err:
        whole_error = err

    # Rule 3: {...} / [...] spans in text. A parsed span is skipped over, so its inner brackets are not re-read.
    # Failed attempts are what cost time (each re-scans up to its error), so they are capped: a response whose
    # JSON is hidden behind more malformed spans than that scores 0, which no honest response comes near.
    found: dict[str, Any] = {}
    first_error: json.JSONDecodeError | None = None
    failures = scanned = 0
    pos = 0
    while (m := _SPAN_START.search(text, pos)) is not None:
        if failures >= _MAX_SPAN_FAILURES or scanned >= _MAX_SPAN_SCAN:
            break
        try:
            value, pos = _decode(text, m.start())
        except json.JSONDecodeError as err:
            first_error = first_error or err
            failures, scanned = failures + 1, scanned + err.pos - m.start()
            pos = m.start() + 1
            continue
        found.setdefault(_canonical(value), value)
        if len(found) > 1:
            raise JsonExtractionError(f"several JSON candidates: {len(found)} different JSON values in the text")
    if found:
        return next(iter(found.values()))
    if first_error is not None:
        raise _malformed(first_error, "the response")
    if text[0] in '{["-0123456789':  # an attempt at JSON ("{'id': 7}"): say what is wrong with it
        raise _malformed(whole_error, "the response")
    raise JsonExtractionError("no JSON found: the response is neither JSON nor contains a {...} or [...] span")


# ------------------------------------------------------------------------------------------ formats

# Matched with fullmatch: "$" alone would accept a trailing newline.
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_TIME = re.compile(r"([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]+)?([Zz]|[+-]([0-9]{2}):([0-9]{2}))")
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_EMAIL = re.compile(rf"{_ATOM}(?:\.{_ATOM})*@{_LABEL}(?:\.{_LABEL})*")
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"  # no leading zeros: "010" is ambiguous (octal)
_IPV4 = re.compile(rf"(?:{_OCTET}\.){{3}}{_OCTET}")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def _is_date(s: str) -> bool:
    if not _DATE.fullmatch(s):
        return False
    try:
        datetime.date.fromisoformat(s)
    except ValueError:
        return False
    return True


def _is_time(s: str) -> bool:
    m = _TIME.fullmatch(s)
    if not m:
        return False
    hour, minute, second = int(m.group(1)), int(m.group(2)), int(m.group(3))
    off_h, off_m = int(m.group(6) or 0), int(m.group(7) or 0)
    # Second 60 is a leap second (RFC 3339 s5.7); its validity against the leap table is not checked.
    return hour < 24 and minute < 60 and second <= 60 and off_h < 24 and off_m < 60


def _is_date_time(s: str) -> bool:
    date, sep, time = s[:10], s[10:11], s[11:]
    return sep in ("T", "t") and _is_date(date) and _is_time(time)


def _is_email(s: str) -> bool:
    return len(s) <= 254 and bool(_EMAIL.fullmatch(s)) and len(s.split("@")[0]) <= 64


def _is_ipv6(s: str) -> bool:
    if not s.isascii() or "%" in s:  # zone ids ("fe80::1%eth0") are not part of RFC 4291 addresses
        return False
    try:
        ipaddress.IPv6Address(s)
    except ValueError:
        return False
    return True


FORMATS = {
    "date": _is_date,
    "date-time": _is_date_time,
    "time": _is_time,
    "email": _is_email,
    "ipv4": lambda s: bool(_IPV4.fullmatch(s)),
    "ipv6": _is_ipv6,
    "uuid": lambda s: bool(_UUID.fullmatch(s)),
}
"""Asserted formats: name -> predicate on strings (other instance types pass, as the spec says)."""


def _on_strings(check):
    return lambda instance: not isinstance(instance, str) or check(instance)


_FORMAT_CHECKER = FormatChecker(formats=())
for _name, _check in FORMATS.items():
    _FORMAT_CHECKER.checks(_name)(_on_strings(_check))


# ------------------------------------------------------------------------------------------ validation


def _hashable(value: Any) -> Any:
    """A key equal for equal JSON values (1 == 1.0, true != 1, key order ignored)."""
    if isinstance(value, bool) or value is None:
        return ("c", value)
    if isinstance(value, (int, float)):
        return ("n", value)  # 1 == 1.0 and hash(1) == hash(1.0), as JSON Schema equality wants
    if isinstance(value, str):
        return ("s", value)
    if isinstance(value, list):
        return ("l", tuple(_hashable(v) for v in value))
    return ("o", frozenset((k, _hashable(v)) for k, v in value.items()))


def _unique_items(validator, unique: bool, instance: Any, schema: dict):
    # jsonschema's own check is quadratic for unsortable items (3000 distinct objects take ~14 s);
    # hashing canonical keys is linear and gives the same answer.
    if unique and validator.is_type(instance, "array"):
        seen: set = set()
        for i, item in enumerate(instance):
            key = _hashable(item)
            if key in seen:
                yield ValidationError(f"item {i} repeats an earlier item (uniqueItems)")
                return
            seen.add(key)


_Validator = extend(Draft202012Validator, {"uniqueItems": _unique_items})


@functools.lru_cache(maxsize=4096)
def _compile(schema_json: str) -> tuple[Any, str | None]:
    """(validator, None) or (None, reason) for one schema; cached because a group of G samples shares it."""
    schema = json.loads(schema_json)
    if not isinstance(schema, (dict, bool)):
        return None, f"invalid schema: a schema is an object or a boolean, got {type(schema).__name__}"
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as err:
        return None, f"invalid schema at {err.json_path}: {_clip(err.message)}"
    except RecursionError:
        return None, "invalid schema: nested too deeply to check"
    # registry=METASCHEMAS: $refs resolve inside the schema or to the bundled metaschemas, never over the network.
    return _Validator(schema, registry=METASCHEMAS, format_checker=_FORMAT_CHECKER), None


def _schema_json(schema: Any) -> tuple[str | None, str | None]:
    try:
        return json.dumps(schema, allow_nan=False), None
    except (TypeError, ValueError, RecursionError) as err:
        return None, f"invalid schema: not JSON-serialisable ({_clip(str(err))})"


def _clip(text: str) -> str:
    return text if len(text) <= _REASON_CHARS else text[: _REASON_CHARS - 3] + "..."


def schema_error(schema: Any) -> str | None:
    """Why `schema` is not a usable draft 2020-12 schema, or None if it is.

    >>> schema_error({"type": "object", "required": ["id"]}) is None
    True
    >>> schema_error({"type": "objekt"})
    "invalid schema at $.type: 'objekt' is not valid under any of the given schemas"
    """
    text, reason = _schema_json(schema)
    return reason if text is None else _compile(text)[1]


def verify(response: str, schema: dict) -> Verdict:
    """Reward 1.0 if the JSON value in `response` is valid under the draft 2020-12 `schema`, else 0.0.

    Never raises. components: "parsed" (one acceptable JSON value was found) and "valid" (it validates).
    A broken schema gives status "error" (the task's fault); bad output gives status "ok" with reward 0.

    >>> schema = {"type": "object", "properties": {"id": {"type": "integer"}}, "required": ["id"]}
    >>> verify('{"id": 7}', schema).reward
    1.0
    >>> v = verify('```json\\n{"id": "7"}\\n```', schema)
    >>> v.reward, v.reason
    (0.0, "schema violation at $.id: '7' is not of type 'integer'")
    """
    try:
        return _verify(response, schema)
    except Exception as err:  # a bug here must cost one sample, not the environment server
        return Verdict.error(f"internal verifier error: {type(err).__name__}: {_clip(str(err))}")


def _verify(response: str, schema: Any) -> Verdict:
    text, reason = _schema_json(schema)
    if text is None:
        return Verdict.error(reason)
    validator, reason = _compile(text)
    if validator is None:
        return Verdict.error(reason)

    try:
        instance = extract_json(response)
    except JsonExtractionError as err:
        return Verdict(reward=0.0, components={"parsed": 0.0, "valid": 0.0}, reason=str(err))

    try:
        error = next(validator.iter_errors(instance), None)
    except Unresolvable as err:
        return Verdict.error(f"invalid schema: unresolvable $ref ({_clip(str(err))})")
    except RecursionError:
        # The instance is at most MAX_DEPTH deep, so unbounded recursion comes from a $ref loop in the schema.
        return Verdict.error("invalid schema: $ref recursion does not terminate")
    except re.error as err:
        return Verdict.error(f"invalid schema: pattern is not a Python regex ({err})")
    if error is not None:
        return Verdict(
            reward=0.0, components={"parsed": 1.0, "valid": 0.0},
            reason=f"schema violation at {error.json_path}: {_clip(error.message)}",
        )
    return Verdict(reward=1.0, components={"parsed": 1.0, "valid": 1.0}, reason="valid under the schema")
