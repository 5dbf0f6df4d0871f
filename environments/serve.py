"""Serve one environment plugin over HTTP, from the command line or as a managed local subprocess.

    python -m environments.serve echo --port 0
    polyrl-env echo listening on http://127.0.0.1:41237

Once the server accepts connections it prints exactly that one line on stdout (flushed); logs go to stderr.
`start_local` runs the same command in a subprocess for the orchestrator and tests.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from pathlib import Path
from typing import Any

import uvicorn

from environments.server import DEFAULT_MAX_BODY_BYTES, DEFAULT_VERIFY_TIMEOUT_S, create_app, ensure_safe_bind

_URL_LINE = re.compile(rb"^polyrl-env (\S+) listening on (http://\S+)$", re.M)
_SECRET_VAR = "POLYRL_ENV_SECRET"  # how start_local hands a secret to its child (never on the command line)
_REPO = Path(__file__).resolve().parent.parent


class EnvStartError(RuntimeError):
    """A local environment server that could not be started; the message carries its stderr tail."""


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class _Server(uvicorn.Server):
    """uvicorn, plus the URL line once listening and an exit when the launching process is gone."""

    def __init__(self, config: uvicorn.Config, line: str, parent_pid: int | None):
        super().__init__(config)
        self._line = line
        self._parent_pid = parent_pid
        self._watch: asyncio.Task | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            print(self._line, flush=True)
            if self._parent_pid is not None:
                self._watch = asyncio.create_task(self._watch_parent())

    async def _watch_parent(self) -> None:
        # A crashed trainer must not leave orphaned servers holding ports (its child is re-parented on death).
        while not self.should_exit:
            if os.getppid() != self._parent_pid:
                self.should_exit = True
            await asyncio.sleep(1.0)


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    # restart() reuses the port of a killed server whose connections may still sit in TIME_WAIT.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host.strip("[]"), port))
    return sock


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m environments.serve", description=__doc__.split("\n")[0])
    p.add_argument("name", help="plugin name, as listed by `python -m environments list`")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind; other than loopback needs a secret")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    p.add_argument("--seed", type=int, default=0, help="seed passed to the Environment (task generation)")
    p.add_argument("--options", default="{}", help="JSON object of environment options")
    p.add_argument("--secret-env", metavar="VAR", help=f"environment variable holding the shared secret "
                                                           f"clients send in the X-Polyrl-Secret header")
    p.add_argument("--verify-workers", type=int, help="verify process pool size (default: the plugin's)")
    p.add_argument("--verify-timeout", type=float, default=DEFAULT_VERIFY_TIMEOUT_S, help="per-item seconds")
    p.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES)
    p.add_argument("--exit-with-parent", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    def fail(message: str) -> int:
        print(f"polyrl-env {args.name}: error: {message}", file=sys.stderr, flush=True)
        return 2

    try:
        options = json.loads(args.options)
    except json.JSONDecodeError as e:
        return fail(f"--options is not valid JSON ({e}); pass an object such as '{{\"num_tasks\": 10}}'")
    if not isinstance(options, dict):
        return fail("--options must be a JSON object")
    secret = None
    if args.secret_env:
        secret = os.environ.get(args.secret_env)
        if not secret:
            return fail(f"--secret-env {args.secret_env}: that environment variable is not set or empty")
    from environments import registry

    try:
        ensure_safe_bind(args.host, secret)
        env = registry.load(args.name)(options, args.seed)
        app = create_app(env, secret=secret, max_body_bytes=args.max_body_bytes,
                         verify_workers=args.verify_workers, verify_timeout_s=args.verify_timeout)
        sock = _bind(args.host, args.port)
    except (registry.PluginError, ValueError, OSError) as e:
        return fail(str(e))
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=3)
    line = f"polyrl-env {args.name} listening on {_url(args.host, sock.getsockname()[1])}"
    server = _Server(config, line, os.getppid() if args.exit_with_parent else None)
    server.run(sockets=[sock])
    return 0 if server.started else 1


# ------------------------------------------------------------------------------------ local subprocess
_RUNNING: weakref.WeakSet[LocalServer] = weakref.WeakSet()


class LocalServer:
    """An environment server subprocess (its own process group, so stop() also ends its verify workers)."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], timeout: float, port: int = 0):
        self.name = name
        self.timeout = timeout
        self._args = args
        self._env = env
        self.port = port  # 0 until the first start picked one; restart() reuses it
        self.url = ""
        self.process: subprocess.Popen | None = None
        self._start()

    def _start(self) -> None:
        for f in (getattr(self, "_out", None), getattr(self, "_err", None)):
            if f is not None:
                f.close()  # the previous run's output (restart)
        self._out = tempfile.TemporaryFile()
        self._err = tempfile.TemporaryFile()
        cmd = [sys.executable, "-m", "environments.serve", self.name, "--port", str(self.port),
               "--exit-with-parent", *self._args]
        self.process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._out, stderr=self._err,
                                        env=self._env, start_new_session=True)
        _RUNNING.add(self)
        deadline = time.monotonic() + self.timeout
        while True:
            # pread: the child shares the file offset, so read from 0 without moving it.
            out = self._out.fileno()
            m = _URL_LINE.search(os.pread(out, os.fstat(out).st_size, 0))
            if m:
                self.url = m.group(2).decode()
                self.port = int(self.url.rsplit(":", 1)[1])
                return
            if self.process.poll() is not None:
                _RUNNING.discard(self)
                raise EnvStartError(f"environment server {self.name!r} exited with code {self.process.returncode} "
                                    f"before listening; stderr tail:\n{self.stderr_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise EnvStartError(f"environment server {self.name!r} did not start listening within "
                                    f"{self.timeout:g}s; stderr tail:\n{self.stderr_tail()}")
            time.sleep(0.01)

    def stderr_tail(self, chars: int = 3000) -> str:
        size = os.fstat(self._err.fileno()).st_size
        start = max(0, size - chars)
        return os.pread(self._err.fileno(), size - start, start).decode(errors="replace")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.process.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def kill(self) -> None:
        """SIGKILL the whole process group at once: a crash, as tests simulate it."""
        if self.process is not None:
            self._signal_group(signal.SIGKILL)
            self.process.wait()

    def stop(self, timeout: float = 5.0) -> None:
        """Graceful stop (SIGTERM), SIGKILL after `timeout`; idempotent."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self.kill()  # also any verify worker left in the group
        _RUNNING.discard(self)

    def restart(self) -> None:
        """Stop and start again on the same port, so clients holding the URL reconnect."""
        self.stop()
        self._start()

    def __enter__(self) -> LocalServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"LocalServer({self.name!r}, url={self.url!r}, alive={self.alive()})"


def start_local(name: str, *, options: dict[str, Any] | None = None, seed: int = 0, timeout: float = 60,
                port: int = 0, secret: str | None = None, verify_workers: int | None = None,
                verify_timeout_s: float | None = None) -> LocalServer:
    """Start `python -m environments.serve NAME` with this interpreter; return once it accepts connections.

    >>> with start_local("echo") as server:  # doctest: +SKIP
    ...     print(server.url)
    http://127.0.0.1:41237
    """
    args = ["--seed", str(seed), "--options", json.dumps(options or {})]
    env = dict(os.environ)
    # The repo root, so a checkout that is not pip-installed still serves its built-in environments.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_REPO), env.get("PYTHONPATH")) if p)
    if secret is not None:
        env[_SECRET_VAR] = secret
        args += ["--secret-env", _SECRET_VAR]
    if verify_workers is not None:
        args += ["--verify-workers", str(verify_workers)]
    if verify_timeout_s is not None:
        args += ["--verify-timeout", str(verify_timeout_s)]
    return LocalServer(name, args, env, timeout, port)


@atexit.register
def _stop_all() -> None:
    for server in list(_RUNNING):
        server.stop(timeout=2.0)


if __name__ == "__main__":
    sys.exit(main())
