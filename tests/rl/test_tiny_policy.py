import hashlib
import json

import pytest

from rl.tiny_policy import (
    BUILD_MARKER,
    LOGPROB_TOLERANCE,
    TinyPolicySpec,
    build,
    build_tokenizer,
    check_prompts,
    is_built,
    parity_ok,
    parity_report,
)


def _digest(path):
    return hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()


def test_tokenizer_is_character_level_and_round_trips():
    tok = build_tokenizer()
    text = 'Compute 3/4 + x^2. {"a": [1, 2]}\n\tdone'
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text)
    assert tok.decode(ids) == text
    assert tok.unk_token_id not in ids
    chat = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False)
    assert chat == "<|user|>hi\n<|assistant|>"
    assert len(tok(chat, add_special_tokens=False)["input_ids"]) == 2 + 1 + 1 + 1  # role tokens are single tokens


def test_build_is_deterministic_and_seeded(tmp_path):
    a = build(tmp_path / "a", TinyPolicySpec(seed=0))
    b = build(tmp_path / "b", TinyPolicySpec(seed=0))
    c = build(tmp_path / "c", TinyPolicySpec(seed=1))
    assert _digest(a) == _digest(b)
    assert _digest(a) != _digest(c)
    marker = json.loads((a / BUILD_MARKER).read_text())
    assert 3e6 < marker["params"] < 2e7  # "a few million parameters" (issue 2)
    assert is_built(a, TinyPolicySpec(seed=0)) and not is_built(a, TinyPolicySpec(seed=1))


def test_model_has_a_router_per_layer(tiny_policy_dir):
    from safetensors import safe_open

    with safe_open(str(tiny_policy_dir / "model.safetensors"), "pt") as f:
        gates = [k for k in f.keys() if k.endswith("mlp.gate.weight")]
    spec = TinyPolicySpec()
    assert len(gates) == spec.num_hidden_layers  # every layer is MoE with its own gate (frozen during RL, issue 8)


@pytest.mark.slow
def test_transformers_and_vllm_agree(llm, tiny_policy_dir):
    """Greedy continuations identical on 20 prompts; sampled-token logprobs within LOGPROB_TOLERANCE."""
    report = parity_report(llm, tiny_policy_dir, check_prompts(20))
    assert report["prompts"] == 20
    assert report["greedy_identical"] == 20, report["greedy_mismatches"]
    assert report["tokens_compared"] >= 20 * 4 * 32
    assert report["logprob_abs_diff_max"] <= LOGPROB_TOLERANCE, report
    assert parity_ok(report)
