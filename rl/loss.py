"""GRPO loss with masked importance sampling: its config (LossConfig) and pure tensor functions (issue 4)."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

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
    """KL penalty (k3) to a frozen reference policy, the run's starting model.path; the learner then holds an
    unsharded copy of it and runs one more no-grad forward per micro-batch. 0 (default) loads no reference."""
    overlong_filter: bool = True
    """Samples cut by the length limit get no loss (DAPO overlong filtering, Nano report 3.2.5)."""
    drop_zero_signal: bool = False
    """Drop groups whose rewards are all equal (they are always counted in metrics)."""



# Shapes used below: B sequences in a (micro-)batch, T response positions, V vocabulary size,
# G samples per group (GRPO), N groups.
#
# How the learner calls these, once per optimisation step over a batch split into micro-batches:
#     total = count_valid_tokens(logp_old, logp_rollout, mask, cfg, finished_by_length=fbl)  # whole batch
#     for each micro-batch:
#         loss, metrics = policy_loss(..., cfg, finished_by_length=fbl_mb, total_valid_tokens=total)
#         loss.backward()   # accumulated gradients == gradient of the full-batch loss
#
# Denominator rule: a token is *valid* when it is trainable (mask == 1), its sequence was not overlong-filtered
# and importance sampling kept it. The loss is a sum over valid tokens divided by the number of valid tokens in
# the whole batch (DAPO's token-level mean, arXiv 2503.14476 sec. 3.3). IS-masked tokens do NOT count: the
# per-token step size then does not shrink as the train/rollout mismatch grows (the mismatch is reported by
# is_masked_fraction instead of silently down-weighting every other token), and it is the same rule as for
# overlong-filtered and tool tokens: a token that carries no gradient does not dilute the mean.


# ---------------------------------------------------------------------------------------------- advantages


def _as_groups(rewards: Tensor) -> Tensor:
    """rewards [G] or [N, G] -> float [N, G]; bad shapes and non-finite rewards raise (STYLE.md rule 11)."""
    if not isinstance(rewards, Tensor):
        raise TypeError(f"rewards must be a torch.Tensor, got {type(rewards).__name__}")
    if rewards.dim() not in (1, 2) or rewards.numel() == 0:
        raise ValueError(
            f"rewards must have shape [G] (one group) or [num_groups, G] with G >= 1, got {tuple(rewards.shape)}"
        )
    if not rewards.is_floating_point():
        rewards = rewards.float()  # [G] or [N, G]
    if not bool(torch.isfinite(rewards).all()):
        raise ValueError("rewards contain NaN or inf: every verifier must return a finite score; fix the reward")
    return rewards.reshape(-1, rewards.shape[-1])  # [N, G]


def zero_signal_groups(rewards: Tensor) -> Tensor:
    """Which groups carry no learning signal because all their rewards are equal.

    rewards: [G] (one group) or [N, G]. Returns bool [N] ([1] for a single group). Equality is exact: verifier
    scores are discrete, and any real difference, however small, is signal the advantage keeps.

    >>> zero_signal_groups(torch.tensor([[1.0, 1.0, 1.0], [0.0, 1.0, 0.0]]))
    tensor([ True, False])
    """
    r = _as_groups(rewards)  # [N, G]
    return r.amax(dim=-1) == r.amin(dim=-1)  # [N]


def count_zero_signal_groups(rewards: Tensor) -> int:
    """Number of groups whose rewards are all equal (their GRPO advantages are all zero).

    >>> count_zero_signal_groups(torch.tensor([[1.0, 1.0], [0.0, 1.0], [0.0, 0.0]]))
    2
    """
    return int(zero_signal_groups(rewards).sum().item())


def grpo_advantages(rewards: Tensor, *, normalize_std: bool = True, eps: float = 1e-6) -> Tensor:
    """Group-relative advantages A_i = (r_i - mean r) / (std r + eps) (DeepSeekMath, arXiv 2402.03300 sec. 4.1).

    rewards: [G] for one group or [N, G] for N groups of G samples; the result has the same shape.
    normalize_std=False drops the std division (Dr. GRPO, arXiv 2503.20783), leaving r_i - mean r.

    std is the POPULATION std (divide by G, not G - 1): the G samples are the whole group being normalised,
    not an estimate of a wider population, and it is defined for G = 1 (sample std is NaN there). With it the
    advantages of a group have unit variance: 0/1 rewards with one success in four give
    +sqrt(3) and -1/sqrt(3) (sample std would give +1.5 and -0.5).

    A group whose rewards are all equal gets exactly zero advantages (not rounding noise blown up by 1/eps).

    >>> grpo_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0]), normalize_std=False)
    tensor([ 0.7500, -0.2500, -0.2500, -0.2500])
    """
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    r = _as_groups(rewards)  # [N, G]
    adv = r - r.mean(dim=-1, keepdim=True)  # [N, G]
    if normalize_std:
        std = r.std(dim=-1, correction=0, keepdim=True)  # [N, 1]  population std
        adv = adv / (std + eps)  # [N, G]
    flat = zero_signal_groups(r)[:, None]  # [N, 1]
    adv = torch.where(flat, torch.zeros_like(adv), adv)  # [N, G]
    return adv.reshape(rewards.shape)  # [G] or [N, G]


# ------------------------------------------------------------------------------------ policy-gradient loss


def _check_token_inputs(
    tokens: dict[str, Tensor | None],
    mask: Tensor,
    per_sequence: dict[str, Tensor | None],
) -> None:
    """Raise ValueError naming the tensor and the expected shape when the inputs do not line up.

    tokens: float [B, T] tensors, the first one fixes the shape; per_sequence: [B] tensors.
    """
    first, ref = next(iter(tokens.items()))
    if ref.dim() != 2:
        raise ValueError(f"{first} must be [B, T] (sequences x response positions), got {tuple(ref.shape)}")
    shape = tuple(ref.shape)
    for name, t in {**tokens, "mask": mask}.items():
        if t is not None and tuple(t.shape) != shape:
            raise ValueError(f"{name} must have the shape of {first} {shape}, got {tuple(t.shape)}")
    for name, t in tokens.items():
        if t is not None and not t.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor, got {t.dtype}")
    for name, t in per_sequence.items():
        if t is not None and tuple(t.shape) != shape[:1]:
            raise ValueError(f"{name} must be [B] = {shape[:1]} (one value per sequence), got {tuple(t.shape)}")
    if bool(((mask != 0) & (mask != 1)).any()):
        raise ValueError("mask must contain only 0 (padding / tool observation) and 1 (trainable token)")


def _valid_tokens(
    logp_old: Tensor, logp_rollout: Tensor, mask: Tensor, cfg: LossConfig, finished_by_length: Tensor | None
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Token selection and IS weights, shared by policy_loss and count_valid_tokens so both count alike.

    Returns (eligible, valid, log_w, weight), all [B, T]: eligible = trainable and not overlong-filtered;
    valid = eligible and kept by importance sampling; log_w = log w on eligible tokens (0 elsewhere);
    weight = the IS weight applied to each valid token (0 elsewhere).
    """
    eligible = mask != 0  # [B, T] bool
    if cfg.overlong_filter and finished_by_length is not None:
        eligible = eligible & ~finished_by_length.bool()[:, None]  # [B, T]
    dtype = torch.promote_types(logp_old.dtype, torch.float32)
    # where (not multiply): padding may hold NaN/inf logprobs, and NaN * 0 is NaN.
    log_w = torch.where(eligible, (logp_old.detach() - logp_rollout.detach()).to(dtype), 0.0)  # [B, T]
    if bool(torch.isnan(log_w).any()):
        raise ValueError(
            "logp_old or logp_rollout is NaN on a trainable token: check the learner forward and vLLM's logprobs"
        )
    w = log_w.exp()  # [B, T]  1 off eligible tokens
    if cfg.is_mode == "token_mask":
        keep = (w >= cfg.is_low) & (w <= cfg.is_high)  # [B, T]  bounds inclusive
        weight = w  # [B, T]
    elif cfg.is_mode == "token_truncate":
        keep = torch.ones_like(eligible)  # [B, T]
        weight = w.clamp(max=cfg.is_high)  # [B, T]  truncated IS (no lower bound)
    elif cfg.is_mode == "sequence_mask":
        n = eligible.sum(dim=-1)  # [B]
        seq_w = (log_w.sum(dim=-1) / n.clamp(min=1)).exp()  # [B]  geometric mean of w over eligible tokens
        keep = ((seq_w >= cfg.is_low) & (seq_w <= cfg.is_high))[:, None].expand_as(eligible)  # [B, T]
        # Kept sequences still correct each token by its own w: the sequence gate rejects trajectories that
        # drifted as a whole, the per-token w stays the unbiased correction inside the ones we keep.
        weight = w  # [B, T]
    elif cfg.is_mode == "none":
        keep = torch.ones_like(eligible)  # [B, T]
        weight = torch.ones_like(w)  # [B, T]
    else:  # LossConfig validates is_mode; a hand-built config could still bypass it
        raise ValueError(f"unknown is_mode {cfg.is_mode!r}: use token_mask, token_truncate, sequence_mask or none")
    valid = eligible & keep  # [B, T]
    weight = torch.where(valid, weight, 0.0)  # [B, T]
    return eligible, valid, log_w, weight


