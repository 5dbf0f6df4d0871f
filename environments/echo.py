"""The smallest complete environment plugin: repeat a string back.

Drives the end-to-end tests (STYLE.md rule 10) and is the model `python -m environments new` copies.
"""

from __future__ import annotations

import random
import string

from environments.base import Environment, TaskRecord
from rl.types import Message, Task, Verdict

# Characters to repeat per difficulty: a longer string is harder for the character-level tiny policy.
LENGTHS = {"easy": 3, "medium": 6, "hard": 12}


class EchoEnvironment(Environment):
    """Tasks "Repeat: abc" with reference "abc"; an exact repeat scores 1.0.

    Options: `num_tasks` (default 30), spread round-robin over the difficulties; `partial_credit` (default
    false): reward = the fraction of the reference's distinct characters that appear in the response, so that even
    a random policy gets varied rewards (end-to-end tests of the learning signal).
    """

    name = "echo"
    version = "0.1.0"
    difficulties = tuple(LENGTHS)

    def load_tasks(self) -> list[TaskRecord]:
        unknown = set(self.options) - {"num_tasks", "partial_credit"}
        if unknown:
            raise ValueError(f"echo: unknown options {sorted(unknown)}; allowed: num_tasks, partial_credit")
        # Seeded: the server and each of its verify workers must build the same tasks.
        rng = random.Random(self.seed)
        records = []
        for i in range(int(self.options.get("num_tasks", 30))):
            difficulty = self.difficulties[i % len(self.difficulties)]
            text = "".join(rng.choices(string.ascii_lowercase, k=LENGTHS[difficulty]))
            prompt = (Message(role="user", content=f"Repeat: {text}"),)
            task = Task(env=self.name, task_id=f"echo-{i}", prompt=prompt, difficulty=difficulty)
            records.append(TaskRecord(task=task, reference=text))
        return records

    def verify(self, record: TaskRecord, response: str) -> Verdict:
        """Exact match after stripping whitespace.

        >>> env = EchoEnvironment(); rec = env.load_tasks()[0]
        >>> env.verify(rec, f" {rec.reference}\\n").reward, env.verify(rec, "nope").reward
        (1.0, 0.0)
        """
        answer = response.strip()
        if answer == record.reference:
            return Verdict(reward=1.0, reason="exact repeat")
        if self.options.get("partial_credit"):
            wanted = set(record.reference)
            share = len(wanted & set(answer)) / len(wanted)
            return Verdict(reward=share, components={"char_overlap": share},
                           reason=f"{share:.2f} of the reference's characters present")
        return Verdict(reward=0.0, reason=f"expected {record.reference!r}, got {answer[:80]!r}")

    def reference_response(self, record: TaskRecord) -> str:
        return record.reference
