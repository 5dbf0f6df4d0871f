"""How the orchestrator reaches one environment server."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from rl.section import Section


class EnvConfig(Section):
    url: str | None = None
    """Base URL of a running server (remote host); None starts a local server subprocess on a free port."""
    weight: float = Field(1.0, gt=0)
    """Mixing weight of this environment in each step's prompts."""
    difficulties: list[str] | None = None
    """Levels whose training tasks are drawn (None: every level). The held-out evaluation (eval.difficulty) is
    unaffected. A level the policy never solves (or always solves) only costs rollouts: its groups carry no signal."""
    timeout_s: float = Field(30.0, gt=0)
    """Per-request timeout."""
    retries: int = Field(3, ge=0, le=20)
    """Retries with exponential backoff before a request counts as failed (error verdicts, never None)."""
    grace_s: float = Field(120.0, ge=0)
    """How long verification waits for an unreachable server (crash, restart) before the run fails with a clear
    message; samples wait meanwhile and nothing is lost. 0: no waiting, unreachable items get error verdicts."""
    secret_env: str | None = None
    """Name of an environment variable holding the shared secret sent to non-localhost servers."""
    options: dict[str, Any] = {}
    """Environment-specific options passed to the server (task files, difficulty levels, ...)."""

