"""Issue 10 item 5: hostile model output sent to every verifier's public API, fuzzed with hypothesis.

Property for each target: it returns its documented type (a Verdict with reward in [0, 1] that survives the
JSON round trip it takes over HTTP, or genrm's Parsed), a zero reward carries a reason, no exception escapes,
and each call is bounded in wall time (a generous 30 s: a liveness bound, not a speed target) and memory.

Inputs: random text, random bytes decoded with surrogateescape and lone surrogates (invalid UTF-8), megabyte
strings, deep nesting ({{{{, [[[[, \\frac{\\frac{, ((((, <tool_call>...), hostile math (10**10**10,
towers, huge factorials and binomials) and NUL bytes, alone and spliced together. The example counts come from
the hypothesis profile (tests/conftest.py: "ci" in `make test`, "long" in `make test-faults`).
"""

from __future__ import annotations

import json
import resource
import time
import tracemalloc

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from rl.types import Verdict

WALL_LIMIT_S = 30.0  # liveness: a stuck verifier would take forever, a slow machine only seconds
RSS_GROWTH_LIMIT_KB = 2 * 2**20  # peak RSS may not grow by more than 2 GiB over a whole fuzz target

# ------------------------------------------------------------------------------------------ strategies

OPENERS = ("{", "[", "(", "\\frac{", "\\frac{1}{", "\\boxed{", "\\sqrt{", "\\left(", "<tool_call>", "<think>",
           "```python\n", "```json\n", '{"a":', "[[", "\\{", "$")
HOSTILE_MATH = (
    "10**10**10", "\\boxed{10^{10^{10}}}", "\\boxed{2^{2^{2^{2^{2^{2^{99}}}}}}}", "2^2^2^2^2^2^2^99",
    "\\boxed{(10^{10})!}", "\\boxed{\\binom{10^{9}}{5}}", "\\boxed{\\binom{100000}{50000}}", "\\boxed{99999!}",
    "\\boxed{" + "9" * 5000 + "}", "The answer is " + "1" * 20000, "\\boxed{\\frac{1}{0}}", "\\boxed{0/0}",
    "\\boxed{\\sum_{n=1}^{10^{10}} n}", "\\boxed{\\prod_{k=1}^{10^6} k}", "\\boxed{\\int_0^\\infty e^{x^2} dx}",
    "\\boxed{x^{x^{x^{x^{x}}}}}", "\\boxed{\\lim_{x\\to 0} \\frac{1}{x}}", "\\boxed{1e999999}", "\\boxed{NaN}",
    "\\boxed{\\infty - \\infty}", "\\boxed{\\begin{pmatrix}" + "1&" * 500 + "1\\end{pmatrix}}",
    "Answer: " + "(" * 60 + "1" + ")" * 60, "\\boxed{" + "\\sqrt{" * 40 + "2" + "}" * 40 + "}",
)


def _nested(opener: str, depth: int, closed: bool, tail: str) -> str:
    closer = {"{": "}", "[": "]", "(": ")", "\\frac{": "}{2}", "\\frac{1}{": "}", "\\boxed{": "}",
              "\\sqrt{": "}", "\\left(": "\\right)", "<tool_call>": "</tool_call>", "<think>": "</think>",
              "```python\n": "\n```", "```json\n": "\n```", '{"a":': "}", "[[": "]]", "\\{": "\\}",
              "$": "$"}[opener]
    return opener * depth + tail + (closer * depth if closed else "")


