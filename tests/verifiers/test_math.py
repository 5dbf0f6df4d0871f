"""verifiers.math: the equivalence table, extraction, hostile inputs and the time limit in every context."""

from __future__ import annotations

import doctest
import multiprocessing
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import pytest

import verifiers.math as vm
from verifiers.math import extract_answer, verify

# Hostile inputs must come back well inside this (the default time limit is 2 s; the machine is shared).
HOSTILE_BUDGET_S = 5.0

EQUAL = [
    # numbers: fractions, decimals, percentages
    (r"\boxed{85}", "85"),
    (r"\boxed{0.5}", "1/2"),
    (r"\boxed{50\%}", "0.5"),
    (r"\boxed{50\%}", r"\frac{1}{2}"),
    (r"\boxed{50%}", "50"),
    (r"\boxed{\frac{2}{4}}", "0.5"),
    (r"\boxed{-\frac{3}{4}}", "-0.75"),
    (r"\boxed{\frac{-3}{4}}", "-3/4"),
    (r"\boxed{\frac12}", "0.5"),
    (r"\boxed{2\frac{3}{4}}", "11/4"),
    (r"\boxed{2 3/4}", "2.75"),
    (r"\boxed{85.0}", "85"),
    (r"\boxed{1,000}", "1000"),
    (r"\boxed{1{,}000}", "1000"),
    (r"\boxed{1\,000}", "1000"),
    (r"\boxed{007}", "7"),
    (r"\boxed{1.5e3}", "1500"),
    # expressions
    (r"\boxed{2(x+1)}", "2x+2"),
    (r"\boxed{(x-1)(x+1)}", "x^2-1"),
    (r"\boxed{x**2-1}", "x^2-1"),
    (r"\boxed{\sin^2 x + \cos^2 x}", "1"),
    (r"\boxed{2^{10}}", "1024"),
    (r"\boxed{3\cdot 4}", "12"),
    (r"\boxed{3\times 4}", "12"),
    # LaTeX
    (r"\boxed{\dfrac{\sqrt{3}}{2}}", r"\frac{\sqrt 3}{2}"),
    (r"\boxed{\tfrac{1}{3}}", r"\frac{1}{3}"),
    (r"\boxed{\sqrt{8}}", r"2\sqrt{2}"),
    (r"\boxed{2\pi}", r"\pi \cdot 2"),
    (r"\boxed{\pi r^2}", r"r^{2}\pi"),
    (r"\boxed{\left(\frac{1}{2}\right)^2}", "1/4"),
    (r"\fbox{42}", "42"),
    (r"$\boxed{\displaystyle 42}$", "42"),
    # sets, intervals, tuples
    (r"\boxed{\{2,1\}}", "{1,2}"),
    (r"\boxed{\{1,2\}}", "1, 2"),
    (r"\boxed{1 \text{ and } 2}", r"\{1,2\}"),
    (r"\boxed{\{\frac{1}{2}, 3\}}", r"\{3, 0.5\}"),
    (r"\boxed{\{4\}}", "4"),
    (r"\boxed{[1,2)}", r"\left[1,2\right)"),
    (r"\boxed{(1,2]}", r"\left(1, 2\right]"),
    (r"\boxed{[0.5, 1)}", r"[\frac{1}{2}, 1)"),
    (r"\boxed{(-\infty, 3)}", r"(-\infty,3)"),
    (r"\boxed{[1,2]\cup[3,4]}", r"[1,2] \cup [3,4]"),
    (r"\boxed{(1,2)}", r"\left(1, 2\right)"),
    (r"\boxed{(1, \frac{1}{2})}", "(1, 0.5)"),
    (r"\boxed{(1,2,3)}", "(1, 2, 3)"),
    (r"\boxed{\begin{pmatrix}1\\2\end{pmatrix}}", r"\begin{pmatrix}1\\ 2\end{pmatrix}"),
    # units, trailing words, currency, assignments
    (r"\boxed{12 cm}", "12"),
    (r"\boxed{12\text{ cm}}", "12"),
    (r"\boxed{12 \mathrm{cm}^2}", "12"),
    (r"\boxed{5 apples}", "5"),
    (r"\boxed{3 square feet}", "3"),
    (r"\boxed{\$3}", "3"),
    (r"\boxed{\$1,250.50}", "1250.5"),
    (r"\boxed{90^\circ}", "90"),
    (r"\boxed{x = 4}", "4"),
    (r"\boxed{x=4}", "x = 4"),
    (r"\boxed{y = 2x+1}", "2x+1"),
    (r"\boxed{x \in [1,2]}", "[1,2]"),
    (r"\boxed{2x+3y=6}", "3y+2x=6"),
    (r"\boxed{6=2x+3y}", "2x+3y=6"),
    (r"\boxed{x > 3}", "3 < x"),
    (r"\boxed{1 < x < 2}", "1<x<2"),
    (r"\boxed{\text{Monday}}", "Monday"),
]

