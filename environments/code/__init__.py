r"""The code environment: write a Python program; it runs against hidden unit tests in a sandbox.

As in Nemotron 3's competitive-coding environment (Nano report, section 3.2): stdin/stdout and function-call
tests, at most 50 per task, reward = the fraction of tests passed (or 1/0 with reward: all_or_nothing). The
program is the last ```python (or untagged ```) block of the response; it runs in verifiers.sandbox (bubblewrap
by default), all tests of one response in one sandbox start, in the server's verify process pool.

Options (`env.options` in the run config; a misspelt key is an error listing the valid ones): see CodeOptions.

    envs:
      code:
        options:
          num_tasks: 3000
          files: [{path: data/apps_test.jsonl, name: apps}]
          reward: all_or_nothing
          limits: {cpu_s: 2, wall_s: 4, total_wall_s: 20}

Tests and reference programs never leave the server: /tasks sends the prompt only, sandboxes get test inputs
but not expected outputs, and Verdict reasons quote the program's output, never the expected one.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, ValidationError

from environments.base import Environment, TaskRecord
from environments.code.files import CodeTaskFile, file_name, load_file
from environments.code.generator import KINDS, SUFFIX, generate, task_id
from rl.section import Section
from rl.types import Message, Task, Verdict
from verifiers import sandbox

__all__ = ["CodeEnvironment", "CodeOptions", "CodeReference", "extract_code"]

log = logging.getLogger(__name__)

DIFFICULTIES = ("easy", "medium", "hard")
MAX_RESPONSE_CHARS = 100_000
# Generated tasks are tiny: a correct program needs milliseconds (10-30 ms wall per test even at load 19 on the
# 2-core machine), so short limits keep a looping policy cheap: with fail_fast "timeout" an endless loop costs
# one second. The orchestrator's /verify requests (up to 128 items, envs.code.timeout_s = 30 s by default) must
# fit in the request timeout too: raise timeout_s for task files with longer limits (docs/code-sandbox.md).
DEFAULT_LIMITS = sandbox.Limits(cpu_s=1.0, wall_s=1.0, total_wall_s=10.0)
_FENCE_RE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n(.*?)(?:\n)?```", re.S)
_PYTHON_TAGS = {"", "python", "py", "python3"}


class CodeOptions(Section):
    num_tasks: int = Field(3000, ge=0, le=3_000_000)
    """Generated tasks, round-robin over easy/medium/hard (ids easy-000000, ...); 0 serves only the files."""
    files: list[CodeTaskFile | str] = []
    """APPS/CodeContests-like .jsonl/.json/.parquet task sets, each a path or a CodeTaskFile mapping."""
    default_difficulty: Literal["easy", "medium", "hard"] = "medium"
    """Difficulty of file rows without a difficulty column when their entry sets none."""
    skip_bad_rows: bool = False
    """Skip (count and log) bad file rows instead of failing with the row named."""
    backend: Literal["bubblewrap", "docker", "process"] = sandbox.DEFAULT_BACKEND
    """Sandbox: bubblewrap (default), docker (a Docker API daemon and `python -m verifiers.code_docker build`),
    or process (NO isolation: trusted code only)."""
    docker_image: str | None = None
    """Image for the docker backend; default polyrl-sandbox-python:<python version>."""
    reward: Literal["fraction", "all_or_nothing"] = "fraction"
    """fraction: tests passed / tests; all_or_nothing: 1 only when every test passes."""
    limits: sandbox.Limits = DEFAULT_LIMITS
    """Per-test CPU / wall / memory / output / process limits and the per-response time budget."""
    fail_fast: Literal["none", "timeout", "any"] = "timeout"
    """Skip the remaining tests after a timeout (timeout) or any failure (any; implied by all_or_nothing)."""

    def task_files(self) -> list[CodeTaskFile]:
        return [CodeTaskFile(path=f) if isinstance(f, str) else f for f in self.files]


@dataclass(frozen=True)
class CodeReference:
    """A task's hidden part: its tests and, when known, a reference program."""

    tests: tuple  # verifiers.sandbox.StdioTest / CallTest
    solution: str | None = None


def extract_code(response: str) -> tuple[str | None, str]:
    """(program, note): the last ```python / ```py / untagged fenced block of the response.

    >>> extract_code("Here:\\n```python\\nprint(1)\\n```")
    ('print(1)', 'fenced')
    >>> extract_code("print(1)")
    (None, 'no ```python code block in the response')
    """
    blocks = [m.group(2) for m in _FENCE_RE.finditer(response[-MAX_RESPONSE_CHARS:])
              if m.group(1).lower() in _PYTHON_TAGS]
    if blocks:
        return blocks[-1], "fenced"
    if "```" in response:
        return None, "no closed ```python code block (unclosed fence or another language)"
    return None, "no ```python code block in the response"


