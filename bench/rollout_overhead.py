"""Rollout overhead: tokens/s through RolloutWorker.generate vs bare vLLM LLM.generate on the same engine.

    python bench/rollout_overhead.py                 # 64 math prompts x 8 samples, 96 new tokens, 5 rounds
    python bench/rollout_overhead.py --quick         # 16 prompts x 4 samples, 4 rounds (smoke run)
    python bench/rollout_overhead.py --model DIR --prompts 64 --samples 8 --max-new-tokens 96 --rounds 5

Target (issue 4): the worker at least 85% of bare vLLM's tokens/s.

One Ray actor holds one vLLM engine (the real rollout actor, RolloutWorker, subclassed here only to add the
bare and profiling entry points), so both paths share the engine arguments (rl.engine.engine_kwargs), the
prompts and the SamplingParams (RolloutWorker.sampling_params) by construction. Per round, in rotating order:

- bare:     `llm.generate(TokensPrompt(ids), params)` inside the actor on prompt ids tokenised beforehand and
            outside the timing; the strictest baseline (no chat template, no tokenising, no Sample objects);
- bare_task_params: the same, but with the per-task list of SamplingParams the worker builds (one per prompt);
- worker:   `RolloutWorker.generate(tasks, n)` timed inside the actor (what the actor itself spends);
- worker via Ray: the same call timed from the driver around `ray.get(worker.generate.remote(...))`, i.e. plus
            argument/result serialisation and the object store, which is what the orchestrator sees.

A profiling round then wraps the worker's pieces with timers inside the actor: vLLM generate, prompt
tokenisation (chat template + tokenizer), Sample construction (pydantic validation), and the remainder
(logprob extraction loops). Tokens are the generated tokens only; the samples are random (temperature 1), so
lengths differ a little between calls and tokens/s, not seconds, is compared.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine_common import default_model, init_ray, machine, math_tasks, model_params, table, write_result  # noqa: E402

from rl.rollout import RolloutWorker  # noqa: E402

TARGET = 0.85


class BenchWorker(RolloutWorker):
    """RolloutWorker plus the baseline and a profiler, in the same process as its engine."""

    def bare_generate(self, prompt_ids: list[list[int]], n: int, max_tokens: int) -> dict:
        from vllm.inputs import TokensPrompt

        prompts = [TokensPrompt(prompt_token_ids=ids) for ids in prompt_ids]
        params = self.sampling_params(n, None, max_tokens=max_tokens)
        t0 = time.perf_counter()
        outs = self.llm.generate(prompts, params, use_tqdm=False)
        seconds = time.perf_counter() - t0
        return {"tokens": sum(len(c.token_ids) for o in outs for c in o.outputs), "seconds": seconds}

    def bare_generate_task_params(self, prompt_ids: list[list[int]], tasks, n: int) -> dict:
        """Bare generate, but with the per-task list of SamplingParams the worker passes vLLM: tells a cost of
        vLLM's per-request params handling apart from the worker's own overhead."""
        from vllm.inputs import TokensPrompt

        prompts = [TokensPrompt(prompt_token_ids=ids) for ids in prompt_ids]
        params = [self.sampling_params(n, t) for t in tasks]
        t0 = time.perf_counter()
        outs = self.llm.generate(prompts, params, use_tqdm=False)
        seconds = time.perf_counter() - t0
        return {"tokens": sum(len(c.token_ids) for o in outs for c in o.outputs), "seconds": seconds}

    def profiled_generate(self, tasks, n: int) -> dict:
        """generate() with its pieces timed by wrapping them (rl/rollout.py itself is not changed)."""
        import rl.rollout as mod

        spent = {"vllm_generate": 0.0, "prompt_tokenisation": 0.0, "sample_construction": 0.0}

        def timed(key, fn):
            def wrapper(*a, **kw):
                t0 = time.perf_counter()
                try:
                    return fn(*a, **kw)
                finally:
                    spent[key] += time.perf_counter() - t0
            return wrapper

        orig_sample, orig_generate, orig_prompt_ids = mod.Sample, self.llm.generate, self.prompt_ids
        mod.Sample = timed("sample_construction", orig_sample)
        self.llm.generate = timed("vllm_generate", orig_generate)
        self.prompt_ids = timed("prompt_tokenisation", orig_prompt_ids)
        try:
            t0 = time.perf_counter()
            res = self.generate(tasks, n)
            total = time.perf_counter() - t0
        finally:
            mod.Sample = orig_sample
            self.llm.generate = orig_generate
            del self.prompt_ids  # back to the class attribute
        spent["other (logprob lists, loop)"] = total - sum(spent.values())
        return {"tokens": res["tokens"], "seconds": total, "parts": spent,
                "samples": sum(len(g) for g in res["groups"])}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, default=None, help="policy directory (default: warm-started tiny policy "
                   "if built, else the random-init one)")
    p.add_argument("--prompts", type=int, default=64)
    p.add_argument("--samples", type=int, default=8, help="samples per prompt (SamplingParams.n)")
    p.add_argument("--max-new-tokens", type=int, default=96)
    p.add_argument("--rounds", type=int, default=5, help="timed rounds of each path (after one warm-up)")
    p.add_argument("--cores", default="", help="pin the rollout actor to these cores, e.g. 0 (default: none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="smoke run: 16 prompts x 4 samples, 4 rounds")
    p.add_argument("--json", default=None, help="results path (default bench/results/rollout_overhead.json)")
    args = p.parse_args(argv)
    if args.quick:
        args.prompts, args.samples, args.rounds = 16, 4, 4
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    import ray

    from rl.model import ModelConfig
    from rl.rollout import RolloutConfig

    model_dir = args.model or default_model()
    cores = [int(c) for c in args.cores.split(",") if c.strip()]
    model_cfg = ModelConfig(path=str(model_dir))
    roll_cfg = RolloutConfig(max_new_tokens=args.max_new_tokens, cpu_affinity=cores)
    tasks = math_tasks(args.prompts, seed=args.seed)
    start = machine()
    print(f"model {model_dir} ({model_params(model_dir) or '?'} params); {args.prompts} math prompts x "
          f"{args.samples} samples, {args.max_new_tokens} new tokens; load average {start['load_average']}", flush=True)

    init_ray()
    try:
        actor = ray.remote(BenchWorker).options(num_cpus=1).remote(model_cfg, roll_cfg, args.seed, 0)
        ray.get(actor.ready.remote())
        # the exact prompt ids the worker builds, computed once outside every timing
        prompt_ids = ray.get([actor.prompt_ids.remote(t) for t in tasks])
        n, mt = args.samples, args.max_new_tokens
        ray.get(actor.bare_generate.remote(prompt_ids, n, mt))  # warm-up: first-call allocations
        ray.get(actor.generate.remote(tasks, n))
        rounds = {"bare": [], "bare_task_params": [], "worker": [], "worker_via_ray": []}
        for r in range(args.rounds):
            order = ("bare", "bare_task_params", "worker")
            for path in order[r % 3:] + order[: r % 3]:  # rotate which path runs first
                if path == "bare":
                    rounds["bare"].append(ray.get(actor.bare_generate.remote(prompt_ids, n, mt)))
                elif path == "bare_task_params":
                    rounds[path].append(ray.get(actor.bare_generate_task_params.remote(prompt_ids, tasks, n)))
                else:
                    t0 = time.perf_counter()
                    res = ray.get(actor.generate.remote(tasks, n))
                    wall = time.perf_counter() - t0
                    rounds["worker"].append({"tokens": res["tokens"], "seconds": res["seconds"]})
                    rounds["worker_via_ray"].append({"tokens": res["tokens"], "seconds": wall})
            print(f"round {r + 1}/{args.rounds}: " + "  ".join(
                f"{k} {v[-1]['tokens'] / v[-1]['seconds']:,.0f} tok/s" for k, v in rounds.items()), flush=True)
        prof = ray.get(actor.profiled_generate.remote(tasks, n))
    finally:
        ray.shutdown()

    def tps(runs):  # aggregate tokens over aggregate seconds, and the median round
        return (sum(x["tokens"] for x in runs) / sum(x["seconds"] for x in runs),
                statistics.median(x["tokens"] / x["seconds"] for x in runs))

    bare, _ = tps(rounds["bare"])
    # rounds are paired (bare and worker back to back, order alternating): the median of per-pair ratios is
    # less sensitive to a machine whose load drifts during the run than the ratio of the totals
    paired = {k: statistics.median((w["tokens"] / w["seconds"]) / (b["tokens"] / b["seconds"])
                                   for w, b in zip(rounds[k], rounds["bare"])) for k in ("bare_task_params", "worker", "worker_via_ray")}
    summary = {}
    rows = []
    for k, runs in rounds.items():
        agg, med = tps(runs)
        summary[k] = {"tokens_per_s": agg, "median_round_tokens_per_s": med, "ratio_to_bare": agg / bare,
                      "tokens_per_round": statistics.mean(x["tokens"] for x in runs),
                      "seconds_per_round": statistics.mean(x["seconds"] for x in runs)}
        summary[k]["paired_median_ratio"] = paired.get(k, 1.0)
        rows.append([k, f"{agg:,.0f}", f"{med:,.0f}", f"{summary[k]['seconds_per_round']:.3f}", f"{agg / bare:.1%}",
                     f"{paired.get(k, 1.0):.1%}"])
    print()
    print(table(rows, ["path", "tokens/s (all rounds)", "median round", "s/round", "vs bare (totals)",
                       "vs bare (paired median)"]))
    total = prof["seconds"]
    prow = [[k, f"{v * 1e3:.1f}", f"{v / total:.1%}", f"{v / max(prof['samples'], 1) * 1e6:.0f}"]
            for k, v in prof["parts"].items()]
    print(f"\nprofile of one worker.generate ({prof['samples']} samples, {prof['tokens']} tokens, "
          f"{total * 1e3:.0f} ms in the actor):")
    print(table(prow, ["part", "ms", "share", "us/sample"]))
    ratio = summary["worker_via_ray"]["ratio_to_bare"]
    met = ratio >= TARGET
    print(f"\nworker through Ray: {ratio:.1%} of bare vLLM over all rounds, {paired['worker_via_ray']:.1%} paired "
          f"median (target >= {TARGET:.0%}): {'met' if met else 'NOT met'}; load average now {machine()['load_average']}")
    write_result("rollout_overhead", {
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "model": str(model_dir), "model_params": model_params(model_dir), "machine_at_start": start,
        "rounds": rounds, "summary": summary, "profile": prof, "target_ratio": TARGET, "target_met": met,
    }, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
