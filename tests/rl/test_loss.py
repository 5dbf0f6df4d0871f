"""rl/loss.py against values worked out by hand on tiny tensors (the arithmetic is in the comments)."""

import math

import pytest
import torch

from rl.loss import (
    LossConfig,
    count_valid_tokens,
    count_zero_signal_groups,
    grpo_advantages,
    policy_loss,
    token_entropy,
    token_logprobs,
    zero_signal_groups,
)

F64 = torch.float64
SQRT3 = math.sqrt(3.0)
LOG2 = math.log(2.0)


def t(x, dtype=F64):
    return torch.tensor(x, dtype=dtype)


def approx(x, rel=1e-9, abs=1e-12):
    return pytest.approx(x, rel=rel, abs=abs)


def close(a, b, tol=1e-9):
    torch.testing.assert_close(a, t(b, a.dtype), rtol=tol, atol=tol)


def onpolicy(logp, adv, mask, cfg=None, **kw):
    """All three logprobs equal: w == 1, rho == 1."""
    logp = t(logp)
    return policy_loss(logp, logp.clone(), logp.clone(), t(adv), t(mask), cfg or LossConfig(), **kw)


def with_weights(ws, adv, mask=None, **cfg):
    """rho == 1 and per-token IS weights w = exp(logp_old - logp_rollout) chosen by hand."""
    old = t([[-1.0] * len(ws[0])] * len(ws))  # [B, T]
    rollout = old - t(ws).log()  # [B, T]  w = exp(old - rollout)
    mask = t(mask) if mask is not None else torch.ones_like(old)  # [B, T]
    return policy_loss(old.clone(), old, rollout, t(adv), mask, LossConfig(**cfg))


# ------------------------------------------------------------------------------------------------ config


def test_config_defaults_are_the_documented_ones():
    cfg = LossConfig()
    assert (cfg.clip_low, cfg.clip_high) == (0.2, 0.28)
    assert (cfg.is_mode, cfg.is_low, cfg.is_high) == ("token_mask", 0.5, 5.0)
    assert cfg.kl_coef == 0.0 and cfg.overlong_filter and cfg.normalize_std


# ---------------------------------------------------------------------------------------------- advantages


def test_advantages_use_population_std():
    # one success in four: mean 0.25, population std sqrt(0.25 * 0.75) = sqrt(3)/4
    # -> A = 0.75 / (sqrt(3)/4) = sqrt(3) and -0.25 / (sqrt(3)/4) = -1/sqrt(3).
    # (the sample std, 0.5, would give 1.5 and -0.5)
    a = grpo_advantages(t([1.0, 0.0, 0.0, 0.0]), eps=0.0)
    close(a, [SQRT3, -1 / SQRT3, -1 / SQRT3, -1 / SQRT3])
    # two samples [3, 1]: population std 1 -> [1, -1] (sample std sqrt(2) would give +-0.707)
    close(grpo_advantages(t([3.0, 1.0]), eps=0.0), [1.0, -1.0])


def test_advantages_default_eps_is_added_to_the_std():
    # [3, 1]: (3 - 2) / (1 + 1e-6)
    close(grpo_advantages(t([3.0, 1.0])), [1 / (1 + 1e-6), -1 / (1 + 1e-6)])


def test_advantages_without_std_are_centred_rewards():
    close(grpo_advantages(t([1.0, 0.0, 0.0, 0.0]), normalize_std=False), [0.75, -0.25, -0.25, -0.25])
    close(grpo_advantages(t([[3.0, 1.0], [0.0, 4.0]]), normalize_std=False), [[1.0, -1.0], [-2.0, 2.0]])


def test_advantages_per_group_in_2d():
    r = t([[1.0, 0.0, 0.0, 0.0], [2.0, 2.0, 2.0, 2.0], [0.0, 1.0, 1.0, 0.0]])
    a = grpo_advantages(r, eps=0.0)
    assert a.shape == (3, 4)
    s, u = SQRT3, 1 / SQRT3
    # third group: mean 0.5, population std 0.5 -> +-1
    close(a, [[s, -u, -u, -u], [0.0, 0.0, 0.0, 0.0], [-1.0, 1.0, 1.0, -1.0]])


