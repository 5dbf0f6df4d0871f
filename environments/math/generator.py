r"""Deterministic arithmetic tasks sized for the tiny character-level policy (512-character context).

Every task is a function of (seed, difficulty, index) alone, so task "easy-000123" is the same whatever
`num_tasks` is, in the server and in each verify worker. Prompts stay under 120 characters and worked
solutions under 60, all in one format a 7M-parameter model can pick up in minutes of SFT:

    prompt     "Compute 37+48. Put the final answer in \boxed{}."
    solution   "37+48=85. \boxed{85}"

easy    one operation on small operands: 7+5, 12-5, 9*3, 27/3
medium  two or three operations, larger operands, one-step word problems, percentages
hard    two-step word problems, fractions, linear equations ax+b=c
"""

from __future__ import annotations

import math
import random
from fractions import Fraction
from typing import Callable, NamedTuple

SUFFIX = " Put the final answer in \\boxed{}."
NAMES = ("Tom", "Ann", "Sam", "Mia", "Ben", "Eva", "Leo", "Zoe")
ITEMS = ("apples", "pens", "cards", "eggs", "books", "coins", "shells", "stamps")


class Generated(NamedTuple):
    problem: str  # the prompt without SUFFIX
    solution: str  # worked steps, without the final box
    answer: str  # what goes in \boxed{}; also the TaskRecord reference

    @property
    def prompt(self) -> str:
        return self.problem + SUFFIX

    @property
    def response(self) -> str:
        return f"{self.solution} \\boxed{{{self.answer}}}"


def _frac(x: Fraction) -> str:
    return str(x.numerator) if x.denominator == 1 else f"{x.numerator}/{x.denominator}"


# ------------------------------------------------------------------------------------------------ easy
def _easy_add(r: random.Random) -> Generated:
    a, b = r.randint(0, 20), r.randint(0, 20)
    return Generated(f"Compute {a}+{b}.", f"{a}+{b}={a + b}.", str(a + b))


def _easy_sub(r: random.Random) -> Generated:
    a = r.randint(0, 20)
    b = r.randint(0, a)
    return Generated(f"Compute {a}-{b}.", f"{a}-{b}={a - b}.", str(a - b))


def _easy_mul(r: random.Random) -> Generated:
    a, b = r.randint(1, 10), r.randint(1, 10)
    return Generated(f"Compute {a}*{b}.", f"{a}*{b}={a * b}.", str(a * b))


def _easy_div(r: random.Random) -> Generated:
    b, q = r.randint(1, 10), r.randint(0, 10)
    return Generated(f"Compute {b * q}/{b}.", f"{b * q}/{b}={q}.", str(q))


# ---------------------------------------------------------------------------------------------- medium
def _medium_chain(r: random.Random) -> Generated:
    """a+b-c or a-b+c, left to right."""
    a, b = r.randint(10, 99), r.randint(10, 99)
    s = a + b
    c = r.randint(1, s)
    return Generated(f"Compute {a}+{b}-{c}.", f"{a}+{b}={s}, {s}-{c}={s - c}.", str(s - c))


def _medium_precedence(r: random.Random) -> Generated:
    """a*b+c or c+a*b: the product first."""
    a, b, c = r.randint(2, 12), r.randint(2, 12), r.randint(1, 50)
    p = a * b
    if r.random() < 0.5:
        return Generated(f"Compute {a}*{b}+{c}.", f"{a}*{b}={p}, {p}+{c}={p + c}.", str(p + c))
    return Generated(f"Compute {c}+{a}*{b}.", f"{a}*{b}={p}, {c}+{p}={p + c}.", str(p + c))


def _medium_large(r: random.Random) -> Generated:
    kind = r.choice("+-*")
    if kind == "*":
        a, b = r.randint(11, 99), r.randint(2, 19)
    else:
        a, b = r.randint(100, 999), r.randint(100, 999)
        if kind == "-" and b > a:
            a, b = b, a
    value = {"+": a + b, "-": a - b, "*": a * b}[kind]
    return Generated(f"Compute {a}{kind}{b}.", f"{a}{kind}{b}={value}.", str(value))


