"""Security defaults of the HTTP services (issue 10, item 6; SECURITY.md): loopback by default, a shared secret
for anything else (constant-time check, 401 everywhere but /health), no unpickling of request bodies, and a body
size limit enforced before the body is read. Real sockets and real server processes where it matters.
"""

from __future__ import annotations

import ast
import asyncio
import hmac
import json
import os
import pickle
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest
import uvicorn
from fastapi.routing import APIRoute

from environments.client import SECRET_HEADER
from environments.echo import EchoEnvironment
from environments.serve import LocalServer, start_local
from environments.serve import main as env_main
from environments.server import create_app as env_app
from genrm import serve as genrm_serve
from genrm.service import GenRMConfig, GenRMService

REPO = Path(__file__).resolve().parents[2]
SECRET = "correct horse battery staple"
NON_LOOPBACK = ["0.0.0.0", "::", "192.0.2.10", "envhost.example"]  # any, any v6, a LAN address, a host name


class _Marker:
    """Unpickling this creates `path`: if a server ever unpickled a request body, the file would appear."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (Path(self.path).touch, ())


def _env_child_env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO), POLYRL_TEST_SECRET=SECRET)


# ----------------------------------------------------------------------------------------- bind defaults
@pytest.mark.parametrize("host", NON_LOOPBACK)
def test_env_server_refuses_non_loopback_without_secret(host, capsys, monkeypatch):
    monkeypatch.delenv("POLYRL_UNSET_SECRET", raising=False)
    assert env_main(["echo", "--host", host]) == 2
    err = capsys.readouterr().err
    assert "without a secret" in err and "--secret-env" in err and host in err
    # a --secret-env naming an empty variable is refused too, not silently insecure
    assert env_main(["echo", "--host", host, "--secret-env", "POLYRL_UNSET_SECRET"]) == 2
    assert "not set or empty" in capsys.readouterr().err


@pytest.mark.parametrize("host", NON_LOOPBACK)
def test_genrm_refuses_non_loopback_without_secret(host, capsys):
    # the check comes before the judge engine is loaded: the refusal costs no vLLM start
    assert genrm_serve.main(["--host", host]) == 2
    err = capsys.readouterr().err
    assert "without a secret" in err and "--secret-env" in err


def test_cli_exit_code_2_with_the_flag_named():
    for cmd in (["-m", "environments.serve", "echo", "--host", "0.0.0.0"], ["-m", "genrm.serve", "--host", "::"]):
        p = subprocess.run([sys.executable, *cmd], cwd=REPO, env=_env_child_env(), capture_output=True, text=True,
                           timeout=60)
        assert p.returncode == 2, p.stderr
        assert "--secret-env" in p.stderr and "Traceback" not in p.stderr


def test_genrm_binds_loopback_by_default(monkeypatch):
    """genrm.serve with no --host: the socket it hands uvicorn is bound to 127.0.0.1 (judge replaced by a stub,
    uvicorn's run intercepted: what is checked is the address, not the engine)."""
    bound = []
    monkeypatch.setattr("genrm.service.VLLMJudge", lambda cfg: _Judge())
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: bound.append(sockets[0].getsockname()))
    assert genrm_serve.main(["--port", "0"]) == 0
    assert bound and bound[0][0] == "127.0.0.1"


def test_env_server_listens_on_loopback_only_by_default():
    with start_local("echo", timeout=60) as server:
        assert server.url.startswith("http://127.0.0.1:")
        listening = [c.laddr for c in psutil.Process(server.process.pid).net_connections("inet")
                     if c.status == psutil.CONN_LISTEN]
        assert listening and all(a.ip == "127.0.0.1" for a in listening), listening