def test_integer_rewards_are_accepted():
    close(grpo_advantages(torch.tensor([1, 0]), eps=0.0), [1.0, -1.0], tol=1e-6)


def test_all_equal_rewards_give_exact_zeros_and_are_counted():
    # float32 mean of seven 0.1s is not exactly 0.1; without the explicit zeroing the rounding error divided
    # by (std ~ 0 + eps) would become an advantage of order 0.01.
    r = torch.tensor([[0.1] * 7, [1.0] * 7, [0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0], [0.0] * 7])
    a = grpo_advantages(r)
    assert torch.equal(a[[0, 1, 3]], torch.zeros(3, 7))
    assert a[2].abs().sum() > 0
    assert zero_signal_groups(r).tolist() == [True, True, False, True]
    assert count_zero_signal_groups(r) == 3
    assert torch.equal(grpo_advantages(r, normalize_std=False)[0], torch.zeros(7))


def test_single_sample_group_is_zero_signal():
    assert torch.equal(grpo_advantages(t([[5.0], [2.0]])), torch.zeros(2, 1, dtype=F64))
    assert count_zero_signal_groups(t([5.0])) == 1


@pytest.mark.parametrize("bad", [torch.zeros(2, 2, 2), torch.zeros(0), torch.tensor(1.0)])
def test_advantages_bad_shape(bad):
    with pytest.raises(ValueError, match=r"\[G\]"):
        grpo_advantages(bad)


def test_nan_reward_is_an_error():
    with pytest.raises(ValueError, match="NaN"):
        grpo_advantages(t([1.0, float("nan")]))


# ---------------------------------------------------------------------------------------------- clipping


def test_ratio_clipping_both_sides_and_both_signs():
    # seq 0: A = +1, rho = [1.5, 0.5]; seq 1: A = -1, rho = [0.5, 1.5]; w == 1.
    # term = max(-A rho, -A clip(rho, 0.8, 1.28)):
    #   A=+1 rho=1.5: max(-1.5, -1.28) = -1.28 (clipped)    A=+1 rho=0.5: max(-0.5, -0.8) = -0.5
    #   A=-1 rho=0.5: max( 0.5,  0.8) =  0.8  (clipped)     A=-1 rho=1.5: max( 1.5,  1.28) = 1.5
    # loss = (-1.28 - 0.5 + 0.8 + 1.5) / 4 = 0.13; clip fraction 2/4; ratio mean (1.5+.5+.5+1.5)/4 = 1
    old = t([[-1.0, -2.0], [-1.0, -2.0]])
    rho = t([[1.5, 0.5], [0.5, 1.5]])
    new = (old + rho.log()).requires_grad_()
    loss, m = policy_loss(new, old, old.clone(), t([1.0, -1.0]), torch.ones(2, 2), LossConfig())
    assert loss.item() == approx(0.13)
    assert m["clip_fraction"] == approx(0.5)
    assert m["ratio_mean"] == approx(1.0)
    # d/dlogp_new of -A rho / 4 is -A rho / 4 where unclipped, 0 where the clipped term is active
    loss.backward()
    close(new.grad, [[0.0, -0.125], [0.0, 0.375]])


def test_clip_higher_is_asymmetric():
    # A = +1, rho = 1.25 lies inside [0.8, 1.28] (would be clipped at 1.2 with a symmetric 0.2 clip)
    old = t([[-1.0]])
    new = old + math.log(1.25)
    loss, m = policy_loss(new, old, old.clone(), t([1.0]), torch.ones(1, 1), LossConfig())
    assert loss.item() == approx(-1.25) and m["clip_fraction"] == 0.0
    loss, m = policy_loss(new, old, old.clone(), t([1.0]), torch.ones(1, 1), LossConfig(clip_high=0.2))
    assert loss.item() == approx(-1.2) and m["clip_fraction"] == 1.0


# ------------------------------------------------------------------------------------- importance sampling


