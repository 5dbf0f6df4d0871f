r"""Math answer equivalence: `verify(response, answer) -> Verdict`, reward 1.0 or 0.0, the reason always set.

Scoring one response, cheapest step first (most answers never reach sympy):

1. Extract the model's final answer (`extract_answer`); the reason names the rule that applied:
   boxed        the last \boxed{...} or \fbox{...} (balanced braces, \{ \} are literal braces). If the last box
                is unbalanced or over-long the response scores 0: a box the model opened must be closed.
   answer_line  else the last "Answer: X", "answer is X", "final answer is X" (to the end of the line/sentence).
   last_number  else, as a lenient fallback, the last number of the response's final 10,000 characters.
   The reference goes through the same normalisation; a reference may itself be "\boxed{...}" or "... #### 42".
2. Normalise both strings: $ \( \[ \left \right \, \text{...} ^\circ dropped; \dfrac \tfrac -> \frac;
   \cdot \times -> *; thousands separators (1,000 / 1{,}000 / 1\,000); a leading currency sign; a top-level
   "x = 4" or "x \in [1,2]" keeps its right-hand side; trailing unit words ("12 cm", "5 apples", "3 square feet").
3. Compare: identical strings, else plain numbers (integer, decimal, a/b, \frac{a}{b}, mixed 2\frac{3}{4}, p%)
   compared exactly as fractions, else sympy: latex2sympy2_extended (math-verify's LaTeX parser) builds both
   sides; tuples, sets (unordered, a one-element set equals its element), intervals, matrices, equations and
   inequalities are compared structurally, expressions by exact evaluation at 40 digits (at three fixed points
   when they have variables) with sympy.simplify as the last resort. Decimals are made exact rationals first.

Equal (tests/verifiers/test_math.py has the table): 50% == 0.5 == 1/2 == \frac{1}{2}; 2(x+1) == 2x+2;
\dfrac{\sqrt{3}}{2} == \frac{\sqrt 3}{2}; 2^{10} == 1024; {1,2} == \{2,1\}; [1,2) == \left[1,2\right);
(1,2) == \left(1, 2\right); "12 cm" == 12; "$3" == 3; "x = 4" == 4.

Deliberately NOT equal (also tested):
- approximations vs exact values: 0.333 != 1/3, 3.14 != \pi, 1.414 != \sqrt{2} (decimals are exact rationals);
- unit conversions: "100 cm" != "1 m" (units are stripped, never converted, so "1 m" == 1);
- equations inside sets/tuples: {x=4} != {4}, (x=1, y=2) != (1,2) (only a top-level "x = 4" is unwrapped);
- ordered vs unordered: (1,2) != {1,2}; intervals vs tuples (1,2] != (1,2); inequalities are not intervals:
  x < 3 != (-\infty, 3);
- equivalent but differently scaled equations: 4x+6y=12 != 2x+3y=6 (sides must differ by the same expression);
- number words: "5 million" != 5000000 and != 5 (a multiplier word blocks unit stripping; it stays unparsable);
- undefined values: 1/0 != 2/0 (sympy would call both zoo).
Lenient by design: p% equals both p/100 and p ("what percent" answers are written either way, so 50% == 0.5
and 50% == 50); "1,000" is one thousand, not the set {1, 0}; the last_number fallback scores answers that
were neither boxed nor labelled (components["boxed"] is 0 for them, so a format reward can tell them apart).
With `plain_numbers=True` (what environments.math uses) a numeric reference only accepts a plain number in
lowest terms, so copying the question does not score: for "Compute 37+48." or "Compute 27/3." the answers
"37+48" and "27/3" score 0 while 85, 85.0, "x = 85" and 9 do; for 3/4, 3/4 and 0.75 do and 6/8 does not.

Time and size limits: hostile output (10**10**10, 2^2^2^...^99, 100k nested braces, megabytes of text, NUL
bytes, lone surrogates) gets reward 0 with a reason within about `time_limit` (default 2 s), never a hang:
- only the last 100,000 characters of a response are read; an extracted answer over 1,000 characters, or one
  over 400 characters / nesting deeper than 8 going to sympy, is refused before parsing (the ANTLR parser
  needs seconds for a few dozen nested parentheses);
- after parsing and before evaluating anything, the expression's size is bounded: exactly evaluating it must
  not build an integer over 100,000 bits (10^{10^{10}}, (10^{10})!, 2^2^...^99 are refused), and
  \binom with big arguments is refused before parsing (sympy evaluates it while parsing);
- parsing and comparing run under a deadline enforced by a watchdog thread that raises an exception in the
  verifying thread (PyThreadState_SetAsyncExc), which works in the main thread of a process-pool worker and in
  any other thread alike, unlike signal.alarm (main thread only, and it would clobber a host's own SIGALRM,
  e.g. pytest-timeout's or math-verify's). It interrupts Python code only: a single long C call (a huge
  integer power) would not be interrupted, which is what the size bounds above are for. The environment
  server's verify pool kills a stuck worker process as the last line of defence. A shot can land while the
  thread runs a finalizer (a generator closed by the garbage collector, a __del__): Python then reports it as
  "Exception ignored" instead of raising it, so the watchdog shoots again, and the process's unraisable hook
  drops such reports (counted in _WATCHDOG.swallowed) rather than print them or fail a test under pytest.
Results are cached per (answer, reference) pair, so the G samples of a group rarely parse twice.
"""

