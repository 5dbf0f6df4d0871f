"""MTP heads (issue 8): the auxiliary loss trains the heads and nothing else, checkpoint names round-trip, and the
learner's weights reach vLLM's MTP drafter (acceptance rises after the trained heads are synced)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rl.mtp import MTPHeads, build_tiny, checkpoint_state, load_heads

REPO = Path(__file__).resolve().parents[2]
pytestmark_slow = pytest.mark.slow


@pytest.fixture(scope="module")
def deepseek_mtp(tmp_path_factory) -> Path:
    return build_tiny(tmp_path_factory.mktemp("deepseek-mtp") / "policy")


def test_heads_round_trip_through_checkpoint_names(deepseek_mtp):
    from safetensors import safe_open
    from transformers import AutoConfig

    from safetensors.torch import load_file

    heads = load_heads(AutoConfig.from_pretrained(deepseek_mtp), deepseek_mtp)
    lm_head = load_file(str(deepseek_mtp / "model.safetensors"))["lm_head.weight"]
    ckpt = checkpoint_state(heads.state_dict())
    with safe_open(str(deepseek_mtp / "mtp.safetensors"), framework="pt") as fh:
        stored = {k: fh.get_tensor(k) for k in fh.keys()}
    # files carry the shared head (a copy of lm_head); the sync state has none: in vLLM it is the target's lm_head
    assert set(stored) == set(ckpt) | {"model.layers.2.shared_head.head.weight"}
    assert torch.equal(stored["model.layers.2.shared_head.head.weight"], lm_head)
    assert "model.layers.2.shared_head.head.weight" not in ckpt
    assert not any(name.startswith("layers.2.shared_head.head") for name in heads.state_dict())
    # vLLM's DeepSeekMTP names: the block's weights directly under the layer, experts one by one
    assert "model.layers.2.self_attn.kv_a_proj_with_mqa.weight" in ckpt and "model.layers.2.eh_proj.weight" in ckpt
    assert "model.layers.2.mlp.experts.3.up_proj.weight" in ckpt
    assert all(torch.equal(ckpt[k], stored[k]) for k in ckpt)


def test_missing_or_unsupported_heads_fail_clearly(tmp_path, tiny_policy_dir):
    from transformers import AutoConfig

    from rl.learner import LearnerConfig, load_mtp

    policy = build_tiny(tmp_path / "p")
    (policy / "mtp.safetensors").unlink()
    with pytest.raises(ValueError, match="holds no weight under model.layers.2.*python -m rl.mtp --init"):
        load_heads(AutoConfig.from_pretrained(policy), policy)
    from transformers import AutoModelForCausalLM

    qwen = AutoModelForCausalLM.from_pretrained(tiny_policy_dir)
    with pytest.raises(ValueError, match="no multi-token-prediction heads.*mtp_loss_weight=0"):
        load_mtp(qwen, LearnerConfig(mtp_loss_weight=0.3), tiny_policy_dir)
    assert load_mtp(qwen, LearnerConfig(), tiny_policy_dir) is None  # weight 0: nothing to load


def test_mtp_loss_masks_targets_and_learns_a_pattern(deepseek_mtp):
    from transformers import AutoModelForCausalLM

    policy = AutoModelForCausalLM.from_pretrained(deepseek_mtp, dtype=torch.float32)
    heads = load_heads(policy.config, deepseek_mtp)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(7, 100, (4, 24), generator=gen)  # [B, L]
    ids[:, 1::2] = ids[:, ::2]  # every token repeated: t_{i+2} is predictable from t_{i+1} at odd i
    attention = torch.ones_like(ids)
    mask = torch.zeros(4, 23)  # [B, L-1]
    mask[:, 9:] = 1  # responses: targets 10..23
    hidden = []
    policy.model.norm.register_forward_hook(lambda m, i, o: hidden.append(o.detach()))
    with torch.no_grad():
        policy(input_ids=ids, attention_mask=attention)
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    opt = torch.optim.Adam(heads.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss, counts = heads.loss(policy, ids, hidden[0], attention, mask)
        assert counts["mtp/tokens"] == 4 * 14  # depth 1 at i scores t_{i+2} where mask[i+1]: all 14 targets
        (loss / counts["mtp/tokens"]).backward()
        opt.step()
        opt.zero_grad()
        losses.append(float(loss) / counts["mtp/tokens"])
    print(f"MTP loss {losses[0]:.3f} -> {losses[-1]:.3f}, accuracy {counts['mtp/correct'] / counts['mtp/tokens']:.2f}")
    assert losses[-1] < 0.5 * losses[0]
    assert all(torch.equal(before[k], v) for k, v in policy.state_dict().items()), "the policy must not move"
    assert isinstance(heads, MTPHeads)


@pytestmark_slow
def test_learner_trains_mtp_heads_only_and_exports_them(ray_session, deepseek_mtp, tmp_path):
    """Real Learner actor (DeepSpeed ZeRO-2, 1 rank): zero advantages leave the policy loss without gradient, so
    only the MTP heads may move; they leave the learner under vLLM's names and in the saved checkpoint."""
    import ray
    from transformers import AutoConfig

    from rl.learner import Learner, LearnerConfig, collate
    from rl.loss import LossConfig
    from rl.model import ModelConfig
    from rl.types import Sample

    cfg = LearnerConfig(lr=3e-3, micro_batch_size=4, dist_backend="gloo", mtp_loss_weight=0.3)
    actor = ray.remote(Learner).options(num_cpus=1).remote(0, 1, ModelConfig(path=str(deepseek_mtp)), cfg,
                                                           LossConfig(is_mode="none"), 0)
    try:
        addr, port = ray.get(actor.address.remote(), timeout=60)
        info = ray.get(actor.setup.remote(addr, port), timeout=300)
        assert "mtp_heads.layers.2.mtp_block.mlp.gate.weight" in info["frozen"]  # the heads' router frozen too
        before = ray.get(actor.state_dict.remote(), timeout=120)
        gen = torch.Generator().manual_seed(0)
        samples = []
        for i in range(8):
            response = torch.randint(7, 100, (16,), generator=gen)
            response[1::2] = response[::2]
            samples.append(Sample(env="echo", task_id=f"t{i}", sample_index=0, prompt_ids=tuple(range(7, 17)),
                                  response_ids=tuple(response.tolist()), logprobs=(-4.0,) * 16,
                                  loss_mask=(1,) * 16, policy_version=0, finish_reason="stop"))
        batch = collate(samples, [0.0] * 8)
        outs = [ray.get(actor.train_step.remote({**batch, "num_micro": 2}, step + 1), timeout=300)
                for step in range(6)]
        after = ray.get(actor.state_dict.remote(), timeout=120)
        exported = ray.get(actor.save_hf.remote(str(tmp_path / "export")), timeout=120)
    finally:
        ray.kill(actor)
    print("mtp/loss per step", [round(o["mtp/loss"], 3) for o in outs])
    assert all(o["mtp/tokens"] == 8 * 16 for o in outs)  # every response token (the prompt has 10)
    assert outs[-1]["mtp/loss"] < outs[0]["mtp/loss"]
    mtp = [k for k in before if k.startswith("model.layers.2.")]
    policy = [k for k in before if k not in mtp]
    assert mtp and not any(k.startswith("mtp_heads") for k in before)
    moved = [k for k in policy if not torch.equal(before[k], after[k])]
    # the routing bias is a buffer the balancing moves (issue 8); the weights get no gradient
    assert all(k.endswith("e_score_correction_bias") for k in moved), f"zero advantages, yet {moved} moved"
    assert any(not torch.equal(before[k], after[k]) for k in mtp if k.endswith("eh_proj.weight"))
    assert torch.equal(before["model.layers.2.mlp.gate.weight"], after["model.layers.2.mlp.gate.weight"])
    # the export: the policy loads in transformers, the heads from mtp.safetensors equal the learner's
    heads = load_heads(AutoConfig.from_pretrained(exported), exported)
    saved = checkpoint_state(heads.state_dict())
    assert all(torch.equal(saved[k], after[k]) for k in mtp)
    assert not json.loads((Path(exported) / "config.json").read_text()).get("mtp_heads")


