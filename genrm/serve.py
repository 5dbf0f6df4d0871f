"""Run the GenRM service over HTTP, and the client the chat environment uses to reach it.

    python -m genrm.serve --port 0 --config '{"strategy": "circular"}'
    polyrl-genrm listening on http://127.0.0.1:41237

Once the judge engine is loaded and the server accepts connections it prints exactly that line (flushed);
`start_local` runs it as a managed subprocess (the chat environment's default when no URL is configured).
A non-loopback --host needs --secret-env (clients then send the secret in X-Polyrl-Secret).
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import ipaddress
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from fastapi import FastAPI, HTTPException, Request, Response
from pydantic import ValidationError

from genrm.service import CohortConflict, GenRMConfig, GenRMService, Judge
from genrm.wire import GenRMMetrics, ScoreRequest, ScoreResponse

SECRET_HEADER = "X-Polyrl-Secret"
MAX_BODY_BYTES = 32 * 2**20
_URL_LINE = re.compile(rb"^polyrl-genrm listening on (http://\S+)$", re.M)
_REPO = Path(__file__).resolve().parent.parent


async def _read_limited(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed `limit`: from Content-Length before reading
    anything, else while streaming (chunked uploads), so an oversized body is never held in memory whole."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"request body of {declared} bytes exceeds the server limit of {limit}; send "
                                 "smaller cohorts")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"request body exceeds the server limit of {limit} bytes; send smaller cohorts")
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(service: GenRMService, secret: str | None = None, max_body_bytes: int = MAX_BODY_BYTES) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app):
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(title="polyrl GenRM", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    def check(request: Request) -> None:
        if secret is not None and not hmac.compare_digest(request.headers.get(SECRET_HEADER, "").encode(),
                                                          secret.encode()):
            raise HTTPException(401, f"missing or wrong {SECRET_HEADER} header; give the client the server's secret")

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "judge": service.cfg.judge_path, "strategy": service.cfg.strategy}

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        check(request)
        return Response(service.metrics().to_json(), media_type="application/json")

    @app.post("/score")
    async def score(request: Request) -> Response:
        check(request)
        body = await _read_limited(request, max_body_bytes)
        try:
            req = ScoreRequest.model_validate_json(body)
        except ValidationError as e:
            raise HTTPException(422, f"invalid ScoreRequest: {e}") from None
        try:
            resp = await service.score(req)
        except CohortConflict as e:
            raise HTTPException(409, str(e)) from None
        return Response(resp.to_json(), media_type="application/json")

    app.state.service = service
    return app


def _is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    p = argparse.ArgumentParser(prog="python -m genrm.serve", description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    p.add_argument("--config", default="{}", help="JSON object of GenRMConfig fields")
    p.add_argument("--secret-env", metavar="VAR", help="environment variable holding the shared secret")
    p.add_argument("--max-body-bytes", type=int, default=MAX_BODY_BYTES, help="larger /score bodies get 413")
    p.add_argument("--exit-with-parent", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    def fail(message: str) -> int:
        print(f"polyrl-genrm: error: {message}", file=sys.stderr, flush=True)
        return 2

    try:
        cfg = GenRMConfig.model_validate(json.loads(args.config))
    except (json.JSONDecodeError, ValidationError) as e:
        return fail(f"--config: {e}")
    secret = os.environ.get(args.secret_env) if args.secret_env else None
    if args.secret_env and not secret:
        return fail(f"--secret-env {args.secret_env}: that environment variable is not set or empty")
    if not _is_loopback(args.host) and not secret:
        return fail(f"refusing to listen on {args.host!r} without a secret: export one in an environment variable "
                    "and pass --secret-env VAR (the chat environment sends it via its genrm_secret_env option), "
                    "or bind 127.0.0.1")
    from genrm.service import VLLMJudge

    try:
        judge = VLLMJudge(cfg)
    except FileNotFoundError as e:
        return fail(str(e))
    sock = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host.strip("[]"), args.port))
    except OSError as e:
        return fail(f"cannot bind {args.host}:{args.port}: {e}")
    host = f"[{args.host}]" if ":" in args.host else args.host
    line = f"polyrl-genrm listening on http://{host}:{sock.getsockname()[1]}"
    parent = os.getppid() if args.exit_with_parent else None

    class Server(uvicorn.Server):
        async def startup(self, sockets=None):
            await super().startup(sockets)
            if self.started:
                print(line, flush=True)
                if parent is not None:
                    asyncio.create_task(self._watch())

        async def _watch(self):
            while not self.should_exit:  # a crashed environment server must not leave a judge engine behind
                if os.getppid() != parent:
                    self.should_exit = True
                await asyncio.sleep(1.0)

    server = Server(uvicorn.Config(create_app(GenRMService(cfg, judge), secret, args.max_body_bytes), log_level="warning",
                                   access_log=False, timeout_graceful_shutdown=3))
    server.run(sockets=[sock])
    return 0


# ------------------------------------------------------------------------------------------- local process
class GenRMStartError(RuntimeError):
    pass


def start_local(cfg: GenRMConfig, *, timeout_s: float = 300.0, nice: int = 0) -> tuple[subprocess.Popen, str]:
    """Start `python -m genrm.serve` for `cfg` on a free loopback port; (process, URL) once it listens."""
    stderr = tempfile.TemporaryFile()
    env = dict(os.environ, PYTHONPATH=str(_REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "genrm.serve", "--port", "0", "--config", cfg.model_dump_json(),
           "--exit-with-parent"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=stderr, env=env, cwd=str(_REPO),
                            preexec_fn=(lambda: os.nice(nice)) if nice else None)
    os.set_blocking(proc.stdout.fileno(), False)
    buf, deadline = b"", time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        chunk = proc.stdout.read() or b""
        buf += chunk
        m = _URL_LINE.search(buf)
        if m:
            return proc, m.group(1).decode()
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)
    stderr.seek(0)
    tail = stderr.read().decode(errors="replace")[-3000:]
    raise GenRMStartError(f"the GenRM server did not start within {timeout_s:g}s (exit code {proc.returncode}); "
                          f"its stderr ends with:\n{tail}")


def stop_local(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class GenRMUnavailable(RuntimeError):
    """The service could not be reached or answered with an error; the message says which."""


class GenRMClient:
    """Async client of one GenRM server (all cohorts of a /verify request go out concurrently)."""

    def __init__(self, url: str, *, timeout_s: float = 300.0, secret: str | None = None):
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.headers = {"content-type": "application/json"}
        if secret:
            self.headers[SECRET_HEADER] = secret

    async def score_many(self, requests: list[ScoreRequest]) -> list[ScoreResponse | GenRMUnavailable]:
        async with httpx.AsyncClient(timeout=self.timeout_s, headers=self.headers) as client:
            return list(await asyncio.gather(*(self._score(client, r) for r in requests)))

    async def _score(self, client: httpx.AsyncClient, req: ScoreRequest) -> ScoreResponse | GenRMUnavailable:
        try:
            r = await client.post(f"{self.url}/score", content=req.to_json())
        except httpx.HTTPError as e:
            return GenRMUnavailable(f"GenRM at {self.url} unreachable: {type(e).__name__}: {e}")
        if r.status_code != 200:
            return GenRMUnavailable(f"GenRM at {self.url} answered HTTP {r.status_code}: {r.text[:500]}")
        try:
            return ScoreResponse.from_json(r.content)
        except ValidationError as e:
            return GenRMUnavailable(f"GenRM at {self.url} sent an invalid ScoreResponse: {e}")

    def metrics(self) -> GenRMMetrics:
        r = httpx.get(f"{self.url}/metrics", headers=self.headers, timeout=10)
        r.raise_for_status()
        return GenRMMetrics.from_json(r.content)


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["Judge", "GenRMClient", "GenRMUnavailable", "start_local", "stop_local", "create_app", "main"]
