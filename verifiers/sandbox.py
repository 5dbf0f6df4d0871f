r"""Run an untrusted program against unit tests in a sandbox: `run(code, tests) -> RunResult`.

    >>> result = run("print(sum(map(int, input().split())))", [{"input": "2 3\n", "output": "5\n"},
    ...                                                          {"input": "1 1\n", "output": "3\n"}])
    >>> result.passed, result.total, result.results[1].status, result.verdict().reward
    (1, 2, 'wrong_answer', 0.5)
    >>> run("def add(a, b): return a + b", [{"fn": "add", "args": [2, 3], "expected": 5}]).all_passed
    True

Test styles (competitive-programming sets use both): stdin/stdout (`StdioTest`, a dict with input/output)
compared after `normalise` (trailing whitespace per line and trailing blank lines ignored), and function call
(`CallTest`, a dict with fn/args/expected) compared as JSON values, floats to 1e-6 relative. At most
MAX_TESTS = 50 tests per task, as in Nemotron 3's competitive-coding environment.

All tests of one candidate run in ONE sandbox start: verifiers/code_harness.py runs inside it and forks a fresh
process per test with its own limits (`Limits`: CPU and wall time per test, address space, output bytes,
processes). Expected outputs stay in this process: the sandbox reports a hash and an excerpt of each output.

Backends (`BACKENDS`):
  bubblewrap  the default. `bwrap` with new pid, net, ipc, uts (and cgroup) namespaces, --die-with-parent,
              --new-session and --as-pid-1 (the harness is pid 1, so the kernel drops a candidate's
              os.kill(os.getppid(), 9), and kill(-1) between tests clears whatever a test left running). Not
              `--ro-bind / /`: that would show the server's files (/work, /root, /home, /etc/shadow, task files
              in /tmp) to the candidate. Only /usr (with the /lib, /bin symlinks), /etc/ld.so.cache and the
              Python installation are bound read-only, its site-packages hidden under an empty tmpfs; /tmp is a
              private size-capped tmpfs, the candidate's cwd is /tmp/work. When the server runs as root the
              harness drops to an otherwise unused uid (no file on the host is its own, and RLIMIT_NPROC, which
              root ignores, then counts only this sandbox's processes); all capabilities are dropped.
  docker      through the docker SDK (verifiers/code_docker.py): a container per candidate with no network,
              a read-only root, a tmpfs /tmp, a memory and pids cgroup limit, no capabilities, uid 65534.
              The image is built offline from this machine's Python (`python -m verifiers.code_docker build`).
  process     a plain subprocess with the same per-test rlimits and nothing else: the program can read and
              write whatever the server can. TRUSTED CODE ONLY (reference solutions, benchmarks).
"""

from __future__ import annotations

import glob
import itertools
import json
import marshal
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field

from rl.types import Verdict
from verifiers.code_harness import EXCERPT, digest

__all__ = ["run", "Limits", "StdioTest", "CallTest", "TestResult", "RunResult", "SandboxUnavailable",
           "available", "BACKENDS", "DEFAULT_BACKEND", "MAX_TESTS", "as_test"]

BACKENDS = ("bubblewrap", "docker", "process")
DEFAULT_BACKEND = "bubblewrap"
MAX_TESTS = 50  # Nemotron 3 caps competitive-coding tasks at 50 unit tests (Nano report, section 3.2)
MAX_CODE_CHARS = 100_000  # no real solution is this long; refusing it bounds what enters the sandbox
HARNESS_SOURCE = (Path(__file__).parent / "code_harness.py").read_text()
_HARNESS_OUT_CAP = 4 << 20  # harness protocol bytes read at most (its lines carry excerpts, not whole outputs)
_FLOAT_TOL = 1e-6
_uids = itertools.count()