nested = st.builds(_nested, st.sampled_from(OPENERS), st.integers(1, 100_000), st.booleans(), st.text(max_size=8))
invalid_utf8 = st.binary(max_size=512).map(lambda b: b.decode("utf-8", "surrogateescape"))
lone_surrogates = st.text(alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=8)
# Megabyte strings are built by repetition (cheap for hypothesis), with the tail a real answer would have.
huge = st.builds(lambda unit, mib, tail: unit * (mib * 2**20 // len(unit)) + tail,
                 st.sampled_from(["a", "1", " ", "{", "\\boxed{", "<tool_call>", "\x00", "\ud800", "9,"]),
                 st.sampled_from([1, 2, 4]), st.sampled_from(["", "\\boxed{42}", "Answer: 42", "{}", "```"]))
nul = st.text(max_size=40).map(lambda s: s.replace(" ", "\x00") + "\x00")
pieces = st.one_of(st.text(max_size=200), invalid_utf8, lone_surrogates, nul, st.sampled_from(HOSTILE_MATH),
                   st.builds(_nested, st.sampled_from(OPENERS), st.integers(1, 300), st.booleans(),
                             st.text(max_size=8)))
spliced = st.lists(pieces, min_size=1, max_size=5).map("".join)
# Every hostile shape; `huge` and deep `nested` are rarer, so most examples stay cheap.
hostile_text = st.one_of(spliced, st.text(), nested, huge, st.sampled_from(HOSTILE_MATH))
# The same without megabytes, for request bodies under a small server limit (tests/faults/test_fuzz_http.py).
moderate_text = st.one_of(spliced, st.text(), st.sampled_from(HOSTILE_MATH).filter(lambda s: len(s) < 5000),
                          st.builds(_nested, st.sampled_from(OPENERS), st.integers(1, 2000), st.booleans(),
                                    st.text(max_size=8)))


def bounded(fn, *args, **kwargs):
    """fn(*args, **kwargs), failing the test if it takes longer than WALL_LIMIT_S."""
    t0 = time.monotonic()
    out = fn(*args, **kwargs)
    elapsed = time.monotonic() - t0
    assert elapsed < WALL_LIMIT_S, f"{getattr(fn, '__name__', fn)} took {elapsed:.1f}s (limit {WALL_LIMIT_S:g}s)"
    return out


def check_verdict(v: object, what: str) -> Verdict:
    """The shared property of every verifier's answer."""
    assert isinstance(v, Verdict), f"{what} returned {type(v).__name__}, not a Verdict"
    assert 0.0 <= v.reward <= 1.0, f"{what}: reward {v.reward} outside [0, 1]"
    if v.reward == 0.0 or v.status == "error":
        assert v.reason.strip(), f"{what}: reward {v.reward} (status {v.status}) without a reason"
    # The verdict crosses HTTP as JSON: it must serialise (a lone surrogate in a reason would not).
    assert Verdict.from_json(v.to_json()) == v
    return v


@pytest.fixture
def rss_bounded():
    """Peak RSS growth over one fuzz target stays bounded (ru_maxrss is the process's high-water mark, KiB)."""
    start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    yield
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - start
    assert grown < RSS_GROWTH_LIMIT_KB, f"peak RSS grew by {grown / 1024:.0f} MiB during the fuzz target"


def traced_peak_mib(fn, *args, **kwargs) -> float:
    """Peak Python allocation (MiB) of one call, beyond what existed before it."""
    tracemalloc.start()
    try:
        fn(*args, **kwargs)
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


# ------------------------------------------------------------------------------------------------ math

MATH_REFERENCES = ("42", "\\frac{\\sqrt{3}}{2}", "x^2+1", "(1,2)", "\\{1,2\\}", "[1,2)", "#### 7", "\\boxed{3\\pi}")


@given(response=hostile_text, reference=st.sampled_from(MATH_REFERENCES), plain=st.booleans())
@example(response="\\boxed{10^{10^{10}}}", reference="42", plain=False)
@example(response="\\boxed{" * 100_000, reference="x^2+1", plain=False)
@example(response="\ud800\\boxed{\udcff}", reference="42", plain=True)
def test_math_verify(rss_bounded, response, reference, plain):
    from verifiers.math import verify

    check_verdict(bounded(verify, response, reference, plain_numbers=plain), "verifiers.math.verify")


# ------------------------------------------------------------------------------------------ json_schema

SCHEMAS = (
    {"type": "object", "properties": {"id": {"type": "integer"}, "tags": {"type": "array", "items": {"type": "string"}}},
     "required": ["id"]},
    {"type": "array", "items": {"type": "object", "properties": {"a": {"type": "string", "format": "email"}}}},
    {"type": "string", "pattern": "^[a-z]+$", "maxLength": 20},
    {"type": "object", "properties": {"d": {"type": "string", "format": "date-time"}}, "additionalProperties": False},
)


def json_values(max_leaves: int = 20):
    scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
                        st.text(max_size=20))
    return st.recursive(scalars, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=6), kids,
                                                                                          max_size=4),
                        max_leaves=max_leaves)


