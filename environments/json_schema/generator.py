"""Deterministic generator of JSON Schema tasks: (schema, valid example) pairs at three difficulties.

Sized for the tiny policy (sized when it was character-level with a 512-character context; warm-started by SFT on the
example instances): short keys, short values, the schema as compact JSON, and hard length caps
(PROMPT_LIMITS, EXAMPLE_LIMIT) so prompt + reference + chat markers always fit.

- easy:   flat object, 1-2 required keys of simple types (integer, number, string, boolean);
- medium: 3-4 keys, at least one enum / integer range / typed array, some keys optional;
- hard:   3-4 keys, at least two of: nested object, string format (date, email, ipv4), $ref into $defs,
          array with minItems, string pattern.

The reference is the task's minimal instance (`minimal_instance`), a rule the policy can learn rather than a random
draw: the required keys only, in the order of "required", each with its type's zero value (0, 0.0, "", false, [],
an object's own minimal instance), an integer range's minimum and an enum's first option; only a string format or
pattern keeps a drawn value that matches it. For SFT a random valid value is noise that cannot be predicted from
the prompt, as a math prompt's operands are: at temperature 1 the tiny policy sampled two-digit integers out of
the range, keys that were not in the schema and values of another key's type.

Task (difficulty, index) draws from its own RNG seeded by (seed, difficulty, index), so a task id names the
same task whatever num_tasks is, in every process.
"""

from __future__ import annotations

import random
import string
from typing import Any, Callable

from environments.json_schema.records import PROMPT_PREFIX, compact

DIFFICULTIES = ("easy", "medium", "hard")
PROMPT_LIMITS = {"easy": 160, "medium": 250, "hard": 380}  # characters, prefix included
EXAMPLE_LIMIT = 110  # characters of the reference response
_MAX_DRAWS = 200  # a draw over the limits is redrawn from the same RNG stream (hard: ~1 in 4 is)

KEYS = ("id", "name", "age", "ok", "qty", "tag", "code", "city", "note", "rank", "size", "kind", "mode",
        "year", "cost", "score", "step", "color", "lang", "unit")
OBJECT_KEYS = ("user", "item", "meta", "pos", "owner", "dim")
WORDS = ("red", "blue", "ann", "bob", "oak", "sky", "tea", "max", "ivy", "sun", "fox", "jam")
SIMPLE_TYPES = ("integer", "number", "string", "boolean")

Field = tuple[dict, Any]  # (sub-schema, a value valid under it)


def _simple_value(rng: random.Random, type_: str) -> Any:
    if type_ == "integer":
        return rng.randint(0, 99)
    if type_ == "number":
        return rng.randint(0, 999) / 10  # one decimal: short and exact in JSON
    if type_ == "string":
        return rng.choice(WORDS)
    return rng.random() < 0.5


def _simple(rng: random.Random) -> Field:
    type_ = rng.choice(SIMPLE_TYPES)
    return {"type": type_}, _simple_value(rng, type_)


# ---- medium features


def _enum(rng: random.Random) -> Field:
    options = rng.sample(WORDS, rng.randint(2, 3))
    return {"enum": options}, options[0]


def _range(rng: random.Random) -> Field:
    low = rng.randint(0, 50)
    high = low + rng.randint(1, 50)
    return {"type": "integer", "minimum": low, "maximum": high}, low


def _array(rng: random.Random) -> Field:
    type_ = rng.choice(("integer", "string", "number"))
    return ({"type": "array", "items": {"type": type_}},
            [_simple_value(rng, type_) for _ in range(rng.randint(1, 3))])


# ---- hard features


def _nested(rng: random.Random) -> Field:
    keys = rng.sample(KEYS, rng.randint(1, 2))
    fields = [_simple(rng) for _ in keys]
    schema = {"type": "object", "properties": {k: s for k, (s, _) in zip(keys, fields)}, "required": keys}
    return schema, {k: v for k, (_, v) in zip(keys, fields)}


def _format(rng: random.Random) -> Field:
    fmt = rng.choice(("date", "email", "ipv4"))
    if fmt == "date":
        value = f"20{rng.randint(10, 29)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    elif fmt == "email":
        value = f"{rng.choice(WORDS)}@{rng.choice(WORDS)}.{rng.choice(('com', 'io', 'org'))}"
    else:
        value = f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
    return {"type": "string", "format": fmt}, value


