"""Held-out evaluation: pass rates of the current policy on tasks training never samples (curricula/split.py)."""

from __future__ import annotations

from pydantic import Field

from rl.section import Section


class EvalConfig(Section):
    every: int = Field(20, ge=0)
    """Steps between held-out evaluations (also at the start and the end); 0 = start and end only."""
    difficulty: str = "medium"
    """Difficulty level of the held-out split that is reported (README's learning figures use medium)."""
    tasks_per_env: int = Field(64, ge=0)
    """Held-out tasks per environment (0 disables evaluation)."""
    samples: int = Field(4, ge=1)
    """Samples per task; pass rate = mean reward over them."""
    temperature: float | None = Field(1.0, gt=0)
    """Sampling temperature of the held-out evaluation: 1.0 (the policy itself, the README's figures) whatever
    rollout.temperature trains at; None samples at rollout.temperature."""


def pass_rate(rewards: list[float]) -> float:
    """Fraction of samples that fully solved their task (reward >= 1).

    >>> pass_rate([1.0, 0.0, 1.0, 0.5])
    0.5
    """
    return sum(r >= 1.0 - 1e-9 for r in rewards) / len(rewards) if rewards else 0.0


def evaluate_offline(model_dir: str, envs: list[str], difficulty: str = "medium", tasks_per_env: int = 64,
                     samples: int = 4, max_new_tokens: int = 128, seed: int = 0, llm=None) -> dict[str, float]:
    """Held-out pass rates of a policy directory, with an in-process vLLM engine and in-process verifiers
    (no Ray, no servers): the before/after figure for a checkpoint. Same held-out split as training."""
    from curricula.split import is_heldout
    from environments.registry import load
    from rl.engine import make_llm
    from rl.model import ModelConfig
    from rl.rollout import RolloutConfig

    if llm is None:
        llm = make_llm(ModelConfig(path=model_dir), RolloutConfig(max_new_tokens=max_new_tokens), seed=seed)
    from vllm import SamplingParams
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    out = {}
    for name in envs:
        env = load(name)(options={}, seed=seed)
        records = [r for r in env.load_tasks() if r.task.difficulty == difficulty and is_heldout(name, r.task.task_id)]
        records = sorted(records, key=lambda r: r.task.task_id)[:tasks_per_env]
        prompts = [tok.apply_chat_template([{"role": m.role, "content": m.content} for m in r.task.prompt],
                                           add_generation_prompt=True, tokenize=False) for r in records]
        params = SamplingParams(n=samples, temperature=1.0, max_tokens=max_new_tokens, seed=None)
        results = llm.generate(prompts, params, use_tqdm=False)
        rewards = [env.verify(r, c.text).reward for r, res in zip(records, results) for c in res.outputs]
        out[f"{name}/{difficulty}/pass_rate"] = pass_rate(rewards)
        out[f"{name}/{difficulty}/tasks"] = float(len(records))
        env.close()
    return out


if __name__ == "__main__":
    import argparse
    import json

    parser = argparse.ArgumentParser(prog="python -m rl.evaluate", description="Held-out pass rates of a policy.")
    parser.add_argument("--model", required=True)
    parser.add_argument("--envs", default="math,json_schema")
    parser.add_argument("--difficulty", default="medium")
    parser.add_argument("--tasks", type=int, default=64)
    parser.add_argument("--samples", type=int, default=4)
    args = parser.parse_args()
    from rl.engine import make_llm
    from rl.model import ModelConfig
    from rl.rollout import RolloutConfig

    engine = make_llm(ModelConfig(path=args.model), RolloutConfig(max_new_tokens=128))  # one engine per process
    for d in args.difficulty.split(","):
        print(json.dumps(evaluate_offline(args.model, args.envs.split(","), d, args.tasks, args.samples, llm=engine)))