def test_token_mask_at_both_bounds():
    # A = 1, rho = 1. w = [0.5(1+1e-4), 0.5(1-1e-4), 5(1-1e-4), 5(1+1e-4), 1]
    # kept: 0.50005, 4.9995, 1 -> loss = -(0.50005 + 4.9995 + 1) / 3 = -6.49955 / 3 (masked tokens do not count)
    ws = [[0.50005, 0.49995, 4.9995, 5.0005, 1.0]]
    loss, m = with_weights(ws, [1.0])
    assert loss.item() == approx(-6.49955 / 3)
    assert m["valid_tokens"] == 3.0
    assert m["is_masked_fraction"] == approx(2 / 5)
    assert m["is_weight_max"] == approx(5.0005)
    assert m["is_weight_mean"] == approx(12.0 / 5)  # raw w over all five tokens, masked ones included


def test_token_mask_is_the_default_mode():
    loss_default, _ = with_weights([[10.0, 1.0]], [1.0])
    assert loss_default.item() == approx(-1.0)  # w = 10 is masked, w = 1 kept, 1 valid token


def test_token_truncate():
    # w = [0.25, 1, 10] -> weights [0.25, 1, 5]; nothing is masked: loss = -(6.25) / 3
    loss, m = with_weights([[0.25, 1.0, 10.0]], [1.0], is_mode="token_truncate")
    assert loss.item() == approx(-6.25 / 3)
    assert m["is_masked_fraction"] == 0.0 and m["valid_tokens"] == 3.0
    assert m["is_weight_max"] == approx(10.0)


SEQ_W = [[8.0, 0.5], [4.5, 6.0], [0.6, 0.4], [2.0, 0.5]]
SEQ_A = [1.0, 2.0, -1.0, -1.0]


def test_sequence_mask_uses_the_geometric_mean():
    # geometric means: sqrt(8*.5) = 2 keep; sqrt(4.5*6) = 5.196 drop; sqrt(.6*.4) = 0.490 drop; sqrt(2*.5) = 1 keep
    # kept sequences weight each token by its own w:
    #   seq 0: A=+1 -> -(8 + 0.5) = -8.5;  seq 3: A=-1 -> +(2 + 0.5) = 2.5;  4 valid tokens
    # loss = (-8.5 + 2.5) / 4 = -1.5
    loss, m = with_weights(SEQ_W, SEQ_A, is_mode="sequence_mask")
    assert loss.item() == approx(-1.5)
    assert m["valid_tokens"] == 4.0
    assert m["is_masked_fraction"] == approx(0.5)


def test_token_mask_on_the_same_batch_differs():
    # token_mask keeps 0.5 | 4.5 | 0.6 | 2, 0.5:  -0.5 - 2*4.5 + 0.6 + 2.5 = -6.4 over 5 valid tokens
    loss, m = with_weights(SEQ_W, SEQ_A)
    assert loss.item() == approx(-6.4 / 5)
    assert m["valid_tokens"] == 5.0


def test_sequence_mask_geometric_mean_ignores_masked_tokens():
    # seq: w = [4, 4, 1000 (tool token, mask 0)] -> geometric mean over trainable tokens = 4, kept
    loss, m = with_weights([[4.0, 4.0, 1000.0]], [1.0], mask=[[1, 1, 0]], is_mode="sequence_mask")
    assert loss.item() == approx(-4.0)
    assert m["valid_tokens"] == 2.0


def test_is_mode_none_ignores_mismatch():
    loss, m = with_weights([[10.0, 0.1]], [1.0], is_mode="none")
    assert loss.item() == approx(-1.0)
    assert m["valid_tokens"] == 2.0 and m["is_masked_fraction"] == 0.0
    assert m["is_weight_max"] == approx(10.0)  # still reported


def test_kl_rollout_learner_is_k3_over_trainable_tokens():
    # w = [2, 0.5]: k3 = w - 1 - log w = (1 - log 2) and (-0.5 + log 2); mean = 0.25
    _, m = with_weights([[2.0, 0.5]], [1.0], is_mode="none")
    assert m["kl_rollout_learner"] == approx(0.25)


# --------------------------------------------------------------------------------- overlong and tool tokens


