"""The tiny policy's warm start (issue 3, item 5): what it trains on, that it is deterministic, and that a
changed config retrains. The pass rates it reaches are a benchmark (README "Warm start"), not a test."""

from __future__ import annotations

import json

import pytest
import torch

from curricula.split import is_heldout
from environments.registry import load
from rl.warm_start import MARKER, WarmStartConfig, _batches, collect_examples, is_current, train

SMALL = {"math": {"num_tasks": 900}, "json_schema": {"num_tasks": 900}}
# 900 tasks are a prefix of the RL run's default 3,000: keep them (exclude_rl_tasks has its own test)
ON_SMALL = {"env_options": SMALL, "exclude_rl_tasks": False}


@pytest.fixture(scope="module")
def tokenizer(tiny_policy_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_policy_dir)


def _heldout_prompts(name: str) -> set[str]:
    env = load(name)(options={}, seed=0)
    out = {r.task.prompt[-1].content for r in env.load_tasks() if is_heldout(name, r.task.task_id)}
    env.close()
    return out


def test_examples_leave_out_heldout_tasks_and_their_prompts(tokenizer):
    cfg = WarmStartConfig(**ON_SMALL)
    examples, stats = collect_examples(cfg, tokenizer)
    assert stats["math"]["examples"] > 400 and stats["json_schema"]["examples"] > 300, stats  # JSON easy: 0.3 kept
    # the easy arithmetic space is small: some generated tasks repeat a held-out prompt under another id
    assert stats["math"]["skipped_heldout_prompt"] > 0, stats
    texts = [tokenizer.decode(ids[:n_prompt]) for ids, n_prompt, *_ in examples]
    for name in ("math", "json_schema"):
        heldout = _heldout_prompts(name)
        leaked = [t for t in texts for p in heldout if p in t]
        assert not leaked, f"{name}: held-out prompts in the SFT data: {leaked[:3]}"
    # every example ends with <eos> after a non-empty response
    assert all(ids[-1] == tokenizer.eos_token_id and len(ids) > n_prompt + 1 for ids, n_prompt, *_ in examples)
    more = WarmStartConfig(env_options={"math": {"num_tasks": 1800}, "json_schema": {"num_tasks": 900}},
                           exclude_rl_tasks=False)
    assert collect_examples(more, tokenizer)[1]["math"]["examples"] > stats["math"]["examples"], \
        "env_options reach the generator: more tasks, more examples"


def test_an_environment_without_examples_is_a_clear_error(tokenizer):
    cfg = WarmStartConfig(envs=["math"], difficulties=["nonexistent"], **ON_SMALL)
    with pytest.raises(ValueError, match="no example at levels"):
        collect_examples(cfg, tokenizer)


def test_training_is_deterministic_and_lowers_the_loss(tiny_policy_dir, tmp_path):
    cfg = WarmStartConfig(steps=12, batch_size=4, warmup_steps=2, **ON_SMALL)
    a = train(tiny_policy_dir, tmp_path / "a", cfg, log=lambda *_: None)
    b = train(tiny_policy_dir, tmp_path / "b", cfg, log=lambda *_: None)
    assert a["first_loss"] == b["first_loss"] and a["final_loss"] == b["final_loss"], (a, b)
    assert a["final_loss"] < a["first_loss"] - 0.5, a  # 12 steps take a random model well below ln(128) = 4.85
    from safetensors.torch import load_file

    wa, wb = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), "bit-identical weights"
    marker = json.loads((tmp_path / "a" / MARKER).read_text())
    assert marker["digest"] == cfg.digest() and marker["examples"]["math"]["examples"] > 0
    assert is_current(tmp_path / "a", cfg)
    assert not is_current(tmp_path / "a", WarmStartConfig(steps=13, batch_size=4, warmup_steps=2, **ON_SMALL))
    assert not is_current(tmp_path / "a", WarmStartConfig(steps=12, batch_size=4, warmup_steps=2))


