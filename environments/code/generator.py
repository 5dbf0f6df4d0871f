r"""Deterministic programming tasks sized for the tiny policy (everything fits 512 characters).

A task is a function of (seed, difficulty, index) alone, like the math generator's, so "easy-000123" is the same
task in the server and in every verify worker. Prompts stay under 200 characters and reference programs under
200, in a handful of fixed shapes a 7M-parameter model can pick up by SFT and then improve on by RL. Each task
has 5 tests; their inputs are random and their outputs come from the Python function next to the kind
(never from running the reference), and each kind's reference program is checked against them in the tests.

easy    stdin/stdout, one line of input: a*x+b of one integer, the sum / product / max of two integers,
        a word repeated k times
medium  stdin/stdout loops and strings: reverse a word, count a letter, the sum of n numbers, 1..n with a
        step, upper-case; a function `f` returning a value (function-call tests)
hard    several steps: FizzBuzz-style with parameters, digit sums, the k-th Fibonacci number, counting primes,
        sorting numbers, a function that filters a list
"""

from __future__ import annotations

import random
import string
from typing import Any, Callable, NamedTuple

SUFFIX = " Answer with a ```python code block."
N_TESTS = 5
_WORD = string.ascii_lowercase


class Generated(NamedTuple):
    problem: str  # the prompt without SUFFIX
    solution: str  # the reference program
    tests: tuple[dict, ...]  # {"input", "output"} or {"fn", "args", "expected"}

    @property
    def prompt(self) -> str:
        return self.problem + SUFFIX


def _word(r: random.Random, lo: int = 3, hi: int = 8) -> str:
    return "".join(r.choice(_WORD) for _ in range(r.randint(lo, hi)))


def _stdio(r: random.Random, make_input: Callable[[random.Random], Any], answer: Callable[..., Any],
           show: Callable[[Any], str]) -> tuple[dict, ...]:
    tests = []
    for _ in range(N_TESTS):
        x = make_input(r)
        tests.append({"input": show(x) + "\n", "output": f"{answer(x)}\n"})
    return tuple(tests)


def _lines(values) -> str:
    return "\n".join(str(v) for v in values)


# ------------------------------------------------------------------------------------------------ easy
def _easy_linear(r: random.Random) -> Generated:
    a, b = r.randint(2, 9), r.randint(1, 20)
    return Generated(f"Read an integer n and print n*{a}+{b}.", f"n = int(input())\nprint(n * {a} + {b})",
                     _stdio(r, lambda r: r.randint(-50, 50), lambda n: n * a + b, str))


def _easy_pair(r: random.Random) -> Generated:
    name, expr, fn = r.choice((("sum", "a + b", lambda p: p[0] + p[1]), ("product", "a * b", lambda p: p[0] * p[1]),
                               ("maximum", "max(a, b)", max), ("difference a-b", "a - b", lambda p: p[0] - p[1])))
    return Generated(f"Read two integers a and b on one line and print their {name}.",
                     f"a, b = map(int, input().split())\nprint({expr})",
                     _stdio(r, lambda r: (r.randint(-99, 99), r.randint(-99, 99)), fn, lambda p: f"{p[0]} {p[1]}"))


def _easy_repeat(r: random.Random) -> Generated:
    k = r.randint(2, 5)
    return Generated(f"Read a word and print it {k} times with no spaces.", f"s = input()\nprint(s * {k})",
                     _stdio(r, _word, lambda s: s * k, str))


# ---------------------------------------------------------------------------------------------- medium
def _medium_string(r: random.Random) -> Generated:
    kind = r.randrange(3)
    if kind == 0:
        return Generated("Read a word and print it reversed.", "s = input()\nprint(s[::-1])",
                         _stdio(r, _word, lambda s: s[::-1], str))
    if kind == 1:
        return Generated("Read a word and print it in upper case.", "s = input()\nprint(s.upper())",
                         _stdio(r, _word, str.upper, str))
    c = r.choice("aeiou")
    return Generated(f"Read a word and print how many times the letter {c} occurs in it.",
                     f"s = input()\nprint(s.count('{c}'))",
                     _stdio(r, lambda r: _word(r, 5, 12), lambda s: s.count(c), str))


def _medium_sum_n(r: random.Random) -> Generated:
    return Generated("Read n, then n integers on the next line, and print their sum.",
                     "n = int(input())\nprint(sum(map(int, input().split())))",
                     _stdio(r, lambda r: [r.randint(-20, 50) for _ in range(r.randint(1, 8))], sum,
                            lambda xs: f"{len(xs)}\n{' '.join(map(str, xs))}"))


def _medium_range(r: random.Random) -> Generated:
    k = r.randint(1, 3)
    return Generated(f"Read n and print the numbers 1, {1 + k}, {1 + 2 * k}, ... up to n, one per line.",
                     f"n = int(input())\nfor i in range(1, n + 1, {k}):\n    print(i)",
                     _stdio(r, lambda r: r.randint(1, 12), lambda n: _lines(range(1, n + 1, k)), str))


