"""Frozen MoE router in the real DeepSpeed learner; routing-load metrics; aux-loss-free bias balancing (issue 8)."""

from __future__ import annotations

import pytest
import torch

from rl.routing import RoutingMonitor, router_modules, router_parameter_names, routing_bias


def _tiny_deepseek_v3(seed: int = 0):
    """A 2-layer DeepSeek-V3 (MLA, sigmoid router with e_score_correction_bias), random weights, transformers only."""
    from transformers import AutoModelForCausalLM, DeepseekV3Config

    cfg = DeepseekV3Config(
        vocab_size=64, hidden_size=64, intermediate_size=128, moe_intermediate_size=32, num_hidden_layers=2,
        first_k_dense_replace=0, n_routed_experts=8, num_experts_per_tok=2, n_group=1, topk_group=1,
        n_shared_experts=1, num_attention_heads=2, num_key_value_heads=2, q_lora_rank=None, kv_lora_rank=16,
        qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=8, max_position_embeddings=64, pad_token_id=0,
    )
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval()


def test_routers_found_structurally_in_qwen3_moe_and_deepseek_v3(tiny_policy_dir):
    from transformers import AutoModelForCausalLM

    qwen = AutoModelForCausalLM.from_pretrained(tiny_policy_dir, dtype=torch.float32)
    names = router_parameter_names(qwen)
    assert names == [f"model.layers.{i}.mlp.gate.weight" for i in range(4)]
    assert all(routing_bias(r) is None for r in router_modules(qwen).values())  # Qwen3-MoE: no routing bias
    ds = _tiny_deepseek_v3()
    # the routed gate only: not the shared expert's gate_proj, not the experts' gate_up_proj, not the bias buffer
    assert router_parameter_names(ds) == [f"model.layers.{i}.mlp.gate.weight" for i in range(2)]
    assert all(routing_bias(r) is not None for r in router_modules(ds).values())


def test_load_counts_skip_padding_and_give_imbalance(tiny_policy_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_policy_dir, dtype=torch.float32).eval()
    mon = RoutingMonitor(model)
    ids = torch.randint(7, 100, (3, 20))  # [B, L]
    mask = torch.ones(3, 20, dtype=torch.long)  # [B, L]
    mask[1, 12:] = 0
    mask[2, 5:] = 0
    with torch.no_grad(), mon.counting(mask):
        model(input_ids=ids, attention_mask=mask)
    valid = int(mask.sum())
    for counts in mon.counts.values():
        assert int(counts.sum()) == valid * 2  # top-2 selections of the real tokens only
    metrics = mon.metrics()
    assert len([k for k in metrics if k.startswith("router/load_imbalance/layer")]) == 4
    assert 1.0 <= metrics["router/load_imbalance_max"] <= 8 / 2  # at most E/k when every token picks the same two
    assert mon.update_bias(1e-3) == 0  # no bias in Qwen3-MoE: a no-op


def test_expert_bias_moves_an_unbalanced_load_towards_balance():
    model = _tiny_deepseek_v3()
    mon = RoutingMonitor(model)
    assert mon.has_bias
    # a batch built to be unbalanced: 3 distinct token ids route to few experts
    gen = torch.Generator().manual_seed(0)
    ids = torch.tensor([3, 4, 5])[torch.randint(0, 3, (8, 32), generator=gen)]  # [B, L]
    mask = torch.ones_like(ids)

    def step(rate: float) -> float:  # one forward: count, measure, update the bias
        with torch.no_grad(), mon.counting(mask):
            model(input_ids=ids, attention_mask=mask)
        imbalance = mon.metrics()["router/load_imbalance_max"]
        if rate:
            mon.update_bias(rate)
        mon.reset()
        return imbalance

    with torch.no_grad(), mon.counting(mask):
        model(input_ids=ids, attention_mask=mask)
    first = mon.metrics()["router/load_imbalance_max"]
    hot = {n: int(c.argmax()) for n, c in mon.counts.items()}  # the most loaded expert of each layer
    mon.reset()
    history = [step(1e-3) for _ in range(150)]  # the default rate
    late = sum(history[-20:]) / 20
    print(f"imbalance (max/mean load) before {first:.2f}, mean of the last 20 of 150 steps {late:.2f}")
    assert first > 2.0, "the batch should start clearly unbalanced"
    assert late < 0.75 * first, (first, late)
    for name, router in mon.routers.items():
        bias = routing_bias(router)
        # the initially hottest expert was pushed down, below others that were pushed up
        assert float(bias[hot[name]]) < 0 < float(bias.max()), bias


pytestmark_slow = pytest.mark.slow


@pytestmark_slow
def test_router_bit_identical_after_deepspeed_steps_while_experts_move(ray_session, tiny_policy_dir):
    """Real rl/learner.py Learner actor (DeepSpeed ZeRO-2, gloo, 1 rank) on the tiny policy: 3 optimizer steps."""
    import ray

    from rl.learner import Learner, LearnerConfig, collate
    from rl.loss import LossConfig
    from rl.model import ModelConfig
    from rl.types import Sample

    cfg = LearnerConfig(num_learners=1, num_cpus=1, lr=1e-2, micro_batch_size=4, dist_backend="gloo")
    actor = ray.remote(Learner).options(num_cpus=1).remote(0, 1, ModelConfig(path=str(tiny_policy_dir)), cfg,
                                                           LossConfig(is_mode="none"), 0)
    try:
        addr, port = ray.get(actor.address.remote(), timeout=60)
        info = ray.get(actor.setup.remote(addr, port), timeout=300)
        assert info["frozen"] == [f"model.layers.{i}.mlp.gate.weight" for i in range(4)]
        assert info["routers"] == 4 and info["bias_balancing"] is False  # Qwen3-MoE: balancing is a no-op
        before = ray.get(actor.state_dict.remote(), timeout=120)
        gen = torch.Generator().manual_seed(0)
        samples = [Sample(env="echo", task_id=f"t{i}", sample_index=0, prompt_ids=tuple(range(7, 17)),
                          response_ids=tuple(torch.randint(7, 100, (12,), generator=gen).tolist()),
                          logprobs=(-4.0,) * 12, loss_mask=(1,) * 12, policy_version=0, finish_reason="stop")
                   for i in range(8)]
        batch = collate(samples, [1.0, -1.0] * 4)
        for step in range(3):
            out = ray.get(actor.train_step.remote({**batch, "num_micro": 2}, step + 1), timeout=300)
            assert out["valid_tokens"] == 8 * 12
            assert 1.0 <= out["router/load_imbalance_max"] <= 4.0
            assert "router/bias_layers_updated" not in out
        after = ray.get(actor.state_dict.remote(), timeout=120)
    finally:
        ray.kill(actor)
    routers = [k for k in before if k.endswith("mlp.gate.weight")]
    experts = [k for k in before if ".mlp.experts." in k]
    assert len(routers) == 4 and experts
    assert all(torch.equal(before[k], after[k]) for k in routers), "router weights must be bit-identical"
    moved = [k for k in experts if not torch.equal(before[k], after[k])]
    print(f"{len(moved)} of {len(experts)} expert tensors moved (an expert no token was routed to gets no gradient)")
    assert len(moved) >= 0.75 * len(experts), f"only {len(moved)} of {len(experts)} expert tensors moved"