class Limits(BaseModel):
    """Per-test resource limits of the sandbox (the harness applies them to each test's process)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, frozen=True)

    cpu_s: float = Field(2.0, gt=0, le=60)
    """CPU seconds per test (RLIMIT_CPU rounded up to whole seconds, plus an exact check of the used time)."""
    wall_s: float = Field(4.0, gt=0, le=120)
    """Wall-clock seconds per test: catches programs that sleep or block rather than compute."""
    memory_mb: int = Field(256, ge=32, le=16384)
    """Address space per test process (RLIMIT_AS), MiB; Python itself needs ~20."""
    output_bytes: int = Field(1 << 20, ge=1024, le=1 << 30)
    """Bytes a test may write to stdout (RLIMIT_FSIZE on the file stdout goes to); more is a failure."""
    processes: int = Field(16, ge=1, le=4096)
    """Processes and threads one test may run, itself included (RLIMIT_NPROC on the sandbox's own uid; the
    docker backend uses the pids cgroup for the whole container instead)."""
    tmp_mb: int = Field(64, ge=1, le=4096)
    """Size of the sandbox's private /tmp (a tmpfs, in RAM)."""
    total_wall_s: float = Field(20.0, gt=0, le=3600)
    """Wall seconds for all tests of one candidate together: later tests are skipped (failed). Keep it plus
    startup_s under the environment server's --verify-timeout (30 s), or a slow candidate costs an error."""
    startup_s: float = Field(5.0, gt=0, le=600)
    """Budget for starting the sandbox on top of total_wall_s; past both the whole run is killed."""


@dataclass(frozen=True)
class StdioTest:
    """Feed `input` on stdin; the normalised stdout must equal the normalised `output`."""

    input: str
    output: str


@dataclass(frozen=True)
class CallTest:
    """Call the candidate's function `fn(*args)`; its return value must equal `expected` (JSON, floats ~1e-6)."""

    fn: str
    args: tuple = ()
    expected: Any = None


Test = Union[StdioTest, CallTest]


def as_test(obj: Any) -> Test:
    """A StdioTest or CallTest from a test object or a dict ({input, output} or {fn, args, expected}).

    >>> as_test({"input": "1\\n", "output": "2"}), as_test({"fn": "f", "args": [1], "expected": 2})
    (StdioTest(input='1\\n', output='2'), CallTest(fn='f', args=(1,), expected=2))
    """
    if isinstance(obj, (StdioTest, CallTest)):
        return obj
    if isinstance(obj, dict):
        if "fn" in obj:
            if not isinstance(obj["fn"], str) or not obj["fn"].isidentifier():
                raise ValueError(f"call test: fn must be a Python identifier, got {obj['fn']!r}")
            args = obj.get("args", ())
            if not isinstance(args, (list, tuple)):
                raise ValueError(f"call test {obj['fn']}: args must be a list, got {type(args).__name__}")
            if "expected" not in obj and "output" not in obj:
                raise ValueError(f"call test {obj['fn']}: give the return value as `expected`")
            return CallTest(obj["fn"], tuple(args), obj["expected"] if "expected" in obj else obj["output"])
        if "input" in obj and "output" in obj:
            if not isinstance(obj["input"], str) or not isinstance(obj["output"], str):
                raise ValueError("stdio test: input and output must be strings")
            return StdioTest(obj["input"], obj["output"])
    raise ValueError(f"a test is {{'input': str, 'output': str}} or {{'fn': name, 'args': [...], 'expected': "
                     f"value}}; got {str(obj)[:120]}")


@dataclass(frozen=True)
class TestResult:
    """One test's outcome. status: ok | wrong_answer | cpu_timeout | wall_timeout | memory | output_limit |
    signal | exit_code | no_function | skipped | not_run | harness_error."""

    __test__ = False  # not a pytest class
    index: int
    passed: bool
    status: str
    reason: str
    stdout: str = ""  # excerpts only (EXCERPT characters): full outputs never leave the sandbox
    stderr: str = ""
    cpu_s: float = 0.0
    wall_s: float = 0.0