json_responses = st.one_of(
    hostile_text,
    json_values().map(json.dumps),
    st.tuples(st.text(max_size=30), json_values().map(json.dumps), st.text(max_size=30)).map(
        lambda t: f"{t[0]}```json\n{t[1]}\n```{t[2]}"),
    st.builds(lambda v, n: "[" * n + json.dumps(v) + "]" * n, json_values(5), st.integers(1, 5000)),
    st.builds(lambda n: '{"id": ' + "9" * n + "}", st.integers(4000, 20_000)),  # beyond Python's int-digit limit
)


@given(response=json_responses, schema=st.sampled_from(SCHEMAS))
@example(response='{"id": ' + "9" * 5000 + "}", schema=SCHEMAS[0])
@example(response="[" * 50_000 + "]" * 50_000, schema=SCHEMAS[1])
@example(response='{"id": NaN}', schema=SCHEMAS[0])
@example(response='{"id": 1, "id": 2}', schema=SCHEMAS[0])
def test_json_schema_verify(rss_bounded, response, schema):
    from verifiers.json_schema import verify

    check_verdict(bounded(verify, response, schema), "verifiers.json_schema.verify")


# -------------------------------------------------------------------------------------------------- qa

@given(response=hostile_text, answer=st.one_of(st.sampled_from(["Oslo", "Ann Lee", "1999"]),
                                              st.lists(st.text(max_size=20), min_size=1, max_size=3)),
       metric=st.sampled_from(["exact", "f1"]))
@example(response="Answer: " + "\\boxed{" * 50_000, answer="Oslo", metric="f1")
@example(response="\\boxed{\x00\ud800}", answer=["\x00"], metric="exact")
def test_qa_verifier(rss_bounded, response, answer, metric):
    from verifiers.qa import QAVerifier

    check_verdict(bounded(QAVerifier(metric), response, answer=answer), f"verifiers.qa.QAVerifier({metric!r})")


# ------------------------------------------------------------------------------- tools (db_state + parser)

TOOL_NAMES = ("query", "insert", "update", "delete", "send_message", "drop_table", "")
TABLES = ("events", "tickets", "messages", "employees", "sqlite_master", "x\"; DROP TABLE events; --")


def _call(name, table, where, values, extra):
    args = {"table": table}
    if where is not None:
        args["where"] = where
    if values is not None:
        args["values"] = values
    args.update(extra)
    return "<tool_call>" + json.dumps({"name": name, "arguments": args}) + "</tool_call>"


tool_calls = st.builds(
    _call, st.sampled_from(TOOL_NAMES) | st.text(max_size=10), st.sampled_from(TABLES) | json_values(3),
    st.none() | st.dictionaries(st.sampled_from(["id", "title", "owner", "status", "day", "x"]), json_values(3),
                                max_size=3),
    st.none() | st.dictionaries(st.sampled_from(["id", "title", "owner", "status", "day", "body", "recipient"]),
                                json_values(3), max_size=3),
    st.dictionaries(st.sampled_from(["limit", "columns", "to", "body"]), json_values(3), max_size=2),
)
transcripts = st.one_of(
    hostile_text,
    st.lists(st.one_of(tool_calls, st.text(max_size=30), st.sampled_from(["<|tool|>ok<|assistant|>", "<tool_call>",
                                                                          "</tool_call>"])),
             min_size=1, max_size=8).map("".join),
    st.builds(lambda n: "<tool_call>" + "[" * n + "</tool_call>", st.integers(1, 19_000)),
    st.builds(lambda n: '<tool_call>{"name": "query", "arguments": {"limit": ' + "9" * n + "}}</tool_call>",
              st.integers(4000, 10_000)),
)


