"""The in-sandbox half of verifiers.sandbox: runs every test of one candidate inside ONE sandboxed process.

Started as `python -I -S -B -c <this file's source>` inside the sandbox (bubblewrap, docker or a plain
process); reads one JSON payload on stdin and writes one JSON line per test on stdout, then {"done": true}.

Why one process for all tests: a bubblewrap or container start costs more than a trivial test, so forking
per test from an already running interpreter is what makes >= 20 sandboxed executions/s possible on 2 cores.
Each test is a fresh fork of this harness (which never ran candidate code), so no state leaks between tests,
and each fork gets its own resource limits (CPU, address space, file size = output size, processes).

Expected outputs never enter the sandbox: this file reports a hash and an excerpt of each test's normalised
stdout (or the JSON of a function's return value) and the server compares. A candidate that tampers with this
process can therefore only report outputs it could have printed anyway.

Stdlib only, Python 3.8+. Start-up time is most of the cost of a trivial run, so the harness avoids modules
that import re/enum/OpenSSL: the payload is marshal (written by the server, trusted), result lines are JSON
written by hand, sha256 comes from the builtin C module, signals from _signal.
"""

import marshal
import os
import resource
import select
import sys
import time

try:  # builtin C modules: `signal` and `hashlib` would pull in enum / OpenSSL (~30 ms per sandbox start)
    import _signal as signal
except ImportError:  # pragma: no cover
    import signal
try:
    from _sha256 import sha256
except ImportError:  # pragma: no cover - Python 3.12 renamed it
    try:
        from _sha2 import sha256
    except ImportError:
        from hashlib import sha256

EXCERPT = 300  # characters of stdout / stderr reported per test (reasons, logs)
MEMORY_EXIT = 113  # exit status a test child uses to say "MemoryError" (the status file is the main channel)


def normalise(text):
    """Output as judges compare it: trailing whitespace of each line and trailing blank lines ignored.

    >>> normalise("3 \\n4\\n\\n") == normalise("3\\n4")
    True
    """
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines)


def digest(text):
    return sha256(normalise(text).encode("utf-8", "surrogatepass")).hexdigest()


def _json(value):
    """JSON of the harness's own result lines (str, int, float, bool, None, flat dicts) without `json`."""
    if value is None or value is True or value is False:
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        out = []
        for c in value:
            o = ord(c)
            if 32 <= o < 127 and c != '"' and c != "\\":
                out.append(c)
            elif o < 0x10000:
                out.append("\\u%04x" % o)
            else:
                o -= 0x10000
                out.append("\\u%04x\\u%04x" % (0xD800 + (o >> 10), 0xDC00 + (o & 0x3FF)))
        return '"' + "".join(out) + '"'
    return "{" + ",".join(_json(str(k)) + ":" + _json(v) for k, v in value.items()) + "}"


def _read(path, limit):
    try:
        with open(path, "rb") as f:
            return f.read(limit)
    except OSError:
        return b""