def test_overlong_filter_drops_cut_sequences():
    # A = [1, 3], both length 2, rho = w = 1. Seq 1 was cut by the length limit.
    logp, adv, mask = [[-1.0, -1.0], [-1.0, -1.0]], [1.0, 3.0], [[1, 1], [1, 1]]
    cut = torch.tensor([False, True])
    loss, m = onpolicy(logp, adv, mask, finished_by_length=cut)
    assert loss.item() == approx(-1.0)  # only seq 0: -(1 + 1) / 2
    assert m["overlong_dropped_sequences"] == 1.0 and m["valid_tokens"] == 2.0
    loss, m = onpolicy(logp, adv, mask, LossConfig(overlong_filter=False), finished_by_length=cut)
    assert loss.item() == approx(-2.0)  # -(1 + 1 + 3 + 3) / 4
    assert m["overlong_dropped_sequences"] == 0.0


def test_tool_and_padding_tokens_are_excluded_even_with_garbage_values():
    # mask [1, 0, 1 | 1, 0, 0]; masked positions hold NaN / inf logprobs (vLLM reports 0.0 for tool tokens,
    # padding may be anything). A = [2, -1]: loss = -(2 + 2 - 1) / 3 = -1
    nan, inf = float("nan"), float("inf")
    new = t([[-1.0, inf, -1.0], [-1.0, nan, -inf]]).requires_grad_()
    old = t([[-1.0, nan, -1.0], [-1.0, -50.0, nan]])
    rollout = t([[-1.0, 0.0, -1.0], [-1.0, nan, 0.0]])
    mask = torch.tensor([[1, 0, 1], [1, 0, 0]])
    loss, m = policy_loss(new, old, rollout, t([2.0, -1.0]), mask, LossConfig())
    assert loss.item() == approx(-1.0)
    assert m["valid_tokens"] == 3.0 and m["is_masked_fraction"] == 0.0
    assert all(math.isfinite(v) for v in m.values())
    loss.backward()
    close(new.grad, [[-2 / 3, 0.0, -2 / 3], [1 / 3, 0.0, 0.0]])


def test_nan_on_a_trainable_token_is_an_error():
    logp = t([[-1.0, float("nan")]])
    with pytest.raises(ValueError, match="NaN"):
        policy_loss(logp, t([[-1.0, -1.0]]), t([[-1.0, -1.0]]), t([1.0]), torch.ones(1, 2), LossConfig())
    with pytest.raises(ValueError, match="NaN"):
        policy_loss(t([[-1.0, -1.0]]), logp, t([[-1.0, -1.0]]), t([1.0]), torch.ones(1, 2), LossConfig())


def test_nothing_valid_gives_zero_loss_with_a_graph():
    new = t([[-1.0, -1.0]]).requires_grad_()
    loss, m = policy_loss(new, new.detach(), new.detach(), t([1.0]), torch.zeros(1, 2), LossConfig())
    loss.backward()
    assert loss.item() == 0.0 and m["valid_tokens"] == 0.0
    assert torch.equal(new.grad, torch.zeros(1, 2, dtype=F64))


# ----------------------------------------------------------------------------------------------- on-policy


@pytest.mark.parametrize("mode", ["token_mask", "token_truncate", "sequence_mask", "none"])
def test_on_policy_loss_is_minus_mean_advantage(mode):
    # A = [1, -2], mask [[1,1,1],[1,0,0]]: valid tokens carry A = 1, 1, 1, -2 -> loss = -(3 - 2) / 4 = -0.25
    new = t([[-0.5, -1.5, -2.0], [-0.7, -3.0, -3.0]]).requires_grad_()
    loss, m = policy_loss(
        new, new.detach().clone(), new.detach().clone(), t([1.0, -2.0]), t([[1, 1, 1], [1, 0, 0]]),
        LossConfig(is_mode=mode),
    )
    assert loss.item() == approx(-0.25)
    assert m["is_weight_mean"] == approx(1.0) and m["is_weight_max"] == approx(1.0)
    assert m["is_masked_fraction"] == 0.0 and m["clip_fraction"] == 0.0
    assert m["ratio_mean"] == approx(1.0) and m["kl_rollout_learner"] == approx(0.0)
    assert m["valid_tokens"] == 4.0
    # gradient of -A rho / 4 at rho = 1: -A / 4 on valid tokens
    loss.backward()
    close(new.grad, [[-0.25, -0.25, -0.25], [0.5, 0.0, 0.0]])