@dataclass(frozen=True)
class RunResult:
    """All tests of one candidate: per-test results, the backend used, the total wall time, sandbox errors."""

    backend: str
    results: tuple[TestResult, ...]
    wall_s: float
    error: str = ""  # a sandbox-level failure (not the program's fault); the tests it affected are not_run
    meta: dict = field(default_factory=dict)

    @property
    def passed(self) -> int:
        return sum(r.passed for r in self.results)

    @property
    def total(self) -> int:
        return len(self.results)

    @property
    def fraction(self) -> float:
        return self.passed / self.total if self.total else 0.0

    @property
    def all_passed(self) -> bool:
        return self.total > 0 and self.passed == self.total

    def reward(self, mode: Literal["fraction", "all_or_nothing"] = "fraction") -> float:
        return self.fraction if mode == "fraction" else float(self.all_passed)

    def verdict(self, mode: Literal["fraction", "all_or_nothing"] = "fraction") -> Verdict:
        """reward = fraction of tests passed, or 1/0 (all_or_nothing); the reason names the first failure."""
        failed = [r for r in self.results if not r.passed]
        reason = f"{self.passed}/{self.total} tests passed"
        if failed:
            reason += f"; test {failed[0].index}: {failed[0].reason}"
        if self.error:
            reason += f"; sandbox: {self.error}"
        components = {"tests_passed": self.fraction, "all_passed": float(self.all_passed),
                      "sandbox_s": round(self.wall_s, 4)}
        status = "error" if self.error and not self.passed else "ok"
        return Verdict(reward=self.reward(mode), components=components, reason=reason[:600], status=status)


class SandboxUnavailable(RuntimeError):
    """The requested backend cannot run on this host; the message says why and what to install."""


# ------------------------------------------------------------------------------------------ backends
@lru_cache(maxsize=None)
def _bwrap_problem() -> str | None:
    exe = shutil.which("bwrap")
    if exe is None:
        return ("bubblewrap is not installed (no `bwrap` on PATH): `apt-get install bubblewrap` (make install does "
                "it when run as root), or choose backend 'docker' on a host with a Docker daemon")
    try:
        probe = subprocess.run([exe, *_bwrap_args(), *_bwrap_tmp(Limits()), "--", _python(), "-I", "-S", "-c",
                                "print(6*7)"],
                               capture_output=True, timeout=30, start_new_session=True)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"bubblewrap failed to start a probe sandbox: {e}"
    if probe.returncode != 0 or probe.stdout.strip() != b"42":
        return (f"bubblewrap cannot create a sandbox here (exit {probe.returncode}: "
                f"{probe.stderr.decode(errors='replace').strip()[-300:]}); unprivileged user namespaces may be "
                "disabled (sysctl kernel.unprivileged_userns_clone=1 / user.max_user_namespaces) - or run as root")
    return None


def available(backend: str = DEFAULT_BACKEND) -> str | None:
    """None if `backend` works on this host, else the reason it does not (with the fix).

    >>> available("process") is None
    True
    """
    if backend == "bubblewrap":
        return _bwrap_problem()
    if backend == "docker":
        from verifiers.code_docker import docker_problem

        return docker_problem()
    if backend == "process":
        return None
    return f"unknown sandbox backend {backend!r}; choose one of {BACKENDS}"


@lru_cache(maxsize=None)
def _python() -> str:
    """The interpreter candidates run on: this one, outside any virtualenv (site-packages are hidden anyway)."""
    base = Path(sys.base_prefix)
    name = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (base / "bin" / name, base / "bin" / "python3", Path(os.path.realpath(sys.executable))):
        if candidate.is_file():
            return str(candidate)
    return os.path.realpath(sys.executable)


