r"""Deterministic arithmetic tasks sized for the tiny policy (everything fits 512 characters).

Every task is a function of (seed, difficulty, index) alone, so task "easy-000123" is the same whatever
`num_tasks` is, in the server and in each verify worker. Prompts stay under 120 characters and worked
solutions under 120, all in one format a 2M-parameter model can pick up in minutes of SFT:

    prompt     "Compute 37+48. Put the final answer in \boxed{}."
    solution   "37+48: 7+8=15, 3+4+1=8, so 37+48=85. \boxed{85}"

Additions, subtractions and multiplications are worked column by column, least significant digit first
(add_steps, sub_steps, mul_steps), so every step is a one-digit fact plus a carry: the tiny policy cannot
produce a 3-digit sum in one token-by-token guess, but it can learn the 200 one-digit facts. Each working
starts by restating its operands (`37+48:`): the columns then read digits a few tokens back instead of from
the prompt or an earlier step, where the tiny policy mis-copied them (held-out math medium 11% -> 30% for
the default seed, 10% from other initial weights: README "Warm start").

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


def _worked(a: int, op: str, b: int, steps: list[str], value: int) -> str:
    """The one format of a column working: operands restated, the column steps, the result."""
    return f"{a}{op}{b}: " + ", ".join(steps) + f", so {a}{op}{b}={value}"


def add_steps(a: int, b: int) -> str:
    """a+b (a, b >= 0) worked column by column from the units; one column needs no working.

    >>> add_steps(37, 48), add_steps(7, 5), add_steps(95, 7)
    ('37+48: 7+8=15, 3+4+1=8, so 37+48=85', '7+5=12', '95+7: 5+7=12, 9+0+1=10, so 95+7=102')
    """
    da, db = str(a)[::-1], str(b)[::-1]
    if len(da) == len(db) == 1:
        return f"{a}+{b}={a + b}"
    steps, carry = [], 0
    for i in range(max(len(da), len(db))):
        x, y = int(da[i]) if i < len(da) else 0, int(db[i]) if i < len(db) else 0
        total = x + y + carry
        steps.append(f"{x}+{y}{'+1' if carry else ''}={total}")
        carry = total // 10
    return _worked(a, "+", b, steps, a + b)


def sub_steps(a: int, b: int) -> str:
    """a-b (a >= b >= 0) worked column by column from the units, borrowing ten where a column falls short.

    >>> sub_steps(52, 17), sub_steps(9, 4), sub_steps(403, 58)
    ('52-17: 12-7=5, 5-1-1=3, so 52-17=35', '9-4=5', '403-58: 13-8=5, 10-5-1=4, 4-0-1=3, so 403-58=345')
    """
    if not a >= b >= 0:
        raise ValueError(f"sub_steps needs a >= b >= 0, got {a}-{b}")
    da, db = str(a)[::-1], str(b)[::-1]
    if len(da) == 1:
        return f"{a}-{b}={a - b}"
    steps, borrow = [], 0
    for i in range(len(da)):
        x, y = int(da[i]), int(db[i]) if i < len(db) else 0
        if i == len(da) - 1 and x - borrow - y == 0 and i >= len(db):
            break  # a leading zero: nothing left to write
        top = x + 10 if x - borrow < y else x
        steps.append(f"{top}-{y}{'-1' if borrow else ''}={top - y - borrow}")
        borrow = 1 if top > x else 0
    return _worked(a, "-", b, steps, a - b)


def mul_steps(a: int, b: int) -> str:
    """a*b (a >= 0, 0 <= b <= 19) worked digit by digit of a; a factor 11..19 is split as a*10 + a*(b-10).

    >>> mul_steps(47, 3), mul_steps(6, 8), mul_steps(3, 12)
    ('47*3: 7*3=21, 4*3+2=14, so 47*3=141', '6*8=48', '12*3: 2*3=6, 1*3=3, so 12*3=36')
    >>> mul_steps(23, 14)
    '23*4: 3*4=12, 2*4+1=9, so 23*4=92, 230+92=322, so 23*14=322'
    """
    if not (a >= 0 and 0 <= b <= 19):
        raise ValueError(f"mul_steps needs a >= 0 and 0 <= b <= 19, got {a}*{b}")
    if b > 9 and a <= 9:  # the one-digit number is the multiplier
        return mul_steps(b, a)
    if b in (0, 1, 10):
        return f"{a}*{b}={a * b}"
    if b > 10:
        return f"{mul_steps(a, b - 10)}, {a * 10}+{a * (b - 10)}={a * b}, so {a}*{b}={a * b}"
    da = str(a)[::-1]
    if len(da) == 1:
        return f"{a}*{b}={a * b}"
    steps, carry = [], 0
    for d in da:
        total = int(d) * b + carry
        steps.append(f"{d}*{b}{f'+{carry}' if carry else ''}={total}")
        carry = total // 10
    return _worked(a, "*", b, steps, a * b)


def _frac(x: Fraction) -> str:
    return str(x.numerator) if x.denominator == 1 else f"{x.numerator}/{x.denominator}"


# ------------------------------------------------------------------------------------------------ easy
def _easy_add(r: random.Random) -> Generated:
    a, b = r.randint(0, 20), r.randint(0, 20)
    return Generated(f"Compute {a}+{b}.", f"{add_steps(a, b)}.", str(a + b))


def _easy_sub(r: random.Random) -> Generated:
    a = r.randint(0, 20)
    b = r.randint(0, a)
    return Generated(f"Compute {a}-{b}.", f"{sub_steps(a, b)}.", str(a - b))


def _easy_mul(r: random.Random) -> Generated:
    a, b = r.randint(1, 10), r.randint(1, 10)
    return Generated(f"Compute {a}*{b}.", f"{mul_steps(a, b)}.", str(a * b))


def _easy_div(r: random.Random) -> Generated:
    b, q = r.randint(1, 10), r.randint(0, 10)
    return Generated(f"Compute {b * q}/{b}.", f"{b * q}/{b}={q}.", str(q))


# ---------------------------------------------------------------------------------------------- medium
def _medium_chain(r: random.Random) -> Generated:
    """a+b-c or a-b+c, left to right."""
    a, b = r.randint(10, 99), r.randint(10, 99)
    s = a + b
    c = r.randint(1, s)
    return Generated(f"Compute {a}+{b}-{c}.", f"{add_steps(a, b)}, {sub_steps(s, c)}.", str(s - c))


def _medium_precedence(r: random.Random) -> Generated:
    """a*b+c or c+a*b: the product first."""
    a, b, c = r.randint(2, 12), r.randint(2, 12), r.randint(1, 50)
    p = a * b
    if r.random() < 0.5:
        return Generated(f"Compute {a}*{b}+{c}.", f"{mul_steps(a, b)}, {add_steps(p, c)}.", str(p + c))
    return Generated(f"Compute {c}+{a}*{b}.", f"{mul_steps(a, b)}, {add_steps(c, p)}.", str(p + c))


def _medium_large(r: random.Random) -> Generated:
    kind = r.choice("+-*")
    if kind == "*":
        a, b = r.randint(11, 99), r.randint(2, 19)
    else:
        a, b = r.randint(100, 999), r.randint(100, 999)
        if kind == "-" and b > a:
            a, b = b, a
    value = {"+": a + b, "-": a - b, "*": a * b}[kind]
    steps = {"+": add_steps, "-": sub_steps, "*": mul_steps}[kind](a, b)
    return Generated(f"Compute {a}{kind}{b}.", f"{steps}.", str(value))


def _medium_word(r: random.Random) -> Generated:
    name, item = r.choice(NAMES), r.choice(ITEMS)
    kind = r.randrange(4)
    if kind == 0:
        a, b = r.randint(2, 40), r.randint(2, 40)
        return Generated(f"{name} has {a} {item} and buys {b} more. How many {item} does {name} have?",
                         f"{add_steps(a, b)}.", str(a + b))
    if kind == 1:
        a = r.randint(5, 60)
        b = r.randint(1, a)
        return Generated(f"{name} has {a} {item} and gives away {b}. How many {item} are left?",
                         f"{sub_steps(a, b)}.", str(a - b))
    if kind == 2:
        a, b = r.randint(2, 12), r.randint(2, 12)
        return Generated(f"There are {a} boxes with {b} {item} each. How many {item} in all?",
                         f"{mul_steps(a, b)}.", str(a * b))
    b, q = r.randint(2, 9), r.randint(2, 12)
    return Generated(f"{b * q} {item} are shared equally by {b} kids. How many does each kid get?",
                     f"{b * q}/{b}={q}.", str(q))


def _medium_percent(r: random.Random) -> Generated:
    """p% of base as the fraction n/d: `75% is 3/4, 36/4=9, 9*3=27`. base is a multiple of d, so the division is
    one fact (quotients 1-20); the one-line `36*75/100=27` asked the tiny policy for a product it cannot do in one
    step."""
    p = r.choice((10, 20, 25, 50, 75))
    g = math.gcd(p, 100)
    n, d = p // g, 100 // g
    k = r.randint(1, 20)
    base = k * d  # p% of base is a whole number
    steps = f"{p}% is {n}/{d}, {base}/{d}={k}" + (f", {mul_steps(k, n)}" if n != 1 else "")
    return Generated(f"What is {p}% of {base}?", f"{steps}.", str(k * n))


# ------------------------------------------------------------------------------------------------ hard
def _hard_word(r: random.Random) -> Generated:
    name, item = r.choice(NAMES), r.choice(ITEMS)
    if r.random() < 0.5:
        a, b = r.randint(2, 9), r.randint(3, 12)
        total = a * b
        c = r.randint(1, total - 1)
        return Generated(f"{name} buys {a} packs of {b} {item} and loses {c}. How many {item} are left?",
                         f"{mul_steps(a, b)}, {sub_steps(total, c)}.", str(total - c))
    price, n = r.randint(2, 15), r.randint(2, 6)
    cost = price * n
    paid = (cost // 10 + 1 + r.randint(0, 2)) * 10
    return Generated(f"A pen costs ${price}. {name} buys {n} pens and pays ${paid}. What is the change?",
                     f"{mul_steps(n, price)}, {sub_steps(paid, cost)}.", str(paid - cost))


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
