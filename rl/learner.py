"""Learners: a group of Ray actors running DeepSpeed (issue 4 builds them; this is their config)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from rl.section import Section


class LearnerConfig(Section):
    num_learners: int = Field(1, ge=1)
    """DeepSpeed ranks (Ray actors). 2 on CPU works with gloo (PLATFORM.md)."""
    num_cpus: float = Field(1, ge=0)
    """CPUs reserved per learner actor."""
    num_gpus: float = Field(0, ge=0)
    """GPUs per learner actor; > 0 selects NCCL."""
    zero_stage: Literal[0, 1, 2, 3] = 2
    """DeepSpeed ZeRO stage: 2 shards optimizer state and gradients, 3 also parameters."""
    dist_backend: Literal["auto", "gloo", "nccl"] = "auto"
    """torch.distributed backend; auto = nccl with GPUs, gloo without."""
    lr: float = Field(1e-5, ge=0)
    """AdamW learning rate."""
    weight_decay: float = Field(0.0, ge=0)
    """AdamW weight decay."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW betas."""
    micro_batch_size: int = Field(16, ge=1)
    """Sequences per forward/backward; the step's batch is accumulated over micro-batches."""
    grad_clip: float = Field(1.0, ge=0)
    """Global gradient-norm clip; 0 disables."""
    autocast_bf16: bool = False
    """bfloat16 autocast for forward/backward (AVX512-BF16 CPUs and GPUs); weights stay in model.dtype."""
    cpu_affinity: list[int] = []
    """CPU cores the learner actors are pinned to; empty = no pinning."""
    mini_batches: int = Field(1, ge=1)
    """Optimizer steps per train batch. 1 (default, Nemotron 3's on-policy setting) makes the PPO ratio
    exactly 1 and lets the learner skip the separate old-logprob pass."""
    freeze_router: bool = True
    """Freeze MoE router (gate) weights during RL, as Nemotron 3 did (Nano report 3.2.5)."""

