r"""The chat environment: prompts with no verifiable answer, scored by the GenRM service (issue 7).

A response's reward comes from comparing it with the other responses to the same prompt: /verify hands every
request's items to `verify_batch` at once (Environment.batch_verify), the items of one task form its group, and
the group goes to the GenRM service (genrm/service.py) as one cohort: circular pairwise judgements, mean score
received, then group relative length control. Each response is split into its thinking part (inside
<think>...</think>) and its answer part, measured in policy tokens (`tokenizer`: the policy's directory) or,
without one, in characters (a proxy: the tiny policy's BPE averages ~4 characters per token).

Options (a misspelt key is an error listing the valid ones):

    num_tasks: 2000          # embedded prompts ("Tell me something about river."), round-robin over levels
    genrm_url: null          # a running GenRM server; null starts a local one on the first /verify
    genrm: {}                # GenRMConfig of that local server (judge_path, strategy, ...)
    length_control: {}       # enabled, lambda_think/answer (0.5), beta_think/answer (0.5), percentile (80)
    group_size: null         # async rollouts: a request with fewer responses of a task than this waits
                             # for the rest in the GenRM's cohort assembly
    tokenizer: null          # local HF tokenizer dir for token lengths; null counts characters

A GenRM that is down or fails yields error Verdicts with the reason (counted as verify errors), never None
and never a silent 0.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import threading
import time
import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from environments.base import Environment, TaskRecord
from genrm.judge import split_thinking
from genrm.synthetic import PROMPTS, TOPICS, good_response, maybe_think
from genrm.wire import LengthControlParams, ScoreItem, ScoreRequest
from rl.types import Message, Task, Verdict

log = logging.getLogger(__name__)


class ChatOptions(BaseModel):
    """The chat environment's options (EnvConfig.options)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, frozen=True)

    num_tasks: int = Field(2000, ge=1, le=1_000_000)
    """Embedded chat prompts, spread round-robin over easy/medium/hard (the levels only split evaluation)."""
    genrm_url: str | None = None
    """Base URL of a running GenRM server (python -m genrm.serve); None starts a local one on first use."""
    genrm_secret_env: str | None = None
    """Environment variable holding the GenRM server's shared secret (non-loopback servers)."""
    genrm: dict[str, Any] = {}
    """GenRMConfig fields of the local GenRM server (ignored with genrm_url)."""
    length_control: LengthControlParams = LengthControlParams()
    """Group relative length control; the RL defaults are lambda 0.5 each, beta 0.5 each, percentile 80."""
    group_size: int | None = Field(None, ge=2)
    """When set (to run.samples_per_prompt), fewer responses of one task in a request join a shared cohort that
    waits for the rest; None treats each request's responses of a task as the whole group."""
    tokenizer: str | None = None
    """Local HF tokenizer directory whose token counts measure thinking/answer lengths; None counts characters
    (a proxy that needs no tokenizer on the environment's host)."""
    timeout_s: float = Field(600.0, gt=0)
    """Per GenRM request: a cohort waits for its members and the judge, so this is long."""
    start_timeout_s: float = Field(900.0, gt=0)
    """Budget for a local GenRM server to load its judge engine."""
    max_new_tokens: int | None = Field(None, ge=1)
    """Per-task response limit sent to the rollout (Task.meta); None keeps rollout.max_new_tokens."""