def _chars(rng: random.Random, alphabet: str, n: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


# (pattern, sampler of a matching string). Character classes only: no backslashes for the policy to escape.
PATTERNS: tuple[tuple[str, Callable[[random.Random], str]], ...] = (
    ("^[a-z]{3}$", lambda r: _chars(r, string.ascii_lowercase, 3)),
    ("^[A-Z]{2}[0-9]{2}$", lambda r: _chars(r, string.ascii_uppercase, 2) + _chars(r, string.digits, 2)),
    ("^[0-9]{4}$", lambda r: _chars(r, string.digits, 4)),
    ("^[a-z]+-[0-9]+$", lambda r: r.choice(WORDS) + "-" + str(r.randint(0, 99))),
    ("^#[0-9a-f]{6}$", lambda r: "#" + _chars(r, "0123456789abcdef", 6)),
)


def _pattern(rng: random.Random) -> Field:
    pattern, sample = rng.choice(PATTERNS)
    return {"type": "string", "pattern": pattern}, sample(rng)


def _min_items(rng: random.Random) -> Field:
    type_ = rng.choice(("integer", "string"))
    n = rng.randint(2, 3)
    return ({"type": "array", "items": {"type": type_}, "minItems": n},
            [_simple_value(rng, type_) for _ in range(n)])


ZERO_VALUES: dict[str, Any] = {"integer": 0, "number": 0.0, "string": "", "boolean": False}


def minimal_instance(schema: dict, drawn: Any, defs: dict[str, dict]) -> Any:
    """The instance of a generated sub-schema that the reference writes: the first enum option, an integer range's
    minimum, a type's zero value, `minItems` zero values of the item type, an object's required keys each with its
    own minimal instance; a `format` or `pattern` string keeps `drawn` (a valid value the generator drew).

    >>> minimal_instance({"type": "array", "items": {"type": "integer"}, "minItems": 2}, [5, 7], {})
    [0, 0]
    >>> minimal_instance({"type": "integer", "minimum": 23, "maximum": 40}, 31, {})
    23
    """
    if "$ref" in schema:
        return minimal_instance(defs[schema["$ref"].rsplit("/", 1)[1]], drawn, defs)
    if "enum" in schema:
        return schema["enum"][0]
    if "format" in schema or "pattern" in schema:
        return drawn
    type_ = schema["type"]
    if type_ == "integer":
        return schema.get("minimum", 0)
    if type_ == "array":
        return [ZERO_VALUES[schema["items"]["type"]]] * schema.get("minItems", 0)
    if type_ == "object":
        return {k: minimal_instance(schema["properties"][k], drawn[k], defs) for k in schema["required"]}
    return ZERO_VALUES[type_]


_MEDIUM = (_enum, _range, _array)
_HARD = (_nested, _format, "ref", _min_items, _pattern)


def _draw(rng: random.Random, difficulty: str) -> tuple[dict, dict, dict]:
    """(schema, the drawn instance, the minimal instance) of one draw; both instances hold the required keys."""
    if difficulty == "easy":
        kinds = [_simple] * rng.randint(1, 2)
        p_required = 1.0
    elif difficulty == "medium":
        n = rng.randint(3, 4)
        kinds = [rng.choice(_MEDIUM)] + [rng.choice((_simple, _simple) + _MEDIUM) for _ in range(n - 1)]
        p_required = 0.7
    else:
        n = rng.randint(3, 4)
        kinds = rng.sample(_HARD, 2) + [rng.choice((_simple,) + _MEDIUM + _HARD) for _ in range(n - 2)]
        p_required = 0.8
    rng.shuffle(kinds)

    schema: dict[str, Any] = {"type": "object", "properties": {}}
    example: dict[str, Any] = {}
    defs: dict[str, dict] = {}
    plain_keys = iter(rng.sample(KEYS, len(KEYS)))
    object_keys = iter(rng.sample(OBJECT_KEYS, len(OBJECT_KEYS)))
    for kind in kinds:
        if kind == "ref":
            # A named definition, referenced by the property of the same name: one $defs entry per task.
            if defs:
                kind = _nested
            else:
                key = next(object_keys)
                sub, value = rng.choice((_nested, _pattern, _enum))(rng)
                defs[key] = sub
                schema["properties"][key] = {"$ref": f"#/$defs/{key}"}
                example[key] = value
                continue
        key = next(object_keys) if kind is _nested else next(plain_keys)
        sub, value = kind(rng)
        schema["properties"][key] = sub
        example[key] = value
    keys = list(schema["properties"])
    required = [k for k in keys if rng.random() < p_required] or [rng.choice(keys)]
    schema["required"] = required
    if defs:
        schema["$defs"] = defs
    # The length limit applies to the drawn instance (never shorter than the minimal one), so the task set is the
    # one from before references became minimal: held-out figures stay comparable across warm starts.
    drawn = {k: example[k] for k in required}
    return schema, drawn, {k: minimal_instance(schema["properties"][k], example[k], defs) for k in required}


def generate(seed: int, difficulty: str, index: int) -> tuple[dict, str]:
    """(schema, compact JSON of a valid example) of task `index` at `difficulty`; pure in its arguments.

    >>> schema, example = generate(0, "easy", 0)
    >>> generate(0, "easy", 0) == (schema, example)
    True
    >>> list(__import__("json").loads(example)) == schema["required"]
    True
    """
    if difficulty not in PROMPT_LIMITS:
        raise ValueError(f"unknown difficulty {difficulty!r}; use one of {DIFFICULTIES}")
    # A string seed is hashed with SHA-512 by random.Random: stable across processes and Python versions.
    rng = random.Random(f"json_schema/{seed}/{difficulty}/{index}")
    for _ in range(_MAX_DRAWS):
        schema, drawn, example = _draw(rng, difficulty)
        prompt_chars = len(PROMPT_PREFIX) + len(compact(schema))
        if prompt_chars <= PROMPT_LIMITS[difficulty] and len(compact(drawn)) <= EXAMPLE_LIMIT:
            return schema, compact(example)
    raise RuntimeError(f"json_schema generator: no {difficulty} schema within the length limits after "
                       f"{_MAX_DRAWS} draws (task {index}); raise PROMPT_LIMITS or shorten the vocabularies")
