"""An out-of-repo plugin, as a new user makes one: `new` -> pip install -e -> listed -> served -> verified.

Installs into the running interpreter's environment and uninstalls at the end; nothing in the repo changes.
"""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import PackageNotFoundError, distribution

from environments.client import SyncEnvClient
from environments.serve import start_local
from rl.types import VerifyItem

NAME = "myplugin"
DIST = "polyrl-env-myplugin"


def _run(*args: str, cwd, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert not check or r.returncode == 0, f"{args} exited {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r


def _uninstall(cwd) -> None:
    _run("-m", "pip", "uninstall", "-y", "-q", DIST, cwd=cwd)


def _listed(cwd) -> bool:
    # `list` exits 1 while some other plugin is broken (e.g. mid-development); only our row matters here.
    out = _run("-m", "environments", "list", cwd=cwd, check=False).stdout
    return any(line.split()[:1] == [NAME] and "polyrl_env_myplugin" in line for line in out.splitlines())


def test_new_plugin_installs_lists_serves_and_verifies(tmp_path):
    try:
        distribution(DIST)
        _uninstall(tmp_path)  # left over from an interrupted run
    except PackageNotFoundError:
        pass
    _run("-m", "environments", "new", NAME, "--dir", str(tmp_path), cwd=tmp_path)
    pkg = tmp_path / DIST
    try:
        _run("-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--disable-pip-version-check",
             "-e", str(pkg), cwd=tmp_path)
        assert _listed(tmp_path)
        _run("-m", "pytest", "-q", "-p", "no:cacheprovider", "tests", cwd=pkg, timeout=60)  # the generated tests

        with start_local(NAME, options={"num_tasks": 12}, seed=3, timeout=30) as server, \
                SyncEnvClient(NAME, server.url) as client:
            info = client.info()
            assert (info.name, info.task_count) == (NAME, 12)
            tasks = client.tasks(count=12)
            items = [VerifyItem(task_id=t.task_id, response=t.prompt[0].content.removeprefix("Reverse: ")[::-1])
                     for t in tasks]
            verdicts = client.verify(items + [VerifyItem(task_id=tasks[0].task_id, response="wrong")])
        assert [v.reward for v in verdicts] == [1.0] * 12 + [0.0]
        assert all(v.status == "ok" for v in verdicts)
    finally:
        _uninstall(tmp_path)
    assert not _listed(tmp_path)
