r"""The math environment: generated arithmetic tasks plus GSM8K/MATH-style files, scored by verifiers.math.

Options (all optional; a misspelt key is an error that lists the valid ones):

    num_tasks: 3000            # generated tasks, round-robin over easy/medium/hard (ids easy-000000, ...)
    files:                     # problem sets; a bare string is a path
      - data/gsm8k_test.jsonl
      - {path: data/math500.parquet, name: math500, question_column: problem}
    default_difficulty: medium # file rows without a difficulty column
    skip_bad_rows: false       # true: skip, count and log bad rows instead of failing
    time_limit: 2.0            # seconds per verification (parsing + comparing)
    plain_numbers: true        # a numeric reference only accepts a plain number, so that "\boxed{37+48}"
                               # (the question copied) does not score on "Compute 37+48."

Generated tasks depend only on (seed, difficulty, index): see generator.py for the formats and sizes.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from environments.base import Environment, TaskRecord
from environments.math.files import TaskFile, file_name, load_file
from environments.math.generator import KINDS, SUFFIX, generate, parse_task_id, task_id
from rl.types import Message, Task, Verdict
from verifiers.math import DEFAULT_TIME_LIMIT
from verifiers.math import verify as math_verify

log = logging.getLogger(__name__)

DIFFICULTIES = ("easy", "medium", "hard")


class MathOptions(BaseModel):
    """The math environment's options (EnvConfig.options)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, frozen=True)

    num_tasks: int = Field(3000, ge=0, le=3_000_000)
    """Generated tasks, spread round-robin over easy/medium/hard; 0 serves only the files."""
    files: tuple[TaskFile | str, ...] = ()
    """GSM8K- or MATH-style .jsonl/.json/.parquet problem sets, each a path or a TaskFile mapping."""
    default_difficulty: Literal["easy", "medium", "hard"] = "medium"
    """Difficulty of file rows when the file has no difficulty column and its entry sets none."""
    skip_bad_rows: bool = False
    """Skip (count and log) bad file rows instead of failing with the row named."""
    time_limit: float = Field(DEFAULT_TIME_LIMIT, gt=0, le=60)
    """Seconds per verification for parsing and comparing; hostile answers score 0 after it."""
    plain_numbers: bool = True
    """A numeric reference accepts only a plain number (85, 85.0, 170/2), not arithmetic like 37+48."""

    def task_files(self) -> list[TaskFile]:
        return [TaskFile(path=f) if isinstance(f, str) else f for f in self.files]


class MathEnvironment(Environment):
    r"""Math word problems and arithmetic; a response scores 1.0 when its final answer equals the reference.

    >>> env = MathEnvironment({"num_tasks": 3}); records = env.load_tasks()
    >>> [r.task.task_id for r in records]
    ['easy-000000', 'medium-000000', 'hard-000000']
    >>> env.verify(records[0], env.reference_response(records[0])).reward
    1.0
    """

    name = "math"
    version = "0.1.0"
    difficulties = DIFFICULTIES
    # sympy parsing is CPU-bound and may take up to `time_limit`, so verify in a process pool, one worker per
    # core of the 2-core default machine; the pool also kills a worker stuck in a C call.
    verify_workers = 2

    def __init__(self, options: dict[str, Any] | None = None, seed: int = 0):
        super().__init__(options, seed)
        try:
            self.config = MathOptions.model_validate(self.options)
        except ValidationError as e:
            fields = ", ".join(MathOptions.model_fields)
            raise ValueError(f"math: bad options ({e.error_count()} error(s)):\n{e}\nValid options: {fields}; "
                             "see environments/math/__init__.py") from None
        self.skipped_rows: dict[str, int] = {}  # file path -> bad rows skipped (skip_bad_rows: true)

    # -- tasks -----------------------------------------------------------------------------------
    def load_tasks(self) -> list[TaskRecord]:
        records = [self._generated(DIFFICULTIES[i % 3], i // 3) for i in range(self.config.num_tasks)]
        names: dict[str, str] = {}
        for spec in self.config.task_files():
            name = file_name(spec)
            if name in KINDS or name in names:
                clash = "a difficulty name" if name in KINDS else f"also the name of {names[name]}"
                raise ValueError(f"math task file {spec.path}: its task id prefix {name!r} is {clash}; "
                                 "give the file a distinct `name` in the `files` option")
            names[name] = spec.path
            rows, skipped = load_file(spec, default_difficulty=self.config.default_difficulty,
                                      difficulties=DIFFICULTIES, skip_bad_rows=self.config.skip_bad_rows)
            self.skipped_rows[spec.path] = skipped
            for row in rows:
                prompt = (Message(role="user", content=row.question + SUFFIX),)
                task = Task(env=self.name, task_id=row.task_id, prompt=prompt, difficulty=row.difficulty)
                records.append(TaskRecord(task=task, reference=row.answer))
            log.info("math: %d tasks from %s (%d bad rows skipped)", len(rows), spec.path, skipped)
        if not records:
            raise ValueError("math: no tasks; set num_tasks > 0 or list problem files in `files`")
        return records

    def _generated(self, difficulty: str, index: int) -> TaskRecord:
        g = generate(self.seed, difficulty, index)
        task = Task(env=self.name, task_id=task_id(difficulty, index), prompt=(Message(role="user", content=g.prompt),),
                    difficulty=difficulty)
        return TaskRecord(task=task, reference=g.answer)

    # -- scoring ---------------------------------------------------------------------------------
    def verify(self, record: TaskRecord, response: str) -> Verdict:
        return math_verify(response, str(record.reference), time_limit=self.config.time_limit,
                           plain_numbers=self.config.plain_numbers)

    def reference_response(self, record: TaskRecord) -> str:
        r"""The worked solution of a generated task; "\boxed{answer}" for file tasks.

        >>> env = MathEnvironment({"num_tasks": 1}); env.reference_response(env.load_tasks()[0])
        '4+5=9. \\boxed{9}'
        """
        parsed = parse_task_id(record.task.task_id)
        if parsed is not None:
            g = generate(self.seed, *parsed)
            if g.prompt == record.task.prompt[-1].content and g.answer == record.reference:
                return g.response
        return f"\\boxed{{{record.reference}}}"