from __future__ import annotations

import ctypes
import logging
import math
import os
import re
import sys
import threading
import time
from fractions import Fraction
from functools import lru_cache
from typing import Any, Callable, NamedTuple

import sympy
from latex2sympy2_extended import NormalizationConfig, latex2sympy
from sympy.core.relational import Relational
from sympy.logic.boolalg import And
from sympy.matrices import MatrixBase

from rl.types import Verdict

__all__ = ["verify", "extract_answer", "Extraction", "DEFAULT_TIME_LIMIT"]

log = logging.getLogger(__name__)

DEFAULT_TIME_LIMIT = 2.0  # seconds of parsing + comparing per call: the most a hostile answer can cost
MAX_RESPONSE_CHARS = 100_000  # only the tail is read: final answers come last, and it bounds every scan
LAST_NUMBER_WINDOW = 10_000  # the last_number fallback looks this far back
MAX_ANSWER_CHARS = 1_000  # an extracted answer longer than this is refused (no real final answer is)
MAX_SYMPY_CHARS = 400  # longest answer handed to the parser (MATH answers are < 100 characters)
MAX_SYMPY_DEPTH = 8  # bracket nesting handed to the parser: ANTLR takes ~0.1 s per level on new shapes
MAX_RESULT_BITS = 100_000  # exact evaluation may not build integers bigger than this (~30,000 digits)
MAX_SET_SIZE = 64  # elements of a set/tuple compared pairwise
MAX_REASON_CHARS = 60  # answers quoted in reasons are cut to this

# ----------------------------------------------------------------------------------------- extraction


class Extraction(NamedTuple):
    """The final answer found in a response and how: method is boxed, answer_line, last_number or none."""

    answer: str | None
    method: str
    note: str = ""


_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_BRACE_TOKEN_RE = re.compile(r"\\.|[{}]", re.S)  # an escaped character (\{ \} \\) or a brace
_ANSWER_LINE_RE = re.compile(r"(?i)\b(?:final\s{1,5}answer|answer)\s{0,5}(?:is\b|:|=)[ \t:]{0,5}")
_SENTENCE_END_RE = re.compile(r"\.(?:\s|$)|;|\s(?:because|since|so|which)\s")
_LAST_NUMBER_RE = re.compile(r"(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?%?")


def _group_end(text: str, open_pos: int, limit: int) -> int | None:
    """Index just past the brace closing text[open_pos] == '{', or None if unbalanced within `limit` chars."""
    depth = 0
    for m in _BRACE_TOKEN_RE.finditer(text, open_pos, min(len(text), open_pos + limit + 2)):
        token = m.group()
        if token == "{":
            depth += 1
        elif token == "}":
            depth -= 1
            if depth == 0:
                return m.end()
    return None


def _boxed_content(text: str) -> tuple[str | None, str]:
    """Content of the last \\boxed/\\fbox in `text` ('', 'no box') if none, (None, why) if malformed."""
    last = None
    for last in _BOX_RE.finditer(text):
        pass
    if last is None:
        return "", "no box"
    pos = last.end()
    while pos < len(text) and text[pos] in " \t":
        pos += 1
    if pos < len(text) and text[pos] == "{":
        end = _group_end(text, pos, MAX_ANSWER_CHARS)
        if end is None:
            return None, f"the last \\boxed{{ is unclosed or longer than {MAX_ANSWER_CHARS} characters"
        return text[pos + 1 : end - 1].strip(), ""
    m = re.match(r"[^\s${}]{1,50}", text[pos : pos + 50])  # "\boxed 5": one bare token, as TeX reads it
    if m is None:
        return None, "the last \\boxed has no argument"
    return m.group().rstrip(".,"), ""