def test_prompt_loss_weight_is_per_environment(tokenizer):
    cfg = WarmStartConfig(**ON_SMALL, prompt_loss_weight={"default": 0.5, "math": 0.0})
    examples, _ = collect_examples(cfg, tokenizer)
    texts = [(tokenizer.decode(ids[:n]), w) for ids, n, w, _ in examples]
    assert {w for t, w in texts if "Compute" in t or "\\boxed" in t} == {0.0}
    assert {w for t, w in texts if "JSON" in t} == {0.5}
    _, weights, _ = next(_batches(examples, cfg.model_copy(update={"batch_size": 64})))
    assert set(weights.unique().tolist()) <= {0.0, 0.5, 1.0} and 1.0 in weights.unique().tolist()
    with pytest.raises(ValueError, match='"default" entry'):
        WarmStartConfig(prompt_loss_weight={"math": 0.0})


def test_level_fraction_subsamples_one_level(tokenizer):
    full = WarmStartConfig(**ON_SMALL, level_fraction={})
    half = WarmStartConfig(**ON_SMALL, level_fraction={"json_schema/easy": 0.5})
    (ex_full, st_full), (ex_half, st_half) = collect_examples(full, tokenizer), collect_examples(half, tokenizer)
    assert st_half["math"] == st_full["math"], "other environments keep every example"

    def easy_json(examples):  # easy JSON-schema prompts are the short ones: 1-2 keys
        return [ids for ids, n, *_ in examples if "JSON" in tokenizer.decode(ids[:n]) and
                len(json.loads(tokenizer.decode(ids[:n]).split("schema: ", 1)[1].split("<", 1)[0])["properties"]) <= 2]

    n_full, n_half = len(easy_json(ex_full)), len(easy_json(ex_half))
    assert 0.35 * n_full < n_half < 0.65 * n_full, (n_full, n_half)
    # subsampling comes first: some of what it drops would have been dropped as a held-out prompt anyway
    assert st_half["json_schema"]["subsampled_out"] >= st_full["json_schema"]["examples"] - st_half["json_schema"]["examples"] > 0
    assert collect_examples(half, tokenizer)[0] == ex_half, "seeded: the same subsample every time"
    for typo, reason in (("json/easy", "json"), ("json_schema/eazy", "has levels")):
        with pytest.raises(ValueError, match=f"level_fraction names '{typo}'.*{reason}"):
            collect_examples(WarmStartConfig(**ON_SMALL, level_fraction={typo: 0.5}), tokenizer)
    with pytest.raises(ValueError, match="fraction in"):
        WarmStartConfig(level_fraction={"json_schema/easy": 0.0})


def test_a_rebuilt_initial_policy_makes_the_warm_start_stale(tiny_policy_dir, tmp_path):
    import shutil

    from rl.tiny_policy import BUILD_MARKER

    cfg = WarmStartConfig(steps=2, batch_size=2, warmup_steps=1, **ON_SMALL)
    init = tmp_path / "init"
    shutil.copytree(tiny_policy_dir, init)
    train(init, tmp_path / "warm", cfg, log=lambda *_: None)
    assert is_current(tmp_path / "warm", cfg, init)
    marker = json.loads((init / BUILD_MARKER).read_text())
    (init / BUILD_MARKER).write_text(json.dumps({**marker, "corpus_sources": "another-generator"}))
    assert not is_current(tmp_path / "warm", cfg, init)
    assert is_current(tmp_path / "warm", cfg)  # the config alone still matches