def test_gradient_flows_only_through_logp_new():
    leaves = {k: t([[-1.0, -2.0]]).requires_grad_() for k in ("new", "old", "rollout", "ref")}
    adv = t([1.0]).requires_grad_()
    ent = t([[0.3, 0.4]]).requires_grad_()
    loss, _ = policy_loss(
        leaves["new"], leaves["old"], leaves["rollout"], adv, torch.ones(1, 2), LossConfig(kl_coef=0.1),
        logp_ref=leaves["ref"], entropy=ent,
    )
    loss.backward()
    assert leaves["new"].grad is not None and leaves["new"].grad.abs().sum() > 0
    for name in ("old", "rollout", "ref"):
        assert leaves[name].grad is None, name
    assert adv.grad is None and ent.grad is None


# ------------------------------------------------------------------------------------------------------ KL


def test_kl_term_k3():
    # A = 0 so the policy term is 0. log(ref/new) = [log 2, -log 2, 0]:
    # k3 = e^d - d - 1 = (1 - log 2), (log 2 - 0.5), 0 -> sum 0.5, mean 1/6; loss = 0.1 * 0.5 / 3
    new = t([[-1.0, -1.0, -1.0]]).requires_grad_()
    ref = new.detach() + t([[LOG2, -LOG2, 0.0]])
    loss, m = policy_loss(
        new, new.detach(), new.detach(), t([0.0]), torch.ones(1, 3), LossConfig(kl_coef=0.1), logp_ref=ref
    )
    assert loss.item() == approx(0.1 * 0.5 / 3)
    assert m["kl_ref"] == approx(1 / 6)
    # d/dnew of (e^d - d - 1) with d = ref - new is 1 - e^d: [1 - 2, 1 - 0.5, 0] * 0.1 / 3
    loss.backward()
    close(new.grad, [[-0.1 / 3, 0.05 / 3, 0.0]])


def test_kl_needs_reference_and_is_reported_without_coef():
    logp = t([[-1.0]])
    with pytest.raises(ValueError, match="logp_ref"):
        policy_loss(logp, logp, logp, t([1.0]), torch.ones(1, 1), LossConfig(kl_coef=0.1))
    loss, m = policy_loss(logp, logp, logp, t([0.0]), torch.ones(1, 1), LossConfig(), logp_ref=logp + LOG2)
    assert loss.item() == 0.0 and m["kl_ref"] == approx(1 - LOG2)
    _, m = policy_loss(logp, logp, logp, t([0.0]), torch.ones(1, 1), LossConfig())
    assert "kl_ref" not in m


def test_entropy_metric_over_valid_tokens():
    _, m = onpolicy([[-1.0, -1.0, -1.0]], [1.0], [[1, 1, 0]], entropy=t([[0.2, 0.4, 9.0]]))
    assert m["entropy"] == approx(0.3)


def test_metrics_are_python_floats():
    _, m = onpolicy([[-1.0]], [1.0], [[1]], LossConfig(kl_coef=0.1), logp_ref=t([[-1.0]]), entropy=t([[0.1]]))
    assert set(m) >= {
        "is_weight_mean", "is_weight_max", "is_masked_fraction", "clip_fraction", "ratio_mean",
        "kl_rollout_learner", "entropy", "valid_tokens", "overlong_dropped_sequences", "kl_ref", "pg_loss",
    }
    assert all(type(v) is float for v in m.values())


# ------------------------------------------------------------------------------------ gradient accumulation