# ------------------------------------------------------------------------------------------------ secret
def test_every_env_endpoint_but_health_needs_the_secret():
    """Enumerates the app's routes, so an endpoint added later without the guard fails here."""
    from fastapi.testclient import TestClient

    app = env_app(EchoEnvironment(), secret=SECRET)
    routes = [(m, r.path) for r in app.routes if isinstance(r, APIRoute) for m in r.methods]
    assert {p for _, p in routes} >= {"/health", "/info", "/stats", "/tasks", "/reset", "/step", "/verify"}
    with TestClient(app) as client:
        for method, path in routes:
            for headers in ({}, {SECRET_HEADER: "wrong"}, {SECRET_HEADER: SECRET[:-1]}, {SECRET_HEADER: SECRET + "x"}):
                r = client.request(method, path, headers=headers, content=b"{}")
                assert r.status_code == (200 if path == "/health" else 401), (method, path, headers, r.text)
            r = client.request(method, path, headers={SECRET_HEADER: SECRET}, content=b"{}")
            assert r.status_code != 401, (method, path)


def test_secret_is_compared_in_constant_time(monkeypatch):
    """Both services call hmac.compare_digest on every guarded request (a == comparison leaks the prefix length
    through timing)."""
    from fastapi.testclient import TestClient

    calls = []
    real = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: calls.append((a, b)) or real(a, b))
    with TestClient(env_app(EchoEnvironment(), secret=SECRET)) as client:
        client.get("/info", headers={SECRET_HEADER: "guess"})
    with TestClient(genrm_serve.create_app(GenRMService(GenRMConfig(), _Judge()), SECRET)) as client:
        client.get("/metrics", headers={SECRET_HEADER: "guess2"})
    assert (b"guess", SECRET.encode()) in calls and (b"guess2", SECRET.encode()) in calls


def test_off_host_server_with_secret_over_a_real_socket():
    """0.0.0.0 with a secret starts; through a real socket: 401 without/with a wrong secret, 200 with it."""
    server = LocalServer("echo", ["--host", "0.0.0.0", "--secret-env", "POLYRL_TEST_SECRET"], _env_child_env(), 60)
    try:
        url = server.url.replace("0.0.0.0", "127.0.0.1")
        with httpx.Client(base_url=url, timeout=10) as http:
            assert http.get("/health").status_code == 200
            for path, body in (("/tasks", {"count": 1}), ("/verify", {"items": []}), ("/reset", {"task_id": "x"})):
                assert http.post(path, json=body).status_code == 401
                assert http.post(path, json=body, headers={SECRET_HEADER: "nope"}).status_code == 401
            assert http.get("/info").status_code == 401
            assert http.get("/info", headers={SECRET_HEADER: SECRET}).status_code == 200
            r = http.post("/tasks", json={"count": 1}, headers={SECRET_HEADER: SECRET})
            assert r.status_code == 200 and len(r.json()["tasks"]) == 1
    finally:
        server.stop()


# ------------------------------------------------------------------------------------------------ pickle
_HANDLER_MODULES = ["environments/server.py", "environments/serve.py", "environments/client.py", "rl/types.py",
                    "genrm/serve.py", "genrm/service.py", "genrm/wire.py", "environments/chat/__init__.py",
                    "environments/tools/__init__.py", "environments/code/__init__.py"]
_UNSAFE_MODULES = {"pickle", "cloudpickle", "dill", "joblib", "shelve", "marshal", "jsonpickle"}


@pytest.mark.parametrize("module", _HANDLER_MODULES)
def test_request_handling_modules_do_not_import_pickle_decoders(module):
    tree = ast.parse((REPO / module).read_text())
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name.split(".")[0] for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module.split(".")[0]]
        assert not set(names) & _UNSAFE_MODULES, f"{module}:{node.lineno} imports {names}"
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            call = f"{node.value.id}.{node.attr}"
            assert call not in {"torch.load", "yaml.load", "numpy.load", "np.load"}, f"{module}:{node.lineno} {call}"


