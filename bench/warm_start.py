"""Warm start of the tiny policy: held-out pass rates against SFT steps and wall time (issue 3, item 5).

Trains `rl.warm_start` from the randomly initialised tiny policy with the given settings, saves the policy at
each `--eval-at` step, and evaluates each save on the held-out easy and medium splits of math and JSON schema
(`python -m rl.evaluate`, one vLLM engine per save, temperature 1). The issue's target: 20-60% on math medium
and JSON-schema medium within 5 minutes on 2 cores. Writes bench/results/warm_start.json (one entry per run,
appended) and prints a markdown table.

    .venv/bin/python bench/warm_start.py --steps 500 --eval-at 250,500
    .venv/bin/python bench/warm_start.py --steps 500 --eval-at 500 --num-tasks 3000   # the RL task set only
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rl.model import TINY_POLICY_INIT_DIR  # noqa: E402
from rl.warm_start import WarmStartConfig, train  # noqa: E402

LEVELS = ("easy", "medium")


def evaluate(model_dir: Path, tasks: int, samples: int) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-m", "rl.evaluate", "--model", str(model_dir), "--difficulty",
                          ",".join(LEVELS), "--tasks", str(tasks), "--samples", str(samples)],
                         cwd=REPO, capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(f"rl.evaluate failed on {model_dir}:\n{out.stderr[-3000:]}")
    rates = {}
    for line in out.stdout.splitlines():
        if line.startswith("{"):
            rates.update({k: v for k, v in json.loads(line).items() if k.endswith("pass_rate")})
    return rates


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=None, help="SFT steps (default: WarmStartConfig's)")
    parser.add_argument("--eval-at", default="", help="comma-separated steps to evaluate (default: the last)")
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--num-tasks", type=int, default=None, help="generated tasks per environment for SFT data")
    parser.add_argument("--prompt-loss-weight", type=json.loads, default=None,
                        help='JSON per environment, e.g. \'{"default": 0.5, "math": 0.0}\'')
    parser.add_argument("--level-fraction", type=json.loads, default=None,
                        help='JSON "env/level" -> fraction of examples kept, e.g. \'{"json_schema/easy": 0.3}\'')
    parser.add_argument("--result-digit-weight", type=float, default=None,
                        help="loss weight of result digits after '=' (WarmStartConfig.result_digit_weight)")
    parser.add_argument("--exclude-rl-tasks", action=argparse.BooleanOptionalAction, default=None,
                        help="leave out the RL run's whole default task set (WarmStartConfig.exclude_rl_tasks; "
                             "default on)")
    parser.add_argument("--envs", default=None, help="comma-separated SFT environments (default: WarmStartConfig's)")
    parser.add_argument("--init", type=Path, default=None, help="initial policy (default: the tiny policy's build)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tasks", type=int, default=100, help="held-out tasks per environment and level")
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "warm_start.json")
    parser.add_argument("--label", default="")
    parser.add_argument("--keep", type=Path, default=None, help="keep the trained policies in this directory")
    args = parser.parse_args(argv)

    fields = {"steps": args.steps, "lr": args.lr, "batch_size": args.batch_size, "seed": args.seed,
              "prompt_loss_weight": args.prompt_loss_weight, "level_fraction": args.level_fraction,
              "result_digit_weight": args.result_digit_weight, "exclude_rl_tasks": args.exclude_rl_tasks}
    if args.envs:
        fields["envs"] = args.envs.split(",")
    cfg = WarmStartConfig(**{k: v for k, v in fields.items() if v is not None})
    if args.num_tasks is not None:
        cfg = cfg.model_copy(update={"env_options": {e: {"num_tasks": args.num_tasks} for e in cfg.envs}})
    points = sorted({int(s) for s in args.eval_at.split(",") if s} | {cfg.steps})
    if points[0] < 1 or points[-1] > cfg.steps:
        parser.error(f"--eval-at steps must lie in 1..{cfg.steps}")
    every = math.gcd(*points) if len(points) > 1 else 0

    from rl.tiny_policy import ensure_built

    init = args.init or ensure_built(TINY_POLICY_INIT_DIR)
    with tempfile.TemporaryDirectory(prefix="polyrl-warm-bench-") as tmp:
        final = (args.keep or Path(tmp)) / "policy"
        t0 = time.time()
        info = train(init, final, cfg, save_every=every)
        train_s = time.time() - t0
        rows = []
        for step in points:
            model = final if step == cfg.steps else final.with_name(f"policy-step{step}")
            rates = evaluate(model, args.tasks, args.samples)
            # wall time to reach this step: training time scales with steps (saves excluded, they take <1 s)
            rows.append({"step": step, "train_seconds_est": round(info["seconds"] * step / cfg.steps, 1),
                         **{k: round(v, 4) for k, v in rates.items()}})
            print(json.dumps(rows[-1]), flush=True)
    entry = {"label": args.label, "time": time.strftime("%Y-%m-%d %H:%M"), "config": cfg.model_dump(),
             "examples": info["examples"], "train_seconds": round(train_s, 1), "tokens_per_second": info["tokens_per_second"],
             "final_loss": round(info["final_loss"], 4), "eval": {"tasks": args.tasks, "samples": args.samples}, "rows": rows}
    history = json.loads(args.out.read_text()) if args.out.is_file() else []
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(history + [entry], indent=1) + "\n")
    cols = [f"{e}/{lvl}/pass_rate" for lvl in LEVELS for e in ("math", "json_schema")]
    print(f"\n{args.label or 'warm start'}: {info['tokens_per_second']:,} tok/s, final loss {info['final_loss']:.3f}")
    print("| step | train s | " + " | ".join(c.replace("/pass_rate", "") for c in cols) + " |")
    print("|---|---|" + "---|" * len(cols))
    for r in rows:
        print(f"| {r['step']} | {r['train_seconds_est']} | " + " | ".join(f"{100 * r.get(c, 0):.1f}%" for c in cols) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
