"""Beyond one process: a two-node Ray cluster with roles on different nodes, and `ray job submit` (issue 4).

Both run in subprocesses: the test session already has a local Ray in this process.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_node_cluster_places_roles_on_their_nodes(tmp_path, tiny_policy_dir):
    script = tmp_path / "two_node.py"
    script.write_text(textwrap.dedent(f"""
        import json, ray
        from ray.cluster_utils import Cluster
        from rl.config import build_config
        from rl.train import run
        import rl.train as train

        cluster = Cluster(initialize_head=True, head_node_args={{"num_cpus": 1, "resources": {{"rollout_node": 1}}}})
        cluster.add_node(num_cpus=1, resources={{"learner_node": 1}})
        ray.init(address=cluster.address, namespace="two-node", log_to_driver=False)
        cfg = build_config(envs="echo", overrides=[
            "model.path={tiny_policy_dir}", "run.output_dir={tmp_path}", "run.name=two", "run.steps=2",
            "run.prompts_per_step=2", "run.samples_per_prompt=2", "rollout.max_new_tokens=8", "eval.tasks_per_env=0",
            "rollout.resources={{rollout_node: 1}}", "learner.resources={{learner_node: 1}}"])
        seen = {{}}
        original = train._create_rollout_workers
        def spy(cfg):
            workers = original(cfg)
            seen["rollout"] = ray.get([w.node_id.remote() for w in workers])
            return workers
        train._create_rollout_workers = spy
        original_l = train._create_learners
        def spy_l(cfg):
            learners = original_l(cfg)
            seen["learner"] = ray.get([l.node_id.remote() for l in learners])
            return learners
        train._create_learners = spy_l
        summary = run(cfg)
        nodes = {{n["NodeID"]: n["Resources"] for n in ray.nodes()}}
        print("RESULT", json.dumps({{"steps": summary["steps"], "seen": seen,
              "rollout_node_has": [sorted(nodes[i]) for i in seen["rollout"]],
              "learner_node_has": [sorted(nodes[i]) for i in seen["learner"]]}}))
        ray.shutdown()
        cluster.shutdown()
    """))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, str(script)], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    line = [l for l in out.stdout.splitlines() if l.startswith("RESULT ")]
    assert line, out.stdout[-3000:] + out.stderr[-3000:]
    import json

    res = json.loads(line[0][len("RESULT "):])
    assert res["steps"] == 2
    assert set(res["seen"]["rollout"]).isdisjoint(res["seen"]["learner"])  # two different nodes
    assert all("rollout_node" in r for r in res["rollout_node_has"])
    assert all("learner_node" in r for r in res["learner_node_has"])


def test_ray_job_submit_against_a_head_the_test_starts(tmp_path, tiny_policy_dir):
    venv_bin = str(Path(sys.executable).parent)
    env = {**os.environ, "RAY_AUTH_MODE": "token", "PATH": venv_bin + os.pathsep + os.environ.get("PATH", ""),
           "PYTHONPATH": str(REPO)}
    env.pop("RAY_ADDRESS", None)
    gcs, dash = _free_port(), _free_port()
    head = subprocess.Popen(
        [f"{venv_bin}/ray", "start", "--head", "--block", "--num-cpus", "2", f"--port={gcs}",
         f"--dashboard-port={dash}", "--dashboard-host=127.0.0.1", "--include-dashboard=true", "--disable-usage-stats",
         # the job agent's HTTP port defaults to 52365 for every Ray on the host: with the session's local Ray
         # (ray_session) already holding it, this head's agent cannot bind and every submission is refused
         f"--dashboard-agent-listen-port={_free_port()}"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        address = f"http://127.0.0.1:{dash}"
        deadline = time.time() + 120
        while time.time() < deadline:
            probe = subprocess.run([f"{venv_bin}/ray", "job", "list", "--address", address], env=env,
                                   capture_output=True, text=True, timeout=60)
            if probe.returncode == 0:
                break
            time.sleep(2)
        else:
            pytest.fail(f"Ray head did not come up: {probe.stderr[-2000:]}")
        # The dashboard answers `ray job list` before its job agent has registered; until then a submission is
        # refused with "No available agent to submit job, please try again later" (nothing was started), so retry.
        submit_deadline = time.time() + 120
        while True:
            job = subprocess.run(
                [f"{venv_bin}/ray", "job", "submit", "--address", address, "--working-dir", str(REPO), "--",
                 "python", "rl/train.py", "--envs", "echo", f"model.path={tiny_policy_dir}",
                 f"run.output_dir={tmp_path}", "run.name=job", "run.steps=2", "run.prompts_per_step=2",
                 "run.samples_per_prompt=2", "rollout.max_new_tokens=8", "eval.tasks_per_env=0"],
                env=env, capture_output=True, text=True, timeout=600)
            if "No available agent to submit job" not in job.stderr + job.stdout or time.time() > submit_deadline:
                break
            time.sleep(3)
        assert job.returncode == 0, job.stdout[-4000:] + job.stderr[-2000:]
        assert "succeeded" in job.stdout.lower()
        assert "done: 2 steps" in job.stdout
        assert (tmp_path / "job" / "final" / "model.safetensors").is_file()
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