def test_pickle_bodies_are_rejected_as_invalid_json_and_never_unpickled(tmp_path):
    marker = tmp_path / "unpickled"
    body = pickle.dumps({"items": [_Marker(str(marker))]})
    with start_local("echo", timeout=60) as server, httpx.Client(base_url=server.url, timeout=10) as http:
        for path in ("/tasks", "/verify", "/reset", "/step"):
            for ctype in ("application/json", "application/octet-stream", "application/x-python-pickle"):
                r = http.post(path, content=body, headers={"content-type": ctype})
                assert r.status_code in (409, 422), (path, r.status_code)  # 409: echo has no /reset, /step
                if r.status_code == 422:
                    assert "invalid" in r.json()["detail"].lower()
    with _GenRM() as url, httpx.Client(base_url=url, timeout=10) as http:
        r = http.post("/score", content=body, headers={SECRET_HEADER: SECRET})
        assert r.status_code == 422 and "invalid ScoreRequest" in r.json()["detail"]
    assert not marker.exists()


# ------------------------------------------------------------------------------------------- size limits
def _raw_request(port: int, head: str, body: bytes = b"", timeout: float = 5.0) -> str:
    """Send a request over a real socket and return the status line; the server must answer without waiting
    for a body it was told about but never got (the limit is applied before reading)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(head.encode() + body)
        data = b""
        while b"\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    return data.split(b"\r\n", 1)[0].decode()


def test_env_server_413_before_reading_the_body():
    server = LocalServer("echo", ["--max-body-bytes", "4096"], _env_child_env(), 60)
    try:
        port = int(server.url.rsplit(":", 1)[1])
        t0 = time.monotonic()
        line = _raw_request(port, f"POST /verify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                  f"Content-Length: {10**12}\r\n\r\n")
        assert " 413 " in line and time.monotonic() - t0 < 5, line
        with httpx.Client(base_url=server.url, timeout=10) as http:
            big = json.dumps({"items": [{"task_id": "echo-0", "response": "x" * 5000}]}).encode()
            chunks = (big[i:i + 512] for i in range(0, len(big), 512))  # chunked: no Content-Length to trust
            assert http.post("/verify", content=chunks).status_code == 413
            small = json.dumps({"items": [{"task_id": "echo-0", "response": "x" * 100}]})
            assert http.post("/verify", content=small).status_code == 200
            # the secret is checked first: an unauthenticated client cannot make the server read anything
        assert server.alive()
    finally:
        server.stop()


def test_genrm_413_before_reading_the_body():
    with _GenRM(max_body_bytes=4096) as url:
        port = int(url.rsplit(":", 1)[1])
        line = _raw_request(port, f"POST /score HTTP/1.1\r\nHost: x\r\n{SECRET_HEADER}: {SECRET}\r\n"
                                  f"Content-Length: {10**12}\r\n\r\n")
        assert " 413 " in line, line
        line = _raw_request(port, f"POST /score HTTP/1.1\r\nHost: x\r\nContent-Length: {10**12}\r\n\r\n")
        assert " 401 " in line, line
        with httpx.Client(base_url=url, timeout=10, headers={SECRET_HEADER: SECRET}) as http:
            chunks = (b"x" * 512 for _ in range(20))
            assert http.post("/score", content=chunks).status_code == 413
            assert http.get("/metrics").status_code == 200
            assert http.get("/metrics", headers={SECRET_HEADER: "no"}).status_code == 401
            assert httpx.get(f"{url}/health", timeout=10).status_code == 200


# --------------------------------------------------------------------------------------------- helpers
class _Judge:
    """Stands in for the vLLM judge engine: these tests exercise the HTTP layer, never a judgement."""

    def generate(self, prompts, temperature):
        return [None] * len(prompts)


class _GenRM:
    """The real GenRM FastAPI app under uvicorn on a real loopback socket, in a thread of this process."""

    def __init__(self, max_body_bytes: int = genrm_serve.MAX_BODY_BYTES):
        app = genrm_serve.create_app(GenRMService(GenRMConfig(), _Judge()), SECRET, max_body_bytes=max_body_bytes)
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.thread = threading.Thread(target=lambda: asyncio.run(self.server.serve(sockets=[self.sock])),
                                       daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()