def _answer_line(text: str) -> str | None:
    last = None
    for last in _ANSWER_LINE_RE.finditer(text):
        pass
    if last is None:
        return None
    rest = text[last.end() : last.end() + MAX_ANSWER_CHARS + 100].lstrip(" \t\n*_")
    line = rest.split("\n", 1)[0].strip()
    for opener, closer in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if line.startswith(opener):  # a math span: take exactly that span
            end = line.find(closer, len(opener))
            if end > 0:
                return line[len(opener) : end].strip() or None
    m = _SENTENCE_END_RE.search(line)
    if m:
        line = line[: m.start()]
    line = line.strip().strip("*_").rstrip(" ,;:").strip()
    return line or None


def extract_answer(response: str) -> Extraction:
    r"""Find the final answer of a model response (see the module docstring for the rules).

    >>> extract_answer(r"7*8=56, so \boxed{56}.")
    Extraction(answer='56', method='boxed', note='')
    >>> extract_answer("So the final answer is $\\frac{1}{2}$. I hope it is correct.").answer
    '\\frac{1}{2}'
    >>> extract_answer("I get 12 then 14").method
    'last_number'
    """
    text = _sanitize(response)
    content, why = _boxed_content(text)
    if content is None:
        return Extraction(None, "boxed", why)
    if content:
        return Extraction(content, "boxed")
    if why != "no box":
        return Extraction(None, "boxed", "the last \\boxed{} is empty")
    line = _answer_line(text)
    if line is not None:
        if len(line) > MAX_ANSWER_CHARS:
            return Extraction(None, "answer_line", f"the answer line is longer than {MAX_ANSWER_CHARS} characters")
        return Extraction(line, "answer_line")
    last = None
    for last in _LAST_NUMBER_RE.finditer(text, max(0, len(text) - LAST_NUMBER_WINDOW)):
        pass
    if last is not None:
        return Extraction(last.group(), "last_number")
    return Extraction(None, "none", "no \\boxed{}, answer line or number in the response")