class CodeEnvironment(Environment):
    """Programs scored by unit tests in a sandbox; the reference program of every generated task scores 1.0.

    >>> env = CodeEnvironment({"num_tasks": 3}); records = env.load_tasks()
    >>> [r.task.task_id for r in records]
    ['easy-000000', 'medium-000000', 'hard-000000']
    >>> env.verify(records[0], env.reference_response(records[0])).reward
    1.0
    """

    name = "code"
    version = "0.1.0"
    difficulties = DIFFICULTIES
    # A sandbox run is a subprocess that mostly waits; two workers keep both cores busy on the default machine,
    # and a worker stuck past the server's per-item timeout is killed with its sandbox (--die-with-parent).
    verify_workers = 2

    def __init__(self, options: dict[str, Any] | None = None, seed: int = 0):
        super().__init__(options, seed)
        try:
            self.config = CodeOptions(**self.options)
        except ValidationError as e:
            fields = ", ".join(CodeOptions.model_fields)
            raise ValueError(f"code: bad options ({e.error_count()} error(s)):\n{e}\nValid options: {fields}; "
                             "see environments/code/__init__.py") from None
        budget = self.config.limits.total_wall_s + self.config.limits.startup_s
        if budget >= 30:
            log.warning("code: limits.total_wall_s + startup_s = %.0fs reaches the server's default per-item "
                        "verify timeout (30s): raise --verify-timeout or slow responses become errors", budget)
        problem = sandbox.available(self.config.backend) if self.config.backend != "docker" else None
        if self.config.backend == "docker":
            from verifiers.code_docker import docker_problem

            problem = docker_problem(self.config.docker_image)
        if problem:
            raise ValueError(f"code: sandbox backend {self.config.backend!r} is unavailable: {problem}")
        self.skipped_rows: dict[str, int] = {}

    # -- tasks -----------------------------------------------------------------------------------
    def load_tasks(self) -> list[TaskRecord]:
        records = [self._generated(DIFFICULTIES[i % 3], i // 3) for i in range(self.config.num_tasks)]
        names: dict[str, str] = {}
        for spec in self.config.task_files():
            name = file_name(spec)
            if name in KINDS or name in names:
                clash = "a difficulty name" if name in KINDS else f"also the name of {names[name]}"
                raise ValueError(f"code task file {spec.path}: its task id prefix {name!r} is {clash}; give the "
                                 "file a distinct `name` in the `files` option")
            names[name] = spec.path
            rows, skipped = load_file(spec, default_difficulty=self.config.default_difficulty,
                                      difficulties=DIFFICULTIES, skip_bad_rows=self.config.skip_bad_rows)
            self.skipped_rows[spec.path] = skipped
            for row in rows:
                task = Task(env=self.name, task_id=row.task_id, difficulty=row.difficulty,
                            prompt=(Message(role="user", content=row.question + SUFFIX),))
                records.append(TaskRecord(task=task, reference=CodeReference(row.tests, row.reference)))
            log.info("code: %d tasks from %s (%d bad rows skipped)", len(rows), spec.path, skipped)
        if not records:
            raise ValueError("code: no tasks; set num_tasks > 0 or list task files in `files`")
        return records

    def _generated(self, difficulty: str, index: int) -> TaskRecord:
        g = generate(self.seed, difficulty, index)
        task = Task(env=self.name, task_id=task_id(difficulty, index), difficulty=difficulty,
                    prompt=(Message(role="user", content=g.prompt),))
        tests = tuple(sandbox.as_test(t) for t in g.tests)
        return TaskRecord(task=task, reference=CodeReference(tests, g.solution))

    # -- scoring ---------------------------------------------------------------------------------
    def verify(self, record: TaskRecord, response: str) -> Verdict:
        code, note = extract_code(response)
        if code is None:
            return Verdict(reward=0.0, reason=note, components={"format": 0.0, "tests_passed": 0.0})
        fail_fast = "any" if self.config.reward == "all_or_nothing" else self.config.fail_fast
        try:
            result = sandbox.run(code, list(record.reference.tests), backend=self.config.backend,
                                 limits=self.config.limits, fail_fast=fail_fast,
                                 docker_image=self.config.docker_image)
        except sandbox.SandboxUnavailable as e:  # the host's fault, not the model's: an error Verdict
            return Verdict.error(f"code: sandbox unavailable: {e}")
        verdict = result.verdict(self.config.reward)
        return verdict.model_copy(update={"components": {**verdict.components, "format": 1.0}})

    def reference_response(self, record: TaskRecord) -> str:
        """The task's reference program in a ```python block.

        >>> env = CodeEnvironment({"num_tasks": 1}); print(env.reference_response(env.load_tasks()[0]))
        ```python
        s = input()
        print(s * 5)
        ```
        """
        solution = record.reference.solution
        if solution is None:
            raise ValueError(f"code: task {record.task.task_id} has no reference program; add a reference column "
                             "(reference / solution / solutions) to its task file")
        return f"```python\n{solution}\n```"