NOT_EQUAL = [
    (r"\boxed{84}", "85"),
    (r"\boxed{-85}", "85"),
    # approximations are never exact values (module docstring)
    (r"\boxed{0.333}", r"\frac{1}{3}"),
    (r"\boxed{0.333333}", "1/3"),
    (r"\boxed{3.14}", r"\pi"),
    (r"\boxed{3.14159265358979}", r"\pi"),
    (r"\boxed{1.414}", r"\sqrt{2}"),
    (r"\boxed{1.41 x}", r"\sqrt{2} x"),
    # units are stripped, never converted
    (r"\boxed{100 cm}", "1 m"),
    (r"\boxed{1 m}", "100"),
    # equations inside sets/tuples are not unwrapped
    (r"\boxed{\{x=4\}}", r"\{4\}"),
    (r"\boxed{(x=1, y=2)}", "(1,2)"),
    # ordered vs unordered, tuples vs intervals, inequalities vs intervals
    (r"\boxed{(1,2)}", r"\{1,2\}"),
    (r"\boxed{(2,1)}", "(1,2)"),
    (r"\boxed{(1,2]}", "(1,2)"),
    (r"\boxed{[1,2]}", "[1,2)"),
    (r"\boxed{x < 3}", r"(-\infty, 3)"),
    (r"\boxed{x \geq 3}", "x > 3"),
    (r"\boxed{\{1,2\}}", r"\{1,2,3\}"),
    # equivalent equations must differ by the same expression
    (r"\boxed{4x+6y=12}", "2x+3y=6"),
    # expressions
    (r"\boxed{2x+1}", "2x+2"),
    (r"\boxed{\sqrt{x^2}}", "x"),
    (r"\boxed{x}", "y"),
    # number words, undefined values, percent only in the documented ways
    (r"\boxed{5 million}", "5000000"),
    (r"\boxed{5 million}", "5"),
    (r"\boxed{1/0}", "2/0"),
    (r"\boxed{\frac{1}{0}}", r"\frac{2}{0}"),
    (r"\boxed{50\%}", "5"),
    (r"\boxed{\text{Tuesday}}", "Monday"),
    (r"\boxed{}", "0"),
]


@pytest.mark.parametrize("response,answer", EQUAL)
def test_equal(response, answer):
    v = verify(response, answer)
    assert (v.reward, v.status) == (1.0, "ok"), v.reason
    assert v.reason.startswith("correct") and v.components == {"correct": 1.0, "boxed": 1.0}


@pytest.mark.parametrize("response,answer", EQUAL)
def test_equal_is_symmetric(response, answer):
    assert verify(rf"\boxed{{{answer}}}", extract_answer(response).answer).reward == 1.0


@pytest.mark.parametrize("response,answer", NOT_EQUAL)
def test_not_equal(response, answer):
    v = verify(response, answer)
    assert (v.reward, v.status) == (0.0, "ok"), v.reason
    assert v.reason and v.components["correct"] == 0.0


def test_plain_numbers_refuses_unevaluated_arithmetic():
    assert verify(r"\boxed{37+48}", "85").reward == 1.0  # equivalent by default
    v = verify(r"\boxed{37+48}", "85", plain_numbers=True)
    assert v.reward == 0.0 and "plain number" in v.reason
    for ok in ("85", "85.0", "x = 85", "85 apples", "8500%"):
        assert verify(rf"\boxed{{{ok}}}", "85", plain_numbers=True).reward == 1.0, ok
    for copied in ("170/2", r"\frac{170}{2}", "85/1", "2^{10}"):
        assert verify(rf"\boxed{{{copied}}}", "85", plain_numbers=True).reward == 0.0, copied
    for ok in ("3/4", r"\frac{3}{4}", "0.75", "75%"):
        assert verify(rf"\boxed{{{ok}}}", "3/4", plain_numbers=True).reward == 1.0, ok
    assert verify(r"\boxed{6/8}", "3/4", plain_numbers=True).reward == 0.0
    assert verify(r"\boxed{2\frac{3}{4}}", "11/4", plain_numbers=True).reward == 1.0
    assert verify(r"\boxed{2\frac{6}{8}}", "11/4", plain_numbers=True).reward == 0.0
    # a non-numeric reference still gets full equivalence
    assert verify(r"\boxed{2(x+1)}", "2x+2", plain_numbers=True).reward == 1.0


