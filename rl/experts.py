"""A CPU experts kernel for transformers' MoE layers (the tiny policy's Qwen3-MoE blocks), used for training.

transformers' default `grouped_mm` experts gather each token's hidden state by fancy indexing and put the outputs
back through an inverse permutation. Autograd turns both into `index_put_(accumulate=True)`, which on CPU cost
~10% of a warm-start step of the tiny policy (32 calls per step, ~270 us each; torch 2.13). Here the gather is
`index_select` (backward `index_add_`) and the scatter `index_add_` (backward `index_select`); the expert matmuls
are the same grouped GEMMs. Same arithmetic in the forward (logits equal to the bit on the tiny policy), so vLLM
and the learner still agree; only the order of the backward's sums changes.

Used on CPU only (`experts_implementation(device)`); on GPUs transformers' own kernels stay. Layouts this does
not cover (biases, transposed or interleaved weights, expert parallelism, no gate) fall back to transformers'
`grouped_mm`; a model's own gating (`_apply_gate`) is kept.
With torch's fused AdamW besides, the tiny policy's warm start went from 13,500 to 16,200 tok/s (3,900 steps:
318 s -> 265 s; README "Warm start").
"""

from __future__ import annotations

import torch

NAME = "polyrl_cpu"


def experts_forward(self, hidden_states: torch.Tensor, top_k_index: torch.Tensor,
                    top_k_weights: torch.Tensor) -> torch.Tensor:
    """Mixture of the top-k experts of each token: hidden_states [T, H], top_k_index / top_k_weights [T, k]."""
    from transformers.integrations.moe import grouped_mm_experts_forward

    if (self.has_bias or self.is_transposed or not self.has_gate or not getattr(self, "is_concatenated", True)
            or self._is_expert_parallel):
        return grouped_mm_experts_forward(self, hidden_states, top_k_index, top_k_weights)
    num_tokens, k = top_k_index.shape
    expert_ids, order = torch.sort(top_k_index.reshape(-1), stable=True)  # [T*k] (token, slot) pairs by expert
    token_of = order // k  # [T*k] the token of each sorted pair
    rows = torch.bincount(expert_ids, minlength=self.num_experts)  # [E] pairs per expert
    x = hidden_states.index_select(0, token_of)  # [T*k, H]
    h = self._apply_gate(_per_expert(x, self.gate_up_proj, rows))  # gate_up_proj [E, 2I, H] -> [T*k, I]
    y = _per_expert(h, self.down_proj, rows)  # down_proj [E, H, I] -> [T*k, H]
    y = y * top_k_weights.reshape(-1).index_select(0, order).unsqueeze(-1).to(y.dtype)
    return hidden_states.new_zeros(num_tokens, y.shape[-1]).index_add_(0, token_of, y)


def _per_expert(x: torch.Tensor, weight: torch.Tensor, rows: torch.Tensor, grouped: bool | None = None) -> torch.Tensor:
    """Rows of x (sorted by expert, `rows[e]` for expert e) times weight[e].T: [S, in] x [E, out, in] -> [S, out].

    One grouped GEMM where torch has one and the rows are 16-byte multiples (its CPU kernel's requirement),
    else one matmul per expert."""
    if grouped is None:
        grouped = (hasattr(torch.nn.functional, "grouped_mm")
                   and all(d * x.element_size() % 16 == 0 for d in weight.shape[1:]))
    if grouped:
        return torch.nn.functional.grouped_mm(x, weight.transpose(-2, -1),
                                              offs=torch.cumsum(rows, 0, dtype=torch.int32))
    return torch.cat([part @ weight[e].T for e, part in enumerate(x.split(rows.tolist()))])


def register() -> None:
    from transformers.integrations.moe import ALL_EXPERTS_FUNCTIONS

    ALL_EXPERTS_FUNCTIONS.register(NAME, experts_forward)


def experts_implementation(device: torch.device | str = "cpu") -> dict:
    """from_pretrained keyword arguments that train an MoE checkpoint with this kernel on CPU ({} elsewhere; a
    dense model ignores the setting)."""
    if torch.device(device).type != "cpu":
        return {}
    register()
    return {"experts_implementation": NAME}