def _medium_function(r: random.Random) -> Generated:
    a = r.randint(2, 9)
    kind = r.randrange(3)
    if kind == 0:
        text, param, body = f"f(x) returning x*x+{a}", "x", f"return x * x + {a}"
        fn, make = (lambda x: x * x + a), (lambda r: [r.randint(-20, 20)])
    elif kind == 1:
        text, param, body = "f(s) returning the string s reversed", "s", "return s[::-1]"
        fn, make = (lambda s: s[::-1]), (lambda r: [_word(r)])
    else:
        text, param, body = f"f(x) returning True when x is divisible by {a}, else False", "x", f"return x % {a} == 0"
        fn, make = (lambda x: x % a == 0), (lambda r: [r.randint(0, 60)])
    tests = []
    for _ in range(N_TESTS):
        args = make(r)
        tests.append({"fn": "f", "args": args, "expected": fn(*args)})
    return Generated(f"Define a function {text}.", f"def f({param}):\n    {body}", tuple(tests))


# ------------------------------------------------------------------------------------------------ hard
def _hard_fizz(r: random.Random) -> Generated:
    a, b = r.sample((2, 3, 4, 5, 7), 2)

    def answer(n: int) -> str:
        return _lines("FizzBuzz" if i % (a * b) == 0 else "Fizz" if i % a == 0 else "Buzz" if i % b == 0 else i
                      for i in range(1, n + 1))

    return Generated(f"Read n. For i from 1 to n print FizzBuzz if {a * b} divides i, else Fizz if {a} divides "
                     f"i, else Buzz if {b} divides i, else i.",
                     f"n = int(input())\nfor i in range(1, n + 1):\n    if i % {a * b} == 0:\n"
                     f"        print('FizzBuzz')\n    elif i % {a} == 0:\n        print('Fizz')\n"
                     f"    elif i % {b} == 0:\n        print('Buzz')\n    else:\n        print(i)",
                     _stdio(r, lambda r: r.randint(1, 30), answer, str))


def _hard_digits(r: random.Random) -> Generated:
    return Generated("Read a non-negative integer and print the sum of its digits.",
                     "s = input().strip()\nprint(sum(int(c) for c in s))",
                     _stdio(r, lambda r: r.randint(0, 10**9), lambda n: sum(map(int, str(n))), str))


def _hard_fib(r: random.Random) -> Generated:
    def fib(k: int) -> int:
        a, b = 0, 1
        for _ in range(k):
            a, b = b, a + b
        return a

    return Generated("Read k and print the k-th Fibonacci number (F(0)=0, F(1)=1).",
                     "k = int(input())\na, b = 0, 1\nfor _ in range(k):\n    a, b = b, a + b\nprint(a)",
                     _stdio(r, lambda r: r.randint(0, 60), fib, str))


def _hard_primes(r: random.Random) -> Generated:
    def count(n: int) -> int:
        return sum(all(p % d for d in range(2, int(p**0.5) + 1)) for p in range(2, n + 1))

    return Generated("Read n and print how many prime numbers are at most n.",
                     "n = int(input())\nc = 0\nfor p in range(2, n + 1):\n    if all(p % d for d in range(2, "
                     "int(p ** 0.5) + 1)):\n        c += 1\nprint(c)",
                     _stdio(r, lambda r: r.randint(1, 500), count, str))


def _hard_sort(r: random.Random) -> Generated:
    desc = r.random() < 0.5
    order, flag = ("decreasing", ", reverse=True") if desc else ("increasing", "")
    return Generated(f"Read integers on one line and print them in {order} order, space separated.",
                     f"xs = sorted(map(int, input().split()){flag})\nprint(*xs)",
                     _stdio(r, lambda r: [r.randint(-50, 50) for _ in range(r.randint(1, 9))],
                            lambda xs: " ".join(map(str, sorted(xs, reverse=desc))), lambda xs: " ".join(map(str, xs))))


def _hard_filter(r: random.Random) -> Generated:
    k = r.randint(2, 6)
    tests = []
    for _ in range(N_TESTS):
        xs = [r.randint(-30, 30) for _ in range(r.randint(0, 8))]
        tests.append({"fn": "f", "args": [xs], "expected": [x for x in xs if x % k == 0]})
    return Generated(f"Define a function f(xs) returning the list of the numbers in xs divisible by {k}, in order.",
                     f"def f(xs):\n    return [x for x in xs if x % {k} == 0]", tuple(tests))


KINDS: dict[str, tuple[Callable[[random.Random], Generated], ...]] = {
    "easy": (_easy_linear, _easy_pair, _easy_repeat),
    "medium": (_medium_string, _medium_sum_n, _medium_range, _medium_function),
    "hard": (_hard_fizz, _hard_digits, _hard_fib, _hard_primes, _hard_sort, _hard_filter),
}


def task_id(difficulty: str, index: int) -> str:
    """
    >>> task_id("hard", 7)
    'hard-000007'
    """
    return f"{difficulty}-{index:06d}"


def generate(seed: int, difficulty: str, index: int) -> Generated:
    """The task at `index` of one difficulty; a pure function of its arguments.

    >>> g = generate(0, "easy", 0)
    >>> g == generate(0, "easy", 0), len(g.tests), g.prompt.endswith(SUFFIX)
    (True, 5, True)
    """
    r = random.Random(f"polyrl-code:{seed}:{difficulty}:{index}")  # string seeds hash identically everywhere
    return r.choice(KINDS[difficulty])(r)


def parse_task_id(tid: str) -> tuple[str, int] | None:
    """(difficulty, index) of a generated task id, None for ids of file tasks.

    >>> parse_task_id("medium-000042"), parse_task_id("apps-000001")
    (('medium', 42), None)
    """
    difficulty, _, index = tid.partition("-")
    if difficulty in KINDS and len(index) == 6 and index.isdigit():
        return difficulty, int(index)
    return None