@lru_cache(maxsize=None)
def _bwrap_args() -> tuple[str, ...]:
    args = ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
            "--die-with-parent", "--new-session", "--as-pid-1", "--cap-drop", "ALL"]
    if os.geteuid() == 0:  # the harness needs these two to drop to its own uid, then has none at all
        args += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    for d in ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32"):
        if os.path.islink(d):
            args += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            args += ["--ro-bind", d, d]
    if os.path.isfile("/etc/ld.so.cache"):
        args += ["--ro-bind", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    prefix = os.path.realpath(sys.base_prefix)
    python = _python()
    for root in sorted({prefix, os.path.dirname(os.path.dirname(python))}):
        if root == "/usr" or root.startswith("/usr/"):
            continue
        # bwrap creates missing parents mode 0700 like their source (/root is 0700): make them traversable
        parts = Path(root).parts
        for i in range(2, len(parts)):
            args += ["--perms", "0755", "--dir", str(Path(*parts[:i]))]
        args += ["--ro-bind", root, root]
    for site in sorted(glob.glob(os.path.join(prefix, "lib", "python3*", "site-packages"))):
        args += ["--tmpfs", site]  # the server's packages (and any secrets in their configs) stay invisible
    args += ["--proc", "/proc", "--dev", "/dev", "--clearenv",
             "--setenv", "PATH", "/usr/local/bin:/usr/bin:/bin", "--setenv", "LANG", "C.UTF-8",
             "--setenv", "HOME", "/tmp/work", "--setenv", "PYTHONHASHSEED", "0"]
    return tuple(args)


def _bwrap_tmp(limits: Limits) -> list[str]:
    return ["--perms", "1777", "--size", str(limits.tmp_mb << 20), "--tmpfs", "/tmp", "--chdir", "/tmp"]


def _sandbox_uid() -> int:
    # Unique per concurrent run (pid, counter): RLIMIT_NPROC counts per uid, so sandboxes must not share one.
    return 200_000_000 + (os.getpid() % 100_000) * 1000 + next(_uids) % 1000


def _communicate(argv: list[str], payload: bytes, timeout: float, cwd: str | None = None,
                 env: dict | None = None) -> tuple[int | None, bytes, bytes, str]:
    """Run argv with payload on stdin; (returncode, stdout, stderr, problem). Output is capped, time bounded."""
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True, close_fds=True, cwd=cwd, env=env)
    problem: list[str] = []
    out: list[bytes] = []
    err: list[bytes] = []

    def kill() -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass

    def write() -> None:
        try:
            proc.stdin.write(payload)
            proc.stdin.close()
        except OSError:  # the sandbox died before reading: its stderr says why
            pass

    def read(stream, sink: list[bytes], cap: int, name: str) -> None:
        size = 0
        while True:
            chunk = stream.read1(65536)
            if not chunk:
                return
            size += len(chunk)
            if size > cap:
                if name == "stdout":
                    problem.append(f"sandbox wrote more than {cap} bytes of protocol output; killed")
                    kill()
                continue  # keep draining so the child never blocks on a full pipe
            sink.append(chunk)

    threads = [threading.Thread(target=write, daemon=True),
               threading.Thread(target=read, args=(proc.stdout, out, _HARNESS_OUT_CAP, "stdout"), daemon=True),
               threading.Thread(target=read, args=(proc.stderr, err, 1 << 16, "stderr"), daemon=True)]
    for t in threads:
        t.start()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        problem.append(f"sandbox exceeded its total time budget of {timeout:.1f}s; killed")
        kill()
        proc.wait()
    for t in threads:
        t.join(5)
    return proc.returncode, b"".join(out), b"".join(err), "; ".join(problem)


def _payload(code: str, tests: list[Test], limits: Limits, uid: int | None, nproc: bool, tmp: str,
             fail_fast: str) -> bytes:
    wire = [{"kind": "stdio", "input": t.input} if isinstance(t, StdioTest) else
            {"kind": "call", "fn": t.fn, "args": list(t.args)} for t in tests]  # no expected values: they stay here
    body = {"code": code, "tests": wire, "uid": uid, "nproc": nproc, "tmp": tmp, "undumpable": uid is None,
            "fail_fast": fail_fast,
            "limits": {"cpu_s": limits.cpu_s, "wall_s": limits.wall_s, "memory_bytes": limits.memory_mb << 20,
                       "total_wall_s": limits.total_wall_s,
                       "output_bytes": limits.output_bytes, "processes": limits.processes}}
    return marshal.dumps(body)  # the harness reads marshal: importing json would cost ~20 ms per start


def _total_timeout(n: int, limits: Limits) -> float:
    return limits.startup_s + min(limits.total_wall_s, n * limits.wall_s) + 0.05 * n  # 0.05: per-test sweep


_Raw = tuple[int | None, bytes, bytes, str]  # harness exit code, stdout, stderr, sandbox-level problem


