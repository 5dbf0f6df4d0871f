r"""long_context environment: answer a question from one or several of N documents with distractors.

Generated tasks (generator.py) are records about projects and people; the question's answer is in one
document (easy: found by name; medium: found by a value, among more distractors) or needs two (hard: a
two-hop lookup or a comparison). Task files add real sets (files.py: question, documents or context, answer).

Length: `context_chars` bounds the documents block. The default (360) keeps prompt + reference answer within
512 characters at every level (the tiny policy's context is 512 tokens). For a real model with a 32K-token context use
`{"context_chars": 110000, "doc_style": "article", "max_docs": {}}`: ~30K tokens of documents at ~3.7 characters per token,
leaving room for the question and the answer.

Reward (`metric`): normalised exact match (default) or token F1 on the extracted answer (the last
"Answer: ..." line or \boxed{...}; verifiers/qa.py). `judge: genrm` asks for an LLM judge through the GenRM
service (needs `judge_url`; see docs/tools-and-long-context.md: the hookup to genrm's client is a follow-up,
and selecting it fails at start-up with a message saying so instead of silently scoring without it).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationError

from environments.base import Environment, TaskRecord
from environments.long_context.files import load_file
from environments.long_context.generator import generate
from rl.section import Section
from rl.types import Message, Task, Verdict
from verifiers.qa import QAVerifier

DIFFICULTIES = ("easy", "medium", "hard")
INSTRUCTION = "End with 'Answer: ...'."


class LongContextOptions(Section):
    num_tasks: int = Field(3000, ge=0, le=1_000_000)
    """Generated tasks, round-robin over easy/medium/hard (ids easy-000000, ...); 0 = files only."""
    context_chars: int = Field(360, ge=100, le=4_000_000)
    """Upper bound on the documents block in characters (distractors are added up to it). 360 fits 512
    characters, inside the tiny policy's 512-token context; ~110000 with doc_style 'article' is a 32K-token context."""
    doc_style: Literal["record", "article"] = "record"
    """record: one ~45-character line per document; article: a paragraph of ~article_chars per document."""
    article_chars: int = Field(400, ge=60, le=20_000)
    """Length of one article-style document (padding sentences carry no facts)."""
    max_docs: dict[Literal["easy", "medium", "hard"], int] = {"easy": 3}
    """Documents per task at most, by level; a level not listed (or 0) gets as many as context_chars allows.
    Easy tasks default to 3 documents: the needle plus two distractors."""
    metric: Literal["exact", "f1"] = "exact"
    """exact: normalised exact match (0/1); f1: token F1 in [0, 1] (verifiers/qa.py)."""
    judge: Literal["none", "genrm"] = "none"
    """'genrm': score with an LLM judge through the GenRM service (needs judge_url; a follow-up, see the docs)."""
    judge_url: str | None = None
    """Base URL of the GenRM service when judge is 'genrm'."""
    files: list[str] = []
    """Task files (.jsonl/.json/.parquet, read with `datasets`): question, documents|context, answer (files.py)."""
    default_difficulty: Literal["easy", "medium", "hard"] = "medium"
    """Difficulty of file rows without a difficulty value."""
    skip_bad_rows: bool = False
    """False: a bad file row is an error naming file, row and fix. True: skip it, count and log it."""


def _judge_client(options: LongContextOptions) -> Any:
    """The GenRM judge client, or a clear error: never a silent fallback to string matching."""
    if options.judge_url is None:
        raise ValueError("long_context: judge 'genrm' selected but no judge configured: set "
                         "envs.long_context.options.judge_url to a running GenRM service, or judge: none")
    try:
        from genrm.client import JudgeClient  # type: ignore[import-not-found]
    except ImportError:
        raise ValueError("long_context: judge 'genrm' needs genrm.client.JudgeClient, which this checkout does "
                         "not have yet (the hookup is a follow-up, docs/tools-and-long-context.md); use "
                         "judge: none") from None
    return JudgeClient(options.judge_url)


class LongContextEnvironment(Environment):
    """Multi-document QA; a response scores by exact match (or token F1) of its final answer.

    >>> env = LongContextEnvironment({"num_tasks": 3}); records = env.load_tasks()
    >>> [r.task.difficulty for r in records], env.verify(records[2], env.reference_response(records[2])).reward
    (['easy', 'medium', 'hard'], 1.0)
    >>> env.verify(records[0], "Answer: nobody").reward
    0.0
    """

    name = "long_context"
    version = "0.1.0"
    difficulties = DIFFICULTIES

    def __init__(self, options: dict[str, Any] | None = None, seed: int = 0):
        super().__init__(options, seed)
        try:
            self.config = LongContextOptions(**self.options)
        except ValidationError as e:
            raise ValueError(f"long_context: bad options {self.options}: {e}\nValid options: "
                             f"{', '.join(LongContextOptions.model_fields)}") from None
        self.judge = _judge_client(self.config) if self.config.judge == "genrm" else None
        self.score = QAVerifier(self.config.metric)
        self.skipped_rows: dict[str, int] = {}
        self._records: list[TaskRecord] | None = None

    def load_tasks(self) -> list[TaskRecord]:
        if self._records is None:
            c = self.config
            records = []
            for i in range(c.num_tasks):
                difficulty, index = DIFFICULTIES[i % 3], i // 3
                g = generate(self.seed, difficulty, index, context_chars=c.context_chars, style=c.doc_style,
                             article_chars=c.article_chars, max_docs=c.max_docs.get(difficulty, 0))
                records.append(self._record(f"{difficulty}-{index:06d}", difficulty, "\n".join(g.documents),
                                            g.question, (g.answer,), g.response))
            for path in c.files:
                rows, skipped = load_file(path, default_difficulty=c.default_difficulty, difficulties=DIFFICULTIES,
                                          skip_bad_rows=c.skip_bad_rows)
                self.skipped_rows[path] = skipped
                records += [self._record(r.task_id, r.difficulty, r.context, r.question, r.answers,
                                         f"Answer: {r.answers[0]}") for r in rows]
            if not records:
                raise ValueError("long_context: no tasks; set num_tasks > 0 or list task files in `files`")
            self._records = records
        return list(self._records)

    def _record(self, task_id: str, difficulty: str, context: str, question: str, answers: tuple[str, ...],
                response: str) -> TaskRecord:
        prompt = (Message(role="user", content=f"{context}\nQ: {question} {INSTRUCTION}"),)
        task = Task(env=self.name, task_id=task_id, prompt=prompt, difficulty=difficulty,
                    meta={"documents": context.count("\n") + 1})
        return TaskRecord(task=task, reference={"answers": answers, "response": response})

    def verify(self, record: TaskRecord, response: str) -> Verdict:
        return self.score(response, answer=list(record.reference["answers"]))

    def reference_response(self, record: TaskRecord) -> str:
        """'Answer: X' (easy, medium, file tasks); hard ones first name the facts used, then 'Answer: X'."""
        return record.reference["response"]