def _sanitize(text: Any) -> str:
    """A str without NUL bytes or lone surrogates, cut to its last MAX_RESPONSE_CHARS characters."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    elif not isinstance(text, str):
        text = "" if text is None else str(text)
    text = text[-MAX_RESPONSE_CHARS:]
    if "\x00" in text:
        text = text.replace("\x00", "")
    if not text.isascii():  # lone surrogates would make later encodes raise
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def _reference_answer(answer: Any) -> str:
    text = _sanitize(answer).strip()
    if "\\boxed" in text or "\\fbox" in text:
        content, _ = _boxed_content(text)
        if content:
            return content
    if "####" in text:  # GSM8K: "... #### 42"
        return text.rsplit("####", 1)[1].strip()
    return text


# -------------------------------------------------------------------------------------- normalisation

_SUBS: list[tuple[re.Pattern, str]] = [
    (re.compile(r"\\\$|\$"), ""),
    (re.compile(r"\\[()\[\]]"), " "),
    (re.compile(r"\\(?:left|right)\s*\.|\\displaystyle|\\textstyle"), ""),
    (re.compile(r"\\(?:left|right|[bB]igg?[lr]?)(?![A-Za-z])"), ""),
    (re.compile(r"\\[dtc]frac(?![A-Za-z])"), r"\\frac"),
    (re.compile(r"\^\s*\{?\s*\\circ\s*\}?|°|\\degree(?![A-Za-z])"), ""),
    (re.compile(r"\\(?:text|textbf|textit|textrm|textnormal|mathrm|mathbf|mathit|mbox)\s*\{([^{}]*)\}"), r" \1 "),
    (re.compile(r"\\%"), "%"),
    (re.compile(r"(?<!\\)\\[,;:! ]|\\q?quad(?![A-Za-z])|~"), " "),  # not the \\ of a matrix row
    (re.compile(r"\\(?:cdot|times|ast)(?![A-Za-z])"), "*"),
    (re.compile(r"\\div(?![A-Za-z])"), "/"),
    (re.compile(r"\*\*"), "^"),
    (re.compile(r"\s*\b(?:percent|percentage|pct)\b"), "%"),
]
_CURRENCY_RE = re.compile(r"^(?:US\$|USD|EUR|Rs\.?|€|£|¥|₹)\s*")
_ASSIGN_RE = re.compile(r"^(?:[A-Za-z]|\\[A-Za-z]+)(?:_(?:\{\w+\}|\w))?'?\s*(?:=|\\in(?![A-Za-z]))\s*(?P<rhs>[^=]+)$")
_AND_OR_RE = re.compile(r"\s*,?\s*\b(?:and|or)\b\s*")
_UNIT_WORDS = ("cm|mm|km|m|kg|g|mg|s|ms|min|h|hr|hrs|l|ml|L|ft|in|yd|mi|lb|lbs|oz|mph|kph|kmh")
_TRAILING_WORDS_RE = re.compile(
    r"^(?P<num>.*?(?:[\d)}\]%]|\\pi|\\infty))"
    rf"(?:\s+[A-Za-z]{{2,}}|\s*(?:{_UNIT_WORDS})(?![A-Za-z]))(?:[\s\-/]+[A-Za-z]+)*\.?(?:\s*\^\s*\{{?[23]\}}?)?$"
)
_MULTIPLIER_WORDS_RE = re.compile(r"(?i)\b(?:hundred|thousand|million|billion|trillion|dozen|times)\b")
_THOUSANDS_RE = re.compile(r"^([+-]?)(\d{1,3}(?:(?:,|\{,\}| )\d{3})+)(\.\d+)?$")


@lru_cache(maxsize=16384)  # references repeat for every sample of a group
def _normalize(s: str) -> str:
    """Canonical string form of an answer (strings only: cheap, and safe on any input)."""
    s = s.replace("\n", " ").replace("\t", " ")
    for pattern, repl in _SUBS:
        s = pattern.sub(repl, s)
    s = " ".join(s.split()).rstrip(" .,;:")
    s = _CURRENCY_RE.sub("", s)
    m = _ASSIGN_RE.match(s)
    if m:
        s = m.group("rhs").strip()
    if " and " in s or " or " in s:
        s = _AND_OR_RE.sub(", ", s)
    if not _MULTIPLIER_WORDS_RE.search(s) and "\\int" not in s:  # "dx" is not a unit
        m = _TRAILING_WORDS_RE.match(s)
        if m:
            s = m.group("num").strip()
    m = _THOUSANDS_RE.match(s)
    if m:
        s = m.group(1) + re.sub(r"\D", "", m.group(2)) + (m.group(3) or "")
    return s.strip()


# ----------------------------------------------------------------------------------- plain numbers

_DECIMAL_RE = re.compile(r"^([+-]?)(\d+\.?\d*|\.\d+)(?:[eE]([+-]?\d{1,4}))?$")
_FRACTION_RE = re.compile(  # optional sign and whole part of a mixed number (2\frac{3}{4}, "2 3/4"), then a/b
    r"^([+-]?)\s*(?:(?:(\d+)\s*)?(?:\\frac\s*\{\s*([+-]?\d+)\s*\}\s*\{\s*([+-]?\d+)\s*\}|\\frac\s*(\d)\s*(\d))"
    r"|(?:(\d+)\s+)?([+-]?\d+)\s*/\s*(\d+))$"
)


class _Number(NamedTuple):
    value: Fraction
    percent: bool
    lowest_terms: bool = True  # False for a fraction that reduces (9/3, 6/8, 5/1)


def _as_number(s: str) -> _Number | None:
    """`s` as an exact number if it is a plain one (12, -0.5, 3/4, \\frac{3}{4}, 2\\frac{1}{2}, 50%)."""
    percent = s.endswith("%")
    if percent:
        s = s[:-1].rstrip()
    if len(s) > 200:
        return None
    m = _DECIMAL_RE.match(s)
    if m:
        value = Fraction(m.group(2))
        if m.group(3):
            value *= Fraction(10) ** int(m.group(3))
        return _Number(-value if m.group(1) == "-" else value, percent)
    m = _FRACTION_RE.match(s)
    if m:
        sign, whole = m.group(1), m.group(2) or m.group(7)
        num, den = next((m.group(i), m.group(i + 1)) for i in (3, 5, 8) if m.group(i) is not None)
        if int(den) == 0:
            return None
        value = Fraction(int(num), int(den))
        lowest = value.denominator == abs(int(den)) > 1
        if whole is not None:  # 2\frac{3}{4} is 2 + 3/4; "2 3/4" too
            if value < 0:
                return None
            lowest = lowest and value < 1
            value += int(whole)
        return _Number(-value if sign == "-" else value, percent, lowest)
    return None


def _numbers_equal(a: _Number, b: _Number) -> bool:
    if a.percent == b.percent:
        return a.value == b.value
    pct, other = (a.value, b.value) if a.percent else (b.value, a.value)
    return other == pct / 100 or other == pct  # 50% == 0.5, and 50% == 50 for "what percent" questions


# -------------------------------------------------------------------------------------------- deadline


class _Deadline(BaseException):
    """Raised inside a verifying thread whose time is up. BaseException: sympy's `except Exception` lets it pass."""


_raise_in_thread = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_ulong, ctypes.py_object)(
    ("PyThreadState_SetAsyncExc", ctypes.pythonapi)
)
_clear_in_thread = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)(
    ("PyThreadState_SetAsyncExc", ctypes.pythonapi)
)