def count_valid_tokens(
    logp_old: Tensor,
    logp_rollout: Tensor,
    mask: Tensor,
    cfg: LossConfig,
    *,
    finished_by_length: Tensor | None = None,
) -> int:
    """Number of tokens that carry loss in this batch: the `total_valid_tokens` to pass to policy_loss.

    Call it on the WHOLE batch (all micro-batches) before gradient accumulation. It needs no learner forward:
    masking depends only on logp_old, logp_rollout, the mask and the overlong flags.
    logp_old, logp_rollout, mask: [B, T]; finished_by_length: [B] bool.
    """
    _check_token_inputs(
        {"logp_old": logp_old, "logp_rollout": logp_rollout}, mask, {"finished_by_length": finished_by_length}
    )
    _, valid, _, _ = _valid_tokens(logp_old, logp_rollout, mask, cfg, finished_by_length)
    return int(valid.sum().item())


def _masked_mean(x: Tensor, m: Tensor) -> Tensor:
    """Mean of x [B, T] over m [B, T] (bool); 0 when m is empty."""
    return torch.where(m, x, 0.0).sum() / m.sum().clamp(min=1)  # []


def policy_loss(
    logp_new: Tensor,
    logp_old: Tensor,
    logp_rollout: Tensor,
    advantages: Tensor,
    mask: Tensor,
    cfg: LossConfig,
    *,
    finished_by_length: Tensor | None = None,
    total_valid_tokens: int | None = None,
    logp_ref: Tensor | None = None,
    entropy: Tensor | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """Clipped GRPO policy-gradient loss with masked importance sampling (Nemotron 3 Nano report sec. 3.2.5).

    Inputs, B sequences by T response positions:
      logp_new [B, T]      log pi_theta(token), the learner's current forward (the only input with gradient)
      logp_old [B, T]      log pi_old(token), the learner's logprob before this update (no gradient)
      logp_rollout [B, T]  log pi_rollout(token) as reported by vLLM (no gradient)
      advantages [B]       one per sequence (grpo_advantages), broadcast over its tokens (no gradient)
      mask [B, T]          1 on trainable response tokens, 0 on padding and tool-observation tokens
      finished_by_length [B] bool: sequence cut by the length limit; with cfg.overlong_filter it gets no loss
        (DAPO overlong filtering, arXiv 2503.14476 sec. 3.4). None means no sequence was cut.
      total_valid_tokens   valid tokens in the whole batch (count_valid_tokens) when this call sees one
        micro-batch; None means this call sees the whole batch.
      logp_ref [B, T]      reference policy logprobs, required when cfg.kl_coef > 0 (no gradient)
      entropy [B, T]       per-token entropies (token_entropy), only reported as a metric

    Per token: rho = exp(logp_new - logp_old), PPO term max(-A rho, -A clip(rho, 1 - clip_low, 1 + clip_high))
    (asymmetric "clip-higher", DAPO sec. 3.1), scaled by the train/rollout IS weight w = exp(logp_old -
    logp_rollout) according to cfg.is_mode (see LossConfig and _valid_tokens). Tokens the IS rule drops are
    not valid. loss = sum over valid tokens of w * PPO / total_valid_tokens
    (+ kl_coef * sum over valid tokens of k3(ref, new) / total_valid_tokens, Schulman's k3 estimator).

    Returns (loss [], metrics): Python floats, each over this call's tokens:
      pg_loss, valid_tokens, overlong_dropped_sequences, ratio_mean and clip_fraction (valid tokens, a token
      is clipped when the clipped term is strictly larger, so A = 0 never counts), is_weight_mean and
      is_weight_max (raw w over eligible tokens: trainable, not overlong-filtered, before IS masking),
      is_masked_fraction (eligible tokens removed by IS / eligible tokens), kl_rollout_learner (k3 estimate
      of KL(pi_rollout || pi_old) = mean of w - 1 - log w over eligible tokens: unbiased under rollout
      samples and never negative, unlike the mean of logp_rollout - logp_old; measured before IS masking so
      the masked outliers are not hidden), entropy (if given, valid tokens), kl_ref (if logp_ref is given,
      mean k3 over valid tokens). Empty selections report 0.0.
    """
    _check_token_inputs(
        {"logp_new": logp_new, "logp_old": logp_old, "logp_rollout": logp_rollout, "logp_ref": logp_ref,
         "entropy": entropy},
        mask,
        {"advantages": advantages, "finished_by_length": finished_by_length},
    )
    if cfg.kl_coef > 0 and logp_ref is None:
        raise ValueError(f"cfg.kl_coef={cfg.kl_coef} needs logp_ref (reference logprobs): pass it or set kl_coef=0")
    if bool(torch.isnan(logp_new).logical_and(mask != 0).any()):
        raise ValueError("logp_new is NaN on a trainable token: the learner forward diverged")
    dtype = torch.promote_types(logp_new.dtype, torch.float32)

    eligible, valid, log_w, weight = _valid_tokens(logp_old, logp_rollout, mask, cfg, finished_by_length)
    n_valid = int(valid.sum().item())
    if total_valid_tokens is None:
        denom = n_valid
    else:
        denom = int(total_valid_tokens)
        if denom < n_valid:
            raise ValueError(
                f"total_valid_tokens={denom} is smaller than the {n_valid} valid tokens of this micro-batch: "
                "pass count_valid_tokens(...) computed on the whole batch"
            )
    denom = max(denom, 1)  # nothing valid anywhere: loss 0, still a graph for backward

    # Off valid tokens every logprob is replaced by 0 (rho = 1): padding, tool and IS-dropped positions may hold
    # NaN/inf, and NaN must not reach the graph even multiplied by 0.
    new = torch.where(valid, logp_new.to(dtype), 0.0)  # [B, T]  gradient flows here only
    old = torch.where(valid, logp_old.detach().to(dtype), 0.0)  # [B, T]
    adv = advantages.detach().to(dtype)[:, None]  # [B, 1]
    ratio = (new - old).exp()  # [B, T]
    unclipped = -adv * ratio  # [B, T]
    clipped = -adv * ratio.clamp(1.0 - cfg.clip_low, 1.0 + cfg.clip_high)  # [B, T]
    per_token = torch.maximum(unclipped, clipped)  # [B, T]
    pg_loss = torch.where(valid, weight * per_token, 0.0).sum() / denom  # []
    loss = pg_loss  # []

    kl_ref = None
    if logp_ref is not None:
        diff = torch.where(valid, logp_ref.detach().to(dtype), 0.0) - new  # [B, T]  log(pi_ref / pi_theta)
        k3 = diff.exp() - diff - 1.0  # [B, T]  >= 0, unbiased for KL(pi_theta || pi_ref)
        kl_ref = _masked_mean(k3.detach(), valid)  # []
        if cfg.kl_coef > 0:
            loss = loss + cfg.kl_coef * torch.where(valid, k3, 0.0).sum() / denom  # []

    w = log_w.exp()  # [B, T]  raw IS weights (1 off eligible tokens)
    n_eligible = eligible.sum().to(dtype)  # []
    dropped = (
        finished_by_length.bool().sum()  # []
        if cfg.overlong_filter and finished_by_length is not None
        else torch.zeros((), dtype=torch.long)  # []
    )
    stats = {
        "pg_loss": pg_loss.detach(),  # []
        "valid_tokens": valid.sum(),  # []
        "overlong_dropped_sequences": dropped,  # []
        "ratio_mean": _masked_mean(ratio.detach(), valid),  # []
        "clip_fraction": _masked_mean((clipped > unclipped).to(dtype), valid),  # []
        "is_weight_mean": _masked_mean(w, eligible),  # []
        "is_weight_max": torch.where(eligible, w, 0.0).amax() if w.numel() else torch.zeros(()),  # []
        "is_masked_fraction": (n_eligible - valid.sum().to(dtype)) / n_eligible.clamp(min=1),  # []
        "kl_rollout_learner": _masked_mean(w - 1.0 - log_w, eligible),  # []
    }
    if entropy is not None:
        stats["entropy"] = _masked_mean(entropy.detach().to(dtype), valid)  # []
    if kl_ref is not None:
        stats["kl_ref"] = kl_ref  # []
    # One device-to-host copy for all metrics instead of one sync per .item().
    values = torch.stack([v.to(device=w.device, dtype=dtype) for v in stats.values()]).tolist()  # [M]
    return loss, {k: float(v) for k, v in zip(stats, values)}


# ---------------------------------------------------------------------------------------- logits -> tokens


def _check_logits(logits: Tensor, chunk_tokens: int) -> None:
    if logits.dim() != 3:
        raise ValueError(f"logits must be [B, T, V] (sequences x positions x vocab), got {tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise ValueError(f"logits must be floating point, got {logits.dtype}")
    if chunk_tokens < 1:
        raise ValueError(f"chunk_tokens must be >= 1, got {chunk_tokens}")


def _chunks(b: int, t: int, chunk_tokens: int):
    """(rows, positions) slice pairs covering [B, T] with at most max(chunk_tokens, T) positions each.

    Short sequences are taken several rows at a time, long ones one row in pieces of chunk_tokens; plain
    slices keep every chunk a view of the logits.
    """
    if t <= chunk_tokens:
        step = max(1, chunk_tokens // max(t, 1))
        for r in range(0, b, step):
            yield slice(r, min(r + step, b)), slice(0, t)
    else:
        for r in range(b):
            for s in range(0, t, chunk_tokens):
                yield slice(r, r + 1), slice(s, min(s + chunk_tokens, t))


def token_logprobs(logits: Tensor, tokens: Tensor, *, chunk_tokens: int = 1024) -> Tensor:
    """log softmax(logits)[token] for each position, in float32 (float64 stays float64).

    logits: [B, T, V], where logits[b, t] is the distribution that produced tokens[b, t] (the caller does the
    one-position shift from the model output); tokens: [B, T] integer ids in [0, V). Returns [B, T].

    Computed as logit[token] - logsumexp(logits) over slices of about chunk_tokens positions, upcast one
    slice at a time: no full [B, T, V] float32 copy or log_softmax output is built (bf16 logits of a long
    response at a 150k vocabulary would need tens of GB for that). Slicing keeps views, so a shifted
    logits[:, :-1] is not copied either.

    >>> token_logprobs(torch.tensor([[[0.0, 0.0]]]), torch.tensor([[1]]))
    tensor([[-0.6931]])
    """
    _check_logits(logits, chunk_tokens)
    b, t, v = logits.shape
    if tokens.dim() != 2 or tuple(tokens.shape) != (b, t):
        raise ValueError(f"tokens must be [B, T] = {(b, t)} to match logits [B, T, V], got {tuple(tokens.shape)}")
    if tokens.is_floating_point() or tokens.dtype == torch.bool:
        raise ValueError(f"tokens must be integer ids, got {tokens.dtype}")
    if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= v):
        raise ValueError(
            f"token ids must lie in [0, {v}), got [{int(tokens.min())}, {int(tokens.max())}]: replace padding "
            "ids (e.g. -100) with any valid id and mask those positions out of the loss"
        )
    dtype = torch.promote_types(logits.dtype, torch.float32)
    out = torch.empty(b, t, dtype=dtype, device=logits.device)  # [B, T]
    for rows, pos in _chunks(b, t, chunk_tokens):
        z = logits[rows, pos].to(dtype)  # [b', t', V]
        picked = z.gather(-1, tokens[rows, pos, None].long()).squeeze(-1)  # [b', t']
        out[rows, pos] = picked - torch.logsumexp(z, dim=-1)  # [b', t']
    return out  # [B, T]


def token_entropy(logits: Tensor, *, chunk_tokens: int = 1024) -> Tensor:
    """Entropy -sum_v p log p of softmax(logits) at each position, in float32 (float64 stays float64).

    logits: [B, T, V] -> [B, T]. Same slicing as token_logprobs, so only one slice of about chunk_tokens
    positions of probabilities exists at a time. Vocabulary entries at -inf (masked) contribute 0, not NaN.

    >>> token_entropy(torch.zeros(1, 1, 4))
    tensor([[1.3863]])
    """
    _check_logits(logits, chunk_tokens)
    b, t, _ = logits.shape
    dtype = torch.promote_types(logits.dtype, torch.float32)
    out = torch.empty(b, t, dtype=dtype, device=logits.device)  # [B, T]
    for rows, pos in _chunks(b, t, chunk_tokens):
        logp = torch.log_softmax(logits[rows, pos].to(dtype), dim=-1)  # [b', t', V]
        p = logp.exp()  # [b', t', V]
        out[rows, pos] = -(p * torch.where(p > 0, logp, 0.0)).sum(dim=-1)  # [b', t']
    return out  # [B, T]
