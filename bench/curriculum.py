"""Curriculum vs uniform sampling (issue 6): same policy, step budget and seeds; hard held-out pass rate and the
fraction of zero-signal groups (all G rewards equal), mean and spread over seeds.

    python bench/curriculum.py                                   # the full run (docs/curriculum.md: ~1.5 h on 2 cores)
    python bench/curriculum.py --steps 3 --seeds 0 --num-tasks 60 --samples 2   # a smoke run, a few minutes

For every seed: `python -m curricula.profile` profiles the starting policy on that seed's training tasks (the
environments generate their tasks from run.seed, so a profile belongs to one seed), then `rl/train.py` trains once
with `curriculum.kind=uniform` and once with `curriculum.kind=pass_rate_gaussian` reading that profile. Each is
its own process (its own local Ray), with the same overrides apart from the sampler. Runs whose summary.json
exists are not redone, so an interrupted bench continues where it stopped. Results: a Markdown table on stdout
and <out>/results.json.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
KINDS = ("uniform", "pass_rate_gaussian")


def _run(cmd: list[str], log: Path, timeout: float) -> None:
    print("+ " + " ".join(cmd), flush=True)
    t0 = time.time()
    with open(log, "w") as fh:
        proc = subprocess.run(cmd, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT, timeout=timeout)
    if proc.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-30:])
        raise SystemExit(f"command failed (exit {proc.returncode}) after {time.time() - t0:.0f}s; log {log}:\n{tail}")
    print(f"  done in {time.time() - t0:.0f}s (log {log})", flush=True)


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def result(run_dir: Path, envs: list[str], difficulty: str) -> dict:
    """Hard held-out pass rate (start and end) and zero-signal fraction of one finished run."""
    summary = json.loads((run_dir / "summary.json").read_text())
    rows = _metrics(run_dir)
    evals = [r for r in rows if any(k.startswith("eval/") for k in r)]
    start, end = evals[0], summary["final_eval"]
    out = {"steps": summary["steps"]}
    for env in envs:
        key = f"eval/{env}/{difficulty}/pass_rate"
        out[f"{env}/start"] = start.get(key, float("nan"))
        out[f"{env}/end"] = end.get(key, float("nan"))
        fracs = [r[f"env/{env}/zero_signal_fraction"] for r in rows if f"env/{env}/zero_signal_fraction" in r]
        out[f"{env}/zero_signal"] = sum(fracs) / len(fracs) if fracs else float("nan")
    out["mean/end"] = sum(out[f"{e}/end"] for e in envs) / len(envs)
    g = yaml.safe_load((run_dir / "config.yaml").read_text())["run"]["samples_per_prompt"]
    groups = summary["samples_generated"] / g
    out["zero_signal"] = summary["zero_signal_groups"] / max(groups, 1)
    return out


def _mean_std(values: list[float]) -> tuple[float, float]:
    m = sum(values) / len(values)
    s = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return m, s


def table(results: dict, envs: list[str], difficulty: str) -> str:
    cols = [f"{e}/end" for e in envs] + ["mean/end"] + [f"{e}/zero_signal" for e in envs] + ["zero_signal"]
    names = [f"{e} {difficulty} pass rate" for e in envs] + ["mean pass rate"] + \
            [f"{e} zero-signal groups" for e in envs] + ["zero-signal groups"]
    lines = ["| sampler | seeds | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(cols)]
    for kind in KINDS:
        runs = [r for r in results.get(kind, {}).values()]
        if not runs:
            continue
        cells = []
        for c in cols:
            m, s = _mean_std([r[c] for r in runs])
            cells.append(f"{m:.3f} ± {s:.3f}")
        lines.append(f"| {kind} | {len(runs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench/curriculum.py", description=__doc__.split("\n")[0])
    p.add_argument("--envs", default="math,json_schema")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated run seeds (>= 3 for a spread)")
    p.add_argument("--steps", type=int, default=30, help="RL steps per run (the same budget for both samplers)")
    p.add_argument("--samples", type=int, default=8, help="K: profiling samples per task")
    p.add_argument("--num-tasks", type=int, default=600, help="tasks per environment (10%% held out, a third hard)")
    p.add_argument("--difficulty", default="hard", help="held-out level reported")
    p.add_argument("--model", default="tiny", help="model.path: 'tiny' (the warm-started tiny policy) or a directory")
    p.add_argument("--config", default=str(REPO / "configs" / "tiny-cpu.yaml"))
    p.add_argument("--out", default=str(REPO / "runs" / "bench-curriculum"))
    p.add_argument("--timeout", type=float, default=4 * 3600, help="per command, seconds")
    p.add_argument("overrides", nargs="*", help="extra dotted overrides for every run (e.g. curriculum.sigma=0.2)")
    args = p.parse_args(argv)
    envs = [e for e in args.envs.split(",") if e]
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    common = [f"model.path={args.model}", f"run.output_dir={out}", f"run.steps={args.steps}",
              "run.checkpoint_every=0", "eval.every=0", f"eval.difficulty={args.difficulty}", "eval.tasks_per_env=64",
              "eval.samples=8", *[f"envs.{e}.options.num_tasks={args.num_tasks}" for e in envs], *args.overrides]
    results: dict[str, dict[int, dict]] = {k: {} for k in KINDS}
    t0 = time.time()
    for seed in seeds:
        profile = out / f"profile-seed{seed}.jsonl"
        base = ["--config", args.config, "--envs", ",".join(envs), *common, f"run.seed={seed}"]
        _run([py, "-m", "curricula.profile", "--samples", str(args.samples), "--out", str(profile), *base,
              f"run.name=profile-seed{seed}"], out / f"profile-seed{seed}.log", args.timeout)
        for kind in KINDS:
            name = f"{kind}-seed{seed}"
            run_dir = out / name
            if not (run_dir / "summary.json").is_file():
                _run([py, "rl/train.py", *base, f"run.name={name}", f"curriculum.kind={kind}",
                      f"curriculum.profile={profile}"], out / f"{name}.log", args.timeout)
            results[kind][seed] = result(run_dir, envs, args.difficulty)
            print(f"  {name}: " + "  ".join(f"{k} {v:.3f}" for k, v in results[kind][seed].items() if k != "steps"),
                  flush=True)
    (out / "results.json").write_text(json.dumps({"args": vars(args), "runs": results,
                                                  "seconds": time.time() - t0}, indent=1))
    print(f"\n{len(seeds)} seed(s), {args.steps} steps, {','.join(envs)}, held-out {args.difficulty}; "
          f"{time.time() - t0:.0f}s total\n")
    print(table(results, envs, args.difficulty))
    print(f"\nresults: {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