def _run_bubblewrap(code: str, tests: list[Test], limits: Limits, fail_fast: str) -> _Raw:
    problem = _bwrap_problem()
    if problem:
        raise SandboxUnavailable(problem)
    uid = _sandbox_uid() if os.geteuid() == 0 else None
    argv = ["bwrap", *_bwrap_args(), *_bwrap_tmp(limits), "--", _python(), "-I", "-S", "-B", "-c", HARNESS_SOURCE]
    payload = _payload(code, tests, limits, uid, True, "/tmp", fail_fast)
    return _communicate(argv, payload, _total_timeout(len(tests), limits))


def _run_process(code: str, tests: list[Test], limits: Limits, fail_fast: str) -> _Raw:
    tmp = tempfile.mkdtemp(prefix="polyrl-process-sandbox-")
    try:
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": tmp, "PYTHONHASHSEED": "0"}
        # nproc off: without a namespace RLIMIT_NPROC would count every process of the server's user
        return _communicate([_python(), "-I", "-S", "-B", "-c", HARNESS_SOURCE],
                            _payload(code, tests, limits, None, False, tmp, fail_fast),
                            _total_timeout(len(tests), limits), cwd=tmp, env=env)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ----------------------------------------------------------------------------------------- judging
def _values_equal(got: Any, expected: Any) -> bool:
    if isinstance(expected, bool) or isinstance(got, bool):
        return type(got) is type(expected) and got == expected
    if isinstance(expected, (int, float)) and isinstance(got, (int, float)):
        if isinstance(expected, int) and isinstance(got, int):
            return got == expected
        return math.isclose(got, expected, rel_tol=_FLOAT_TOL, abs_tol=_FLOAT_TOL)
    if isinstance(expected, (list, tuple)) and isinstance(got, (list, tuple)):
        return len(got) == len(expected) and all(_values_equal(g, e) for g, e in zip(got, expected))
    if isinstance(expected, dict) and isinstance(got, dict):
        return got.keys() == expected.keys() and all(_values_equal(got[k], expected[k]) for k in expected)
    return got == expected


_SIGNALS = {int(s): s.name for s in signal.Signals}


def _reason(line: dict, limits: Limits, test: Test) -> str:
    status = line["status"]
    err = line.get("stderr", "").strip().splitlines()
    last = err[-1][:160] if err else ""
    if status == "cpu_timeout":
        return f"CPU time limit ({limits.cpu_s:g}s) exceeded"
    if status == "wall_timeout":
        return f"wall time limit ({limits.wall_s:g}s) exceeded"
    if status == "memory":
        return f"memory limit ({limits.memory_mb} MiB) exceeded"
    if status == "output_limit":
        return f"output limit ({limits.output_bytes} bytes) exceeded"
    if status == "signal":
        return f"killed by signal {_SIGNALS.get(line.get('signal'), line.get('signal'))}"
    if status == "exit_code":
        return f"exit code {line.get('exit')}" + (f": {last}" if last else "")
    if status == "no_function":
        return f"no function named {getattr(test, 'fn', '?')!r} is defined"
    if status == "skipped":
        return f"skipped: {line.get('note', '')}"
    if status == "harness_error":
        return f"sandbox could not set up the test: {line.get('note', '')[:200]}"
    return status


def _judge(line: dict, test: Test, limits: Limits) -> TestResult:
    base = dict(index=line["i"], stdout=line.get("stdout", "")[:EXCERPT], stderr=line.get("stderr", "")[:EXCERPT],
                cpu_s=float(line.get("cpu_s", 0.0)), wall_s=float(line.get("wall_s", 0.0)))
    if line.get("status") != "ok":
        return TestResult(passed=False, status=str(line.get("status")), reason=_reason(line, limits, test), **base)
    if isinstance(test, StdioTest):
        if line.get("stdout_sha") == digest(test.output):
            return TestResult(passed=True, status="ok", reason="ok", **base)
        got = line.get("stdout", "")
        return TestResult(passed=False, status="wrong_answer",  # never the expected output: tests stay hidden
                          reason=f"wrong answer (stdout starts {got[:60]!r}, {line.get('stdout_bytes', 0)} bytes)",
                          **base)
    try:
        value = json.loads(line.get("value") or "null")
    except ValueError:
        value = {"__repr__": "<unreadable>"}
    if isinstance(value, dict) and set(value) == {"__repr__"}:
        return TestResult(passed=False, status="wrong_answer",
                          reason=f"{test.fn} returned a non-JSON value {value['__repr__'][:60]}", **base)
    if _values_equal(value, test.expected):
        return TestResult(passed=True, status="ok", reason="ok", **base)
    return TestResult(passed=False, status="wrong_answer",
                      reason=f"wrong answer ({test.fn} returned {json.dumps(value)[:60]})", **base)


