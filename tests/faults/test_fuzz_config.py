"""Issue 10 item 5: hostile config files, --envs values and dotted overrides, fuzzed with hypothesis.

Property: `rl.config.build_config` (what rl/train.py's parse_config calls) returns a valid PolyrlConfig or
raises ConfigError, never another exception type (a raw pydantic ValidationError, KeyError, AttributeError,
UnicodeDecodeError, RecursionError or yaml error escaping is a bug); a ConfigError caused by one bad key
names that key. Example counts come from the hypothesis profile (tests/conftest.py).
"""

from __future__ import annotations

import typing

import pytest
import yaml
from hypothesis import example, given
from hypothesis import strategies as st
from pydantic import BaseModel

from rl.config import DEFAULT_CONFIG, ConfigError, PolyrlConfig, build_config, parse_override


def _leaf_keys() -> list[str]:
    """Every section.field of PolyrlConfig (and one environment's fields), as dotted keys."""
    keys = []
    for name, f in PolyrlConfig.model_fields.items():
        tp = f.annotation
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            keys += [f"{name}.{k}" for k in tp.model_fields]
        elif typing.get_origin(tp) is dict:
            keys += [f"{name}.math.{k}" for k in typing.get_args(tp)[1].model_fields]
    return keys


LEAF_KEYS = _leaf_keys()
SECTIONS = list(PolyrlConfig.model_fields)

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=10**4400, max_value=10**4500),
    st.floats(), st.text(max_size=30), st.sampled_from(["1e-5", "nan", "inf", "-.inf", "~", "yes", "0x1F", "1_000",
                                                        "2001-01-01", "12:30", "'", "\"", "{", "[", "&a", "*a",
                                                        "!!python/object:os.system ls", "\x00", "\ud800"]),
)
values = st.recursive(scalars, lambda kids: st.lists(kids, max_size=3) | st.dictionaries(
    st.sampled_from(LEAF_KEYS).map(lambda k: k.split(".")[-1]) | st.text(max_size=8), kids, max_size=3),
    max_leaves=12)
keys = st.one_of(st.sampled_from(LEAF_KEYS), st.sampled_from(SECTIONS),
                 st.lists(st.text(max_size=6), min_size=1, max_size=4).map(".".join),
                 st.tuples(st.sampled_from(LEAF_KEYS), st.text(max_size=6)).map(".".join))


def _yaml_text(value) -> str:
    """A value as YAML text for an override (what a user types after '=')."""
    try:
        return yaml.safe_dump(value, default_flow_style=True, width=10**9).strip().removesuffix("...").strip()
    except (yaml.YAMLError, ValueError):  # an int over Python's 4,300-digit str() limit
        return "9" * 4500


overrides = st.one_of(
    st.tuples(keys, values.map(_yaml_text)).map("=".join),
    st.tuples(keys, st.text(max_size=30)).map("=".join),
    st.text(max_size=40),
)
documents = st.one_of(
    st.dictionaries(st.sampled_from(SECTIONS) | st.text(max_size=8),
                    st.dictionaries(st.sampled_from(LEAF_KEYS).map(lambda k: k.split(".")[1]) | st.text(max_size=8),
                                    values, max_size=4) | values, max_size=5).map(
        lambda d: yaml.safe_dump(d, allow_unicode=True) if _dumpable(d) else "run: {seed: " + "9" * 4500 + "}"),
    values.map(_yaml_text),
    st.text(max_size=300),
    st.sampled_from(["", "---\n...\n", "[" * 5000, "{a: " * 3000, "a: &a [1]\nb: [*a, *a]", "? [a]\n: 1",
                     "run: {seed: " + "9" * 5000 + "}", "envs: [math, code]", "envs: math", "envs: {math: 3}",
                     "run: !!python/name:os.system", "%YAML 9.9\n---\n1", "run:\n\tsteps: 3", "\ufeffrun: {}"]),
)
envs_args = st.one_of(st.none(), st.sampled_from(["math", "math,json_schema", ",", " , ,", "code,math,tools"]),
                      st.text(max_size=20))


def _dumpable(d) -> bool:
    try:
        yaml.safe_dump(d)
        return True
    except (yaml.YAMLError, ValueError):
        return False


