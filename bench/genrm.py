"""GenRM cost: judge calls per prompt and wall time, circular vs all-pairs, side by side on one judge engine.

    python bench/genrm.py                      # N = 16, 8 prompts, the embedded judge (.cache/tiny-judge)
    python bench/genrm.py --n 16 --prompts 8 --repeats 2 --judge-path /models/genrm

Groups are synthetic chat responses whose better answers are known (genrm/synthetic.py: about half mention the
prompt's topic), so the bench also reports how well each strategy's base rewards order helpful above unhelpful
responses (pairwise agreement: the fraction of (helpful, unhelpful) pairs of a group ranked correctly, ties
half). Both strategies run in one process on the same vLLM engine, alternating, each scoring all prompts' groups
concurrently (cross-group batching on). Figures go to docs/genrm.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def make_groups(prompts: int, n: int, seed: int) -> list[dict]:
    from genrm.synthetic import bad_response, chat_prompt, good_response, maybe_think

    rng = random.Random(seed)
    groups = []
    for p in range(prompts):
        prompt, word = chat_prompt(rng)
        labels = [rng.random() < 0.5 for _ in range(n)]
        responses = [maybe_think(rng, word, good_response(rng, word) if g else bad_response(rng, word))
                     for g in labels]
        groups.append({"prompt": prompt, "responses": responses, "labels": labels})
    return groups


def agreement(base: list[float], labels: list[bool]) -> tuple[float, int]:
    good = [b for b, g in zip(base, labels) if g]
    bad = [b for b, g in zip(base, labels) if not g]
    pairs = len(good) * len(bad)
    score = sum(1.0 if x > y else 0.5 if x == y else 0.0 for x in good for y in bad)
    return score, pairs


async def score_all(service, groups: list[dict], tag: str):
    from genrm.judge import split_thinking
    from genrm.wire import LengthControlParams, ScoreItem, ScoreRequest

    reqs = []
    for k, g in enumerate(groups):
        items = []
        for i, r in enumerate(g["responses"]):
            think, answer = split_thinking(r)
            items.append(ScoreItem(index=i, response=r, think_tokens=len(think), answer_tokens=len(answer)))
        reqs.append(ScoreRequest(cohort_id=f"{tag}-{k}", group_size=len(items), prompt=g["prompt"],
                                 items=tuple(items), length_control=LengthControlParams(enabled=False)))
    t0 = time.perf_counter()
    out = await asyncio.gather(*(service.score(r) for r in reqs))
    return out, time.perf_counter() - t0


async def run_strategy(cfg, judge, groups, tag):
    from genrm.service import GenRMService

    service = GenRMService(cfg, judge)
    await service.start()
    try:
        responses, seconds = await score_all(service, groups, tag)
    finally:
        await service.stop()
    agree = total = 0.0
    for g, resp in zip(groups, responses):
        a, p = agreement([r.base for r in resp.results], g["labels"])
        agree, total = agree + a, total + p
    m = service.metrics()
    s = m.summary()
    return {"seconds": seconds, "judge_calls": m.judge_calls, "comparisons": m.comparisons,
            "judge_calls_per_prompt": m.judge_calls / len(groups), "comparisons_per_prompt": m.comparisons / len(groups),
            "parse_failure_rate": s["parse_failure_rate"], "first_position_win_rate": s["first_position_win_rate"],
            "pairwise_agreement": agree / total if total else float("nan"), "judge_batches": m.judge_batches}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=16, help="responses per prompt (N)")
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--repeats", type=int, default=2, help="alternating rounds of (circular, all_pairs)")
    p.add_argument("--judge-path", default="tiny-judge")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args()

    from genrm.service import GenRMConfig, VLLMJudge

    if args.judge_path == "tiny-judge":
        from genrm.build_judge import ensure_judge

        ensure_judge()
    base_cfg = GenRMConfig(judge_path=args.judge_path)
    t0 = time.perf_counter()
    judge = VLLMJudge(base_cfg)
    print(f"judge engine {base_cfg.resolved_judge_path()} loaded in {time.perf_counter() - t0:.1f}s")
    groups = make_groups(args.prompts, args.n, args.seed)
    # warm-up: the first generate pays one-off costs that would land on whichever strategy runs first
    asyncio.run(run_strategy(base_cfg, judge, groups[:1], "warmup"))
    results: dict[str, list[dict]] = {"circular": [], "all_pairs": []}
    for r in range(args.repeats):
        order = ("circular", "all_pairs") if r % 2 == 0 else ("all_pairs", "circular")
        for strategy in order:
            cfg = base_cfg.model_copy(update={"strategy": strategy})
            res = asyncio.run(run_strategy(cfg, judge, groups, f"{strategy}-{r}"))
            results[strategy].append(res)
            print(f"round {r} {strategy:9s}: {res['seconds']:7.2f}s  judge calls/prompt "
                  f"{res['judge_calls_per_prompt']:6.1f}  comparisons/prompt {res['comparisons_per_prompt']:6.1f}  "
                  f"parse failures {res['parse_failure_rate']:.1%}  first-position wins "
                  f"{res['first_position_win_rate']:.1%}  agreement {res['pairwise_agreement']:.3f}", flush=True)
    mean = {s: {k: sum(x[k] for x in rs) / len(rs) for k in rs[0]} for s, rs in results.items()}
    ratio = mean["all_pairs"]["seconds"] / mean["circular"]["seconds"]
    n = args.n
    print(f"\nN = {n}, {args.prompts} prompts, {args.repeats} rounds each, judge {args.judge_path}")
    print("| strategy | comparisons per prompt (formula) | judge calls per prompt (with retries) | wall time (s) | "
          "parse failures | first-position wins | pairwise agreement |")
    print("|---|---|---|---|---|---|---|")
    for s, formula in (("circular", f"N = {n}"), ("all_pairs", f"N(N-1)/2 = {n * (n - 1) // 2}")):
        m = mean[s]
        print(f"| {s} | {m['comparisons_per_prompt']:.0f} ({formula}) | {m['judge_calls_per_prompt']:.1f} | "
              f"{m['seconds']:.2f} | {m['parse_failure_rate']:.1%} | {m['first_position_win_rate']:.1%} | "
              f"{m['pairwise_agreement']:.3f} |")
    print(f"wall-time ratio all_pairs / circular: {ratio:.2f}x (comparison ratio {(n - 1) / 2:.1f}x)")
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "rounds": results,
                                         "mean": mean, "wall_ratio": ratio}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
