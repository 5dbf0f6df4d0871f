"""The CPU experts kernel (rl/experts.py) computes what transformers' grouped_mm experts compute, forward and
backward, so the warm start and the learner train the same model that vLLM serves."""

from __future__ import annotations

import pytest
import torch

from rl import experts


def _tiny_moe(kind: str, implementation: str, seed: int = 0):
    """A 2-layer Qwen3-MoE (the tiny policy's layout) or DeepSeek-V3 (rl/mtp.py's), random weights."""
    from transformers import AutoModelForCausalLM, DeepseekV3Config, Qwen3MoeConfig

    if kind == "qwen3_moe":
        cfg = Qwen3MoeConfig(vocab_size=64, hidden_size=32, intermediate_size=64, moe_intermediate_size=16,
                             num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                             num_experts=8, num_experts_per_tok=2, max_position_embeddings=64, pad_token_id=0)
    else:
        cfg = DeepseekV3Config(vocab_size=64, hidden_size=32, intermediate_size=64, moe_intermediate_size=16,
                               num_hidden_layers=2, first_k_dense_replace=0, n_routed_experts=8, num_experts_per_tok=2,
                               n_group=1, topk_group=1, n_shared_experts=1, num_attention_heads=2,
                               num_key_value_heads=2, q_lora_rank=None, kv_lora_rank=16, qk_rope_head_dim=8,
                               qk_nope_head_dim=8, v_head_dim=8, max_position_embeddings=64, pad_token_id=0)
    experts.register()
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(cfg, dtype=torch.float32, experts_implementation=implementation)


def _logits_and_grads(model, input_ids, attention):
    model.zero_grad(set_to_none=True)
    logits = model(input_ids=input_ids, attention_mask=attention).logits  # [B, L, V]
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                             input_ids[:, 1:].reshape(-1))
    loss.backward()
    return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("kind", ["qwen3_moe", "deepseek_v3"])
def test_forward_and_gradients_match_transformers_grouped_mm(kind):
    reference, ours = _tiny_moe(kind, "grouped_mm"), _tiny_moe(kind, experts.NAME)
    assert ours.config._experts_implementation == experts.NAME
    input_ids = torch.randint(1, 64, (3, 20), generator=torch.Generator().manual_seed(1))  # [B, L]
    attention = torch.ones_like(input_ids)
    attention[1, 14:] = 0  # a padded row
    ref_logits, ref_grads = _logits_and_grads(reference, input_ids, attention)
    logits, grads = _logits_and_grads(ours, input_ids, attention)
    torch.testing.assert_close(logits, ref_logits, rtol=0, atol=1e-6)
    assert grads.keys() == ref_grads.keys() and any("experts.gate_up_proj" in n for n in grads)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, ref_grads[name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("width", [5, 8])  # 5 floats = 20 bytes: grouped_mm's CPU kernel refuses such rows
def test_per_expert_matmul_skips_empty_experts_on_both_paths(width):
    x = torch.randn(7, width)  # [S, in], sorted by expert
    weight = torch.randn(4, width, width)  # [E, out, in]
    rows = torch.tensor([2, 0, 4, 1])  # expert 1 got no token
    expected = torch.cat([x[0:2] @ weight[0].T, x[2:6] @ weight[2].T, x[6:7] @ weight[3].T])  # [S, out]
    torch.testing.assert_close(experts._per_expert(x, weight, rows, grouped=False), expected)
    torch.testing.assert_close(experts._per_expert(x, weight, rows), expected, rtol=1e-5, atol=1e-6)  # auto
    if width % 4 == 0 and hasattr(torch.nn.functional, "grouped_mm"):
        torch.testing.assert_close(experts._per_expert(x, weight, rows, grouped=True), expected,
                                   rtol=1e-5, atol=1e-6)


def test_cpu_only():
    assert experts.experts_implementation("cpu") == {"experts_implementation": experts.NAME}
    assert experts.experts_implementation(torch.device("cuda", 0)) == {}
