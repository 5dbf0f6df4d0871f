"""Learners: a group of Ray actors running DeepSpeed (issue 4 builds them; this is their config)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Literal

import psutil
import torch
from pydantic import Field

from rl.loss import LossConfig, count_valid_tokens, policy_loss, token_entropy, token_logprobs
from rl.model import ModelConfig
from rl.routing import RoutingMonitor, router_parameter_names
from rl.section import Section
from rl.types import Sample


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
    resources: dict[str, float] = {}
    """Custom Ray resources each actor requires, to place this role on chosen nodes (e.g. {"rollout_node": 1})."""
    cpu_affinity: list[int] = []
    """CPU cores the learner actors are pinned to; empty = no pinning."""
    mini_batches: int = Field(1, ge=1)
    """Optimizer steps per train batch. 1 (default, Nemotron 3's on-policy setting) makes the PPO ratio
    exactly 1 and lets the learner skip the separate old-logprob pass."""
    length_bucketing: bool = True
    """Sort the step's samples by length before cutting micro-batches, so each is trimmed to less right padding
    (~25% fewer positions for 8 x 8 math/JSON batches; same loss up to float rounding). With mini_batches > 1
    the sort is within each optimizer step's share, so no step gets only the long (or short) samples. Off while
    share_prompts is on (groups stay together). False keeps the orchestrator's (shuffled) order."""
    reuse_forward: bool = True
    """With mini_batches 1, take logp_old from the training forward itself (it equals the no-grad pass bitwise:
    same weights, same kernels) instead of a separate no-grad pass: one forward fewer per micro-batch (~25% of
    the step), at the cost of keeping every micro-batch's activations until the backward passes (the loss needs
    the whole batch's valid-token count first). False: one micro-batch of activations at a time."""
    share_prompts: bool = True
    """Compute each distinct prompt of a micro-batch once and its G responses on the prompt's cached keys and
    values (GRPO groups share a prompt): the same logprobs and gradients up to float rounding, with ~2.5-3.5x
    fewer positions for 8 x 8 batches of 100-200-token prompts. Used when the model's cache is a plain
    transformers DynamicCache (full attention), otherwise the whole sequences are run as before."""
    freeze_router: bool = True
    """Freeze MoE router (gate) weights during RL, as Nemotron 3 did (Nano report 3.2.5). Routers are found
    structurally (rl/routing.py); a dense policy has none and nothing is frozen."""
    router_bias_rate: float = Field(1e-3, ge=0)
    """Aux-loss-free expert balancing (DeepSeek-V3 sec. 2.1.2): after each step the routing bias moves by
    rate * sign(mean load - expert load), from the batch's routing counts. Only architectures with a routing
    bias (DeepSeek-V3's e_score_correction_bias) have one; for Qwen3-MoE (the tiny policy) it is a logged no-op.
    0 disables."""
    mtp_loss_weight: float = Field(0.0, ge=0)
    """Weight of the multi-token-prediction auxiliary loss (e.g. 0.3): the policy's MTP layers (DeepSeek-V3
    layout, rl/mtp.py) learn to draft its next-but-one tokens from its detached hidden states, and go to vLLM's
    MTP drafter with every weight sync. Needs a policy with MTP layers (the tiny policy, Qwen3-MoE, has none: an
    error) and runs without share_prompts (docs/speculative-and-router.md, "MTP")."""



# ----------------------------------------------------------------------------------------------- batching


def is_router_param(name: str) -> bool:
    """MoE router (gate) weights: `...mlp.gate.weight` (Qwen3-MoE, DeepSeek-V3), `...router...` (others).
    Not `gate_proj` / `gate_up_proj`, which are expert weights."""
    parts = name.split(".")
    return ("gate" in parts and "mlp" in parts) or any(p in ("router", "routers") for p in parts)


def load_mtp(model, cfg: LearnerConfig, path):
    """The policy's MTP heads (rl/mtp.py) when learner.mtp_loss_weight > 0, else None; clear errors otherwise.

    transformers builds no MTP modules (DeepSeek-V3 ignores `model.layers.61.*` on load), so rl/mtp.py
    rebuilds them from the checkpoint's own weights (docs/speculative-and-router.md, "MTP")."""
    if cfg.mtp_loss_weight <= 0:
        return None
    from rl.mtp import check_supported, load_heads, mtp_depth

    if not mtp_depth(model.config):
        raise ValueError(
            f"learner.mtp_loss_weight={cfg.mtp_loss_weight} but the policy at {path} ({type(model).__name__}) has "
            "no multi-token-prediction heads (its config declares no num_nextn_predict_layers / num_mtp_layers). "
            "Set learner.mtp_loss_weight=0; the tiny policy has no MTP heads (README 'The tiny policy'); n-gram "
            "speculation (rollout.speculative.method=ngram) needs none.")
    check_supported(model.config)
    return load_heads(model.config, path).to(dtype=model.dtype)


MTP_MODULE = "mtp_heads"  # where the MTP heads hang in the policy module (their state-dict prefix)

# Per-micro-batch metrics that add up to the batch's: counts, and pg_loss, which policy_loss already divides by
# the whole batch's valid tokens (a token-weighted mean of it would depend on how the batch is split: with two
# equal micro-batches it read half the loss). is_weight_max is a max; the rest are token-weighted means.
_SUMMED = ("valid_tokens", "overlong_dropped_sequences", "pg_loss", "mtp/tokens", "mtp/correct", "mtp/loss_sum")


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def collate(samples: list[Sample], advantages: list[float], pad_id: int = 0) -> dict[str, torch.Tensor]:
    """Right-padded tensors in 'shifted' coordinates: position t scores token t+1 of prompt + response.

    Returns input_ids/attention [B, L] and, over the L-1 shifted positions, targets, mask (trainable response
    tokens), logp_rollout; advantages [B]; finished_by_length [B].
    """
    width = max(s.num_tokens for s in samples)
    b = len(samples)
    input_ids = torch.full((b, width), pad_id, dtype=torch.long)  # [B, L]
    attention = torch.zeros(b, width, dtype=torch.long)  # [B, L]
    mask = torch.zeros(b, width - 1, dtype=torch.float32)  # [B, L-1]
    logp_rollout = torch.zeros(b, width - 1, dtype=torch.float32)  # [B, L-1]
    for i, s in enumerate(samples):
        p, r = len(s.prompt_ids), len(s.response_ids)
        input_ids[i, : p + r] = torch.tensor(s.prompt_ids + s.response_ids)
        attention[i, : p + r] = 1
        # response token k sits at position p+k and is scored at shifted position p+k-1
        mask[i, p - 1 : p - 1 + r] = torch.tensor(s.loss_mask, dtype=torch.float32)
        logp_rollout[i, p - 1 : p - 1 + r] = torch.tensor(s.logprobs, dtype=torch.float32)
    return {
        "input_ids": input_ids,
        "attention": attention,
        "targets": input_ids[:, 1:],  # [B, L-1]
        "mask": mask,
        "logp_rollout": logp_rollout,
        "advantages": torch.tensor(advantages, dtype=torch.float32),  # [B]
        "prompt_len": torch.tensor([len(s.prompt_ids) for s in samples], dtype=torch.long),  # [B]
        "finished_by_length": torch.tensor([s.finish_reason == "length" for s in samples]),  # [B]
    }


def _slice(batch: dict, start: int, end: int) -> dict:
    out = {k: v[start:end] for k, v in batch.items()}
    # trim right padding of this micro-batch: fewer positions, same values
    width = int(out["attention"].sum(1).max()) if len(out["attention"]) else 1
    for k in ("input_ids", "attention"):
        out[k] = out[k][:, :width]
    for k in ("targets", "mask", "logp_rollout"):
        out[k] = out[k][:, : width - 1]
    return out


# ----------------------------------------------------------------------------------------------- the actor


class Learner:
    """One DeepSpeed rank. Rank 0 also exports weights for the rollout workers and writes HF checkpoints."""

    def __init__(self, rank: int, world_size: int, model_cfg: ModelConfig, cfg: LearnerConfig, loss_cfg: LossConfig,
                 seed: int, temperature: float = 1.0):
        self.rank, self.world_size, self.cfg, self.loss_cfg = rank, world_size, cfg, loss_cfg
        self.model_cfg, self.seed = model_cfg, seed
        # rollout.temperature: the policy trained and importance-weighted is the tempered one vLLM samples from,
        # softmax(logits / temperature), for logp_old, logp_new, the reference and the entropy alike
        self.temperature = temperature
        from rl.engine import HeapTrimmer

        # A step's activations are ~1 GB of short-lived tensors of varying shapes: the 20-minute soak saw the
        # learner's floor jump 1.97 -> 2.60 GB and stay (heap fragmentation). A trim per step (milliseconds)
        # hands the freed pages back.
        self._trimmer = HeapTrimmer(every=1)
        if cfg.cpu_affinity:
            os.sched_setaffinity(0, set(cfg.cpu_affinity))
            torch.set_num_threads(len(cfg.cpu_affinity))

    def node_id(self) -> str:
        """The Ray node this actor runs on (placement tests)."""
        import ray

        return ray.get_runtime_context().get_node_id()

    def address(self) -> tuple[str, int]:
        """A free port on this actor's node: rank 0 hosts the torch.distributed rendezvous."""
        import socket

        import ray

        with socket.socket() as sock:
            sock.bind(("", 0))
            return ray.util.get_node_ip_address(), sock.getsockname()[1]

    def setup(self, master_addr: str, master_port: int) -> dict:
        """Join the process group (all ranks call this concurrently) and build the DeepSpeed engine."""
        rank, world_size, cfg, model_cfg, seed = self.rank, self.world_size, self.cfg, self.model_cfg, self.seed
        os.environ.update({"MASTER_ADDR": master_addr, "MASTER_PORT": str(master_port), "RANK": str(rank),
                           "WORLD_SIZE": str(world_size), "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1"})
        import deepspeed
        from transformers import AutoModelForCausalLM

        from rl.experts import experts_implementation
        gpu = torch.cuda.is_available() and cfg.num_gpus > 0
        backend = cfg.dist_backend if cfg.dist_backend != "auto" else ("nccl" if gpu else "gloo")
        deepspeed.init_distributed(dist_backend=backend)
        torch.manual_seed(seed)
        self.device = torch.device("cuda", 0) if gpu else torch.device("cpu")
        dtype = getattr(torch, model_cfg.dtype)
        kernels = experts_implementation(self.device)  # rl/experts.py on CPU, transformers' own on GPUs
        model = AutoModelForCausalLM.from_pretrained(model_cfg.resolved_path(), dtype=dtype, **kernels)
        mtp = load_mtp(model, cfg, model_cfg.resolved_path())
        self.frozen = []
        if cfg.freeze_router:
            for name, p in model.named_parameters():
                if name in set(router_parameter_names(model)):
                    p.requires_grad_(False)
                    self.frozen.append(name)
        # routing counts from the hooks feed the load metrics and the bias update (issue 8)
        self.routing = RoutingMonitor(model) if router_parameter_names(model) else None
        balancing = bool(self.routing and self.routing.has_bias and cfg.router_bias_rate > 0)
        self._hidden = None  # the policy's final-norm output of the latest forward (the MTP heads' input)
        if mtp is not None:
            from rl.mtp import hook_hidden

            # a submodule, so DeepSpeed optimises, shards and checkpoints the heads with the policy; attached
            # after the routing monitor (it tracks the policy's routers), the heads' router frozen like them
            model.add_module(MTP_MODULE, mtp)
            if cfg.freeze_router:
                for name in router_parameter_names(mtp):
                    mtp.get_parameter(name).requires_grad_(False)
                    self.frozen.append(f"{MTP_MODULE}.{name}")
            hook_hidden(model, self._keep_hidden)
        if self.rank == 0 and self.routing is not None:
            arch = type(model).__name__
            print(f"learner: {len(self.routing.routers)} MoE routers in {arch}, "
                  f"{'frozen' if self.frozen else 'trained'}; expert-bias balancing "
                  + (f"on (rate {cfg.router_bias_rate:g})" if balancing else
                     f"is a no-op: {arch} has no routing bias" if not self.routing.has_bias else "off (rate 0)"),
                  flush=True)
        ds_config = {
            "train_micro_batch_size_per_gpu": cfg.micro_batch_size,
            "gradient_accumulation_steps": 1,
            # the number of micro-batches varies per step (dropped groups, ranks' shards): backward() only
            # accumulates and step() is the boundary that reduces gradients and updates (DeepSpeed >= 0.19)
            "managed_gradient_accumulation": False,
            "gradient_clipping": cfg.grad_clip,
            "zero_optimization": {"stage": cfg.zero_stage},
            "optimizer": {"type": "AdamW", "params": {"lr": cfg.lr, "betas": list(cfg.betas),
                                                      "weight_decay": cfg.weight_decay, "torch_adam": True}},
            "bf16": {"enabled": model_cfg.dtype == "bfloat16"},
            "steps_per_print": 10**9,
            "wall_clock_breakdown": False,
        }
        # loss.kl_coef > 0: a frozen, unsharded copy of the starting policy (model.path, also after --resume)
        # scores every micro-batch once more under no_grad; kl_coef 0 loads nothing
        self.ref_model = None
        if self.loss_cfg.kl_coef > 0:
            self.ref_model = AutoModelForCausalLM.from_pretrained(model_cfg.resolved_path(), dtype=dtype, **kernels)
            self.ref_model.requires_grad_(False).eval().to(self.device)
        params = [p for p in model.parameters() if p.requires_grad]
        self.engine, *_ = deepspeed.initialize(model=model, model_parameters=params, config=ds_config)
        # cleared for good if the model's cache cannot share a prompt (see share_prompts); the MTP heads need the
        # whole sequences' hidden states from one forward, so they run without prompt sharing
        self._prefix_ok = mtp is None
        self.mtp = mtp
        self._prefix_checked = False  # share_prompts is checked against whole sequences on its first use
        self._counting = False  # the no-grad (logp_old) pass counts expert loads, the training pass does not
        self.version = 0
        self.busy_seconds = 0.0
        self.started = time.time()
        return {"rank": self.rank, "frozen": self.frozen, "device": str(self.device), "backend": backend,
                "routers": len(self.routing.routers) if self.routing else 0, "bias_balancing": balancing}

    # -- one optimizer step per mini-batch ---------------------------------------------------------
    def _keep_hidden(self, hidden: torch.Tensor) -> None:
        self._hidden = hidden  # [B, L, H], detached: the MTP loss trains the heads only (rl/mtp.py)

    def _logprobs(self, mb: dict, grad: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.cfg.share_prompts and self._prefix_ok and "prompt_len" in mb:
            out = self._shared_prompt_logprobs(mb, grad)
            if out is not None:
                return out
        with self.routing.counting(mb["attention"]) if self.routing and self._counting else _nullcontext():
            return self._full_logprobs(mb, grad)

    def _tempered_logits(self, model, mb: dict, grad: bool) -> torch.Tensor:
        """Whole-sequence logits of `model` (the policy engine or the frozen reference) at the rollout temperature,
        [B, L-1, V]: position t predicts token t+1."""
        with torch.set_grad_enabled(grad), torch.autocast(
            self.device.type, dtype=torch.bfloat16, enabled=self.cfg.autocast_bf16
        ):
            logits = model(input_ids=mb["input_ids"].to(self.device),
                           attention_mask=mb["attention"].to(self.device)).logits  # [B, L, V]
        return logits[:, :-1] / self.temperature  # [B, L-1, V]

    def _full_logprobs(self, mb: dict, grad: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        logits = self._tempered_logits(self.engine, mb, grad)  # [B, L-1, V]
        logp = token_logprobs(logits, mb["targets"].to(self.device))  # [B, L-1]
        with torch.no_grad():
            entropy = token_entropy(logits.detach()) if grad else None  # [B, L-1]
        return logp, entropy

    def _ref_logprobs(self, mb: dict) -> torch.Tensor:
        """log pi_ref of the targets [B, L-1] under the frozen starting policy (loss.kl_coef)."""
        with torch.no_grad():
            logits = self._tempered_logits(self.ref_model, mb, grad=False)  # [B, L-1, V]
            return token_logprobs(logits, mb["targets"].to(self.device)).float().cpu()  # [B, L-1]

    def _shared_prompt_logprobs(self, mb: dict, grad: bool) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        """_full_logprobs with each distinct prompt run once (share_prompts); None when no prompt repeats.

        Pass 1 runs the U distinct prompts [U, P] (right-padded) and keeps their keys/values; the cache rows are
        then repeated for the B samples, and pass 2 runs only the responses [B, R] at positions p_b.. with a mask
        that sees sample b's p_b prompt keys and its own earlier response keys. The last prompt position's logits
        (pass 1) score response token 0. Gradients flow through the cached keys/values into pass 1."""
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer

        dev = self.device
        ids, plen = mb["input_ids"], mb["prompt_len"]  # [B, L], [B]
        rlen = mb["attention"].sum(1) - plen  # [B]
        b = ids.shape[0]
        index: dict[tuple[int, ...], int] = {}
        rows = [index.setdefault(tuple(ids[i, : int(plen[i])].tolist()), len(index)) for i in range(b)]
        if len(index) == b or int(rlen.min()) < 1 or int(plen.min()) < 1:
            return None
        u, pmax, rmax = len(index), int(plen.max()), int(rlen.max())
        prompt_ids = torch.zeros(u, pmax, dtype=torch.long)  # [U, P]
        prompt_att = torch.zeros(u, pmax, dtype=torch.long)  # [U, P]
        for key, k in index.items():
            prompt_ids[k, : len(key)] = torch.tensor(key)
            prompt_att[k, : len(key)] = 1
        ar = torch.arange(rmax)
        in_resp = ar[None, :] < rlen[:, None]  # [B, R]
        cols = (plen[:, None] + ar[None, :]).clamp(max=ids.shape[1] - 1)  # [B, R] positions of the responses
        resp_ids = torch.where(in_resp, ids.gather(1, cols), 0)  # [B, R]
        rows_t = torch.tensor(rows)  # [B] sample -> distinct prompt
        # attention of response query q of sample b: prompt keys j < p_b, response keys k <= q
        prefix_ok = torch.arange(pmax)[None, :] < plen[:, None]  # [B, P]
        causal = torch.ones(rmax, rmax, dtype=torch.bool).tril()  # [R, R]
        mask4 = torch.cat([prefix_ok[:, None, None, :].expand(b, 1, rmax, pmax),
                           causal[None, None].expand(b, 1, rmax, rmax)], dim=-1)  # [B, 1, R, P+R]
        mult = torch.bincount(rows_t, minlength=u).double()  # [U] samples per distinct prompt

        with torch.set_grad_enabled(grad), torch.autocast(dev.type, dtype=torch.bfloat16,
                                                          enabled=self.cfg.autocast_bf16):
            with self._weighted_counting(prompt_att.double() * mult[:, None]):
                out1 = self.engine(input_ids=prompt_ids.to(dev), attention_mask=prompt_att.to(dev), use_cache=True)
            cache = out1.past_key_values
            if type(cache) is not DynamicCache or any(type(layer) is not DynamicLayer for layer in cache.layers):
                self._prefix_ok = False  # e.g. sliding-window or hybrid caches: run whole sequences from now on
                print(f"learner: share_prompts off, {type(cache).__name__} cannot be shared", flush=True)
                return None
            for layer in cache.layers:  # repeat each distinct prompt's keys/values for its samples
                layer.keys = layer.keys.index_select(0, rows_t.to(dev))
                layer.values = layer.values.index_select(0, rows_t.to(dev))
            with self.routing.counting(in_resp) if self.routing and self._counting else _nullcontext():
                out2 = self.engine(input_ids=resp_ids.to(dev), attention_mask=mask4.to(dev),
                                   position_ids=(plen[:, None] + ar[None, :]).to(dev), past_key_values=cache,
                                   use_cache=True)
        first = out1.logits[rows_t.to(dev), (plen - 1).to(dev)]  # [B, V] scores response token 0
        logits = torch.cat([first[:, None], out2.logits[:, :-1]], dim=1) / self.temperature  # [B, R, V]: k scores token k
        logp_r = token_logprobs(logits, resp_ids.to(dev))  # [B, R]
        # back to collate's shifted coordinates: response token k of sample b sits at position p_b - 1 + k
        bi, ki = in_resp.nonzero(as_tuple=True)
        where = (bi.to(dev), (plen[bi] - 1 + ki).to(dev))
        width = ids.shape[1] - 1
        logp = torch.zeros(b, width, dtype=logp_r.dtype, device=dev).index_put(where, logp_r[bi.to(dev), ki.to(dev)])
        entropy = None
        if grad:
            with torch.no_grad():
                ent_r = token_entropy(logits.detach())  # [B, R]
                entropy = torch.zeros(b, width, dtype=ent_r.dtype, device=dev).index_put(
                    where, ent_r[bi.to(dev), ki.to(dev)])
        return logp, entropy

    def _check_shared_prompts(self, mb: dict, tolerance: float = 1e-4) -> None:
        """Once per learner: the shared-prompt logprobs must equal the whole-sequence ones on a real micro-batch
        (within the rollout parity tolerance); otherwise share_prompts is turned off for this policy."""
        with torch.no_grad():
            shared = self._shared_prompt_logprobs(mb, grad=False)
            if shared is None:
                return  # no prompt repeats in this micro-batch: check on a later step
            full, _ = self._full_logprobs(mb, grad=False)
        self._prefix_checked = True
        m = mb["mask"].to(full.device).bool()
        gap = float((shared[0] - full)[m].abs().max()) if bool(m.any()) else 0.0
        if not gap <= tolerance:
            self._prefix_ok = False
            print(f"learner: share_prompts off: shared-prompt logprobs differ from whole sequences by {gap:.2e} "
                  f"(> {tolerance:g}) for {type(self.engine.module).__name__}", flush=True)

    def _weighted_counting(self, weights: torch.Tensor):
        """Expert loads of a pass over distinct prompts, each prompt token counted once per sample that shares
        it (so the counts equal those of running every sample whole). weights: [U, P], 0 on padding."""
        if not (self.routing and self._counting):
            return _nullcontext()
        counts = self.routing.counts
        flat = weights.reshape(-1)  # [U * P]

        def hook_for(name):
            def hook(module, inputs, output):
                if not (isinstance(output, tuple) and len(output) >= 3):
                    raise RuntimeError(f"router {name} ({type(module).__name__}) did not return top-k indices as "
                                       "its third output; set learner.share_prompts=false for this policy")
                idx = output[2].detach().reshape(-1, output[2].shape[-1])  # [U * P, k]
                w = flat.to(idx.device).repeat_interleave(idx.shape[1])  # [U * P * k]
                counts[name] += torch.bincount(idx.reshape(-1), weights=w,
                                               minlength=counts[name].numel()).round().long().cpu()
            return hook

        handles = [r.register_forward_hook(hook_for(n)) for n, r in self.routing.routers.items()]

        class _Ctx:
            def __enter__(self):
                return None

            def __exit__(self, *exc):
                for h in handles:
                    h.remove()
                return False

        return _Ctx()

    def train_step(self, batch: dict, version: int) -> dict:
        """batch: this rank's shard from `collate`. All ranks must call with the same number of micro-batches
        (`num_micro` in the batch). Returns loss metrics summed over tokens plus timing."""
        t0 = time.time()
        cfg, mbs = self.cfg, self.cfg.micro_batch_size
        n = len(batch["advantages"])
        num_micro = int(batch.pop("num_micro"))
        # Length bucketing: micro-batches of similar lengths are trimmed to less right padding (~25% fewer
        # positions for 8 x 8 math/JSON batches). The loss and metrics are sums over tokens, so the order of
        # the samples does not matter (up to float rounding of the accumulation).
        if cfg.share_prompts and self._prefix_ok and not self._prefix_checked and "prompt_len" in batch and n:
            self._check_shared_prompts(_slice(batch, 0, mbs))
        sharing = cfg.share_prompts and self._prefix_ok and "prompt_len" in batch
        # with shared prompts the groups stay together (sorting by length would scatter them over micro-batches)
        mini = max(1, min(cfg.mini_batches, num_micro))
        per_mini = -(-num_micro // mini)
        if cfg.length_bucketing and n > 1 and not sharing:
            # sorted within each optimizer step's share of the (shuffled) batch, not across the whole batch:
            # a global sort would give one mini-batch all the long samples and another all the short ones
            lengths, span = batch["attention"].sum(1), per_mini * mbs
            order = torch.cat([lo + torch.argsort(lengths[lo : lo + span], descending=True, stable=True)
                               for lo in range(0, n, span)])  # [B]
            batch = {k: v[order] for k, v in batch.items()}
        # With one optimizer step per batch the training forward runs under the same weights as the no-grad
        # pass would, so its logprobs are logp_old; keep its graph for the backward (reuse_forward).
        reuse = cfg.reuse_forward and mini == 1
        kept: dict[int, tuple[dict, torch.Tensor, torch.Tensor | None]] = {}
        # logp_old: the learner's logprobs before the update (masked IS compares them with vLLM's)
        logp_old = torch.zeros_like(batch["logp_rollout"])  # [B, L-1]
        logp_ref = torch.zeros_like(batch["logp_rollout"]) if self.ref_model is not None else None  # [B, L-1]
        for i in range(0, n, mbs):
            mb = _slice(batch, i, i + mbs)
            # the batch's expert loads, counted once, under the weights the step starts from
            self._counting = True
            try:
                lp, entropy = self._logprobs(mb, grad=reuse)
            finally:
                self._counting = False
            if reuse:
                kept[i] = (mb, lp, entropy, self._hidden)
            logp_old[i : i + mbs, : lp.shape[1]] = lp.detach().float().cpu()
            if logp_ref is not None:
                ref = self._ref_logprobs(mb)  # [b, w-1]
                logp_ref[i : i + mbs, : ref.shape[1]] = ref
        local_valid = count_valid_tokens(logp_old, batch["logp_rollout"], batch["mask"], self.loss_cfg,
                                         finished_by_length=batch["finished_by_length"]) if n else 0
        # MTP depth 1 at position i predicts t_{i+2} where mask[i+1]: the targets of mask[:, 1:] (every response
        # token once the prompt has 2+ tokens), counted over the whole batch like the policy loss's valid tokens
        local_mtp = float(batch["mask"][:, 1:].sum()) if self.mtp is not None and n else 0.0
        total = torch.tensor([float(local_valid), local_mtp])
        if self.world_size > 1:
            torch.distributed.all_reduce(total)
        total_valid, total_mtp = int(total[0].item()), float(total[1].item())
        sums: dict[str, float] = {}
        weight_total = 0.0
        for m in range(mini):
            for j in range(m * per_mini, min(num_micro, (m + 1) * per_mini)):
                lo = j * mbs
                if lo < n and total_valid > 0:
                    if lo in kept:
                        mb, logp_new, entropy, hidden = kept.pop(lo)
                    else:
                        mb = _slice(batch, lo, lo + mbs)
                        logp_new, entropy = self._logprobs(mb, grad=True)
                        hidden = self._hidden
                    width = mb["mask"].shape[1]
                    loss, metrics = policy_loss(
                        logp_new, logp_old[lo : lo + mbs, :width].to(self.device), mb["logp_rollout"].to(self.device),
                        mb["advantages"].to(self.device), mb["mask"].to(self.device), self.loss_cfg,
                        finished_by_length=mb["finished_by_length"].to(self.device), total_valid_tokens=total_valid,
                        entropy=entropy,
                        logp_ref=None if logp_ref is None else logp_ref[lo : lo + mbs, :width].to(self.device),
                    )
                    if self.mtp is not None and total_mtp > 0:
                        loss = loss + self._mtp_loss(mb, hidden, total_mtp, metrics)
                    weight = max(metrics.get("valid_tokens", 0.0), 0.0)
                    weight_total += weight
                    for k, v in metrics.items():
                        if k == "is_weight_max":
                            sums[k] = max(sums.get(k, 0.0), v)
                        else:
                            sums[k] = sums.get(k, 0.0) + (v if k in _SUMMED else v * weight)
                    sums["sequences"] = sums.get("sequences", 0.0) + len(mb["advantages"])
                else:
                    # this rank has no data for the micro-batch; ZeRO collectives still need a backward
                    loss = sum(p.sum() for p in self.engine.module.parameters() if p.requires_grad) * 0.0
                # DeepSpeed averages gradients over data-parallel ranks; the loss is already normalised by the
                # whole batch's valid tokens, so scale back up to a sum over ranks
                self.engine.backward(loss * self.world_size, scale_wrt_gas=False)
            self.engine.step()
        kept.clear()  # graphs of micro-batches that got no backward (no valid token in the batch)
        self.version = version
        self._trimmer.tick()
        # token-weighted means of the per-micro-batch metrics (counts stay sums)
        for k in list(sums):
            if k not in _SUMMED + ("sequences", "is_weight_max"):
                sums[k] = sums[k] / weight_total if weight_total else 0.0
        seconds = time.time() - t0
        self.busy_seconds += seconds
        for k in ("pg_loss", "valid_tokens", "sequences"):
            sums.setdefault(k, 0.0)  # a batch with no valid token (all overlong-filtered) still reports
        sums["total_valid_tokens"] = float(total_valid)
        if sums.get("mtp/tokens"):  # token means over all depths: the drafter's training loss and top-1 accuracy
            sums["mtp/loss"] = sums.pop("mtp/loss_sum") / sums["mtp/tokens"]
            sums["mtp/accuracy"] = sums.pop("mtp/correct") / sums["mtp/tokens"]
        sums.update(self._balance_routing())
        sums["grad_norm"] = float(self.engine.get_global_grad_norm() or 0.0)
        sums["seconds"] = seconds
        sums["tokens"] = float(batch["attention"].sum())
        # after the heap trim: what the learner holds between steps
        sums["rss_mb_after_step"] = psutil.Process().memory_info().rss / 2**20
        return sums

    def _mtp_loss(self, mb: dict, hidden: torch.Tensor, total_mtp: float, metrics: dict) -> torch.Tensor:
        """learner.mtp_loss_weight x the mean over depths of each depth's token-mean cross-entropy (DeepSeek-V3
        sec. 2.2), this micro-batch's share of it; counts go to metrics (summed over micro-batches)."""
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.autocast_bf16):
            summed, counts = self.mtp.loss(self.engine.module, mb["input_ids"].to(self.device), hidden,
                                           mb["attention"].to(self.device), mb["mask"].to(self.device))
        metrics.update(counts)
        metrics["mtp/loss_sum"] = float(summed.detach())
        return self.cfg.mtp_loss_weight * summed / (total_mtp * len(self.mtp.layers))

    def _balance_routing(self) -> dict[str, float]:
        """Load metrics of this step's batch (all ranks) and, where the router has a bias, the bias update."""
        if self.routing is None:
            return {}
        self.routing.all_reduce()
        metrics = self.routing.metrics()
        if self.cfg.router_bias_rate > 0 and self.routing.has_bias:
            metrics["router/bias_layers_updated"] = float(self.routing.update_bias(self.cfg.router_bias_rate))
        self.routing.reset()
        return metrics

    def routing_biases(self) -> dict[str, list[float]]:
        """Current routing bias per router (tests, debugging); empty for architectures without one."""
        from rl.routing import routing_bias

        if self.routing is None:
            return {}
        return {n: routing_bias(r).tolist() for n, r in self.routing.routers.items() if routing_bias(r) is not None}

    # -- weights out ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        """Full weights under checkpoint names (HF's fused MoE tensors reverted), CPU, model dtype."""
        from transformers.modeling_utils import revert_weight_conversion

        module = self.engine.module
        if self.cfg.zero_stage == 3:
            import deepspeed

            with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
                state = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
        else:
            state = module.state_dict()
        heads = {k[len(MTP_MODULE) + 1:]: state.pop(k) for k in [k for k in state if k.startswith(f"{MTP_MODULE}.")]}
        state = revert_weight_conversion(module, state)
        if heads:  # under the checkpoint's MTP names (model.layers.{num_hidden_layers + k}.*), as vLLM's drafter
            from rl.mtp import checkpoint_state

            state.update(checkpoint_state(heads))
        # clone: under ZeRO every parameter is a view into one flat buffer, and pickling a view ships the whole
        # buffer (measured: 135 views x 28 MB = 3.8 GB per sync before this)
        return {k: v.detach().to("cpu").clone().contiguous() for k, v in state.items()}

    def save_hf(self, path: str) -> str:
        """The policy in Hugging Face format (loads in transformers and vLLM); rank 0 writes."""
        from transformers import AutoTokenizer

        state = self.state_dict()
        if self.rank == 0:
            out = Path(path)
            out.mkdir(parents=True, exist_ok=True)
            module = self.engine.module
            heads = module._modules.pop(MTP_MODULE, None)  # save_pretrained writes the policy's own modules
            try:
                mtp_names = tuple(f"model.layers.{n}." for n in heads.layers) if heads is not None else ()
                policy_state = {k: v for k, v in state.items() if not (mtp_names and k.startswith(mtp_names))}
                module.save_pretrained(out, state_dict=None if self.cfg.zero_stage != 3 else policy_state)
            finally:
                if heads is not None:
                    module.add_module(MTP_MODULE, heads)
            if heads is not None:  # beside it, under the names vLLM's drafter and rl.mtp.load_heads read
                from rl.mtp import write_heads

                write_heads({k: v for k, v in state.items() if k not in policy_state}, out, state["lm_head.weight"])
            src = Path(module.name_or_path)
            AutoTokenizer.from_pretrained(src).save_pretrained(out)
        return path

    def save_state(self, path: str, tag: str) -> None:
        """Optimizer + model state for exact resume (DeepSpeed checkpoint, every rank writes its shard)."""
        import torch

        # the RNG too: nothing in the GRPO step samples today, but dropout or a stochastic loss would (issue 10)
        self.engine.save_checkpoint(path, tag=tag, client_state={"torch_rng": torch.get_rng_state()})

    def load_state(self, path: str, tag: str) -> None:
        import torch

        _, client = self.engine.load_checkpoint(path, tag=tag, load_optimizer_states=True,
                                                load_lr_scheduler_states=True)
        if client and client.get("torch_rng") is not None:
            torch.set_rng_state(client["torch_rng"])

    def parameter_fingerprint(self) -> dict[str, float]:
        """Sum of each parameter (tests: frozen router unchanged, others moved)."""
        return {n: float(p.detach().double().sum()) for n, p in self.engine.module.named_parameters()}

    def stats(self) -> dict:
        return {"busy_seconds": self.busy_seconds, "alive_seconds": time.time() - self.started}