def _collect(backend: str, tests: list[Test], limits: Limits, rc: int | None, out: bytes, err: bytes,
             problem: str, started: float) -> RunResult:
    lines: dict[int, dict] = {}
    done = False
    for raw in out.decode("utf-8", "replace").splitlines():
        try:
            line = json.loads(raw)
        except ValueError:
            continue  # a line the harness did not write cleanly only costs its test
        if not isinstance(line, dict):
            continue
        if line.get("done") is True:
            done = True
        elif isinstance(line.get("i"), int) and 0 <= line["i"] < len(tests) and isinstance(line.get("status"), str):
            lines.setdefault(line["i"], line)
    error = problem
    if not done and not error:
        tail = err.decode("utf-8", "replace").strip()[-300:]
        error = f"sandbox ended early (exit {rc}){': ' + tail if tail else ''}"
    results = []
    for i, test in enumerate(tests):
        if i in lines:
            results.append(_judge(lines[i], test, limits))
        else:
            results.append(TestResult(index=i, passed=False, status="not_run", reason=f"not run: {error}"))
    return RunResult(backend=backend, results=tuple(results), wall_s=time.monotonic() - started, error=error)


def run(code: str, tests: list, *, backend: str = DEFAULT_BACKEND, limits: Limits | None = None,
        fail_fast: Literal["none", "timeout", "any"] = "none", docker_image: str | None = None) -> RunResult:
    """Run `code` (a Python program) against `tests` in a sandbox; never raises for anything the program does.

    fail_fast: "timeout" skips the remaining tests after a time limit is hit (an endless loop then costs one
    test's wall time, not all of them), "any" after any failure (enough for all-or-nothing rewards).

    Raises ValueError for bad tests (none, more than MAX_TESTS, malformed) and SandboxUnavailable when the
    backend cannot run on this host. A program over MAX_CODE_CHARS fails every test without being started.
    """
    limits = limits or Limits()
    if backend not in BACKENDS:
        raise ValueError(f"unknown sandbox backend {backend!r}; choose one of {BACKENDS}")
    parsed = [as_test(t) for t in tests]
    if not parsed:
        raise ValueError("run: no tests given; a task needs at least one test")
    if len(parsed) > MAX_TESTS:
        raise ValueError(f"run: {len(parsed)} tests given, at most {MAX_TESTS} per task; keep a sample of them")
    started = time.monotonic()
    if not isinstance(code, str) or len(code) > MAX_CODE_CHARS:
        why = "not a string" if not isinstance(code, str) else f"{len(code)} characters, over {MAX_CODE_CHARS}"
        res = tuple(TestResult(index=i, passed=False, status="not_run", reason=f"program refused: {why}")
                    for i in range(len(parsed)))
        return RunResult(backend=backend, results=res, wall_s=0.0)
    if backend == "bubblewrap":
        rc, out, err, problem = _run_bubblewrap(code, parsed, limits, fail_fast)
    elif backend == "process":
        rc, out, err, problem = _run_process(code, parsed, limits, fail_fast)
    else:
        from verifiers.code_docker import run_harness

        payload = _payload(code, parsed, limits, None, False, "/tmp", fail_fast)
        rc, out, err, problem = run_harness(payload, limits, timeout=_total_timeout(len(parsed), limits),
                                            image=docker_image, out_cap=_HARNESS_OUT_CAP)
    return _collect(backend, parsed, limits, rc, out, err, problem, started)
