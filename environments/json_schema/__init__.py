"""json_schema environment: answer with a JSON value that satisfies a JSON Schema (draft 2020-12).

Tasks are generated (generator.py: easy / medium / hard, deterministic in the seed) and/or read from task
files (files.py: JSONL or Parquet with a `schema` column). The prompt is one fixed sentence and the schema as
compact JSON; the reward is schema adherence only (verifiers/json_schema.py), as in Nemotron 3's
structured-output environment (Nano report, section 3.2).

Options (`env.options` in the run config), e.g. {"num_tasks": 3000, "files": ["data/schemas.jsonl"]}:
see JsonSchemaOptions.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationError

from environments.base import Environment, TaskRecord
from environments.json_schema.files import load_file
from environments.json_schema.generator import DIFFICULTIES, generate
from environments.json_schema.records import SchemaReference, make_record
from rl.section import Section
from rl.types import Verdict
from verifiers.json_schema import verify as verify_json

__all__ = ["JsonSchemaEnvironment", "JsonSchemaOptions", "SchemaReference"]


class JsonSchemaOptions(Section):
    num_tasks: int = Field(3000, ge=0, le=1_000_000)
    """Generated tasks, split evenly over easy/medium/hard (earlier levels take the remainder). 0 = files only."""
    files: list[str] = []
    """Task files (.jsonl, .json, .ndjson, .parquet) added to the generated tasks; columns in files.py."""
    default_difficulty: Literal["easy", "medium", "hard"] = "medium"
    """Difficulty of file rows without a `difficulty` value."""
    skip_bad_rows: bool = False
    """False: a bad file row is an error naming file, row and fix. True: skip it, count it (skipped_rows), log it."""


class JsonSchemaEnvironment(Environment):
    """Return a JSON value matching the schema in the prompt; reward 1.0 iff it validates.

    >>> env = JsonSchemaEnvironment(options={"num_tasks": 3}, seed=0)
    >>> [r.task.task_id for r in env.load_tasks()]
    ['easy-000000', 'medium-000000', 'hard-000000']
    >>> record = env.load_tasks()[0]
    >>> env.verify(record, env.reference_response(record)).reward
    1.0
    """

    name = "json_schema"
    difficulties = DIFFICULTIES

    def __init__(self, options: dict[str, Any] | None = None, seed: int = 0):
        super().__init__(options, seed)
        try:
            self.config = JsonSchemaOptions(**self.options)
        except ValidationError as err:
            raise ValueError(f"json_schema: bad options {self.options}: {err}") from None
        self.skipped_rows: dict[str, int] = {}  # task file -> bad rows skipped (skip_bad_rows)
        self._records: list[TaskRecord] | None = None

    def load_tasks(self) -> list[TaskRecord]:
        if self._records is None:
            self._records = self._generated() + self._from_files()
            self._check_unique_ids(self._records)
        return list(self._records)

    def _generated(self) -> list[TaskRecord]:
        records = []
        per_level, extra = divmod(self.config.num_tasks, len(DIFFICULTIES))
        for level, difficulty in enumerate(DIFFICULTIES):
            for index in range(per_level + (level < extra)):
                schema, example_json = generate(self.seed, difficulty, index)
                records.append(make_record(f"{difficulty}-{index:06d}", difficulty, schema, example_json,
                                           source="generated"))
        # Interleave levels (easy-0, medium-0, hard-0, easy-1, ...) so any prefix covers every level.
        return sorted(records, key=lambda r: (int(r.task.task_id.rsplit("-", 1)[1]),
                                              DIFFICULTIES.index(r.task.difficulty)))

    def _from_files(self) -> list[TaskRecord]:
        records = []
        for path in self.config.files:
            loaded, skipped = load_file(path, DIFFICULTIES, self.config.default_difficulty,
                                        self.config.skip_bad_rows)
            records += loaded
            if skipped:
                self.skipped_rows[path] = skipped
        return records

    @staticmethod
    def _check_unique_ids(records: list[TaskRecord]) -> None:
        seen: dict[str, str] = {}
        for r in records:
            task_id, source = r.task.task_id, r.reference.source
            if task_id in seen:
                raise ValueError(f"json_schema: task id {task_id!r} of {source} is already used by {seen[task_id]}; "
                                 "give the rows distinct `id` values or rename one of the files")
            seen[task_id] = source

    def verify(self, record: TaskRecord, response: str) -> Verdict:
        return verify_json(response, record.reference.schema)

    def reference_response(self, record: TaskRecord) -> str:
        """The compact JSON of the task's example instance.

        Raises ValueError for file tasks given without an `example` column value: they can be trained on
        with RL, but not used for the warm start or reference checks.
        """
        ref: SchemaReference = record.reference
        if ref.example_json is None:
            raise ValueError(f"json_schema task {record.task.task_id} ({ref.source}) has no example instance, "
                             "so it has no reference response; add an `example` column to its task file")
        return ref.example_json