def _set_limits(limits, nproc):
    mem = int(limits["memory_bytes"])
    cpu = max(1, int(-(-float(limits["cpu_s"]) // 1)))  # RLIMIT_CPU has 1 s granularity; finer via rusage
    out = int(limits["output_bytes"])
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))  # soft: SIGXCPU, hard: SIGKILL one second later
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    resource.setrlimit(resource.RLIMIT_FSIZE, (out, out))  # stdout is a file: this caps output size
    if nproc:
        n = int(limits["processes"]) + 1  # + the harness, which runs under the same uid
        resource.setrlimit(resource.RLIMIT_NPROC, (n, n))


def _child(code, test, limits, io_dir, work_dir, nproc):
    """In the forked test process: never returns."""
    status_path = os.path.join(io_dir, "status")
    try:
        os.setpgid(0, 0)  # its own group, so the harness can kill it with everything it forked
        fd_in = os.open(os.path.join(io_dir, "in"), os.O_RDONLY)
        fd_out = os.open(os.path.join(io_dir, "out"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        fd_err = os.open(os.path.join(io_dir, "err"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        for fd, target in ((fd_in, 0), (fd_out, 1), (fd_err, 2)):
            os.dup2(fd, target)
            os.close(fd)
        sys.stdin = open(0, "r", encoding="utf-8", errors="replace", closefd=False)
        sys.stdout = open(1, "w", encoding="utf-8", errors="replace", closefd=False)
        sys.stderr = open(2, "w", encoding="utf-8", errors="replace", closefd=False)
        os.chdir(work_dir)
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        _set_limits(limits, nproc)
    except BaseException as e:  # setup failures are the harness's, reported as such
        with open(status_path, "w") as f:
            f.write("setup:%s: %s" % (type(e).__name__, e))
        os._exit(120)
    status, rc = "", 0
    try:
        glob = {"__name__": "__main__" if test["kind"] == "stdio" else "solution", "__builtins__": __builtins__}
        exec(compile(code, os.path.join(work_dir, "solution.py"), "exec"), glob)
        if test["kind"] == "call":
            fn = glob.get(test["fn"])
            if not callable(fn):
                status, rc = "nofunc", 1
            else:
                value = fn(*test["args"])
                import json  # only function-call tests pay for it, after the fork

                try:
                    text = json.dumps(value, allow_nan=False)
                except (TypeError, ValueError):
                    text = json.dumps({"__repr__": repr(value)[:EXCERPT]})
                with open(os.path.join(io_dir, "value"), "w") as f:
                    f.write(text)
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if not isinstance(e.code, int) and e.code is not None:
            sys.stderr.write(str(e.code) + "\n")
    except MemoryError:
        status, rc = "memory", MEMORY_EXIT
    except BaseException:
        import traceback

        traceback.print_exc()
        status, rc = status or "exception", 1
    try:
        sys.stdout.flush()
    except (OSError, ValueError, MemoryError):
        pass
    try:
        sys.stderr.flush()
    except (OSError, ValueError, MemoryError):
        pass
    if status:
        try:
            with open(status_path, "w") as f:
                f.write(status)
        except OSError:
            pass
    os._exit(rc & 0xFF)


def _wait(pid, wall_s):
    """(wait status, rusage, wall seconds, timed_out) of the test process, killing it after wall_s."""
    start = time.monotonic()
    timed_out = False
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        fd = None
    if fd is not None:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        if not poller.poll(max(1, int(wall_s * 1000))):
            timed_out = True
        os.close(fd)
    else:  # kernels before 5.3: poll the pid
        while not _exited(pid):
            if time.monotonic() - start > wall_s:
                timed_out = True
                break
            time.sleep(0.002)
    if timed_out:
        _kill_group(pid)
    _, wstatus, usage = os.wait4(pid, 0)
    return wstatus, usage, time.monotonic() - start, timed_out


def _exited(pid):
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _kill_group(pid):
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass


def _sweep(pid1):
    """Kill whatever a test left running (background forks, daemons) and reap every zombie."""
    if pid1:  # pid 1 of a namespace: kill(-1) reaches every other process in it, never this one
        try:
            os.kill(-1, signal.SIGKILL)
        except OSError:
            pass
    deadline = time.monotonic() + 2.0  # SIGKILLed processes die promptly; never wait on one forever
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            if not pid1 or time.monotonic() > deadline:
                return
            time.sleep(0.001)  # killed processes take a moment to become zombies


def run_test(i, code, test, limits, io_dir, work_dir, nproc, pid1):
    with open(os.path.join(io_dir, "in"), "w", encoding="utf-8", errors="surrogatepass") as f:
        f.write(test.get("input", "") if test["kind"] == "stdio" else "")
    for name in ("status", "value"):
        try:
            os.unlink(os.path.join(io_dir, name))
        except FileNotFoundError:
            pass
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
        _child(code, test, limits, io_dir, work_dir, nproc)
    wstatus, usage, wall, timed_out = _wait(pid, float(limits["wall_s"]))
    _sweep(pid1)
    out_limit = int(limits["output_bytes"])
    raw_out = _read(os.path.join(io_dir, "out"), out_limit + 1)
    raw_err = _read(os.path.join(io_dir, "err"), 1 << 16)
    note = _read(os.path.join(io_dir, "status"), 500).decode("utf-8", "replace")
    cpu = usage.ru_utime + usage.ru_stime
    sig = os.WTERMSIG(wstatus) if os.WIFSIGNALED(wstatus) else 0
    rc = os.WEXITSTATUS(wstatus) if os.WIFEXITED(wstatus) else None
    err_text = raw_err.decode("utf-8", "replace")
    if note.startswith("setup:"):
        status = "harness_error"
    elif timed_out:
        status = "wall_timeout"
    elif sig == signal.SIGXCPU or cpu > float(limits["cpu_s"]):
        status = "cpu_timeout"
    elif len(raw_out) > out_limit or (len(raw_out) == out_limit and ("File too large" in err_text
                                                                     or sig == signal.SIGXFSZ)):
        status = "output_limit"
    elif note == "memory" or (rc == 1 and "MemoryError" in err_text[-2000:]):
        status = "memory"
    elif note == "nofunc":
        status = "no_function"
    elif sig:
        status = "signal"
    elif rc != 0:
        status = "exit_code"
    else:
        status = "ok"
    out_text = raw_out[:out_limit].decode("utf-8", "replace")
    line = {"i": i, "status": status, "exit": rc, "signal": sig, "cpu_s": round(cpu, 4), "wall_s": round(wall, 4),
            "max_rss_kb": usage.ru_maxrss, "stdout_sha": digest(out_text), "stdout_bytes": len(raw_out),
            "stdout": out_text[:EXCERPT], "stderr": err_text[-EXCERPT:], "note": note[:EXCERPT]}
    if test["kind"] == "call" and status == "ok":
        line["value"] = _read(os.path.join(io_dir, "value"), out_limit + 1).decode("utf-8", "replace")
        if len(line["value"]) > out_limit:
            line["status"], line["value"] = "output_limit", None
    return line


def main():
    payload = marshal.loads(sys.stdin.buffer.read())
    null = os.open(os.devnull, os.O_RDONLY)  # keep fd 0 taken: test processes dup2 their input onto it
    os.dup2(null, 0)
    os.close(null)
    uid = payload.get("uid")
    if uid is not None:  # root in the sandbox: drop to a uid that owns nothing (and counts its own processes)
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    if payload.get("undumpable"):
        # A non-dumpable harness cannot be ptraced or have its /proc/1/fd opened by the candidate. Dropping
        # root above already did this (fs.suid_dumpable=0), so only the other cases pay for ctypes.
        try:
            import ctypes

            ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE = 4
        except Exception:
            pass
    base = payload.get("tmp", "/tmp")
    io_dir = os.path.join(base, ".harness-%d" % os.getpid())
    work_dir = os.path.join(base, "work")  # the candidate's own directory (its cwd)
    os.makedirs(io_dir, mode=0o700, exist_ok=True)
    os.makedirs(work_dir, mode=0o700, exist_ok=True)
    with open(os.path.join(work_dir, "solution.py"), "w", encoding="utf-8", errors="surrogatepass") as f:
        f.write(payload["code"])
    pid1 = os.getpid() == 1
    limits = dict(payload["limits"])
    deadline = time.monotonic() + float(limits.get("total_wall_s", 1e9))
    fail_fast = payload.get("fail_fast", "none")
    skip = ""
    for i, test in enumerate(payload["tests"]):
        left = deadline - time.monotonic()
        if not skip and left <= 0.05:
            skip = "the run's total time budget was used up"
        if skip:
            line = {"i": i, "status": "skipped", "note": skip}
        else:
            limits["wall_s"] = min(float(payload["limits"]["wall_s"]), left)
            line = run_test(i, payload["code"], test, limits, io_dir, work_dir, payload.get("nproc", True), pid1)
            if fail_fast == "any" and line["status"] != "ok":
                skip = "an earlier test failed (fail_fast)"
            elif fail_fast == "timeout" and line["status"] in ("wall_timeout", "cpu_timeout"):
                skip = "an earlier test timed out (fail_fast)"
        sys.stdout.write(_json(line) + "\n")
        sys.stdout.flush()
    sys.stdout.write(_json({"done": True}) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
