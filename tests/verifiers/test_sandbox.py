"""verifiers/sandbox.py: tests pass and fail as they should, and every hostile program scores 0 with a reason."""

from __future__ import annotations

import doctest
import os
import socket
import threading
import time
from pathlib import Path

import pytest

from verifiers import code_harness, sandbox
from verifiers.sandbox import CallTest, Limits, SandboxUnavailable, StdioTest, available, run

# Tight limits keep the hostile cases to a second or two each on the shared 2-core machine.
FAST = Limits(cpu_s=1.0, wall_s=2.0, memory_mb=128, output_bytes=64 * 1024, processes=8, total_wall_s=8.0)
OK = [StdioTest(input="", output="ok\n")]

pytestmark = pytest.mark.skipif(available("bubblewrap") is not None,
                                reason=f"bubblewrap backend unavailable: {available('bubblewrap')}")


def _sandbox_processes() -> list[int]:
    """Host pids running under a sandbox uid (the bubblewrap backend's uids start at 200,000,000)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                uid = os.stat(f"/proc/{entry}").st_uid
            except FileNotFoundError:
                continue
            if uid >= 200_000_000:
                pids.append(int(entry))
    return pids


def _zero(code: str, *, tests=OK, expect: tuple[str, ...], text: str = "", limits: Limits = FAST):
    """Run a hostile program: reward 0, an expected status, a reason; nothing of it left running."""
    start = time.monotonic()
    result = run(code, tests, limits=limits)
    elapsed = time.monotonic() - start
    verdict = result.verdict()
    first = result.results[0]
    print(f"{elapsed:.2f}s {verdict.reason}")
    assert verdict.reward == 0.0 and verdict.status == "ok", verdict
    assert first.status in expect, (first, verdict.reason)
    assert text in verdict.reason + first.stderr, (text, verdict.reason, first.stderr)
    assert result.error == ""  # the harness survived: the program's fault, not the sandbox's
    assert elapsed < limits.total_wall_s + limits.startup_s + 5
    deadline = time.monotonic() + 5
    while _sandbox_processes() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _sandbox_processes() == []
    return result


def test_doctests():
    for module in (sandbox, code_harness):
        failed, attempted = doctest.testmod(module)
        assert attempted > 0 and failed == 0, module.__name__


def test_stdio_pass_fail_and_normalisation():
    tests = [{"input": "2 3\n", "output": "5\n"}, {"input": "10 -4\n", "output": "6"},
             {"input": "1 1\n", "output": "3\n"}]
    result = run("a, b = map(int, input().split())\nprint(a + b, '  ')\nprint()", tests)
    assert [r.status for r in result.results] == ["ok", "ok", "wrong_answer"]
    assert (result.passed, result.total, result.fraction) == (2, 3, pytest.approx(2 / 3))
    assert result.verdict().reward == pytest.approx(2 / 3)
    assert result.verdict("all_or_nothing").reward == 0.0
    reason = result.results[2].reason
    assert "'2" in reason and "3" not in reason.replace("'2", "")  # the program's output, never the expected
    assert result.results[0].cpu_s > 0 and result.results[0].wall_s > 0


def test_function_call_tests():
    code = "def f(x, y):\n    return {'s': [x + y, (x + y) / 3], 'ok': x > 0}\ndef g(): return object()"
    result = run(code, [CallTest("f", (1, 2), {"s": [3, 1.0000000001], "ok": True}),
                        CallTest("f", (1, 2), {"s": [3, 1.1], "ok": True}),
                        CallTest("f", (-1, 2), {"s": [1, 1 / 3], "ok": 0}),  # bool is not an int here
                        CallTest("g", (), None), CallTest("h", (), 1)])
    assert [r.status for r in result.results] == ["ok", "wrong_answer", "wrong_answer", "wrong_answer",
                                                  "no_function"]
    assert "non-JSON" in result.results[3].reason and "'h'" in result.results[4].reason


def test_tests_are_isolated_from_each_other():
    code = "import builtins\nbuiltins.seen = getattr(builtins, 'seen', 0) + 1\nprint(builtins.seen)"
    result = run(code, [StdioTest("", "1")] * 3)
    assert result.all_passed  # each test is a fresh fork: no state carries over


def test_bad_tests_and_programs():
    with pytest.raises(ValueError, match="no tests"):
        run("print(1)", [])
    with pytest.raises(ValueError, match="at most 50"):
        run("print(1)", OK * 51)
    with pytest.raises(ValueError, match="input"):
        run("print(1)", [{"stdin": "1"}])
    with pytest.raises(ValueError, match="unknown sandbox backend"):
        run("print(1)", OK, backend="chroot")
    result = run("x = 1\n" * 20_000, OK)
    assert result.results[0].status == "not_run" and "refused" in result.verdict().reason
    syntax = run("def f(:\n", OK * 2)
    assert syntax.passed == 0 and "SyntaxError" in syntax.verdict().reason


def test_fifty_tests_in_one_sandbox_start():
    tests = [StdioTest(f"{i}\n", f"{i * i}\n") for i in range(50)]
    result = run("n = int(input())\nprint(n * n)", tests)
    assert result.all_passed and result.total == 50


# ------------------------------------------------------------------------------------ hostile programs
def test_infinite_loop():
    r = _zero("while True:\n    pass", tests=OK * 2, expect=("cpu_timeout", "wall_timeout"), text="time limit")
    assert all(not t.passed for t in r.results)


def test_sleeping_forever_hits_the_wall_limit():
    _zero("import time\ntime.sleep(1000)", expect=("wall_timeout",), text="wall time limit")


def test_fork_bomb():
    code = "import os\nwhile True:\n    os.fork()"
    r = _zero(code, expect=("exit_code", "wall_timeout", "cpu_timeout"), text="")
    # The process limit stopped it (fork() fails), or at worst the wall limit; the host can still fork.
    assert "Resource temporarily unavailable" in r.results[0].stderr or r.results[0].status != "exit_code"
    assert os.waitpid(os.spawnlp(os.P_NOWAIT, "true", "true"), 0)[1] == 0


def test_process_limit_counts_per_sandbox():
    code = ("import os, time\nn = 0\ntry:\n    for _ in range(100):\n        if os.fork() == 0:\n"
            "            time.sleep(5)\n            os._exit(0)\n        n += 1\nexcept OSError:\n    pass\nprint(n)")
    result = run(code, [StdioTest("", str(FAST.processes - 1))], limits=FAST)
    # `processes` counts the test process itself: 8 allowed -> 7 children
    assert result.all_passed, result.results[0]


def test_memory_bomb():
    _zero("x = bytearray(8 * 2**30)\nprint('ok')", expect=("memory",), text="memory limit")
    _zero("a = []\nwhile True:\n    a.append(' ' * 10**6)", expect=("memory",), text="memory limit")


def test_a_gigabyte_of_output():
    code = "import sys\nfor _ in range(10**6):\n    sys.stdout.write('x' * 1000)\nprint('ok')"
    r = _zero(code, expect=("output_limit",), text="output limit")
    assert len(r.results[0].stdout) <= code_harness.EXCERPT


def test_reading_etc_shadow():
    r = _zero("print(open('/etc/shadow').read())", expect=("exit_code",), text="/etc/shadow")
    assert "root:" not in r.results[0].stdout


def test_reading_the_servers_files_and_hidden_tests(repo, tmp_path):
    hidden = tmp_path / "hidden_tests.jsonl"
    hidden.write_text('{"input": "", "output": "SECRET-OUTPUT-7731"}\n')
    for path in (repo / "README.md", hidden, Path.home() / ".bashrc", Path("/work"), Path("/home")):
        code = f"import os\np = {str(path)!r}\nprint(os.listdir(p) if os.path.isdir(p) else open(p).read())"
        r = _zero(code, expect=("exit_code",), text="Error")
        assert "SECRET" not in r.results[0].stdout and "polyrl" not in r.results[0].stdout.lower()
    # The expected output is nowhere in the sandbox: not in the harness's memory, argv, environment or /tmp.
    # (the token is split in the program's source, which is itself in /tmp/work)
    code = ("import os\ntoken = 'SECRET-' + 'OUTPUT-7731'\nfound = []\nfor root in ('/tmp', '/proc/1'):\n"
            "    for d, _, files in os.walk(root):\n        for f in files:\n            try:\n"
            "                if token.encode() in open(os.path.join(d, f), 'rb').read(1 << 20):\n"
            "                    found.append(f)\n            except OSError:\n                pass\n"
            "print(token if found else 'not found')")
    r = run(code, [StdioTest("", "SECRET-OUTPUT-7731\n")], limits=FAST)
    assert r.results[0].status == "wrong_answer" and r.results[0].stdout.startswith("not found"), r.results[0]


def test_writing_outside_its_directory(repo, tmp_path):
    for target in (repo / "pwned.txt", tmp_path / "pwned.txt", Path("/usr/pwned.txt")):
        _zero(f"open({str(target)!r}, 'w').write('x')\nprint('ok')", expect=("exit_code",), text="Error")
        assert not target.exists()
    # its own directory (and /tmp) are writable, and private to this run
    assert run("open('notes.txt', 'w').write('ok')\nprint(open('/tmp/work/notes.txt').read())", OK).all_passed
    assert run("import os\nprint('ok' if not os.path.exists('notes.txt') else 'leak')", OK).all_passed


def test_opening_a_socket():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    accepted = []
    server.settimeout(0.2)
    stop = threading.Event()

    def accept():
        while not stop.is_set():
            try:
                accepted.append(server.accept())
            except OSError:
                pass

    watcher = threading.Thread(target=accept)
    watcher.start()
    try:
        _zero("import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=1)\nprint('ok')",
              expect=("exit_code",), text="unreachable")
        _zero(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)\nprint('ok')",
              expect=("exit_code",), text="refused")  # its loopback is its own, not the server's
    finally:
        stop.set()
        watcher.join()
        server.close()
    assert accepted == []


def test_signalling_its_parent():
    code = "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nos.kill(1, signal.SIGKILL)\nos.kill(-1, 9)"
    r = _zero(code, tests=[StdioTest("", "5\n")] * 3, expect=("wrong_answer", "exit_code"), text="")
    assert [t.status for t in r.results] != ["not_run"] * 3  # the harness outlived every test
    assert all(t.status in ("wrong_answer", "exit_code") for t in r.results)


def test_the_harness_is_out_of_reach():
    """The harness (pid 1) is non-dumpable: no injecting result lines through its stdout, no reading its memory."""
    code = ("import os\nfor p in ('/proc/1/fd/1', '/proc/1/mem', '/proc/1/environ'):\n    try:\n"
            "        open(p, 'wb' if p.endswith('/1') else 'rb')\n        print('opened', p)\n"
            "    except OSError as e:\n        print(type(e).__name__)\nprint(os.getuid() > 0)")
    result = run(code, [StdioTest("", "PermissionError\nPermissionError\nPermissionError\nTrue\n")], limits=FAST)
    assert result.all_passed, result.results[0]


# ------------------------------------------------------------------------------------------- backends
def test_missing_bubblewrap_is_reported_clearly(monkeypatch):
    sandbox._bwrap_problem.cache_clear()
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None)  # an injected fault: bwrap not installed
    try:
        problem = available("bubblewrap")
        assert "bubblewrap is not installed" in problem and "apt-get install bubblewrap" in problem
        with pytest.raises(SandboxUnavailable, match="apt-get install bubblewrap"):
            run("print('ok')", OK)
    finally:
        monkeypatch.undo()
        sandbox._bwrap_problem.cache_clear()
    assert available("bubblewrap") is None


def test_plain_process_backend_runs_trusted_code():
    result = run("import os\nprint(sum(map(int, input().split())), os.getcwd().startswith('/tmp'))",
                 [StdioTest("2 3\n", "5 True\n")], backend="process", limits=FAST)
    assert result.all_passed and result.backend == "process", result.results[0]
    looping = run("while True: pass", OK * 2, backend="process", limits=FAST, fail_fast="timeout")
    assert [t.status for t in looping.results][1] == "skipped"


@pytest.mark.slow
def test_docker_backend():
    problem = available("docker")
    if problem:
        print(f"SKIPPED docker backend: {problem}")
        pytest.skip(f"docker backend unavailable: {problem}")
    result = run("print(sum(map(int, input().split())))", [StdioTest("2 3\n", "5\n"), StdioTest("1 1\n", "3\n")],
                 backend="docker", limits=FAST)
    assert [t.status for t in result.results] == ["ok", "wrong_answer"], result
    hostile = run("import socket, os\nprint(os.getuid())\nsocket.create_connection(('1.1.1.1', 80), timeout=1)",
                  OK, backend="docker", limits=FAST)
    assert hostile.results[0].status == "exit_code" and "unreachable" in hostile.results[0].stderr
    assert hostile.results[0].stdout.startswith("65534")
    bomb = run("x = bytearray(8 * 2**30)", OK, backend="docker", limits=FAST)
    assert bomb.results[0].status == "memory"