@pytest.fixture(scope="module")
def tools_env():
    from environments.tools import ToolsEnvironment

    env = ToolsEnvironment({"num_tasks": 6})
    yield env, env.load_tasks()
    env.close()


@given(response=transcripts, k=st.integers(0, 5))
@example(response="<tool_call>" + "[" * 18_000 + "</tool_call>", k=0)
@example(response='<tool_call>{"name": "query", "arguments": {"limit": ' + "9" * 5000 + "}}</tool_call>", k=1)
def test_tools_verify_transcript(rss_bounded, tools_env, response, k):
    env, records = tools_env
    check_verdict(bounded(env.verify, records[k], response), "tools.verify")


@given(actions=st.lists(transcripts, min_size=1, max_size=4), k=st.integers(0, 5))
def test_tools_episode_steps_and_verify(rss_bounded, tools_env, actions, k):
    """The multi-turn path: every step answers with an observation string, then verify_episode a Verdict."""
    from environments.tools.db import MAX_OBSERVATION_CHARS, ToolError, parse_calls

    env, records = tools_env
    sid = f"fuzz-{time.monotonic_ns()}"
    env.reset(records[k], sid)
    for action in actions:
        for c in bounded(parse_calls, action):
            assert isinstance(c, (dict, ToolError))
            if isinstance(c, dict):
                assert isinstance(c["name"], str) and isinstance(c["arguments"], dict)
            else:
                assert str(c), "a ToolError without a message is no observation"
        observation, done = bounded(env.step, sid, action)
        assert isinstance(observation, str) and observation and isinstance(done, bool)
        # One error line per call at most, and each observation is capped for the tiny policy's context.
        assert all(len(line) <= MAX_OBSERVATION_CHARS + 80 for line in observation.split("\n"))
        observation.encode("utf-8")  # goes back over HTTP and into the tokenizer: must be valid text
        if done:
            break
    check_verdict(bounded(env.verify_episode, records[k], sid, "Done."), "tools.verify_episode")


# ------------------------------------------------------------------------------------------ code (sandbox)

HOSTILE_PROGRAMS = (
    "while True: pass",
    "import os\nwhile True:\n    os.fork()",
    "x = 'a' * (10 ** 10)",
    "print('x' * (50 * 2 ** 20))",
    "import sys\nsys.setrecursionlimit(10 ** 6)\ndef f(n): return f(n + 1)\nf(0)",
    "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)",
    "import sys\nsys.stdout.buffer.write(b'\\xff\\xfe\\x00' * 1000)",
    "print('\\ud800')",
    "open('/etc/shadow').read()",
    "import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=1)",
    "import time\ntime.sleep(60)",
    "raise SystemExit(3)",
    "import os\nos.close(1)",
    "print(10 ** 10 ** 10)",
    "s = input()\nprint(s * 5)",
)
programs = st.one_of(st.sampled_from(HOSTILE_PROGRAMS), st.text(max_size=200), invalid_utf8,
                     st.builds(lambda n: "(" * n + ")" * n, st.integers(1, 5000)))
code_responses = st.one_of(programs.map(lambda p: f"```python\n{p}\n```"), hostile_text)