@pytest.mark.parametrize("mode", ["token_mask", "token_truncate", "sequence_mask", "none"])
def test_micro_batches_sum_to_the_full_batch(mode):
    g = torch.Generator().manual_seed(0)
    b, tt = 6, 5
    old = -torch.rand(b, tt, generator=g, dtype=F64) * 3  # [B, T]
    rollout = old + torch.randn(b, tt, generator=g, dtype=F64) * 0.8  # [B, T]  some w outside [0.5, 5]
    rollout[3] -= 2.0  # [T]  a sequence drifted as a whole: geometric-mean w ~ e^2, dropped by sequence_mask
    new0 = old + torch.randn(b, tt, generator=g, dtype=F64) * 0.3  # [B, T]  some ratios clipped
    ref = old + torch.randn(b, tt, generator=g, dtype=F64) * 0.2  # [B, T]
    adv = torch.randn(b, generator=g, dtype=F64)  # [B]
    mask = (torch.rand(b, tt, generator=g) > 0.2).long()  # [B, T]
    cut = torch.tensor([False, True, False, False, False, False])  # [B]
    cfg = LossConfig(is_mode=mode, kl_coef=0.05)

    total = count_valid_tokens(old, rollout, mask, cfg, finished_by_length=cut)
    new_full = new0.clone().requires_grad_()
    full, m_full = policy_loss(new_full, old, rollout, adv, mask, cfg, finished_by_length=cut, logp_ref=ref)
    full.backward()
    assert m_full["valid_tokens"] == total
    if mode in ("token_mask", "sequence_mask"):
        assert m_full["is_masked_fraction"] > 0  # the test exercises masking

    new_mb = new0.clone().requires_grad_()
    acc = torch.zeros((), dtype=F64)
    for sl in (slice(0, 2), slice(2, 5), slice(5, 6)):  # uneven micro-batches
        part, _ = policy_loss(
            new_mb[sl], old[sl], rollout[sl], adv[sl], mask[sl], cfg,
            finished_by_length=cut[sl], total_valid_tokens=total, logp_ref=ref[sl],
        )
        part.backward()
        acc = acc + part.detach()
    torch.testing.assert_close(acc, full.detach(), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(new_mb.grad, new_full.grad, rtol=1e-12, atol=1e-14)


def test_total_valid_tokens_smaller_than_micro_batch_is_an_error():
    with pytest.raises(ValueError, match="count_valid_tokens"):
        onpolicy([[-1.0, -1.0]], [1.0], [[1, 1]], total_valid_tokens=1)


def test_total_valid_tokens_scales_the_loss():
    # 2 valid tokens with A = 1 in this micro-batch, 8 in the whole batch: -(1 + 1) / 8
    loss, _ = onpolicy([[-1.0, -1.0]], [1.0], [[1, 1]], total_valid_tokens=8)
    assert loss.item() == approx(-0.25)


# ------------------------------------------------------------------------------------------------- shapes


def _good():
    z = torch.zeros(2, 3, dtype=F64)
    return dict(logp_new=z, logp_old=z, logp_rollout=z, advantages=torch.zeros(2, dtype=F64), mask=torch.ones(2, 3))


@pytest.mark.parametrize(
    "change, match",
    [
        ({"logp_new": torch.zeros(2, 3, 1)}, "logp_new must be"),
        ({"logp_old": torch.zeros(2, 4)}, "logp_old must have the shape"),
        ({"logp_rollout": torch.zeros(3, 3)}, "logp_rollout must have the shape"),
        ({"mask": torch.ones(2, 4)}, "mask must have the shape"),
        ({"advantages": torch.zeros(2, 3)}, r"advantages must be \[B\]"),
        ({"advantages": torch.zeros(3)}, r"advantages must be \[B\]"),
        ({"finished_by_length": torch.zeros(2, 1, dtype=torch.bool)}, "finished_by_length must be"),
        ({"logp_ref": torch.zeros(2, 2)}, "logp_ref must have the shape"),
        ({"entropy": torch.zeros(1, 3)}, "entropy must have the shape"),
        ({"mask": torch.full((2, 3), 2)}, "mask must contain only 0"),
        ({"logp_old": torch.zeros(2, 3, dtype=torch.long)}, "floating-point"),
    ],
)
def test_bad_shapes_raise_clear_errors(change, match):
    kw = _good() | change
    args = [kw.pop(k) for k in ("logp_new", "logp_old", "logp_rollout", "advantages", "mask")]
    with pytest.raises(ValueError, match=match):
        policy_loss(*args, LossConfig(), **kw)


def test_count_valid_tokens_checks_shapes():
    with pytest.raises(ValueError, match="logp_rollout must have the shape of logp_old"):
        count_valid_tokens(torch.zeros(2, 3), torch.zeros(2, 2), torch.ones(2, 3), LossConfig())


# --------------------------------------------------------------------------------------- logprobs, entropy


def test_token_logprobs_hand_values():
    # logits [0, log 3] -> softmax [1/4, 3/4]
    logits = torch.tensor([[[0.0, math.log(3.0)], [0.0, math.log(3.0)]]])
    lp = token_logprobs(logits, torch.tensor([[1, 0]]))
    assert lp.dtype == torch.float32 and lp.shape == (1, 2)
    close(lp, [[math.log(0.75), math.log(0.25)]], tol=1e-6)


def test_token_entropy_hand_values():
    # [1/4, 3/4]: -(.25 log .25 + .75 log .75); uniform over 4: log 4; one-hot via -inf: 0 (not NaN)
    logits = torch.tensor([[[0.0, math.log(3.0), -math.inf, -math.inf], [0.0, 0.0, 0.0, 0.0], [0.0] + [-math.inf] * 3]])
    h = token_entropy(logits)
    expect = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    close(h, [[expect, math.log(4.0), 0.0]], tol=1e-6)


def test_bf16_logits_are_computed_in_float32():
    logits = torch.tensor([[[0.0, 1.0, 2.0]]], dtype=torch.bfloat16)
    assert token_logprobs(logits, torch.tensor([[2]])).dtype == torch.float32
    assert token_entropy(logits).dtype == torch.float32


def test_chunking_matches_one_shot_and_keeps_gradients():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 7, 11, generator=g, dtype=F64)  # [B, T, V]
    tokens = torch.randint(0, 11, (3, 7), generator=g)  # [B, T]
    ref_lp = torch.log_softmax(logits, -1).gather(-1, tokens[..., None]).squeeze(-1)  # [B, T]
    ref_h = -(torch.softmax(logits, -1) * torch.log_softmax(logits, -1)).sum(-1)  # [B, T]
    for chunk in (1, 3, 7, 15, 1024):  # per-row pieces, one row, two rows at a time, everything at once
        torch.testing.assert_close(token_logprobs(logits, tokens, chunk_tokens=chunk), ref_lp)
        torch.testing.assert_close(token_entropy(logits, chunk_tokens=chunk), ref_h)
    # a shifted, non-contiguous view works and gradients reach the logits
    leaf = logits.clone().requires_grad_()
    token_logprobs(leaf[:, :-1], tokens[:, 1:], chunk_tokens=2).sum().backward()
    assert leaf.grad is not None and leaf.grad[:, -1].abs().sum() == 0 and leaf.grad[:, 0].abs().sum() > 0
    # d/dz of sum log p[token] = onehot - softmax; each row of the gradient sums to 0
    torch.testing.assert_close(leaf.grad.sum(-1), torch.zeros(3, 7, dtype=F64))


