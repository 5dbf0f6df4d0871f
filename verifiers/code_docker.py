"""The docker backend of verifiers.sandbox: one container per candidate, through the docker SDK.

    python -m verifiers.code_docker build      # image polyrl-sandbox-python:<X.Y> from this machine's Python
    python -m verifiers.code_docker check      # is a daemon reachable, is the image there

No registry is needed (none is reachable on the project's machines): `build` packs this interpreter, its
standard library (no site-packages) and the shared libraries they link into a tarball and `docker import`s it.
A host with registry access can point `docker_image` at any image whose `python3` is 3.8+ instead.

The container: no network, read-only root, a size-capped tmpfs /tmp, uid 65534, all capabilities dropped,
no-new-privileges, memory and pids limits from the cgroup (the harness sets its per-test rlimits on top; it
does not use RLIMIT_NPROC here, which would count uid 65534's processes across all containers).
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import tarfile
import threading
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

DEFAULT_IMAGE = f"polyrl-sandbox-python:{sys.version_info.major}.{sys.version_info.minor}"
_SKIP_DIRS = {"site-packages", "dist-packages", "test", "tests", "idlelib", "tkinter", "turtledemo", "ensurepip",
              "__pycache__", "lib2to3", "pydoc_data"}


def _client(timeout: int = 60):
    import docker

    return docker.from_env(timeout=timeout)


@lru_cache(maxsize=4)
def docker_problem(image: str | None = None) -> str | None:
    """None when the daemon answers and the image exists, else what is wrong and how to fix it (cached)."""
    try:
        client = _client(timeout=5)
        client.ping()
    except Exception as e:
        return (f"no Docker API daemon reachable ({type(e).__name__}: {str(e)[:200]}); start dockerd (e.g. "
                "`dockerd --storage-driver vfs`) or set DOCKER_HOST, or use backend 'bubblewrap'")
    image = image or DEFAULT_IMAGE
    try:
        client.images.get(image)
    except Exception:
        return f"docker image {image!r} not found; build it offline with `python -m verifiers.code_docker build`"
    return None


def _libraries(paths: list[str]) -> set[str]:
    """Shared libraries (and the loader) that `paths` link to, from ldd."""
    libs: set[str] = set()
    for chunk in range(0, len(paths), 64):
        out = subprocess.run(["ldd", *paths[chunk:chunk + 64]], capture_output=True, text=True).stdout
        for line in out.splitlines():
            parts = line.split()
            for p in parts:
                if p.startswith("/") and os.path.exists(p):
                    libs.add(p)
    return libs


def image_tarball(python: str | None = None) -> tuple[bytes, str]:
    """(tar bytes, interpreter path inside) of a minimal root filesystem holding this Python."""
    exe = os.path.realpath(python or sys.executable)
    prefix = Path(sys.base_prefix).resolve()
    stdlib = prefix / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    files: set[str] = {exe}
    for root, dirs, names in os.walk(stdlib):
        dirs[:] = [d for d in dirs if d not in _SKIP_DIRS]
        files.update(os.path.join(root, n) for n in names if not n.endswith((".pyc", ".pyo")))
    for lib in (prefix / "lib").glob("libpython*.so*"):
        files.add(str(lib))
    files |= _libraries([exe, *sorted(f for f in files if f.endswith(".so"))])
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        present = sorted(f for f in files if os.path.isfile(f))
        # Every parent directory explicitly, mode 0755: implicit ones come out 0600 (uid 65534 cannot enter)
        parents = {str(p).lstrip("/") for f in present for p in Path(f).parents if str(p) != "/"}
        for name in sorted(parents | {"tmp", "dev", "proc", "usr", "usr/bin", "etc"}):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if name == "tmp" else 0o755
            tar.addfile(info)
        for f in present:
            tar.add(os.path.realpath(f), arcname=f.lstrip("/"), recursive=False)  # dereference symlinks
        if exe != "/usr/bin/python3":
            info = tarfile.TarInfo("usr/bin/python3")
            info.type, info.linkname = tarfile.SYMTYPE, exe
            tar.addfile(info)
    return buf.getvalue(), exe


def build_image(tag: str = DEFAULT_IMAGE) -> str:
    """Import the minimal image into the daemon under `tag`; returns the image id."""
    data, exe = image_tarball()
    client = _client(timeout=300)
    image_id = client.api.import_image_from_data(data, repository=tag.split(":")[0], tag=tag.split(":")[1],
                                                 changes=["LABEL polyrl.sandbox=1", "ENV LANG=C.UTF-8"])
    docker_problem.cache_clear()
    return client.images.get(tag).id


def run_harness(payload: bytes, limits: Any, *, timeout: float, image: str | None = None,
                out_cap: int = 4 << 20) -> tuple[int | None, bytes, bytes, str]:
    """Run the harness in a fresh container with `payload` on its stdin; (exit code, stdout, stderr, problem)."""
    from verifiers.sandbox import HARNESS_SOURCE, SandboxUnavailable

    image = image or DEFAULT_IMAGE
    problem = docker_problem(image)
    if problem:
        raise SandboxUnavailable(problem)
    client = _client(timeout=int(timeout) + 30)
    api = client.api
    # The cgroup limits bound the whole container; the harness applies the per-test ones inside.
    memory = (limits.memory_mb + limits.tmp_mb + 64) << 20
    host_config = api.create_host_config(
        network_mode="none", read_only=True, cap_drop=["ALL"], security_opt=["no-new-privileges"],
        tmpfs={"/tmp": f"rw,exec,nosuid,size={limits.tmp_mb}m,mode=1777"}, mem_limit=memory, memswap_limit=memory,
        pids_limit=limits.processes + 4, nano_cpus=10**9, ulimits=[], auto_remove=False, init=False)
    container = api.create_container(
        image, command=["python3", "-I", "-S", "-B", "-c", HARNESS_SOURCE], stdin_open=True, detach=False,
        user="65534:65534", working_dir="/tmp", network_disabled=True, host_config=host_config,
        environment={"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/tmp/work",
                     "PYTHONHASHSEED": "0"}, labels={"polyrl.sandbox": "1"})
    cid = container["Id"]
    problems: list[str] = []
    try:
        sock = api.attach_socket(cid, params={"stdin": 1, "stream": 1})
        raw = getattr(sock, "_sock", sock)
        api.start(cid)
        raw.sendall(payload)
        try:
            raw.shutdown(socket.SHUT_WR)  # EOF on the harness's stdin (the container has StdinOnce)
        except OSError:
            pass
        raw.close()
        try:
            rc = api.wait(cid, timeout=timeout)["StatusCode"]
        except Exception:  # requests' ReadTimeout: the container outlived its budget
            problems.append(f"sandbox exceeded its total time budget of {timeout:.1f}s; killed")
            api.kill(cid)
            rc = None
        out = api.logs(cid, stdout=True, stderr=False)
        err = api.logs(cid, stdout=False, stderr=True, tail=50)
        if len(out) > out_cap:
            problems.append(f"sandbox wrote more than {out_cap} bytes of protocol output")
            out = out[:out_cap]
        return rc, out, err, "; ".join(problems)
    finally:
        try:
            api.remove_container(cid, force=True)
        except Exception:
            pass


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["build"]:
        start = time.monotonic()
        print(build_image(), f"({DEFAULT_IMAGE}, {time.monotonic() - start:.1f}s)")
        return 0
    if args[:1] == ["check"]:
        problem = docker_problem()
        print(problem or f"docker backend ready (image {DEFAULT_IMAGE})")
        return 1 if problem else 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main())