def test_the_number_path_never_reaches_sympy():
    for response, answer in [(r"\boxed{85}", "85"), (r"\boxed{84}", "85"), ("Answer: 3/4", "0.75"), ("50%", "0.5")]:
        reason = verify(response, answer).reason
        assert "number" in reason or "string" in reason, reason


# ----------------------------------------------------------------------------------------- extraction
@pytest.mark.parametrize("response,answer,method", [
    (r"First \boxed{3}, then \boxed{5}.", "5", "boxed"),
    (r"\boxed{\frac{1}{\sqrt{2}}}", r"\frac{1}{\sqrt{2}}", "boxed"),
    (r"\boxed{\{1, 2\}}", r"\{1, 2\}", "boxed"),
    (r"\boxed 7.", "7", "boxed"),
    (r"\fbox{x+1}", "x+1", "boxed"),
    ("Answer: 42", "42", "answer_line"),
    ("**Answer:** 42", "42", "answer_line"),
    ("The answer is 5 apples.", "5 apples", "answer_line"),
    ("The final answer is $\\frac{3}{4}$. I hope it is correct.", "\\frac{3}{4}", "answer_line"),
    ("So the answer is: 12, because 3*4=12.", "12", "answer_line"),
    ("Answer:\n 9", "9", "answer_line"),
    ("We get 1,234 and then -7.5 at the end", "-7.5", "last_number"),
    ("ratio 3/4", "3/4", "last_number"),
])
def test_extraction(response, answer, method):
    assert extract_answer(response) == (answer, method, "")


def test_extraction_method_is_in_the_reason_and_components():
    boxed, line, last = verify(r"\boxed{7}", "7"), verify("Answer: 7", "7"), verify("it is 7", "7")
    assert "boxed" in boxed.reason and boxed.components["boxed"] == 1.0
    assert "answer_line" in line.reason and line.components["boxed"] == 0.0
    assert "last_number" in last.reason and last.components["boxed"] == 0.0
    assert all(v.reward == 1.0 for v in (boxed, line, last))


@pytest.mark.parametrize("response", ["no numbers here", "", r"\boxed{", r"\boxed{12", r"ok \boxed{}"])
def test_no_answer(response):
    v = verify(response, "12")
    assert (v.reward, v.status) == (0.0, "ok") and v.reason


def test_unclosed_last_box_does_not_fall_back_to_an_earlier_one():
    assert verify(r"\boxed{12} wait, \boxed{12", "12").reward == 0.0


def test_reference_forms():
    assert verify(r"\boxed{72}", "She sold 24 in May.\n#### 72").reward == 1.0
    assert verify(r"\boxed{\frac12}", r"so it is $\boxed{\frac{1}{2}}$").reward == 1.0
    v = verify(r"\boxed{1}", "   ")
    assert v.status == "error" and "reference" in v.reason  # a broken task, not the model's fault


