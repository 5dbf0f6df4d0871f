"""Asynchronous vs synchronous GRPO on the same code: run.max_staleness 1 vs 0, one core per role.

    python bench/async_vs_sync.py                    # 20 steps each, math + json_schema, held-out eval at the end
    python bench/async_vs_sync.py --quick            # 3 steps each, small eval (smoke run)
    python bench/async_vs_sync.py --steps 30 --model DIR -- learner.lr=5e-5   # extra overrides for both runs

Target (issue 4): async samples/s at least 1.6x sync with the final held-out pass rates within noise, and the
idle fractions of both roles.

Both runs go through rl/train.py's main (configs/tiny-cpu.yaml, same seed, same overrides) with the rollout
actor pinned to core 0 and the learner to core 1 (rollout.cpu_affinity=[0], learner.cpu_affinity=[1]), as
disjoint GPU pools would be; only run.max_staleness differs. In the synchronous run the rollout core idles while
the learner trains and the learner core idles while the rollouts run; with max_staleness 1 the next batch is
generated during the current step's training, so a step costs about max(generation, training) instead of their
sum. Figures come from each run's metrics.jsonl (bench/engine_common.py analyse_run):

- samples/s: samples of steps 2..N over the time from step 1's end to step N's (the pipeline is full and the
  first-call warm-ups are paid), and over the whole loop;
- idle fraction of the learner: sum of learner/wait_seconds over the loop time;
- idle fraction of the rollout worker: 1 - (sum of rollout/seconds + sync/load_seconds) / loop time, derived
  here because the orchestrator records no rollout idle time;
- final pass rate: eval/ENV/LEVEL/pass_rate after the last step; "within noise" means the difference is under
  two standard errors of a difference of two binomial proportions over the eval's samples (tasks x samples per
  task; samples of one task are correlated, so this understates the noise: a conservative test for "not within").
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine_common import default_model, machine, run_polyrl, table, write_result  # noqa: E402

TARGET = 1.6


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, default=None, help="policy directory (default: warm-started tiny policy "
                   "if built, else the random-init one)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--envs", default="math,json_schema")
    p.add_argument("--eval-tasks", type=int, default=64, help="held-out tasks per environment at the start and end")
    p.add_argument("--eval-samples", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="smoke run: 3 steps, 8 eval tasks x 2 samples")
    p.add_argument("--json", default=None, help="results path (default bench/results/async_vs_sync.json)")
    p.add_argument("overrides", nargs="*", help="extra dotted config overrides for both runs (after --)")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.eval_tasks, args.eval_samples = 3, 8, 2
    return args


def within_noise(p1: float, p2: float, n: int) -> tuple[bool, float]:
    """|p1 - p2| < 2 standard errors of the difference of two proportions of n samples each."""
    p = (p1 + p2) / 2
    se = math.sqrt(max(p * (1 - p), 1e-12) * 2 / n)
    return abs(p1 - p2) < 2 * se, se


def main(argv=None) -> int:
    args = parse_args(argv)
    model_dir = args.model or default_model()
    start = machine()
    common = [f"model.path={model_dir}", f"run.steps={args.steps}", f"run.seed={args.seed}",
              "rollout.cpu_affinity=[0]", "learner.cpu_affinity=[1]", "run.checkpoint_every=0", "eval.every=0",
              f"eval.tasks_per_env={args.eval_tasks}", f"eval.samples={args.eval_samples}", *args.overrides]
    print(f"model {model_dir}; {args.steps} steps per run; load average {start['load_average']}", flush=True)
    runs = {}
    for label, staleness in (("sync", 0), ("async", 1)):
        runs[label] = run_polyrl(f"async-vs-sync-{label}", args.envs, common + [f"run.max_staleness={staleness}"])
        r = runs[label]
        print(f"  {label}: {r['steady_samples_per_s']:.2f} samples/s steady ({r['samples_per_s']:.2f} whole loop), "
              f"learner idle {r['idle_fraction']['learner']:.0%}, rollout idle {r['idle_fraction']['rollout_derived']:.0%}",
              flush=True)
    a, s = runs["async"], runs["sync"]
    ratio = a["steady_samples_per_s"] / s["steady_samples_per_s"]
    ratio_loop = a["samples_per_s"] / s["samples_per_s"]
    rows = []
    for label, r in runs.items():
        ps = r["per_step_mean_seconds"]
        rows.append([label, f"{r['steady_samples_per_s']:.2f}", f"{r['samples_per_s']:.2f}", f"{ps['step_wall']:.2f}",
                     f"{ps['generation (rollout actor)']:.2f}", f"{ps['verification (env servers)']:.2f}",
                     f"{ps['training (learner)']:.2f}", f"{ps['sync export (learner)'] + ps['sync load (rollout actor)']:.2f}",
                     f"{r['idle_fraction']['learner']:.0%}", f"{r['idle_fraction']['rollout_derived']:.0%}",
                     f"{r['staleness_mean']:.2f}"])
    print()
    print(table(rows, ["run", "samples/s (steady)", "samples/s (loop)", "s/step", "generate s", "verify s",
                       "train s", "sync s", "learner idle", "rollout idle", "staleness"]))
    erows, noise = [], {}
    for key in sorted(set(a["eval_final"]) | set(s["eval_final"])):
        pa, ps_ = a["eval_final"].get(key), s["eval_final"].get(key)
        if pa is None or ps_ is None:
            continue
        env = key.split("/")[1]  # eval/ENV/LEVEL/pass_rate; the run may hold fewer held-out tasks than asked
        n_eval = a["heldout_tasks"].get(env, args.eval_tasks) * args.eval_samples
        ok, se = within_noise(pa, ps_, n_eval)
        noise[key] = {"async": pa, "sync": ps_, "start": a["eval_first"].get(key), "samples": n_eval, "se_diff": se,
                      "within_noise": ok}
        erows.append([key, f"{a['eval_first'].get(key, float('nan')):.3f}", f"{ps_:.3f}", f"{pa:.3f}", f"{se:.3f}",
                      "yes" if ok else "NO"])
    print(f"\nheld-out pass rates (up to {args.eval_tasks} tasks x {args.eval_samples} samples per env, "
          f"held-out tasks found: {a['heldout_tasks']}):")
    print(table(erows, ["metric", "start", "sync final", "async final", "SE of diff", "within 2 SE"]))
    met = ratio >= TARGET
    print(f"\nasync / sync samples/s: {ratio:.2f}x steady, {ratio_loop:.2f}x whole loop (target >= {TARGET}x): "
          f"{'met' if met else 'NOT met'}")
    write_result("async_vs_sync", {
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}, "model": str(model_dir),
        "machine_at_start": start, "runs": runs, "ratio_steady": ratio, "ratio_loop": ratio_loop,
        "target_ratio": TARGET, "target_met": met, "final_pass_rates": noise,
    }, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
