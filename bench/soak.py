"""Soak: the real training job on the tiny policy with every environment for M minutes (issue 10, item 7).

    python bench/soak.py --minutes 30                       # all environments, chat through the GenRM judge
    python bench/soak.py --minutes 2 --envs math,code,tools --interval 3 --out runs/soak-short

What it does:
1. Runs `python rl/train.py --envs ... run.steps=1000000` as a subprocess (its own local Ray) with a private
   TMPDIR (and RAY_TMPDIR inside it), so every temporary file the job and its children make can be attributed to
   it on a shared machine; after `--minutes` it sends SIGINT to the driver, which runs train.py's cleanup
   (actors killed, environment servers stopped, Ray shut down) exactly as a user's Ctrl-C would.
2. Every `--interval` seconds it walks the driver's process tree with psutil and records, per process, its role
   (driver, rollout_worker, learner, env:NAME, env:NAME/child = verify pool and sandboxes, genrm, genrm/child,
   ray_system, ...), RSS, PSS and open file descriptors, to <out>/samples.jsonl. It also polls each
   environment server's GET /stats (open episode sessions; the tools env's in-memory SQLite databases).
3. At the end, per role: peak RSS (sum over the role's processes), the slope in MB/hour of its floor (the
   minimum RSS of each sixth of the run after start-up, Theil-Sen; fails above the bound), fd counts (fails if they grow); leak checks: files
   left in the private TMPDIR (Ray's session logs excluded, they are kept by design), sandbox directories,
   SQLite files, checkpoint temp dirs, processes still alive after the job exited; throughput: samples/s over
   the first 20% vs the last 20% of steps from metrics.jsonl (pass if the end is within 10% of the start).
Output: <out>/summary.json and a Markdown table on stdout (also <out>/summary.md). Exit code 1 when a check
fails, 2 when the run itself failed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parent.parent
ALL_ENVS = "math,json_schema,code,tools,long_context,chat"
# Bound on memory growth over the second half: a leak of a few KB per sample shows at tens of MB/hour at this
# run's ~10 samples/s, while allocator and cache warm-up noise of the tiny run stays far below it.
DEFAULT_SLOPE_MB_PER_H = 64.0
FLOOR_WINDOWS = 6  # the floor is the minimum of each sixth of the run (after start-up)
FD_GROWTH_ALLOWED = 8  # HTTP keep-alive connections and pool pipes come and go; a leak grows without bound
_ENV_LINE = re.compile(r"^environment (\S+): (http://\S+)$", re.M)
_SQLITE = (".db", ".sqlite", ".sqlite3", ".db-journal", ".db-wal")
# Per-user caches torch/vLLM create once and reuse across runs (not growth): listed, not failed on.
_CACHES = (re.compile(r"^torchinductor_"), re.compile(r"^triton"), re.compile(r"^\.triton"))
NOT_CHECKED_ROLES = ("ray_idle_worker",)  # Ray starts and reaps idle workers: their sum jumps, not a leak


# ------------------------------------------------------------------------------------------ process roles
def _own_role(p: psutil.Process, driver_pid: int) -> str | None:
    """The role a process has by its own command line (None: inherit the parent's role)."""
    if p.pid == driver_pid:
        return "driver"
    try:
        cmd = p.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None
    line = " ".join(cmd)
    if "environments.serve" in cmd:
        i = cmd.index("environments.serve")
        return f"env:{cmd[i + 1]}" if i + 1 < len(cmd) else "env:?"
    if "genrm.serve" in cmd:
        return "genrm"
    head = cmd[0] if cmd else ""
    if head.startswith("ray::RolloutWorker"):
        return "rollout_worker"
    if head.startswith("ray::Learner"):
        return "learner"
    if head.startswith("ray::IDLE") or "default_worker.py" in line:
        return "ray_idle_worker"
    if head.startswith("ray::") or any(k in line for k in ("gcs_server", "raylet", "log_monitor", "dashboard",
                                                            "ray/_private", "runtime_env")):
        return "ray_system"
    return None


def role_tree(driver: psutil.Process) -> dict[int, tuple[str, psutil.Process]]:
    """pid -> (role, process) for the driver and all its descendants; children without a role of their own
    (verify pool workers, sandboxes, vLLM engine cores, multiprocessing's resource tracker) get
    '<parent role>/child'."""
    out: dict[int, tuple[str, psutil.Process]] = {driver.pid: ("driver", driver)}
    try:
        kids = driver.children(recursive=True)
    except psutil.NoSuchProcess:
        return {}
    by_pid = {k.pid: k for k in kids}
    roles: dict[int, str] = {driver.pid: "driver"}

    def resolve(p: psutil.Process) -> str:
        if p.pid in roles:
            return roles[p.pid]
        own = _own_role(p, driver.pid)
        if own is None:
            try:
                ppid = p.ppid()
            except psutil.NoSuchProcess:
                ppid = driver.pid
            parent = roles.get(ppid) or (resolve(by_pid[ppid]) if ppid in by_pid else "driver")
            own = parent if parent.endswith("/child") else f"{parent}/child"
        roles[p.pid] = own
        return own

    for k in kids:
        out[k.pid] = (resolve(k), k)
    return out


def sample_processes(driver: psutil.Process, t: float) -> list[dict[str, Any]]:
    rows = []
    for pid, (role, p) in role_tree(driver).items():
        try:
            with p.oneshot():
                mem = p.memory_full_info()  # pss: shared pages split between the processes sharing them
                rows.append({"t": round(t, 2), "pid": pid, "role": role, "rss_mb": mem.rss / 2**20,
                             "pss_mb": getattr(mem, "pss", mem.rss) / 2**20, "fds": p.num_fds(),
                             "threads": p.num_threads(), "name": (p.cmdline() or [p.name()])[0][:60]})
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue  # a sandbox or verify worker that ended between the walk and the read
    return rows


def env_stats(urls: dict[str, str]) -> dict[str, Any]:
    import httpx

    out = {}
    for name, url in urls.items():
        try:
            r = httpx.get(f"{url}/stats", timeout=5)
            out[name] = r.json() if r.status_code == 200 else {"http_status": r.status_code}
        except (httpx.HTTPError, ValueError) as e:
            out[name] = {"error": f"{type(e).__name__}: {e}"[:200]}
    return out


# ------------------------------------------------------------------------------------------- file checks
def file_snapshot(tmpdir: Path, run_dir: Path) -> dict[str, Any]:
    """What the job leaves on disk: private-TMPDIR entries (Ray's session dir aside), sandbox dirs, SQLite
    files, checkpoint temp dirs; plus /dev/shm entries (machine-wide, so only a hint on a shared machine)."""
    entries, sandboxes, sqlite = [], [], []
    for root, dirs, files in os.walk(tmpdir):
        rel = Path(root).relative_to(tmpdir)
        if rel.parts[:1] == ("ray",):
            continue
        for n in dirs + files:
            path = str(rel / n)
            if rel == Path("."):
                if n == "ray":
                    continue
                entries.append(path)
            if "sandbox" in n:
                sandboxes.append(path)
            if n.endswith(_SQLITE):
                sqlite.append(path)
    ckpt_tmp = []
    for root, dirs, files in os.walk(run_dir):
        for n in dirs + files:
            if n.startswith(".tmp") or n.endswith(".tmp"):
                ckpt_tmp.append(str(Path(root, n).relative_to(run_dir)))
            if n.endswith(_SQLITE):
                sqlite.append(str(Path(root, n)))
    try:
        shm = sorted(os.listdir("/dev/shm"))
    except OSError:
        shm = []
    return {"tmp_entries": sorted(entries), "sandbox_dirs": sorted(sandboxes), "sqlite_files": sorted(sqlite),
            "checkpoint_tmp": sorted(ckpt_tmp), "dev_shm": shm}


# ---------------------------------------------------------------------------------------------- analysis
def slope_per_hour(ts: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys (MB) over ts (seconds), in MB/hour; 0 with fewer than 3 points."""
    n = len(ts)
    if n < 3:
        return 0.0
    mt, my = sum(ts) / n, sum(ys) / n
    var = sum((t - mt) ** 2 for t in ts)
    return 0.0 if var == 0 else sum((t - mt) * (y - my) for t, y in zip(ts, ys)) / var * 3600


def role_series(rows: list[dict], key: str) -> dict[str, list[tuple[float, float]]]:
    """role -> [(t, sum of `key` over the role's processes at t)]."""
    acc: dict[str, dict[float, float]] = {}
    for r in rows:
        acc.setdefault(r["role"], {}).setdefault(r["t"], 0.0)
        acc[r["role"]][r["t"]] += r[key]
    return {role: sorted(v.items()) for role, v in acc.items()}


def baseline(series: list[tuple[float, float]], window_s: float) -> list[tuple[float, float]]:
    """The lowest sample of each `window_s` window: a process's floor. A learner jumps by 1-2 GB during every
    training step and checkpoint and falls back; least squares through those spikes measures where the last
    spike fell, not growth, while a leak lifts the floor."""
    out: dict[int, tuple[float, float]] = {}
    for t, y in series:
        k = int(t // window_s)
        if k not in out or y < out[k][1]:
            out[k] = (t, y)
    return [out[k] for k in sorted(out)]


def theil_sen_per_hour(points: list[tuple[float, float]]) -> float:
    """Median of the pairwise slopes, in MB/hour: one window whose minimum missed the process's low point (a
    learner sampled only mid-step) moves it little, where it tilts a least-squares line."""
    slopes = sorted((y2 - y1) / (t2 - t1) * 3600 for i, (t1, y1) in enumerate(points) for t2, y2 in points[i + 1:]
                    if t2 > t1)
    if not slopes:
        return 0.0
    mid = len(slopes) // 2
    return slopes[mid] if len(slopes) % 2 else (slopes[mid - 1] + slopes[mid]) / 2


def analyse_memory(rows: list[dict], bound_mb_h: float, warm_t: float = 0.0,
                   floor_windows: int = FLOOR_WINDOWS) -> dict[str, dict[str, Any]]:
    """Per role over the samples from `warm_t` (the first finished step: start-up is not a leak) on. The check
    uses the floor: the minimum of each of `floor_windows` equal windows of the run, and the Theil-Sen slope
    through them. The least-squares slope of all samples of the second half is reported as `raw`."""
    total = {role: len(v) for role, v in role_series(rows, "rss_mb").items()}
    rows = [r for r in rows if r["t"] >= warm_t] or rows
    rss, pss, fds = role_series(rows, "rss_mb"), role_series(rows, "pss_mb"), role_series(rows, "fds")
    times = sorted({r["t"] for r in rows})
    half = times[len(times) // 2] if times else 0.0
    window_s = max((times[-1] - times[0]) / floor_windows * 1.000001, 1e-9) if times else 1.0  # last sample in
    out = {}
    for role, series in sorted(rss.items()):
        second = [(t, y) for t, y in series if t >= half]
        raw = slope_per_hour([t for t, _ in second], [y for _, y in second])
        floor = baseline([(t - times[0], y) for t, y in series], window_s)
        s = theil_sen_per_hour(floor) if len(floor) >= 3 else raw
        f = [y for _, y in fds[role]]
        q = max(1, len(f) // 4)
        # fd growth: median of the last quarter minus median of the second quarter (after start-up)
        med = lambda xs: sorted(xs)[len(xs) // 2] if xs else 0.0  # noqa: E731
        fd_growth = med(f[-q:]) - med(f[q:2 * q] or f[:q])
        out[role] = {"floor_mb": [round(y, 1) for _, y in floor], "samples": len(series), "samples_total": total[role], "peak_rss_mb": round(max(y for _, y in series), 1),
                     "last_rss_mb": round(series[-1][1], 1),
                     "peak_pss_mb": round(max(y for _, y in pss[role]), 1),
                     "slope_mb_per_h": round(s, 1), "raw_slope_mb_per_h": round(raw, 1), "slope_ok": s <= bound_mb_h or role in NOT_CHECKED_ROLES,
                     "fds_start": med(f[q:2 * q] or f[:q]), "fds_end": med(f[-q:]),
                     "fd_growth": fd_growth, "fds_ok": fd_growth <= FD_GROWTH_ALLOWED or role in NOT_CHECKED_ROLES}
    return out


def _metric_rows(metrics_path: Path) -> list[dict]:
    rows = []
    if metrics_path.is_file():
        for line in metrics_path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # the line being written when the job was stopped
    return rows


def learner_after_step(memory: dict[str, dict], metrics_path: Path, bound_mb_h: float) -> None:
    """The learner's own RSS after each step's heap trim (`learner/rss_mb_after_step`, max over ranks): the same
    point of every step, so its second-half Theil-Sen slope replaces the process-sample floor for the learner's
    check (samples every 10 s land anywhere in a step, whose activations come and go by 1-2 GB)."""
    pts = [(r["learner/elapsed_seconds"], r["learner/rss_mb_after_step"]) for r in _metric_rows(metrics_path)
           if "learner/rss_mb_after_step" in r and "learner/elapsed_seconds" in r]
    if "learner" not in memory or len(pts) < 10:
        return
    second = pts[len(pts) // 2:][-400:]  # at most 80k pairs
    m = memory["learner"]
    m["after_step_mb"] = [round(pts[len(pts) // 2][1], 1), round(pts[-1][1], 1)]
    m["process_floor_slope_mb_per_h"] = m["slope_mb_per_h"]
    m["slope_mb_per_h"] = round(theil_sen_per_hour(second), 1)
    m["slope_source"] = "learner/rss_mb_after_step"
    m["slope_ok"] = m["slope_mb_per_h"] <= bound_mb_h


def throughput(metrics_path: Path, frac: float = 0.2) -> dict[str, Any]:
    """samples/s over the first vs last `frac` of the training steps (step 1 excluded: it includes the
    pipeline fill), from each step's rollout/samples and the elapsed-time deltas."""
    rows = [r for r in _metric_rows(metrics_path) if "rollout/samples" in r and "learner/elapsed_seconds" in r]
    rows.sort(key=lambda r: r["step"])
    steps = [(rows[i]["step"], rows[i]["rollout/samples"],
              rows[i]["learner/elapsed_seconds"] - rows[i - 1]["learner/elapsed_seconds"],
              rows[i].get("learner/tokens_per_s", 0.0)) for i in range(1, len(rows))]
    if len(steps) < 5:
        return {"steps": len(rows), "ok": False, "reason": f"only {len(rows)} steps: too few to compare"}
    k = max(1, round(len(steps) * frac))

    def window(ws):
        return {"steps": [ws[0][0], ws[-1][0]], "samples_per_s": round(sum(w[1] for w in ws) / sum(w[2] for w in ws), 3),
                "learner_tokens_per_s": round(sum(w[3] for w in ws) / len(ws), 1)}

    first, last = window(steps[:k]), window(steps[-k:])
    ratio = last["samples_per_s"] / first["samples_per_s"]
    return {"steps": len(rows), "first": first, "last": last, "ratio": round(ratio, 3), "ok": ratio >= 0.9}


# -------------------------------------------------------------------------------------------------- run
def run_soak(minutes: float, *, envs: str = ALL_ENVS, out: Path = REPO / "runs" / "soak", interval: float = 10.0,
             overrides: list[str] = (), slope_bound: float = DEFAULT_SLOPE_MB_PER_H, nice: int = 0,
             stop_timeout: float = 120.0, min_steps: int = 0, log=print) -> dict[str, Any]:
    """The soak; `min_steps` keeps the job running past `minutes` (up to 3x, at least 10 minutes more) until that
    many steps finished, so a short run on a loaded machine still trains (tests; CI once saw 1 step in 2.7
    minutes while another job held both cores)."""
    out = Path(out).resolve()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    # short: Ray's unix socket paths under RAY_TMPDIR must stay below 107 characters
    tmpdir = Path(tempfile.mkdtemp(prefix="polyrl-soak-", dir="/tmp"))
    run_dir = out / "run"
    cmd = [sys.executable, str(REPO / "rl" / "train.py"), "--envs", envs, f"run.output_dir={out}", "run.name=run",
           "run.steps=1000000", "eval.every=0", "eval.tasks_per_env=0", *overrides]
    env = dict(os.environ, TMPDIR=str(tmpdir), RAY_TMPDIR=str(tmpdir / "ray"), PYTHONUNBUFFERED="1")
    env.pop("RAY_ADDRESS", None)  # its own local Ray, never a cluster the caller happens to point at
    (tmpdir / "ray").mkdir()
    before = file_snapshot(tmpdir, run_dir)
    log_path = out / "train.log"
    logf = open(log_path, "wb")
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True, preexec_fn=(lambda: os.nice(nice)) if nice else None)
    log(f"soak: pid {proc.pid}, {minutes:g} min, envs {envs}; log {log_path}; samples every {interval:g}s")
    driver = psutil.Process(proc.pid)
    samples_path, stats_path = out / "samples.jsonl", out / "env_stats.jsonl"
    rows: list[dict] = []
    seen: dict[int, tuple[str, float, str]] = {}  # pid -> (role, create_time, cmd) of every process seen
    urls: dict[str, str] = {}
    stats_rows: list[dict] = []
    warm_t: float | None = None  # seconds from start to the first finished training step
    metrics_path = run_dir / "metrics.jsonl"
    deadline = t0 + minutes * 60
    with open(samples_path, "w") as sf, open(stats_path, "w") as tf:
        steps_done = 0
        while proc.poll() is None and (time.monotonic() < deadline or (
                steps_done < min_steps and time.monotonic() < t0 + max(3 * minutes * 60, minutes * 60 + 600))):
            t = time.monotonic() - t0
            batch = sample_processes(driver, t)
            for r in batch:
                sf.write(json.dumps(r) + "\n")
                if r["pid"] not in seen:
                    try:
                        p = psutil.Process(r["pid"])
                        seen[r["pid"]] = (r["role"], p.create_time(), " ".join(p.cmdline())[:200])
                    except psutil.Error:
                        pass
            rows += batch
            if metrics_path.is_file():
                steps_done = metrics_path.read_text().count("learner/elapsed_seconds")
                if warm_t is None and steps_done:
                    warm_t = t
            if not urls or len(urls) < len(envs.split(",")):
                urls = dict(_ENV_LINE.findall(log_path.read_text(errors="replace")))
            if urls:
                st = {"t": round(t, 2), **env_stats(urls)}
                tf.write(json.dumps(st) + "\n")
                stats_rows.append(st)
            sf.flush()
            tf.flush()
            time.sleep(max(0.0, interval - (time.monotonic() - t0 - t)))
    failed_early = proc.poll() is not None
    stop = _stop(proc, stop_timeout, log) if not failed_early else {"by": "exited by itself", "seconds": 0.0}
    stop_clean = not failed_early and stop["by"] in ("SIGINT", "SIGTERM")
    logf.close()
    time.sleep(5)  # children that watch their parent (env servers, GenRM) notice within ~1 s
    survivors = []
    for pid, (role, created, cmdline) in seen.items():
        try:
            p = psutil.Process(pid)
            if abs(p.create_time() - created) < 0.01 and p.status() != psutil.STATUS_ZOMBIE:
                survivors.append({"pid": pid, "role": role, "cmd": cmdline})
                p.kill()  # ours (started by the job): do not leave it running
        except psutil.Error:
            pass
    after = file_snapshot(tmpdir, run_dir)
    memory = analyse_memory(rows, slope_bound, warm_t if warm_t is not None else 0.0)
    learner_after_step(memory, metrics_path, slope_bound)
    thr = throughput(metrics_path)
    sessions = _session_growth(stats_rows)
    leaks = {k: sorted(set(after[k]) - set(before[k])) for k in ("tmp_entries", "sandbox_dirs", "sqlite_files",
                                                                 "checkpoint_tmp", "dev_shm")}
    caches = [e for e in leaks["tmp_entries"] if any(c.match(e) for c in _CACHES)]
    # vLLM's torch FileStore rendezvous file (vllm/utils/network_utils.py get_file_store_init_method): left by
    # every engine whose process is killed (ray.kill) rather than shut down; one per engine start is bounded,
    # more would mean engine restarts leak one each.
    leaks["vllm_file_store"] = [e for e in leaks["tmp_entries"] if e.startswith("vllm_dist_")]
    leaks["tmp_entries"] = [e for e in leaks["tmp_entries"] if e not in caches and e not in leaks["vllm_file_store"]]
    engines = len({r["pid"] for r in rows if r["role"] in ("rollout_worker", "genrm")})  # vLLM engine processes
    leaks["processes_alive_after_exit"] = survivors
    checks = {
        "run_ok": not failed_early and stop_clean,
        "rss_slopes_ok": all(m["slope_ok"] for m in memory.values() if m["samples"] >= 3),
        "fds_ok": all(m["fds_ok"] for m in memory.values() if m["samples"] >= 3),
        "no_tmp_leak": not leaks["tmp_entries"] and not leaks["sandbox_dirs"],
        "no_sqlite_leak": not leaks["sqlite_files"] and all(s["ok"] for s in sessions.values()),
        "no_checkpoint_tmp": not leaks["checkpoint_tmp"],
        "vllm_file_stores_bounded": len(leaks["vllm_file_store"]) <= engines,
        "no_process_left": not survivors,
        "throughput_ok": thr.get("ok", False),
    }
    tail = log_path.read_text(errors="replace")[-3000:] if failed_early or not stop_clean else ""
    summary = {"minutes": minutes, "envs": envs.split(","), "wall_s": round(time.monotonic() - t0, 1),
               "interval_s": interval, "slope_bound_mb_per_h": slope_bound, "fd_growth_allowed": FD_GROWTH_ALLOWED,
               "warm_s": warm_t, "vllm_engines_started": engines, "tmp_caches": caches, "run_dir_mb": round(_du(run_dir) / 2**20, 1),
               "stop": stop, "exit_code": proc.returncode, "checks": checks, "ok": all(checks.values()), "memory": memory,
               "throughput": thr, "sessions": sessions, "leaks": leaks,
               "tmp_dev_shm_note": "dev_shm is machine-wide: entries there may belong to other jobs",
               "load_average": os.getloadavg(), "log_tail": tail, "run_dir": str(run_dir), "tmpdir": str(tmpdir)}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    (out / "summary.md").write_text(markdown(summary))
    shutil.rmtree(tmpdir, ignore_errors=True)
    return summary


def _stop(proc: subprocess.Popen, timeout: float, log) -> dict[str, Any]:
    """Ctrl-C first (what a user does), then SIGTERM (what a scheduler does; Ray's driver turns it into
    sys.exit, so train.py's cleanup still runs), then SIGKILL. Which one ended the job, and how long it took."""
    t0 = time.monotonic()
    for sig, wait in ((signal.SIGINT, timeout / 2), (signal.SIGTERM, timeout / 2), (signal.SIGKILL, 30)):
        log(f"soak: {sig.name} to the driver")
        proc.send_signal(sig)
        try:
            proc.wait(wait)
            return {"by": sig.name, "seconds": round(time.monotonic() - t0, 1)}
        except subprocess.TimeoutExpired:
            continue
    return {"by": "still running after SIGKILL", "seconds": round(time.monotonic() - t0, 1)}


def _du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def _session_growth(stats_rows: list[dict]) -> dict[str, dict[str, Any]]:
    """Per environment: open sessions (server's episode table, and the env's own, e.g. the tools env's SQLite
    databases) over the run; ok when the last value is not above the run's early maximum plus the batch size."""
    out: dict[str, dict[str, Any]] = {}
    names = {n for r in stats_rows for n in r if n != "t"}
    for n in sorted(names):
        vals = [r[n] for r in stats_rows if isinstance(r.get(n), dict) and "sessions" in r[n]]
        if not vals:
            continue
        server = [v["sessions"] for v in vals]
        envs = [v.get("env_sessions") for v in vals if v.get("env_sessions") is not None]
        half = max(1, len(server) // 2)
        peak_first = max(server[:half])
        out[n] = {"server_sessions_max": max(server), "server_sessions_last": server[-1],
                  "env_sessions_max": max(envs) if envs else None, "env_sessions_last": envs[-1] if envs else None,
                  "ok": max(server[half:]) <= max(peak_first, 1) * 2 + 8}
    return out


def markdown(s: dict[str, Any]) -> str:
    lines = [f"soak: {s['minutes']:g} min, envs {', '.join(s['envs'])}, {s['throughput'].get('steps', 0)} steps, "
             f"{'PASS' if s['ok'] else 'FAIL'}", "",
             f"| role | samples | peak RSS MB | last RSS MB | peak PSS MB | floor slope MB/h (minima of 6 windows, Theil-Sen; bound "
             f"{s['slope_bound_mb_per_h']:g}) | raw slope MB/h | fds start -> end |", "|---|---|---|---|---|---|---|---|"]
    for role, m in s["memory"].items():
        lines.append(f"| {role} | {m['samples']} | {m['peak_rss_mb']:,.0f} | {m['last_rss_mb']:,.0f} | "
                     f"{m['peak_pss_mb']:,.0f} | {m['slope_mb_per_h']:+.1f}{'' if m['slope_ok'] else ' FAIL'} | "
                     f"{m.get('raw_slope_mb_per_h', m['slope_mb_per_h']):+.1f} | "
                     f"{m['fds_start']:g} -> {m['fds_end']:g}{'' if m['fds_ok'] else ' FAIL'} |")
    t = s["throughput"]
    if "first" in t:
        lines += ["", f"throughput: steps {t['first']['steps'][0]}-{t['first']['steps'][1]} "
                      f"{t['first']['samples_per_s']} samples/s, steps {t['last']['steps'][0]}-{t['last']['steps'][1]} "
                      f"{t['last']['samples_per_s']} samples/s: ratio {t['ratio']} ({'ok' if t['ok'] else 'FAIL'}, "
                      "bound 0.9)"]
    else:
        lines += ["", f"throughput: {t.get('reason')}"]
    lines += ["", "| leak check | found |", "|---|---|"]
    for k, v in s["leaks"].items():
        lines.append(f"| {k} | {len(v)}{': ' + ', '.join(map(str, v[:5])) if v else ''} |")
    for n, v in s["sessions"].items():
        lines.append(f"| sessions {n} (server max/last, env max/last) | {v['server_sessions_max']}/"
                     f"{v['server_sessions_last']}, {v['env_sessions_max']}/{v['env_sessions_last']} |")
    lines.append(f"| caches in TMPDIR (reused across runs, not failed on) | {', '.join(s['tmp_caches']) or 0} |")
    lines.append(f"| run directory size at the end (checkpoints, metrics) | {s['run_dir_mb']:,.0f} MB |")
    lines.append(f"| stopped by (after the time limit) | {s['stop']['by']} in {s['stop']['seconds']:g} s, exit "
                 f"code {s['exit_code']} |")
    lines += ["", "checks: " + ", ".join(f"{k} {'ok' if v else 'FAIL'}" for k, v in s["checks"].items())]
    return "\n".join(lines) + "\n"


def reanalyse(out: Path, slope_bound: float = DEFAULT_SLOPE_MB_PER_H) -> dict[str, Any]:
    """Recompute memory and throughput of a finished soak from its samples.jsonl and metrics.jsonl (the leak
    checks, which need the before/after snapshots, are kept from its summary.json)."""
    s = json.loads((out / "summary.json").read_text())
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    s["memory"] = analyse_memory(rows, slope_bound, s.get("warm_s") or 0.0)
    learner_after_step(s["memory"], out / "run" / "metrics.jsonl", slope_bound)
    s["throughput"] = throughput(out / "run" / "metrics.jsonl")
    s["slope_bound_mb_per_h"] = slope_bound
    s["checks"]["rss_slopes_ok"] = all(m["slope_ok"] for m in s["memory"].values() if m["samples"] >= 3)
    s["checks"]["fds_ok"] = all(m["fds_ok"] for m in s["memory"].values() if m["samples"] >= 3)
    s["checks"]["throughput_ok"] = s["throughput"].get("ok", False)
    s["ok"] = all(s["checks"].values())
    (out / "summary.json").write_text(json.dumps(s, indent=1))
    (out / "summary.md").write_text(markdown(s))
    return s


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--envs", default=ALL_ENVS)
    p.add_argument("--out", default=str(REPO / "runs" / "soak"))
    p.add_argument("--interval", type=float, default=10.0, help="seconds between process samples")
    p.add_argument("--slope-bound", type=float, default=DEFAULT_SLOPE_MB_PER_H, help="MB/hour per role")
    p.add_argument("--nice", type=int, default=0, help="niceness of the training job")
    p.add_argument("--reanalyse", action="store_true", help="recompute the summary of --out's finished soak")
    p.add_argument("overrides", nargs="*", help="extra rl/train.py overrides, e.g. run.prompts_per_step=12")
    args = p.parse_args(argv)
    if args.reanalyse:
        s = reanalyse(Path(args.out), args.slope_bound)
        print(markdown(s))
        return 0 if s["ok"] else 1
    s = run_soak(args.minutes, envs=args.envs, out=Path(args.out), interval=args.interval,
                 overrides=args.overrides, slope_bound=args.slope_bound, nice=args.nice)
    print(markdown(s))
    if s["log_tail"]:
        print("training log tail:\n" + s["log_tail"], file=sys.stderr)
    if not s["checks"]["run_ok"]:
        return 2
    return 0 if s["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
