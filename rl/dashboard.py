"""The live dashboard (issue 9): TensorBoard on a run directory, and Weights & Biases as an option.

    python -m rl.dashboard runs/tiny-cpu            # or: make dashboard RUN=runs/tiny-cpu
    python -m rl.dashboard runs                     # every run below runs/, overlaid in TensorBoard
    python -m rl.dashboard runs/tiny-cpu --host 0.0.0.0 --port 6006   # reachable from other hosts (no auth!)

One metric namespace, written by rl/orchestrator.py through rl/metrics.py (TensorBoard groups by the first part):
  env/<name>/{reward,pass_rate,length,truncation_rate,zero_signal_fraction,verify_errors}   per environment
  eval/<name>/<level>/{pass_rate,reward}                                                     held-out evaluation
  rollout/{tokens_per_s,samples_per_s,samples,seconds,batch_latency_seconds}                 generation
  learner/{pg_loss,is_weight_mean,is_weight_max,is_masked_fraction,...,wait_seconds,train_seconds,
           elapsed_seconds,policy_version}                                                   training
  sync/{export,load}_seconds   buffer/{staleness_mean,stale_groups_dropped,...}   curriculum/...   genrm/...

Binding: 127.0.0.1 by default. TensorBoard has no authentication, so serving it on another interface is an
explicit choice (--host).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from pathlib import Path

from pydantic import model_validator

from rl.metrics import MetricsLogger
from rl.section import Section

EVENT_GLOB = "events.out.tfevents*"


class DashboardConfig(Section):
    wandb: bool = False
    """Also send every scalar and histogram to Weights & Biases (TensorBoard event files and metrics.jsonl are
    written either way). Needs `pip install wandb` (not a polyrl dependency) and `wandb login`, WANDB_API_KEY,
    or WANDB_MODE=offline."""
    wandb_project: str = "polyrl"
    """W&B project of the run; the W&B run name is run.name."""
    wandb_entity: str | None = None
    """W&B entity (user or team); None uses the logged-in default."""

    @model_validator(mode="after")
    def _wandb_installed(self) -> "DashboardConfig":
        # Checked when the config is validated, so a missing package stops the run before anything starts.
        if self.wandb and importlib.util.find_spec("wandb") is None:
            raise ValueError(WANDB_MISSING)
        return self


WANDB_MISSING = ("dashboard.wandb=true but the wandb package is not installed: `pip install wandb` and `wandb login` "
                 "(or set WANDB_MODE=offline), or set dashboard.wandb=false; TensorBoard needs nothing extra")


class WandbMetricsLogger(MetricsLogger):
    """MetricsLogger that also sends each step's scalars (and histograms) to a W&B run."""

    def __init__(self, run_dir: Path, cfg: DashboardConfig, run_name: str, config: dict | None = None):
        try:
            import wandb
        except ImportError as err:  # the config validator normally catches this first
            raise RuntimeError(WANDB_MISSING) from err
        super().__init__(run_dir)
        self._wandb = wandb
        self.wandb_run = wandb.init(project=cfg.wandb_project, entity=cfg.wandb_entity, name=run_name,
                                    dir=str(self.run_dir), config=config, resume="allow")

    def log(self, step: int, scalars: dict[str, float], histograms: dict[str, list[float]] | None = None) -> None:
        super().log(step, scalars, histograms)
        data: dict = {k: float(v) for k, v in scalars.items() if v is not None}
        for k, values in (histograms or {}).items():
            if values:
                data[k] = self._wandb.Histogram(values)
        self.wandb_run.log(data, step=step)

    def close(self) -> None:
        super().close()
        self.wandb_run.finish()


def open_metrics(cfg, run_dir: Path) -> MetricsLogger:
    """The run's metrics sink: TensorBoard + metrics.jsonl, plus W&B when cfg.dashboard.wandb is set."""
    dash = getattr(cfg, "dashboard", None)
    if dash is not None and dash.wandb:
        return WandbMetricsLogger(run_dir, dash, cfg.run.name, config=cfg.model_dump(mode="json"))
    return MetricsLogger(run_dir)


# ----------------------------------------------------------------------------------------------- TensorBoard


def event_files(logdir: Path) -> list[Path]:
    return sorted(Path(logdir).rglob(EVENT_GLOB))


class NoEventFiles(FileNotFoundError):
    pass


def check_logdir(logdir: Path) -> list[Path]:
    """The event files under logdir, or an error saying what a run directory should hold."""
    logdir = Path(logdir)
    if not logdir.is_dir():
        raise NoEventFiles(f"{logdir}: no such directory (pass a run directory, e.g. runs/tiny-cpu, or runs/)")
    files = event_files(logdir)
    if not files:
        raise NoEventFiles(
            f"{logdir}: no TensorBoard event files ({EVENT_GLOB}) in it or below it; a training run writes them "
            f"to <run dir>/tensorboard/ (run.output_dir/run.name, e.g. runs/tiny-cpu) from its first step on"
        )
    return files


def start_tensorboard(logdir: Path, host: str = "127.0.0.1", port: int | None = None,
                      reload_s: int = 5) -> tuple[object, str]:
    """Start TensorBoard's server in this process (a background thread); returns (server, url). port None: 6006,
    or the next free port after it."""
    from tensorboard import program

    tb = program.TensorBoard()
    # reload_interval: a live run appends to its event file; TensorBoard rereads it this often.
    tb.configure(logdir=str(logdir), host=host, port=port, reload_interval=reload_s)
    url = tb.launch()
    return tb, url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rl.dashboard",
                                     description="Start TensorBoard on a run directory (or a directory of runs).")
    parser.add_argument("run_dir", type=Path, help="run directory (runs/NAME) or a parent of several runs")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=None,
                        help="port (default: 6006, or the next free one after it; 0 picks any free port)")
    args = parser.parse_args(argv)
    try:
        files = check_logdir(args.run_dir)
    except NoEventFiles as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    _, url = start_tensorboard(args.run_dir, args.host, args.port)
    runs = sorted({str(f.parent.relative_to(args.run_dir)) for f in files})
    print(f"TensorBoard for {args.run_dir} ({len(runs)} event director{'y' if len(runs) == 1 else 'ies'}): {url}",
          flush=True)
    print("press Ctrl-C to stop", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
