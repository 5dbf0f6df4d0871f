"""Profile the current policy: K samples on every training task, per-task pass rates into a JSONL file.

    python -m curricula.profile --envs math,json_schema --samples 8            # -> runs/tiny-cpu/profile.jsonl
    python -m curricula.profile --config configs/tiny-cpu.yaml --envs math --samples 16 --out /tmp/p.jsonl

Generation goes through the real rollout worker (rl/rollout.py's RolloutWorker, in this process) and scoring
through each environment server's /verify (a local server per environment, or envs.NAME.url), exactly as in
training. The file sits beside the run (default <run dir>/profile.jsonl, or curriculum.profile), where the
pass-rate Gaussian sampler finds it. It is written one batch at a time, so a killed profile is resumed by running
the same command again: tasks already in the file are skipped. Tasks whose verification failed (error verdicts)
are not written and are retried on the next run. Held-out tasks (curricula/split.py) are never profiled.

File format: the first line is a header ({"header": {...}}: model fingerprint, samples, temperature, length
limit) that a resumed run must match; then one line per task:
    {"env": "math", "task_id": "easy-000001", "samples": 8, "passes": 5, "pass_rate": 0.625, "mean_reward": 0.625}
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

from curricula.split import training_tasks

PASS_THRESHOLD = 1.0 - 1e-9  # reward >= 1 passes (rl/evaluate.py pass_rate)


def profile_path(cfg, run_dir: str | Path | None) -> Path | None:
    """Where the profile of a run lives: curriculum.profile if set, else <run dir>/profile.jsonl."""
    if cfg.profile:
        return Path(cfg.profile)
    return Path(run_dir) / "profile.jsonl" if run_dir is not None else None


def _read(path: Path) -> tuple[dict | None, list[dict]]:
    """(header, rows). A last line cut short by a kill is ignored (the resumed run rewrites that task)."""
    header, rows = None, []
    lines = Path(path).read_text().splitlines()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            if n == len(lines):
                break
            raise ValueError(f"profile {path}: line {n} is not JSON ({line[:60]!r}); delete the file and re-profile") from None
        if "header" in obj:
            header = obj["header"]
            continue
        missing = {"env", "task_id", "samples", "passes"} - set(obj)
        if missing:
            raise ValueError(f"profile {path}: line {n} lacks {sorted(missing)}; it was not written by curricula.profile")
        rows.append(obj)
    return header, rows


def load_profile(path: str | Path) -> dict[str, dict[str, tuple[float, float]]]:
    """{env: {task_id: (passes, samples)}} from a profile file (a task listed twice: the later line counts)."""
    _, rows = _read(Path(path))
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for r in rows:
        if not 0 <= r["passes"] <= r["samples"]:
            raise ValueError(f"profile {path}: {r['env']}/{r['task_id']} has passes={r['passes']} of samples={r['samples']}")
        out.setdefault(r["env"], {})[r["task_id"]] = (float(r["passes"]), float(r["samples"]))
    return out


def model_fingerprint(model_dir: Path) -> str:
    """sha256 of the weight files: a profile belongs to one checkpoint (a re-trained warm start needs a new one)."""
    h = hashlib.sha256()
    files = sorted(model_dir.glob("*.safetensors")) or sorted(model_dir.glob("*.bin"))
    for f in files:
        h.update(f.name.encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def _header(cfg, samples: int, rollout) -> dict[str, Any]:
    # seed and options: environments generate their tasks from them, so they say which tasks the ids name
    return {"model": str(cfg.model.resolved_path()), "fingerprint": model_fingerprint(cfg.model.resolved_path()),
            "samples": samples, "temperature": rollout.temperature, "max_new_tokens": rollout.max_new_tokens,
            "seed": cfg.run.seed, "options": {n: e.options for n, e in cfg.envs.items()}}


def read_header(path: str | Path) -> dict | None:
    return _read(Path(path))[0]


def _check_header(path: Path, old: dict | None, new: dict) -> None:
    if old is None:
        raise ValueError(f"profile {path} has no header line: not written by curricula.profile; use another --out")
    diff = [k for k in ("fingerprint", "samples", "temperature", "max_new_tokens", "seed") if old.get(k) != new[k]]
    diff += [f"options.{n}" for n in new["options"] if n in old.get("options", {}) and old["options"][n] != new["options"][n]]
    if diff:
        what = ", ".join(f"{k} {_get(old, k)!r} -> {_get(new, k)!r}" for k in diff)
        raise ValueError(f"profile {path} was made with other settings ({what}); delete it to re-profile or "
                         "pass --out NEW.jsonl")


def _get(d: dict, dotted: str) -> Any:
    for part in dotted.split("."):
        d = d.get(part) if isinstance(d, dict) else None
    return d


class _Progress:
    """One status line (redrawn in place on a terminal, one line per batch otherwise)."""

    def __init__(self, total: int, stream=sys.stderr):
        self.total, self.done, self.stream, self.t0 = total, 0, stream, time.time()
        self.tty = stream.isatty()

    def advance(self, n: int, env: str) -> None:
        self.done += n
        rate = self.done / max(time.time() - self.t0, 1e-9)
        eta = (self.total - self.done) / rate if rate else 0.0
        pct = 100.0 * self.done / max(self.total, 1)
        bar = "#" * int(pct / 5)
        line = f"profile [{bar:<20}] {self.done}/{self.total} tasks ({pct:.0f}%) {env}  {rate:.1f} tasks/s  eta {eta:.0f}s"
        self.stream.write(("\r" + line) if self.tty else line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")


async def _tasks(clients: dict, cfg) -> dict[str, list]:
    """Every environment's training tasks, sorted by id (the orchestrator's split and `envs.NAME.difficulties`)."""
    out = {}
    for name, client in clients.items():
        info = await client.info()
        tasks = await client.tasks(count=info.task_count, seed=0)
        out[name] = training_tasks(name, tasks, cfg.envs[name].difficulties, info.difficulties)
    return out


async def profile(cfg, samples: int, out: Path, *, batch: int = 32, max_tasks: int = 0, worker=None,
                  log=print) -> dict[str, dict[str, float]]:
    """Profile every training task not yet in `out`; returns per-env counts (profiled, solved, unsolved, ...)."""
    from rl.train import _create_env_servers

    out = Path(out)
    header = _header(cfg, samples, worker.cfg if worker is not None else cfg.rollout)  # what generates is recorded
    done: set[tuple[str, str]] = set()
    if out.is_file() and out.stat().st_size:
        old, rows = _read(out)
        _check_header(out, old, header)
        done = {(r["env"], r["task_id"]) for r in rows}
        text = out.read_text()
        if text and not text.endswith("\n"):  # a line cut short by a kill: drop it, its task is redone
            out.write_text(text[: text.rfind("\n") + 1])
        log(f"profile: resuming {out}: {len(done)} tasks already profiled")
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"header": header}) + "\n")
    clients, servers = _create_env_servers(cfg, log)
    own_worker = worker is None
    errors = 0
    try:
        pools = await _tasks(clients, cfg)
        todo = []
        for env, tasks in pools.items():
            tasks = tasks[:max_tasks] if max_tasks else tasks
            todo.extend(t for t in tasks if (t.env, t.task_id) not in done)
        log(f"profile: {len(todo)} tasks to profile x {samples} samples "
            f"({', '.join(f'{e} {len(p[:max_tasks] if max_tasks else p)}' for e, p in pools.items())} training tasks)")
        if todo and worker is None:
            from rl.rollout import RolloutWorker

            worker = RolloutWorker(cfg.model, cfg.rollout, cfg.run.seed)
        if todo and any(t.meta.get("multi_turn") for t in todo):
            worker.set_environments({n: {"url": c.url, "timeout_s": cfg.envs[n].timeout_s,
                                         "retries": cfg.envs[n].retries} for n, c in clients.items()})
        bar = _Progress(len(todo))
        from rl.types import VerifyItem

        with open(out, "a") as fh:
            for i in range(0, len(todo), batch):
                chunk = todo[i : i + batch]
                groups = worker.generate(chunk, samples)["groups"]
                for env in dict.fromkeys(t.env for t in chunk):
                    idx = [j for j, t in enumerate(chunk) if t.env == env]
                    items = [VerifyItem(task_id=chunk[j].task_id, response=s.response_text, session_id=s.session_id)
                             for j in idx for s in groups[j]]
                    verdicts = iter(await clients[env].verify(items))
                    for j in idx:
                        vs = [next(verdicts) for _ in groups[j]]
                        if any(v.status == "error" for v in vs):
                            errors += 1  # not written: retried by the next run
                            continue
                        rewards = [v.reward for v in vs]
                        passes = sum(r >= PASS_THRESHOLD for r in rewards)
                        fh.write(json.dumps({"env": env, "task_id": chunk[j].task_id, "samples": len(rewards),
                                             "passes": passes, "pass_rate": passes / len(rewards),
                                             "mean_reward": sum(rewards) / len(rewards)}) + "\n")
                fh.flush()
                bar.advance(len(chunk), chunk[-1].env)
        bar.close()
    finally:
        for c in clients.values():
            await c.aclose()
        for s in servers:
            s.stop()
        if own_worker and worker is not None:
            del worker
    summary = summarize(out, pools)
    summary["_errors"] = {"verify_error_tasks": float(errors)}
    return summary


def summarize(path: Path, pools: dict[str, list] | None = None) -> dict[str, dict[str, float]]:
    prof = load_profile(path)
    out = {}
    for env, rows in prof.items():
        if pools is not None and env not in pools:
            continue
        rates = [p / n for p, n in rows.values()]
        out[env] = {"profiled": float(len(rates)), "mean_pass_rate": sum(rates) / len(rates),
                    "solved": float(sum(r >= 1.0 for r in rates)), "unsolved": float(sum(r <= 0.0 for r in rates))}
    return out


def main(argv: list[str] | None = None) -> int:
    from rl.config import ConfigError, add_cli_arguments, from_args

    parser = argparse.ArgumentParser(prog="python -m curricula.profile", description=__doc__.split("\n")[0])
    add_cli_arguments(parser)
    parser.add_argument("--samples", type=int, default=8, help="K: samples per task (default 8)")
    parser.add_argument("--out", default=None, help="profile file (default curriculum.profile or <run dir>/profile.jsonl)")
    parser.add_argument("--batch", type=int, default=32, help="tasks per generate call (default 32)")
    parser.add_argument("--max-tasks", type=int, default=0, help="profile only the first N training tasks per env (0 = all)")
    args = parser.parse_intermixed_args(argv)  # overrides may come before or after the options
    if args.samples < 1 or args.batch < 1 or args.max_tasks < 0:
        parser.error("--samples and --batch must be >= 1, --max-tasks >= 0")
    try:
        cfg = from_args(args)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else profile_path(cfg.curriculum, cfg.run_dir)
    if not (cfg.model.resolved_path() / "config.json").is_file():
        print(f"error: no policy at {cfg.model.resolved_path()} (model.path={cfg.model.path!r})", file=sys.stderr)
        return 2
    try:
        summary = asyncio.run(profile(cfg, args.samples, out, batch=args.batch, max_tasks=args.max_tasks,
                                      log=lambda m: print(m, flush=True)))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    errors = summary.pop("_errors")["verify_error_tasks"]
    for env, s in summary.items():
        print(f"profile {env}: {s['profiled']:.0f} tasks, mean pass rate {s['mean_pass_rate']:.3f}, "
              f"{s['solved']:.0f} at 1.0 (removed by the curriculum), {s['unsolved']:.0f} at 0.0")
    print(f"profile written to {out}")
    if errors:
        print(f"{errors:.0f} tasks had verify errors and were not written: run the same command again to retry them",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
