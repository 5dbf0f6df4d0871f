"""GRPO loss with masked importance sampling (issue 4 adds the pure tensor functions; this is their config)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from rl.section import Section


class LossConfig(Section):
    normalize_std: bool = True
    """GRPO advantage A_i = (r_i - mean r) / (std r + eps); False drops the std division (Dr. GRPO style)."""
    eps: float = Field(1e-6, gt=0)
    """Added to the group std in the advantage."""
    clip_low: float = Field(0.2, ge=0, lt=1)
    """Policy-ratio clip below: rho >= 1 - clip_low."""
    clip_high: float = Field(0.28, ge=0)
    """Policy-ratio clip above: rho <= 1 + clip_high (asymmetric, 'clip-higher')."""
    is_mode: Literal["token_mask", "token_truncate", "sequence_mask", "none"] = "token_mask"
    """Train/rollout mismatch correction w = exp(logp_old - logp_rollout): mask tokens outside the bounds,
    truncate w at is_high, drop whole sequences by geometric-mean w, or none (Nano report 3.2.5)."""
    is_low: float = Field(0.5, ge=0, lt=1)
    """Lower bound on w for masking."""
    is_high: float = Field(5.0, gt=1)
    """Upper bound on w for masking and truncation."""
    kl_coef: float = Field(0.0, ge=0)
    """KL penalty to a frozen reference policy; 0 (default) runs no reference model."""
    overlong_filter: bool = True
    """Samples cut by the length limit get no loss (DAPO overlong filtering, Nano report 3.2.5)."""
    drop_zero_signal: bool = False
    """Drop groups whose rewards are all equal (they are always counted in metrics)."""

