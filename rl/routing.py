"""MoE routing in the learner: which modules are routers, how loaded each expert is, and aux-loss-free balancing.

Issue 8. During RL the router (gate) weights are frozen (Nemotron 3 Nano report, sec. 3.2.5): a policy-gradient
update on the gate shifts which experts see which tokens, and the rollout engine's and the learner's routing
drift apart faster than the experts themselves. Load balance can still be kept where the architecture has a
routing bias that only affects expert *selection*, not the mixing weights: DeepSeek-V3's
`e_score_correction_bias` (aux-loss-free balancing, DeepSeek-V3 report arXiv 2412.19437 sec. 2.1.2):

    bias_e += rate * sign(mean_load - load_e)          after every optimizer step, from the batch's counts

Qwen3-MoE (the tiny policy) has no such bias: balancing is then a no-op (logged once), and only the load metrics
are reported. Routers are found structurally (a child named `gate` or `router` next to a child named `experts`),
which covers Qwen3-MoE, DeepSeek-V3 and NemotronH in transformers 5.19 without naming classes.
"""

from __future__ import annotations

import torch
from torch import nn

ROUTER_CHILD_NAMES = ("gate", "router")
BIAS_NAMES = ("e_score_correction_bias",)  # DeepSeek-V3, NemotronH, GLM-4.5 in transformers


def router_modules(model: nn.Module) -> dict[str, nn.Module]:
    """{qualified name: router module} for every MoE block (a module with both `experts` and `gate`/`router`)."""
    out = {}
    for name, module in model.named_modules():
        children = dict(module.named_children())
        if "experts" not in children:
            continue
        for child in ROUTER_CHILD_NAMES:
            if child in children:
                out[f"{name}.{child}" if name else child] = children[child]
    return out


def router_parameter_names(model: nn.Module) -> list[str]:
    """Names of the trainable router parameters (what freeze_router freezes); bias buffers are not parameters."""
    prefixes = tuple(f"{n}." for n in router_modules(model))
    return [n for n, _ in model.named_parameters() if n.startswith(prefixes)]


def routing_bias(router: nn.Module) -> torch.Tensor | None:
    """The router's selection bias buffer, if the architecture has one."""
    for name in BIAS_NAMES:
        bias = getattr(router, name, None)
        if isinstance(bias, torch.Tensor):
            return bias
    return None


def _num_experts(router: nn.Module) -> int:
    n = getattr(router, "num_experts", None)
    return int(n) if n is not None else int(router.weight.shape[0])


class RoutingMonitor:
    """Counts top-k selections per expert and layer through forward hooks on the routers.

    The routers of transformers' MoE blocks return (router_logits, top_k_weights, top_k_indices) with one row per
    token in (batch, position) order; `mask` ([B, L], 1 = real token) keeps padding out of the counts.

        mon = RoutingMonitor(model)
        with mon.counting(attention_mask):
            model(input_ids, attention_mask=attention_mask)
        mon.counts           # {router name: LongTensor [E]}
    """

    def __init__(self, model: nn.Module):
        self.routers = router_modules(model)
        self.counts: dict[str, torch.Tensor] = {n: torch.zeros(_num_experts(r), dtype=torch.long)
                                                for n, r in self.routers.items()}
        self._mask: torch.Tensor | None = None
        self._active = False
        self._handles = [r.register_forward_hook(self._hook(n)) for n, r in self.routers.items()]

    @property
    def has_bias(self) -> bool:
        return any(routing_bias(r) is not None for r in self.routers.values())

    def _hook(self, name: str):
        def hook(module, inputs, output):
            if not self._active:
                return
            indices = output[2] if isinstance(output, tuple) and len(output) >= 3 else None
            if indices is None:
                raise RuntimeError(f"router {name} ({type(module).__name__}) did not return top-k indices as its "
                                   "third output; RoutingMonitor supports transformers' TopK routers")
            idx = indices.detach().reshape(-1, indices.shape[-1])  # [N, k]
            if self._mask is not None and self._mask.numel() == idx.shape[0]:
                idx = idx[self._mask.reshape(-1).to(idx.device).bool()]  # [N_valid, k]
            self.counts[name] += torch.bincount(idx.reshape(-1).cpu(), minlength=self.counts[name].numel())
        return hook

    def counting(self, mask: torch.Tensor | None = None):
        monitor = self

        class _Ctx:
            def __enter__(self):
                monitor._mask, monitor._active = mask, True
                return monitor

            def __exit__(self, *exc):
                monitor._mask, monitor._active = None, False
                return False

        return _Ctx()

    def reset(self) -> None:
        for c in self.counts.values():
            c.zero_()

    def all_reduce(self) -> None:
        """Sum the counts over data-parallel ranks, so every rank applies the same bias update."""
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return
        if torch.distributed.get_world_size() == 1 or not self.counts:
            return
        flat = torch.cat([c for c in self.counts.values()]).double()  # [layers * E]
        torch.distributed.all_reduce(flat)
        i = 0
        for c in self.counts.values():
            c.copy_(flat[i : i + c.numel()].long())
            i += c.numel()

    def metrics(self) -> dict[str, float]:
        """router/load_imbalance/<layer> = max load / mean load (1 = perfectly balanced) and the max over layers."""
        out = {}
        for i, counts in enumerate(self.counts.values()):
            total = float(counts.sum())
            if total > 0:
                out[f"router/load_imbalance/layer{i}"] = float(counts.max()) / (total / counts.numel())
        if out:
            out["router/load_imbalance_max"] = max(out.values())
        return out

    def update_bias(self, rate: float) -> int:
        """bias_e += rate * sign(mean_load - load_e) on every router with a bias; returns how many were updated."""
        updated = 0
        for name, router in self.routers.items():
            bias = routing_bias(router)
            load = self.counts[name].double()  # [E]
            if bias is None or float(load.sum()) == 0:
                continue
            step = rate * torch.sign(load.mean() - load)  # [E]
            with torch.no_grad():
                bias.add_(step.to(bias.dtype).to(bias.device))
            updated += 1
        return updated

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