class ChatEnvironment(Environment):
    r"""Chat prompts judged by the GenRM service against the other responses of their group.

    >>> env = ChatEnvironment({"num_tasks": 3}); records = env.load_tasks()
    >>> [r.task.difficulty for r in records], records[0].task.prompt[0].content
    (['easy', 'medium', 'hard'], 'Chat with me about wagon.')
    >>> env.lengths("<think>abc</think>hello")
    (3, 5)
    """

    name = "chat"
    version = "0.1.0"
    batch_verify = True

    def __init__(self, options: dict[str, Any] | None = None, seed: int = 0):
        super().__init__(options, seed)
        try:
            self.config = ChatOptions.model_validate(self.options)
        except ValidationError as e:
            raise ValueError(f"chat: invalid options: {e}") from None
        self._tokenizer = None
        if self.config.tokenizer:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.config.tokenizer)
        self._lock = threading.Lock()
        self._proc = None
        self._url = self.config.genrm_url
        self._start_error: tuple[float, str] | None = None
        self._positions: dict[str, int] = {}  # shared (partial) cohort id -> next free response position

    # -- tasks -----------------------------------------------------------------------------------
    def load_tasks(self) -> list[TaskRecord]:
        rng = random.Random(self.seed)
        meta = {"max_new_tokens": self.config.max_new_tokens} if self.config.max_new_tokens else {}
        records = []
        for i in range(self.config.num_tasks):
            word = rng.choice(TOPICS)
            text = rng.choice(PROMPTS).format(w=word)
            task = Task(env=self.name, task_id=f"chat-{i:06d}", prompt=(Message(role="user", content=text),),
                        difficulty=self.difficulties[i % len(self.difficulties)], meta=dict(meta))
            records.append(TaskRecord(task=task, reference=word))
        return records

    def reference_response(self, record: TaskRecord) -> str:
        """A helpful response (mentions the topic): the judge's top score against an unhelpful one. Drawn per task
        from genrm/synthetic.py's helpful forms, short or padded with filler sentences, some with a thinking part,
        so a policy fine-tuned on them answers on topic at lengths that vary: what length control acts on.

        >>> env = ChatEnvironment({"num_tasks": 40}); records = env.load_tasks()
        >>> all(r.reference in env.reference_response(r) for r in records)
        True
        >>> len({len(env.reference_response(r)) for r in records}) > 10
        True
        """
        rng = random.Random(f"{self.seed}/{record.task.task_id}")
        return maybe_think(rng, record.reference, good_response(rng, record.reference))

    # -- scoring ---------------------------------------------------------------------------------
    def lengths(self, response: str) -> tuple[int, int]:
        """(thinking tokens, answer tokens) in the policy's tokens."""
        think, answer = split_thinking(response)
        if self._tokenizer is None:
            return len(think), len(answer)
        count = lambda s: len(self._tokenizer(s, add_special_tokens=False)["input_ids"]) if s else 0  # noqa: E731
        return count(think), count(answer)

    def verify(self, record: TaskRecord, response: str) -> Verdict:
        """One response alone has nothing to be compared with: an error Verdict saying how to send groups."""
        return self.verify_batch([(record, response)])[0]

    def verify_batch(self, items: list[tuple[TaskRecord, str]]) -> list[Verdict]:
        groups: dict[str, list[int]] = {}
        for i, (record, _) in enumerate(items):
            groups.setdefault(record.task.task_id, []).append(i)
        requests, members = [], []
        for task_id, idx in groups.items():
            n, size = len(idx), self.config.group_size
            if size is not None and n < size:
                cohort_id, group_size = f"{self.name}/{task_id}/partial", size  # the rest arrives in other requests
            else:
                cohort_id, group_size = f"{self.name}/{task_id}/{uuid.uuid4().hex}", n
            record = items[idx[0]][0]
            offset = 0
            if cohort_id.endswith("/partial"):
                # positions inside a shared cohort must not collide across requests: take the next free ones
                offset = self._claim_positions(cohort_id, n, group_size)
            score_items = []
            for k, i in enumerate(idx):
                think, answer = self.lengths(items[i][1])
                score_items.append(ScoreItem(index=offset + k, response=items[i][1], think_tokens=think,
                                             answer_tokens=answer))
            requests.append(ScoreRequest(cohort_id=cohort_id, group_size=group_size,
                                         prompt=record.task.prompt[-1].content, items=tuple(score_items),
                                         length_control=self.config.length_control))
            members.append(idx)
        verdicts: list[Verdict | None] = [None] * len(items)
        url = self._genrm()
        if isinstance(url, Exception):
            return [Verdict.error(f"chat: GenRM unavailable: {url}")] * len(items)
        from genrm.serve import GenRMClient, GenRMUnavailable

        secret = os.environ.get(self.config.genrm_secret_env) if self.config.genrm_secret_env else None
        client = GenRMClient(url, timeout_s=self.config.timeout_s, secret=secret)
        responses = asyncio.run(client.score_many(requests))
        for req, idx, resp in zip(requests, members, responses):
            if isinstance(resp, GenRMUnavailable):
                for i in idx:
                    verdicts[i] = Verdict.error(f"chat: {resp}")
                continue
            by_index = {r.index: r for r in resp.results}
            for item, i in zip(req.items, idx):
                r = by_index.get(item.index)
                if r is None:
                    verdicts[i] = Verdict.error(f"chat: GenRM returned no result for response {item.index}")
                elif r.status == "error":
                    verdicts[i] = Verdict.error(f"chat: {r.reason}")
                else:
                    verdicts[i] = Verdict(reward=r.reward, reason=r.reason, components={
                        "genrm_base": r.base, "length_adjust": r.reward - r.base,
                        "think_tokens": float(item.think_tokens), "answer_tokens": float(item.answer_tokens),
                        "judge_failures": float(r.failed)})
        return [v if v is not None else Verdict.error("chat: internal error, item not scored") for v in verdicts]

    def _claim_positions(self, cohort_id: str, n: int, size: int) -> int:
        with self._lock:
            start = self._positions.get(cohort_id, 0)
            if start + n > size:  # the previous cohort of this task is complete: this is a new one
                start = 0
            self._positions[cohort_id] = start + n
            return start

    # -- the GenRM server ----------------------------------------------------------------------------
    def _genrm(self) -> str | Exception:
        """URL of the GenRM server, starting the local one on first use (retried at most once a minute)."""
        with self._lock:
            if self._url is not None and (self._proc is None or self._proc.poll() is None):
                return self._url
            if self._start_error and time.monotonic() - self._start_error[0] < 60:
                return RuntimeError(self._start_error[1])
            from genrm.serve import GenRMStartError, start_local
            from genrm.service import GenRMConfig

            try:
                cfg = GenRMConfig.model_validate(self.config.genrm)
                if cfg.judge_path == "tiny-judge":
                    from genrm.build_judge import ensure_judge

                    ensure_judge(log=log.info)  # cached after the first build (python -m genrm.build_judge)
                log.info("chat: starting a local GenRM server (judge %s)", cfg.judge_path)
                self._proc, self._url = start_local(cfg, timeout_s=self.config.start_timeout_s)
                self._start_error = None
                return self._url
            except (GenRMStartError, ValidationError, OSError, ValueError) as e:
                self._start_error = (time.monotonic(), f"could not start a local GenRM server: {e}"[:3000])
                self._url = None
                return RuntimeError(self._start_error[1])

    def close(self) -> None:
        if self._proc is not None:
            from genrm.serve import stop_local

            stop_local(self._proc)
            self._proc = None