class _Guard:
    __slots__ = ("tid", "deadline", "shots")

    def __init__(self, tid: int, deadline: float):
        self.tid, self.deadline, self.shots = tid, deadline, 0


class _Watchdog:
    """One daemon thread per process that raises _Deadline in threads whose guarded call ran out of time.

    It shoots again every RESHOOT_S (a bare `except:` in a library may swallow one shot) until the call
    returns, at most MAX_SHOTS times, and only while the thread is still inside `_run_with_deadline`.
    """

    RESHOOT_S = 0.1
    MAX_SHOTS = 50

    def __init__(self) -> None:
        self.swallowed = 0  # shots that landed in a finalizer and were dropped by _drop_swallowed_shots
        self._reset()

    def _reset(self) -> None:  # also in a forked child, where the parent's thread does not exist
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._guards: dict[int, _Guard] = {}  # thread id -> its one active guard
        self._thread: threading.Thread | None = None

    def arm(self, seconds: float) -> _Guard:
        guard = _Guard(threading.get_ident(), time.monotonic() + seconds)
        if not getattr(sys.unraisablehook, "_drops_deadlines", False):  # checked each time: hosts replace it
            sys.unraisablehook = _drop_swallowed_shots(sys.unraisablehook)
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="verifiers.math-watchdog", daemon=True)
                self._thread.start()
            self._guards[guard.tid] = guard
        self._wake.set()
        return guard

    def disarm(self, guard: _Guard) -> None:
        with self._lock:
            if self._guards.get(guard.tid) is guard:
                del self._guards[guard.tid]
            _clear_in_thread(guard.tid, None)  # drop a shot fired but not yet delivered

    def _run(self) -> None:
        while True:
            self._wake.clear()
            with self._lock:
                now = time.monotonic()
                frames = None
                for guard in list(self._guards.values()):
                    if guard.deadline > now:
                        continue
                    frames = frames if frames is not None else sys._current_frames()
                    if guard.shots >= self.MAX_SHOTS or not _inside_guarded_call(frames.get(guard.tid)):
                        del self._guards[guard.tid]
                        continue
                    _raise_in_thread(guard.tid, _Deadline)
                    guard.shots += 1
                    guard.deadline = now + self.RESHOOT_S
                next_due = min((g.deadline for g in self._guards.values()), default=None)
                del frames
            self._wake.wait(None if next_due is None else max(0.0, next_due - time.monotonic()))