def test_staleness_names_an_edited_generator_or_config(tiny_policy_dir, tmp_path, monkeypatch):
    """What rl/train.py warns about: the cached policy is not what `make demo` would build now."""
    import shutil

    import rl.tiny_policy as tp
    from rl.warm_start import staleness

    cfg = WarmStartConfig(steps=2, batch_size=2, warmup_steps=1, **ON_SMALL)
    init = tmp_path / "init"
    shutil.copytree(tiny_policy_dir, init)
    train(init, tmp_path / "warm", cfg, log=lambda *_: None)
    assert staleness(tmp_path / "warm", init, cfg) is None
    assert "WarmStartConfig" in staleness(tmp_path / "warm", init, cfg.model_copy(update={"steps": 3}))
    assert "was not trained" in staleness(tmp_path / "nowhere", init, cfg)
    monkeypatch.setattr(tp, "corpus_sources_digest", lambda: "edited")  # what an edited generator file gives
    reason = staleness(tmp_path / "warm", init, cfg)
    assert "generator sources" in reason and "python -m rl.warm_start" in reason, reason


def test_result_digits_weigh_result_digit_weight(tokenizer):
    cfg = WarmStartConfig(**ON_SMALL, result_digit_weight=4.0)
    examples, _ = collect_examples(cfg, tokenizer)
    math_ex = [e for e in examples if "Compute" in tokenizer.decode(e[0][: e[1]])]
    json_ex = [e for e in examples if "JSON" in tokenizer.decode(e[0][: e[1]])]
    assert math_ex and all(digits for *_, digits in math_ex), "every arithmetic working has a result"
    for ids, n_prompt, _, digits in math_ex[:50]:
        response = tokenizer.decode(ids[n_prompt:-1])
        # the marked tokens, in order, spell the digits after each "=" (37+48: 7+8=15, ... -> "15", ...)
        parts = response.split("=")[1:]
        expected = "".join(part[: len(part) - len(part.lstrip("0123456789"))] for part in parts)
        assert "".join(tokenizer.decode([ids[i]]) for i in digits) == expected, response
        assert all(n_prompt <= i < len(ids) - 1 for i in digits)
    # JSON-schema numbers follow ":" not "=": untouched
    assert all(not digits for *_, digits in json_ex)
    (ids, n_prompt, _, digits), *_ = math_ex
    _, weights, _ = next(_batches([(ids, n_prompt, 0.0, digits)], cfg.model_copy(update={"batch_size": 1})))
    assert weights[0, digits].eq(4.0).all() and weights[0, n_prompt:].eq(1.0).sum() == len(ids) - n_prompt - len(digits)
    # fields that came after warm starts were built leave the digest alone at the old behaviour
    old = WarmStartConfig(exclude_rl_tasks=False, experts_implementation="grouped_mm", fused_adamw=False)
    plain = old.model_dump_json(exclude={"result_digit_weight", "exclude_rl_tasks", "experts_implementation",
                                         "fused_adamw"})
    import hashlib
    assert old.digest() == hashlib.sha256(plain.encode()).hexdigest()[:16]
    assert len({old.digest(), WarmStartConfig().digest(), WarmStartConfig(result_digit_weight=4.0).digest(),
                WarmStartConfig(fused_adamw=False).digest()}) == 4


def test_exclude_rl_tasks_leaves_out_every_prompt_of_the_default_task_set(tokenizer):
    cfg = WarmStartConfig(envs=["math"], env_options={"math": {"num_tasks": 3300}})
    assert cfg.exclude_rl_tasks, "the default"
    examples, stats = collect_examples(cfg, tokenizer)
    env = load("math")(options={}, seed=0)
    default = {r.task.prompt[-1].content for r in env.load_tasks()}
    env.close()
    prompts = {tokenizer.decode(ids[:n]) for ids, n, *_ in examples}
    assert 0 < len(examples) < 300 * 2 / 3 + 1, stats  # only indices 3000-3299 of easy and medium remain
    assert not [p for p in prompts for d in default if d in p], "an RL task's prompt in the SFT data"
    kept = collect_examples(cfg.model_copy(update={"exclude_rl_tasks": False}), tokenizer)[1]["math"]["examples"]
    assert kept > 10 * len(examples), "without the option the RL training tasks are SFT data"