def _medium_word(r: random.Random) -> Generated:
    name, item = r.choice(NAMES), r.choice(ITEMS)
    kind = r.randrange(4)
    if kind == 0:
        a, b = r.randint(2, 40), r.randint(2, 40)
        return Generated(f"{name} has {a} {item} and buys {b} more. How many {item} does {name} have?",
                         f"{a}+{b}={a + b}.", str(a + b))
    if kind == 1:
        a = r.randint(5, 60)
        b = r.randint(1, a)
        return Generated(f"{name} has {a} {item} and gives away {b}. How many {item} are left?",
                         f"{a}-{b}={a - b}.", str(a - b))
    if kind == 2:
        a, b = r.randint(2, 12), r.randint(2, 12)
        return Generated(f"There are {a} boxes with {b} {item} each. How many {item} in all?",
                         f"{a}*{b}={a * b}.", str(a * b))
    b, q = r.randint(2, 9), r.randint(2, 12)
    return Generated(f"{b * q} {item} are shared equally by {b} kids. How many does each kid get?",
                     f"{b * q}/{b}={q}.", str(q))


def _medium_percent(r: random.Random) -> Generated:
    p = r.choice((10, 20, 25, 50, 75))
    base = r.randint(1, 20) * (100 // math.gcd(p, 100))  # p% of base is a whole number
    value = base * p // 100
    return Generated(f"What is {p}% of {base}?", f"{base}*{p}/100={value}.", str(value))


# ------------------------------------------------------------------------------------------------ hard
def _hard_word(r: random.Random) -> Generated:
    name, item = r.choice(NAMES), r.choice(ITEMS)
    if r.random() < 0.5:
        a, b = r.randint(2, 9), r.randint(3, 12)
        total = a * b
        c = r.randint(1, total - 1)
        return Generated(f"{name} buys {a} packs of {b} {item} and loses {c}. How many {item} are left?",
                         f"{a}*{b}={total}, {total}-{c}={total - c}.", str(total - c))
    price, n = r.randint(2, 15), r.randint(2, 6)
    cost = price * n
    paid = (cost // 10 + 1 + r.randint(0, 2)) * 10
    return Generated(f"A pen costs ${price}. {name} buys {n} pens and pays ${paid}. What is the change?",
                     f"{n}*{price}={cost}, {paid}-{cost}={paid - cost}.", str(paid - cost))


def _hard_fraction(r: random.Random) -> Generated:
    a, b = Fraction(r.randint(1, 5), r.randint(2, 9)), Fraction(r.randint(1, 5), r.randint(2, 9))
    if r.random() < 0.5:
        op, value = "+", a + b
    else:
        op, value = "*", a * b
    text = f"{_frac(a)}{op}{_frac(b)}"
    return Generated(f"Compute {text}. Give a reduced fraction.", f"{text}={_frac(value)}.", _frac(value))


def _hard_equation(r: random.Random) -> Generated:
    a, x = r.randint(2, 9), r.randint(-9, 12)
    b = r.randint(1, 30)
    if r.random() < 0.5:
        c = a * x + b
        eq, step = f"{a}x+{b}={c}", f"{a}x={c}-{b}={c - b}"
    else:
        c = a * x - b
        eq, step = f"{a}x-{b}={c}", f"{a}x={c}+{b}={c + b}"
    return Generated(f"Solve for x: {eq}.", f"{step}, x={a * x}/{a}={x}.", str(x))


KINDS: dict[str, tuple[Callable[[random.Random], Generated], ...]] = {
    "easy": (_easy_add, _easy_sub, _easy_mul, _easy_div),
    "medium": (_medium_chain, _medium_precedence, _medium_large, _medium_word, _medium_percent),
    "hard": (_hard_word, _hard_fraction, _hard_equation),
}


def task_id(difficulty: str, index: int) -> str:
    """
    >>> task_id("easy", 123)
    'easy-000123'
    """
    return f"{difficulty}-{index:06d}"


def generate(seed: int, difficulty: str, index: int) -> Generated:
    r"""The task at `index` of one difficulty; a pure function of its arguments.

    >>> g = generate(0, "easy", 3)
    >>> g == generate(0, "easy", 3), g.response.endswith("\\boxed{%s}" % g.answer)
    (True, True)
    """
    # A string seed hashes with SHA-512 in `random`, identically on every run and platform (PYTHONHASHSEED-free).
    r = random.Random(f"polyrl-math:{seed}:{difficulty}:{index}")
    return r.choice(KINDS[difficulty])(r)


def parse_task_id(tid: str) -> tuple[str, int] | None:
    """(difficulty, index) of a generated task id, None for ids of file tasks.

    >>> parse_task_id("hard-000042"), parse_task_id("gsm8k-000001")
    (('hard', 42), None)
    """
    difficulty, _, index = tid.partition("-")
    if difficulty in KINDS and len(index) == 6 and index.isdigit():
        return difficulty, int(index)
    return None