def _drop_swallowed_shots(previous: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """An unraisable hook that drops _Deadline shots swallowed by a finalizer and hands the rest to `previous`."""

    def hook(unraisable: Any) -> Any:
        if isinstance(unraisable.exc_value, _Deadline):
            _WATCHDOG.swallowed += 1
            return None
        return previous(unraisable)

    hook._drops_deadlines = True  # type: ignore[attr-defined]
    return hook


def _inside_guarded_call(frame: Any) -> bool:
    while frame is not None:
        if frame.f_code is _run_with_deadline.__code__:
            return True
        frame = frame.f_back
    return False


_WATCHDOG = _Watchdog()
os.register_at_fork(after_in_child=_WATCHDOG._reset)


class _TimedOut(NamedTuple):
    seconds: float


def _run_with_deadline(fn: Callable[[], Any], seconds: float) -> Any:
    """fn() or _TimedOut if it ran longer than `seconds` (Python code only: see the module docstring)."""
    guard = _WATCHDOG.arm(seconds)
    try:
        try:
            return fn()
        finally:
            _WATCHDOG.disarm(guard)
    except _Deadline:
        _WATCHDOG.disarm(guard)  # the shot may have landed before the finally's disarm ran
        return _TimedOut(seconds)


# ---------------------------------------------------------------------------------------------- sympy

_PARSE_CONFIG = NormalizationConfig(
    basic_latex=True, units=False, malformed_operators=True, nits=False, boxed="none", equations=False
)
_COMPLEX_HINT_RE = re.compile(r"\\i\b|\bi\b|\\imath|\\mathbb\{C\}")
_BINOM_RE = re.compile(r"binom|choose")
_INTEGER_RE = re.compile(r"\d+")
_GROWTH = (sympy.factorial, sympy.factorial2, sympy.binomial, sympy.gamma, sympy.subfactorial,
           sympy.RisingFactorial, sympy.FallingFactorial, sympy.Sum, sympy.Product)


class _Refused(Exception):
    """An answer too big or too deep to parse or evaluate safely; the message says why."""


def _screen(s: str) -> None:
    """Refuse, before parsing, strings the parser or sympy could spend unbounded time or memory on."""
    if len(s) > MAX_SYMPY_CHARS:
        raise _Refused(f"longer than {MAX_SYMPY_CHARS} characters")
    depth = deepest = 0
    for ch in s:
        if ch in "({[":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in ")}]":
            depth -= 1
    if deepest > MAX_SYMPY_DEPTH:
        raise _Refused(f"nested {deepest} deep (limit {MAX_SYMPY_DEPTH})")
    if _BINOM_RE.search(s) and ("^" in s or "!" in s or any(len(d) > 4 for d in _INTEGER_RE.findall(s))):
        raise _Refused("binomial coefficient with huge arguments")  # evaluated while parsing


def _magnitude_bits(e: Any) -> float:
    """Upper estimate of the bits of the integers an exact evaluation of `e` may build."""
    if isinstance(e, MatrixBase):
        return max((_magnitude_bits(x) for x in e), default=1.0)
    if not isinstance(e, sympy.Basic):
        return 1.0
    if e.is_Rational:
        return float(max(abs(e.p).bit_length(), e.q.bit_length(), 1))
    if e.is_Float:
        return float(max(abs(e._mpf_[2]) + e._mpf_[3], 1))
    if e.is_Atom:
        return 1.0
    if isinstance(e, sympy.Pow):
        exp_bits = _magnitude_bits(e.exp)
        return math.inf if exp_bits > 60 else _magnitude_bits(e.base) * 2.0 ** exp_bits
    if isinstance(e, _GROWTH):
        n_bits = max(_magnitude_bits(a) for a in e.args)
        return math.inf if n_bits > 40 else 2.0 ** n_bits * n_bits  # n! has ~ n log2 n bits
    parts = [_magnitude_bits(a) for a in e.args]
    if isinstance(e, sympy.Add):
        return max(parts) + len(parts)
    return sum(parts) or 1.0


def _split_top_level(s: str) -> list[str] | None:
    """The comma-separated items of "(a, b, ...)" if the outer parentheses pair up, else None."""
    if not (s.startswith("(") and s.endswith(")")):
        return None
    items, depth, start = [], 0, 1
    for i, ch in enumerate(s):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth == 0 and i != len(s) - 1:
                return None  # "(1,2) \cup (3,4)": the first parenthesis closes early
        elif ch == "," and depth == 1:
            items.append(s[start:i])
            start = i + 1
    items.append(s[start:-1])
    return [x.strip() for x in items] if len(items) > 1 else None


def _parse_one(s: str) -> Any:
    expr = latex2sympy(s, is_real=not _COMPLEX_HINT_RE.search(s), normalization_config=_PARSE_CONFIG)
    if _magnitude_bits(expr) > MAX_RESULT_BITS:
        raise _Refused("its exact value would exceed 100,000 bits")
    return _exact(expr)


@lru_cache(maxsize=4096)  # a reference is parsed once for all the wrong answers of its group
def _parse(s: str) -> Any:
    """Sympy object for a normalised answer. "(a, b)" is always a tuple, never an open interval."""
    items = _split_top_level(s)
    if items is not None:
        return sympy.Tuple(*[_parse_one(x) for x in items])
    return _parse_one(s)


def _exact(e: Any) -> Any:
    """Floats become the rationals they were written as, so 0.333 stays 333/1000, never 'about 1/3'."""
    if isinstance(e, MatrixBase):
        return e.applyfunc(_exact)
    if isinstance(e, sympy.Basic):
        floats = e.atoms(sympy.Float)
        if floats:
            return e.xreplace({f: sympy.Rational(str(f)) for f in floats})
    return e


_INVERSE = {sympy.StrictLessThan: sympy.StrictGreaterThan, sympy.LessThan: sympy.GreaterThan,
            sympy.StrictGreaterThan: sympy.StrictLessThan, sympy.GreaterThan: sympy.LessThan}


def _sym_equal(a: Any, b: Any) -> bool:
    if isinstance(a, MatrixBase) or isinstance(b, MatrixBase):
        return (isinstance(a, MatrixBase) and isinstance(b, MatrixBase) and a.shape == b.shape
                and all(_sym_equal(x, y) for x, y in zip(a, b)))
    try:
        if a == b:
            return True
    except Exception:
        pass
    if isinstance(a, And) or isinstance(b, And):  # 1 < x < 2
        return (isinstance(a, And) and isinstance(b, And) and len(a.args) == len(b.args)
                and all(_sym_equal(x, y) for x, y in zip(_unsorted(a), _unsorted(b))))
    if isinstance(a, Relational) or isinstance(b, Relational):
        if not (isinstance(a, Relational) and isinstance(b, Relational)):
            return False
        da, db = a.lhs - a.rhs, b.lhs - b.rhs
        if isinstance(a, sympy.Eq) and isinstance(b, sympy.Eq):
            return _expr_equal(da, db) or _expr_equal(da, -db)
        return ((type(a) is type(b) and _expr_equal(da, db))
                or (_INVERSE.get(type(a)) is type(b) and _expr_equal(da, -db)))
    if isinstance(a, sympy.FiniteSet) or isinstance(b, sympy.FiniteSet):
        a_items = list(a.args) if isinstance(a, sympy.FiniteSet) else [a]  # {4} == 4
        b_items = list(b.args) if isinstance(b, sympy.FiniteSet) else [b]
        if isinstance(a, sympy.Set) != isinstance(b, sympy.Set) and (len(a_items) > 1 or len(b_items) > 1):
            return False
        return _same_items(a_items, b_items)
    if isinstance(a, sympy.Tuple) or isinstance(b, sympy.Tuple):
        return (isinstance(a, sympy.Tuple) and isinstance(b, sympy.Tuple) and len(a) == len(b)
                and len(a) <= MAX_SET_SIZE and all(_sym_equal(x, y) for x, y in zip(a, b)))
    if isinstance(a, sympy.Interval) or isinstance(b, sympy.Interval):
        return (isinstance(a, sympy.Interval) and isinstance(b, sympy.Interval)
                and a.left_open == b.left_open and a.right_open == b.right_open
                and _expr_equal(a.start, b.start) and _expr_equal(a.end, b.end))
    if isinstance(a, sympy.Union) and isinstance(b, sympy.Union):
        return _same_items(list(a.args), list(b.args))
    if isinstance(a, sympy.Expr) and isinstance(b, sympy.Expr):
        return _expr_equal(a, b)
    return False


def _unsorted(e: Any) -> tuple:
    return tuple(getattr(e, "_unsorted_args", e.args))


def _same_items(a: list, b: list) -> bool:
    """Equal as sets: every item of one side equals some item of the other (equality is transitive)."""
    if len(a) != len(b) or len(a) > MAX_SET_SIZE:
        return False
    left = list(b)
    for x in a:
        for i, y in enumerate(left):
            if _sym_equal(x, y):
                del left[i]
                break
        else:
            return False
    return True


def _sample_points(symbols: list) -> list[dict]:
    """Three fixed, 'generic' points (distinct, non-integer, both signs) for the numeric identity test."""
    return [{s: sympy.Rational((-1) ** (i + k) * (7 + 5 * i + 11 * k), 13 + 2 * i) for i, s in enumerate(symbols)}
            for k in range(3)]


def _expr_equal(a: Any, b: Any) -> bool:
    """Exact equality of two expressions: evaluated at 40 digits (at fixed points if they have variables)."""
    if a == b:
        return True
    if not (isinstance(a, sympy.Expr) and isinstance(b, sympy.Expr)):
        return False
    if a.has(sympy.zoo, sympy.nan) or b.has(sympy.zoo, sympy.nan):
        return False  # undefined equals nothing
    diff = a - b
    symbols = sorted(diff.free_symbols, key=str)
    conclusive = 0
    for subs in _sample_points(symbols) if symbols else [{}]:
        d = diff.evalf(40, subs=subs) if subs else diff.evalf(40)
        scale = a.evalf(15, subs=subs) if subs else a.evalf(15)
        d_abs, scale_abs = abs(d), abs(scale)
        if not (d_abs.is_Number and d_abs.is_finite):
            continue  # e.g. an unevaluated integral: inconclusive at this point
        if d_abs > sympy.Float("1e-30") * (max(scale_abs, 1) if scale_abs.is_Number else 1):
            return False
        conclusive += 1
    if conclusive >= (2 if symbols else 1):
        return True
    try:
        return bool(sympy.simplify(diff) == 0)
    except Exception:
        return False


def _sympy_equal(p: str, r: str) -> bool:
    p_core, p_pct = (p[:-1].rstrip(), True) if p.endswith("%") else (p, False)
    r_core, r_pct = (r[:-1].rstrip(), True) if r.endswith("%") else (r, False)
    pe, re_ = _parse(p_core), _parse(r_core)
    if any(isinstance(e, (sympy.Basic, MatrixBase)) and e.has(sympy.zoo, sympy.nan) for e in (pe, re_)):
        return False  # undefined (1/0) equals nothing, not even another 1/0
    if p_pct == r_pct:
        return _sym_equal(pe, re_)
    pct, other = (pe, re_) if p_pct else (re_, pe)
    if not isinstance(pct, sympy.Expr):
        return False
    return _sym_equal(other, pct / 100) or _sym_equal(other, pct)


_warmed = False


def _warm_up() -> None:
    """Run each parser path once, unguarded: lazy imports and ANTLR's first DFA build should not be timed."""
    global _warmed
    if not _warmed:
        _warmed = True
        for a, b in (("2(x+1)", "2x+2"), ("\\frac{\\sqrt{3}}{2}", "\\{1,2\\}"), ("[1,2)", "x=4")):
            try:
                _sympy_equal(a, b)
            except Exception:
                pass


# -------------------------------------------------------------------------------------------- compare


class _Outcome(NamedTuple):
    equal: bool
    how: str  # string | number | sympy | a reason why the comparison could not be made


@lru_cache(maxsize=8192)
def _compare(p: str, r: str, time_limit: float, plain_numbers: bool) -> _Outcome:
    if not p:
        return _Outcome(False, "empty answer")
    if p == r or p.replace(" ", "") == r.replace(" ", ""):
        return _Outcome(True, "string")
    pn, rn = _as_number(p), _as_number(r)
    if rn is not None and plain_numbers and (pn is None or not pn.lowest_terms):
        return _Outcome(False, "reference is a number and the answer is not a plain number in lowest terms")
    if pn is not None and rn is not None:
        return _Outcome(_numbers_equal(pn, rn), "number")
    if rn is not None and not any(c.isdigit() for c in p):
        return _Outcome(False, "reference is a number and the answer has no digit")
    try:
        _screen(p)
        _screen(r)
    except _Refused as e:
        return _Outcome(False, f"not compared: answer or reference {e}")
    _warm_up()

    def guarded() -> _Outcome:
        try:
            return _Outcome(_sympy_equal(p, r), "sympy")
        except _Refused as e:
            return _Outcome(False, f"not compared: {e}")
        except (Exception, RecursionError, MemoryError) as e:  # unparsable or unsupported model output
            return _Outcome(False, f"sympy could not compare ({type(e).__name__})")
    result = _run_with_deadline(guarded, time_limit)
    if isinstance(result, _TimedOut):
        return _Outcome(False, f"time limit of {result.seconds:g}s reached while parsing/comparing")
    return result


def _quote(s: str) -> str:
    return repr(s if len(s) <= MAX_REASON_CHARS else s[:MAX_REASON_CHARS] + "...")


def verify(response: str, answer: str, *, time_limit: float = DEFAULT_TIME_LIMIT,
           plain_numbers: bool = False) -> Verdict:
    r"""Score a model response against a reference answer: reward 1.0 if the final answer is equivalent.

    `time_limit` bounds parsing and comparison in seconds; `plain_numbers=True` makes a numeric reference
    accept only plain numbers in lowest terms (no 37+48, no 9/3). components: correct, boxed (answer was boxed).

    >>> verify(r"37+48=85. \boxed{85}", "85").reward
    1.0
    >>> v = verify(r"\boxed{\dfrac{1}{2}}", "50\\%"); v.reward, v.reason
    (1.0, "correct (boxed, number): '\\\\frac{1}{2}' matches '50%'")
    >>> verify("The answer is 84.", "85").reason
    "wrong (answer_line, number): '84' vs reference '85'"
    """
    try:
        ext = extract_answer(response)
        if ext.answer is None:
            return Verdict(reward=0.0, components={"correct": 0.0, "boxed": 0.0},
                           reason=f"no final answer: {ext.note}")
        boxed = 1.0 if ext.method == "boxed" else 0.0
        p, r = _normalize(ext.answer), _normalize(_reference_answer(answer))
        if not r:
            return Verdict.error(f"the reference answer {_quote(str(answer))} is empty after normalisation; "
                                 "fix the task's reference")
        outcome = _compare(p, r, float(time_limit), bool(plain_numbers))
        if outcome.equal:
            return Verdict(reward=1.0, components={"correct": 1.0, "boxed": boxed},
                           reason=f"correct ({ext.method}, {outcome.how}): {_quote(p)} matches {_quote(r)}")
        return Verdict(reward=0.0, components={"correct": 0.0, "boxed": boxed},
                       reason=f"wrong ({ext.method}, {outcome.how}): {_quote(p)} vs reference {_quote(r)}")
    except _Deadline:  # a late shot that landed just outside the guarded block
        return Verdict(reward=0.0, components={"correct": 0.0, "boxed": 0.0},
                       reason=f"time limit of {time_limit:g}s reached")
    except Exception as e:  # a bug in this module, not the model's fault: count it as an infrastructure error
        log.exception("verifiers.math.verify failed")
        return Verdict.error(f"verifiers.math internal error: {type(e).__name__}: {e}"[:300])
