"""Shared pieces of the fault-injection tests: the run config and metric comparison."""

from __future__ import annotations

import socket
import threading
import time

from rl.config import build_config
from rl.metrics import read_jsonl

# Wall-clock and memory figures differ between any two runs; everything else must not.
TIMING = ("seconds", "_per_s", "elapsed", "latency", "rss_mb")


def cfg(tmp_path, tiny_policy_dir, *extra, steps: int = 4):
    return build_config(envs="echo", overrides=[
        f"model.path={tiny_policy_dir}", f"run.output_dir={tmp_path}", "run.name=run",
        f"run.steps={steps}", "run.prompts_per_step=4", "run.samples_per_prompt=4", "run.checkpoint_every=1",
        "rollout.max_new_tokens=16", "learner.micro_batch_size=8", "learner.lr=1e-3",
        "eval.tasks_per_env=2", "eval.samples=2", "eval.every=2",
        "envs.echo.options.num_tasks=60", "envs.echo.options.partial_credit=true",
        "loss.overlong_filter=false", *extra,
    ])


def per_step(run_dir) -> dict[tuple[str, int], dict]:
    """The last row logged for each (kind, step), timing keys removed: a resumed run logs the steps between its
    checkpoint and the kill twice, and the second time is what it continued from."""
    out: dict[tuple[str, int], dict] = {}
    for row in read_jsonl(run_dir / "metrics.jsonl"):
        kind = "train" if "learner/pg_loss" in row else "eval" if any(k.startswith("eval/") for k in row) else None
        if kind is None:
            continue
        out[(kind, row["step"])] = {k: v for k, v in row.items()
                                    if k not in ("step", "time", "wall_time") and not any(t in k for t in TIMING)}
    return out


def differences(a: dict, b: dict) -> list[str]:
    diffs = []
    for key in sorted(set(a) | set(b)):
        if key not in a or key not in b:
            diffs.append(f"{key}: only in {'the uninterrupted run' if key in a else 'the resumed run'}")
            continue
        for k in sorted(set(a[key]) | set(b[key])):
            if a[key].get(k) != b[key].get(k):
                diffs.append(f"{key} {k}: {a[key].get(k)!r} != {b[key].get(k)!r}")
    return diffs


def serve_in_thread(app):
    """Serve an in-process FastAPI app (an environment with injected faults) on a free port; returns the uvicorn
    server (set `should_exit` to stop it) and its URL."""
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.time() + 10
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    return server, f"http://127.0.0.1:{port}"