@pytest.fixture(scope="module")
def code_env():
    from verifiers import sandbox

    problem = sandbox.available("bubblewrap")
    if problem:
        pytest.skip(f"the bubblewrap sandbox backend is unavailable here: {problem}")
    from environments.code import CodeEnvironment

    # Short limits: an endless loop costs one second (fail_fast "timeout", the default).
    env = CodeEnvironment({"num_tasks": 3, "limits": {"cpu_s": 1, "wall_s": 1, "total_wall_s": 5}})
    return env, env.load_tasks()


@settings(max_examples=min(settings().max_examples, 12))  # each example is a real sandbox run (bubblewrap)
@given(response=code_responses, k=st.integers(0, 2))
@example(response="```python\nimport os\nwhile True:\n    os.fork()\n```", k=0)
@example(response="```python\nprint('\\ud800')\n```", k=0)
@example(response="```python\n\x00\ud800\n```", k=1)
def test_code_verify(rss_bounded, code_env, response, k):
    env, records = code_env
    check_verdict(bounded(env.verify, records[k], response), "code.verify")


# ------------------------------------------------------------------------------------------ genrm parser

judge_outputs = st.one_of(
    hostile_text,
    st.builds(lambda c, a, b, r, junk: f"Critique: {c} Scores: {a} {b}. Ranking: {r}{junk}",
              st.text(max_size=80), st.sampled_from(["1", "5", "3.5", "0", "6", "-1", "+2", "1e9", "9" * 400, "NaN"]),
              st.sampled_from(["1", "5", "2.0", "7", "", "x"]), st.sampled_from(["A", "B", "tie", "C", ""]),
              st.sampled_from(["", ".", " Ranking: A", " Scores: 1 1.", "\x00", "\ud800"])),
)


@given(output=judge_outputs)
@example(output="Critique: " + "x" * 15_990 + " Scores: 5 1. Ranking: A")
@example(output="Critique: \ud800 Scores: 5 1. Ranking: A")
def test_genrm_judge_parser(rss_bounded, output):
    from genrm.comparisons import SCORE_MAX, SCORE_MIN
    from genrm.judge import Parsed, parse, split_thinking

    p = bounded(parse, output)
    assert isinstance(p, Parsed)
    if p.judgement is None:
        assert p.error, "a failed parse must say why"
    else:
        j = p.judgement
        assert SCORE_MIN <= j.score_a <= SCORE_MAX and SCORE_MIN <= j.score_b <= SCORE_MAX
        assert j.ranking in ("A", "B", "tie") and j.critique
    thinking, answer = bounded(split_thinking, output)
    assert isinstance(thinking, str) and isinstance(answer, str)


def test_genrm_parser_rejects_non_text():
    from genrm.judge import parse

    for value in (None, b"Critique: x Scores: 5 1. Ranking: A", 5, ["Critique:"]):
        assert parse(value).judgement is None and parse(value).error


# ----------------------------------------------------------------------- memory of megabyte inputs, traced

@pytest.mark.parametrize("target", ["math", "json_schema", "qa", "tools", "genrm"])
def test_megabyte_inputs_allocate_boundedly(tools_env, target):
    """A response of 8 MiB may not make a verifier allocate more than a small multiple of it (traced)."""
    from environments.tools.db import parse_calls
    from genrm.judge import parse
    from verifiers import json_schema, math as vmath, qa

    env, records = tools_env
    calls = {
        "math": lambda s: vmath.verify(s, "42"),
        "json_schema": lambda s: json_schema.verify(s, SCHEMAS[0]),
        "qa": lambda s: qa.token_f1(s, answer="Oslo"),
        "tools": lambda s: (parse_calls(s), env.verify(records[0], s)),
        "genrm": parse,
    }
    size_mib = 8
    for unit in ("{", "\\boxed{", "<tool_call>[", "9"):
        text = unit * (size_mib * 2**20 // len(unit))
        peak = traced_peak_mib(bounded, calls[target], text)
        assert peak < 4 * size_mib + 64, f"{target}: {peak:.0f} MiB traced for an {size_mib} MiB input of {unit!r}"