@pytest.mark.parametrize(
    "logits, tokens, match",
    [
        (torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.long), r"logits must be \[B, T, V\]"),
        (torch.zeros(2, 3, 5), torch.zeros(2, 4, dtype=torch.long), r"tokens must be \[B, T\]"),
        (torch.zeros(2, 3, 5), torch.zeros(2, 3), "integer ids"),
        (torch.zeros(1, 2, 5), torch.tensor([[0, -100]]), r"token ids must lie in \[0, 5\)"),
        (torch.zeros(1, 2, 5), torch.tensor([[0, 5]]), r"token ids must lie in \[0, 5\)"),
    ],
)
def test_token_logprobs_bad_inputs(logits, tokens, match):
    with pytest.raises(ValueError, match=match):
        token_logprobs(logits, tokens)


def test_float32_and_bf16_logprobs():
    # on-policy, A = [1, -2], one token each: loss = -(1 - 2) / 2 = 0.5, computed in float32
    for dtype in (torch.float32, torch.bfloat16):
        logp = torch.tensor([[-0.5], [-1.0]], dtype=dtype)
        loss, m = policy_loss(logp, logp, logp, torch.tensor([1.0, -2.0]), torch.ones(2, 1), LossConfig())
        assert loss.dtype == torch.float32 and loss.item() == pytest.approx(0.5)
        assert m["is_weight_mean"] == pytest.approx(1.0)