def _build(tmp_path, text: str | bytes, envs, ovs) -> PolyrlConfig | ConfigError:
    path = tmp_path / "fuzz.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8", errors="surrogateescape")
    try:
        cfg = build_config(path, envs, ovs)
    except ConfigError as e:
        assert str(e).strip(), "a ConfigError must say what is wrong"
        return e
    assert isinstance(cfg, PolyrlConfig)
    return cfg


@given(text=documents, envs=envs_args, ovs=st.lists(overrides, max_size=3))
@example(text="envs: [math, code]", envs="math", ovs=[])  # bug: AttributeError ('list' has no .get)
@example(text="envs: math", envs="math", ovs=[])  # bug: AttributeError
@example(text="[" * 5000, envs=None, ovs=[])  # bug: RecursionError out of yaml
@example(text="run: {seed: " + "9" * 5000 + "}", envs=None, ovs=[])  # bug: ValueError (int digit limit)
@example(text="{}", envs=None, ovs=["run.seed=" + "9" * 5000])  # bug: ValueError from the override's YAML
@example(text="{}", envs=None, ovs=["run.name=" + "[" * 5000])  # bug: RecursionError from the override's YAML
def test_documents_envs_and_overrides(tmp_path_factory, text, envs, ovs):
    _build(tmp_path_factory.mktemp("cfg"), text, envs, ovs)


@given(data=st.binary(max_size=300))
@example(data=b"run: {name: \xff\xfe}")  # bug: UnicodeDecodeError escaped
@example(data=b"\xef\xbb\xbfrun: {steps: 3}")  # a UTF-8 byte-order mark is fine
def test_invalid_utf8_files(tmp_path_factory, data):
    _build(tmp_path_factory.mktemp("cfg"), data, None, [])


def _shown(key: str, message: str) -> bool:
    """The message names the key, or (for a value the YAML made a section of) its first segment that is wrong."""
    parts = key.split(".")
    return any(".".join(parts[:n]) in message for n in range(len(parts), 0, -1)
               if n >= min(2, len(parts)) or parts[0] not in SECTIONS)


@given(key=st.sampled_from(LEAF_KEYS), value=values)
@example(key="run.steps", value="ten")
@example(key="learner.betas", value=[1, 2, 3])
@example(key="envs.math.weight", value=-1)
def test_one_bad_leaf_names_its_key(tmp_path_factory, key, value):
    """A single override on the default config: accepted, or a ConfigError naming the overridden key."""
    result = _build(tmp_path_factory.mktemp("cfg"), DEFAULT_CONFIG.read_text(), None, [f"{key}={_yaml_text(value)}"])
    if isinstance(result, ConfigError):
        assert _shown(key, str(result)), f"error for {key} does not name it:\n{result}"
    else:
        assert result.model_dump(mode="json") is not None  # the resolved config is written as YAML at start


@given(section=st.sampled_from(SECTIONS[:-1]), name=st.text(min_size=1, max_size=12).filter(
    lambda s: "." not in s and "=" not in s and s.strip() == s and s.isprintable()), value=scalars)
def test_unknown_key_is_named(tmp_path_factory, section, name, value):
    owner = PolyrlConfig.model_fields[section].annotation
    if name in owner.model_fields:
        return
    result = _build(tmp_path_factory.mktemp("cfg"), "{}", None, [f"{section}.{name}=1"])
    assert isinstance(result, ConfigError) and f"'{section}.{name}'" in str(result), str(result)


@given(text=st.text(max_size=60))
def test_parse_override_only_raises_config_error(text):
    try:
        parts, _ = parse_override(text)
    except ConfigError:
        return
    assert parts and all(parts)


def test_every_leaf_key_has_a_named_type_error(tmp_path):
    """A deliberately wrong type for every field (a nested mapping is a valid value of no scalar field)."""
    for key in LEAF_KEYS:
        result = _build(tmp_path, "{}", None, [f"{key}={{x: {{y: 1}}}}"])
        if isinstance(result, ConfigError):
            assert _shown(key, str(result)), f"{key}: {result}"
        else:  # free-form dict fields (engine_kwargs, options) accept any mapping
            assert key.split(".")[-1] in ("engine_kwargs", "options", "resources", "thinking_budget", "speculative")

