"""Session-wide fixtures: one tiny policy build and one vLLM engine per test session (CI time budget)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# Fuzzing (issue 10): `make test` runs the "ci" profile; `make test-faults` sets HYPOTHESIS_PROFILE=long.
# No deadline: a shared 2-core machine makes single examples slow at random, which is not a failure.
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile("ci", max_examples=60, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.register_profile("long", max_examples=1000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def tiny_policy_dir() -> Path:
    """The randomly initialised tiny policy (seconds to build); infrastructure tests need no warm start."""
    from rl.model import TINY_POLICY_INIT_DIR
    from rl.tiny_policy import ensure_built

    return ensure_built(TINY_POLICY_INIT_DIR)


@pytest.fixture(scope="session")
def rollout_worker(tiny_policy_dir):
    """The session's in-process rollout worker: one vLLM engine on the tiny policy (float32, eager)."""
    from rl.model import ModelConfig
    from rl.rollout import RolloutConfig, RolloutWorker

    worker = RolloutWorker(ModelConfig(path=str(tiny_policy_dir)), RolloutConfig(), seed=0)
    yield worker
    del worker


@pytest.fixture(scope="session")
def llm(rollout_worker):
    """That worker's vllm.LLM."""
    return rollout_worker.llm


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for every end-to-end test (2 CPUs: one rollout worker and one learner, as in the default)."""
    import ray

    # address="local": always a fresh instance, never a cluster some earlier `ray start` left its address file for
    ray.init(address="local", num_cpus=2, include_dashboard=False, namespace="polyrl-tests", log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture
def python() -> str:
    return sys.executable


@pytest.fixture
def repo() -> Path:
    return REPO


@pytest.fixture
def clean_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO)
    return env
