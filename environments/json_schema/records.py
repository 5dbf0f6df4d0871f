"""What a json_schema task is: the prompt format and the hidden reference (schema + example instance)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from environments.base import TaskRecord
from rl.types import Message, Task

ENV_NAME = "json_schema"
# One fixed sentence before the schema: the tiny policy learns a single prompt shape.
PROMPT_PREFIX = "Return JSON matching this schema: "


def compact(value: Any) -> str:
    """JSON without spaces (the prompt and reference format: every character costs context).

    >>> compact({"id": 7, "tags": ["a"]})
    '{"id":7,"tags":["a"]}'
    """
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


@dataclass(frozen=True)
class SchemaReference:
    """TaskRecord.reference of this environment.

    `example_json` is the compact JSON text of an instance valid under `schema` (text, so that an example
    that is JSON null stays distinguishable from "no example"); None for file tasks given without one.
    """

    schema: dict | bool
    example_json: str | None
    source: str  # "generated" or "<file> row <n>", named in errors

    @property
    def example(self) -> Any:
        if self.example_json is None:
            raise ValueError(f"the task from {self.source} has no example instance")
        return json.loads(self.example_json)


def make_record(task_id: str, difficulty: str, schema: dict | bool, example_json: str | None,
                source: str) -> TaskRecord:
    prompt = PROMPT_PREFIX + compact(schema)
    task = Task(env=ENV_NAME, task_id=task_id, prompt=(Message(role="user", content=prompt),),
                difficulty=difficulty)
    return TaskRecord(task=task, reference=SchemaReference(schema, example_json, source))