# -------------------------------------------------------------------------------------- hostile inputs
HOSTILE = {
    "power tower": "10**10**10",
    "boxed power tower": r"\boxed{10^{10^{10}}}",
    "answer line tower": "Answer: 10**10**10",
    "long tower": r"\boxed{2^2^2^2^2^2^99}",
    "bare tower": "2^2^2^2^2^2^99",
    "huge power": r"\boxed{9999999999^{9999999999}}",
    "huge factorial": r"\boxed{(10^{10})!}",
    "literal factorial": r"\boxed{99999999999999999999999!}",
    "huge binomial": r"\boxed{\binom{100000000}{50000000}}",
    "big sum": r"\boxed{\sum_{i=1}^{99999} i^{i}}",
    "parens 100k": "(" * 100_000,
    "braces 100k": "{" * 100_000 + "}" * 100_000,
    "boxed braces 100k": r"\boxed{" + "{" * 100_000 + "1" + "}" * 100_000 + "}",
    "boxed braces 40k": r"\boxed{" + "{" * 40_000 + "1" + "}" * 40_000 + "}",  # the box stays in the read tail
    "boxed parens 100k": r"\boxed{" + "(" * 100_000 + "1" + ")" * 100_000 + "}",
    "boxed parens 30": r"\boxed{" + "(" * 30 + "1" + ")" * 30 + "}",
    "many boxes": r"\boxed{" * 200_000,
    "long sum": r"\boxed{" + "x+" * 5_000 + "1}",
    "megabytes of text": "lorem ipsum " * 400_000,
    "megabytes of digits": "1" * 3_000_000,
    "megabytes then answer": "x" * 3_000_000 + r"\boxed{1}",
    "answer words": "answer is " * 200_000,
    "null bytes": "\x00" * 1_000 + "\\boxed{1\x00}",
    "lone surrogates": "\ud800\udfff\udc80 garbage \\boxed{\ud800}",
    "binary garbage": bytes(range(256)).decode("latin-1") * 2_000,
    "control chars": "".join(chr(i) for i in range(32)) * 1_000,
    "division by zero": r"\boxed{\frac{1}{0}}",
    "huge exponent float": r"\boxed{1e999999999}",
    "huge literal": r"\boxed{" + "9" * 5_000 + "}",
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_input_scores_zero_quickly(name):
    start = time.monotonic()
    v = verify(HOSTILE[name], "2")
    elapsed = time.monotonic() - start
    assert (v.reward, v.status) == (0.0, "ok"), v.reason
    assert v.reason and len(v.reason) < 400
    assert elapsed < HOSTILE_BUDGET_S, f"{name} took {elapsed:.1f}s"


def test_hostile_non_string_inputs():
    for response in (None, 12, b"\xff\xfe\\boxed{2}", ["list"]):
        v = verify(response, "2")  # type: ignore[arg-type]
        assert v.status == "ok" and v.reason


SLOW = r"\boxed{\int_0^{1} e^{-x^{2}} \sin(x^{%d}) dx}"  # numeric integration at 40 digits: slow, but Python code


def _timed_verify(k: int) -> tuple[float, float, str]:
    vm._compare.cache_clear()
    start = time.monotonic()
    v = verify(SLOW % (7 + k), "11/4", time_limit=0.05)
    return v.reward, time.monotonic() - start, v.reason


def test_time_limit_in_the_main_thread():
    vm._warm_up()
    assert threading.current_thread() is threading.main_thread()
    reward, elapsed, reason = _timed_verify(0)
    assert reward == 0.0 and "time limit" in reason, reason
    assert elapsed < 1.5


def test_time_limit_in_threads_leaves_no_stray_exception():
    vm._warm_up()
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(_timed_verify, range(8)))
    for reward, elapsed, reason in results:
        assert reward == 0.0 and "time limit" in reason, reason
        assert elapsed < 2.0
    time.sleep(0.3)  # a late shot would land in this thread's own code now
    assert sum(range(200_000)) > 0
    assert not vm._WATCHDOG._guards


def test_time_limit_in_a_process_pool_worker():
    ctx = multiprocessing.get_context("spawn")  # the environment server's pool uses spawn
    with ProcessPoolExecutor(1, mp_context=ctx) as pool:
        pool.submit(vm._warm_up).result(timeout=60)
        reward, elapsed, reason = pool.submit(_timed_verify, 0).result(timeout=60)
        hostile = pool.submit(verify, HOSTILE["boxed power tower"], "2").result(timeout=60)
    assert reward == 0.0 and "time limit" in reason and elapsed < 1.5, reason
    assert hostile.reward == 0.0


def test_doctests():
    result = doctest.testmod(vm)
    assert result.attempted >= 5 and result.failed == 0


def _suspended_generators_forever() -> None:
    """Drops started generators in a loop: each one's close() runs in a finalizer, where a shot can land."""
    def gen():
        try:
            yield 1
        finally:
            sum(range(50))
    while True:
        g = gen()
        next(g)
        del g


def test_a_shot_swallowed_by_a_finalizer_is_dropped_and_the_call_still_ends():
    reports = []
    previous = sys.unraisablehook
    sys.unraisablehook = reports.append  # arm() wraps whatever hook is installed, as it wraps pytest's
    try:
        before = vm._WATCHDOG.swallowed
        for _ in range(20):
            assert isinstance(vm._run_with_deadline(_suspended_generators_forever, 0.01), vm._TimedOut)
    finally:
        sys.unraisablehook = previous
    assert not reports, [repr(r.exc_value) for r in reports]
    assert vm._WATCHDOG.swallowed > before, "no shot landed in a generator's close(): the test exercised nothing"