@pytestmark_slow
def test_synced_heads_raise_vllm_mtp_acceptance(tmp_path):
    """bench/mtp.py, small: vLLM drafts with the checkpoint's random MTP layers, the learner trains them on the
    engine's own greedy outputs, the weights are synced in place, and the drafter's acceptance rises (measured
    on the training prompts: the random policy's choices are float noise a drafter cannot generalise)."""
    out = tmp_path / "mtp.json"
    proc = subprocess.run([sys.executable, "bench/mtp.py", "--sft-steps", "0", "--eval-on", "train", "--steps", "5",
                           "--prompts", "8", "--json", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    print(json.dumps(result, indent=1))
    before, after = result["before"]["acceptance_rate"], result["after"]["acceptance_rate"]
    assert result["before"]["draft_tokens"] > 100 and result["after"]["draft_tokens"] > 100
    assert after > before + 0.2, (before, after)
    # the in-place sync leaves the drafter exactly as loading the learner's export from disk does (no stale
    # absorbed MLA matrices, experts repacked, the target's shared lm_head untouched)
    assert result["drafter_inplace_vs_fresh_max_rel_diff"] == 0.0
    assert result["fresh_load"]["acceptance_rate"] == after


def test_warm_start_trains_the_mtp_layers_and_saves_them(tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoConfig

    from rl.warm_start import WarmStartConfig, train

    init = build_tiny(tmp_path / "init")
    cfg = WarmStartConfig(envs=["math"], steps=8, batch_size=4, env_options={"math": {"num_tasks": 300}},
                          exclude_rl_tasks=False)
    train(init, tmp_path / "out", cfg, log=lambda line: None)
    config = AutoConfig.from_pretrained(tmp_path / "out")
    before, after = load_heads(config, init).state_dict(), load_heads(config, tmp_path / "out").state_dict()
    assert not torch.equal(before["layers.2.eh_proj.weight"], after["layers.2.eh_proj.weight"])
    # the stored shared head is the saved policy's lm_head (vLLM uses the target's anyway)
    mtp = load_file(str(tmp_path / "out" / "mtp.safetensors"))
    policy = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert torch.equal(mtp["model.layers.2.shared_head.head.weight"], policy["lm_head.weight"])
