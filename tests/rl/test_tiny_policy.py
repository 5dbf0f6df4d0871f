import hashlib
import json

import pytest

from rl.tiny_policy import (
    BUILD_MARKER,
    LOGPROB_TOLERANCE,
    TinyPolicySpec,
    build,
    CHAR_VOCAB_SIZE,
    CHARSET,
    SPECIAL_TOKENS,
    build_bpe_tokenizer,
    build_tokenizer,
    check_prompts,
    is_built,
    parity_ok,
    parity_report,
)


def _digest(path):
    return hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()


TEXT = 'Compute 3/4 + x^2. {"a": [1, 2]}\n\tdone'


def _chat_ids(tok) -> list[int]:
    """Token ids of the chat template's rendering of one user message "hi" plus the generation prompt."""
    chat = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False)
    assert chat == "<|user|>hi\n<|assistant|>"
    ids = tok(chat, add_special_tokens=False)["input_ids"]
    assert ids[0] == tok.convert_tokens_to_ids("<|user|>") and ids[-1] == tok.convert_tokens_to_ids("<|assistant|>")
    assert tok.pad_token_id == 0 and tok.eos_token_id == 1  # special tokens first, in both tokenizers
    return ids


def test_character_tokenizer_is_character_level_and_round_trips():
    tok = build_tokenizer()
    ids = tok(TEXT, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(TEXT)
    assert tok.decode(ids) == TEXT
    assert tok.unk_token_id not in ids
    assert len(tok) <= CHAR_VOCAB_SIZE
    assert len(_chat_ids(tok)) == 1 + 2 + 1 + 1  # role markers are single tokens


@pytest.fixture(scope="module")
def bpe():
    return build_bpe_tokenizer(TinyPolicySpec.vocab_size, TinyPolicySpec.tokenizer_corpus_seed)


def test_bpe_tokenizer_round_trips_any_ascii_and_keeps_digits_single(bpe):
    every_char = "".join(CHARSET)
    for text in (TEXT, every_char, "  two  spaces,\ttab\n\nand 12345678901234567890"):
        ids = bpe(text, add_special_tokens=False)["input_ids"]
        assert bpe.decode(ids) == text
        assert bpe.unk_token_id not in ids, text
    # digits never merge: the policy writes and reads numbers digit by digit
    digits = [t for t in bpe.get_vocab() if any(c.isdigit() for c in t) and t not in SPECIAL_TOKENS]
    assert sorted(digits) == list("0123456789"), digits[:20]
    assert len(bpe(" 90817", add_special_tokens=False)["input_ids"]) == 6
    assert len(_chat_ids(bpe)) <= 5


def test_bpe_tokenizer_compresses_the_environments_text_and_is_deterministic(bpe):
    assert len(bpe) == TinyPolicySpec.vocab_size
    prompt = ('Return JSON matching this schema: '
              '{"type":"object","properties":{"tag":{"type":"number"}},"required":["tag"]}')
    n = len(bpe(prompt, add_special_tokens=False)["input_ids"])
    assert n < len(prompt) / 3, (n, len(prompt))  # 24 tokens for 109 characters when written
    again = build_bpe_tokenizer(TinyPolicySpec.vocab_size, TinyPolicySpec.tokenizer_corpus_seed)
    assert again.backend_tokenizer.to_str() == bpe.backend_tokenizer.to_str()


def test_build_is_deterministic_and_seeded(tmp_path):
    a = build(tmp_path / "a", TinyPolicySpec(seed=0))
    b = build(tmp_path / "b", TinyPolicySpec(seed=0))
    c = build(tmp_path / "c", TinyPolicySpec(seed=1))
    assert _digest(a) == _digest(b)
    assert _digest(a) != _digest(c)
    marker = json.loads((a / BUILD_MARKER).read_text())
    assert 1.5e6 < marker["params"] < 2e7  # "a few million parameters" (issue 2): 2.04M since 2026-12-02
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


def test_an_edited_task_generator_makes_the_build_stale(tmp_path, monkeypatch):
    import rl.tiny_policy as tp

    out = build(tmp_path / "p", TinyPolicySpec())
    assert is_built(out)
    monkeypatch.setattr(tp, "corpus_sources_digest", lambda: "edited")  # what an edited generator file gives
    assert not tp.is_built(out)
