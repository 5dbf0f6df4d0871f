"""Async client of one environment server (environments/server.py), as the orchestrator and rollouts use it.

Transient failures (connection refused/reset, timeouts, 5xx) are retried with exponential backoff and jitter,
over fresh connections, so a server that crashes and comes back on the same URL is picked up again. A server that
stays down raises `EnvUnavailable` naming the environment and URL. `verify` instead waits for it for up to
`grace_s` and then raises `EnvDown` (the run stops with a clear message); with `grace_s=0` it returns one error
Verdict per item (counted in `metrics`): training goes on, and the lost rewards are visible, never None.

>>> client = EnvClient("echo", "http://127.0.0.1:41237")  # doctest: +SKIP
>>> tasks = await client.tasks(count=4, seed=1)  # doctest: +SKIP
>>> verdicts = await client.verify([VerifyItem(task_id=t.task_id, response="abc") for t in tasks])  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections.abc import Sequence
from typing import Any

import httpx
from pydantic import ValidationError

from rl.types import (EnvInfo, ResetRequest, ResetResponse, StepRequest, StepResponse, Task, TasksRequest,
                      TasksResponse, Verdict, VerifyItem, VerifyRequest, VerifyResponse, Wire)

# Shared-secret header; defined here, not in server.py, so clients do not import FastAPI.
SECRET_HEADER = "X-Polyrl-Secret"


class EnvUnavailable(RuntimeError):
    """No usable answer from an environment server after all retries."""

    def __init__(self, name: str, url: str, message: str):
        super().__init__(message)
        self.name, self.url = name, url


class EnvDown(EnvUnavailable):
    """The server stayed unreachable for longer than the client's grace period: the run cannot go on."""


class EnvRequestError(RuntimeError):
    """The server rejected a request (4xx): a bug or misconfiguration on the caller's side, never retried."""

    def __init__(self, name: str, url: str, status: int, detail: str):
        super().__init__(f"environment {name!r} at {url} answered HTTP {status}: {detail}")
        self.name, self.url, self.status, self.detail = name, url, status, detail


def _detail(r: httpx.Response) -> str:
    try:
        detail = r.json().get("detail", r.text)
    except (json.JSONDecodeError, AttributeError):
        detail = r.text
    return str(detail)[:1000]


class EnvClient:
    """Client of the environment `name` served at `url`.

    retries: extra attempts after the first, with backoff backoff_s * 2**k (capped at max_backoff_s, jittered
    x0.5..1.5); the defaults ride out a server restart of a few seconds.
    grace_s: how long `verify` keeps retrying a server that stays unreachable (issue 10). Within the grace
    period the items wait and are verified once the server is back (nothing is lost to a restart); after it,
    `EnvDown` is raised, which stops the run with a message naming the environment and URL. 0 keeps the
    non-blocking behaviour: once the retries are spent the items get error Verdicts and training goes on.
    verify_batch: items per /verify request; batches go out concurrently, at most max_concurrency at a time.
    """

    def __init__(self, name: str, url: str, *, timeout_s: float = 30.0, retries: int = 3,
                 secret: str | None = None, backoff_s: float = 0.25, max_backoff_s: float = 4.0,
                 verify_batch: int = 128, max_concurrency: int = 8, grace_s: float = 0.0,
                 transport: httpx.AsyncBaseTransport | None = None):
        self.name = name
        self.grace_s = grace_s
        self._down_since: float | None = None  # monotonic time of the first failure of the current outage
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.verify_batch = verify_batch
        self.max_concurrency = max_concurrency
        self._transport = transport  # tests inject httpx.MockTransport here
        self._headers = {"content-type": "application/json"}
        if secret:
            self._headers[SECRET_HEADER] = secret
        self.metrics: dict[str, int] = {
            "requests": 0,  # HTTP attempts, retries included
            "retries": 0,
            "failures": 0,  # requests that failed after every retry
            "verify_items": 0,
            "verify_errors": 0,  # error Verdicts made here because the server could not be reached
            "verify_server_errors": 0,  # error Verdicts the server returned (unknown task, verifier crash, timeout)
            "verify_waits": 0,  # batches that waited for an unreachable server within the grace period
            "outages": 0,  # periods of unreachability (each ends when a request succeeds again)
            "outage_seconds_max": 0.0,  # the longest of them, from first failure to the next success
        }
        self._http: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def from_config(cls, name: str, config: Any, url: str | None = None) -> EnvClient:
        """From an EnvConfig (environments/config.py); `url` overrides config.url (a local server's)."""
        url = url or config.url
        if not url:
            raise ValueError(f"envs.{name}.url is not set and no local server URL was given")
        secret = None
        if config.secret_env:
            secret = os.environ.get(config.secret_env)
            if not secret:
                raise ValueError(f"envs.{name}.secret_env names {config.secret_env!r}, which is not set in the "
                                 "environment; export it with the server's secret")
        return cls(name, url, timeout_s=config.timeout_s, retries=config.retries, secret=secret,
                   grace_s=config.grace_s)

    # ---------------------------------------------------------------------------------- transport
    def _client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._http is None or self._http.is_closed or self._loop is not loop:
            # Connections belong to one event loop; a new loop (e.g. asyncio.run per call) needs a new pool.
            limits = httpx.Limits(max_connections=2 * self.max_concurrency,
                                  max_keepalive_connections=self.max_concurrency)
            # trust_env=False: a proxy from the environment must not intercept traffic to 127.0.0.1 or the cluster.
            self._http = httpx.AsyncClient(timeout=self.timeout_s, limits=limits, headers=self._headers,
                                           trust_env=False, transport=self._transport)
            self._loop = loop
        return self._http

    def _backoff(self, attempt: int) -> float:
        return min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1)) * random.uniform(0.5, 1.5)

    async def _request(self, method: str, path: str, body: Wire | None = None, *, idempotent: bool = True) -> bytes:
        """Response body of a 2xx; EnvRequestError on 4xx; EnvUnavailable once retries are spent.

        Non-idempotent requests (/step) are retried only when the connection was never made.
        """
        content = body.to_json().encode() if body is not None else None
        started = time.monotonic()
        last = ""
        attempt = 0
        for attempt in range(1, self.retries + 2):
            if attempt > 1:
                self.metrics["retries"] += 1
                await asyncio.sleep(self._backoff(attempt - 1))
            self.metrics["requests"] += 1
            try:
                r = await self._client().request(method, self.url + path, content=content)
            except httpx.TransportError as e:  # refused, reset, timeouts, protocol errors
                last = f"{type(e).__name__}: {str(e) or 'no detail'}"
                if idempotent or isinstance(e, (httpx.ConnectError, httpx.ConnectTimeout)):
                    continue
                break
            if r.status_code >= 500:
                last = f"HTTP {r.status_code}: {_detail(r)}"
                if idempotent:
                    continue
                break
            if r.status_code >= 400:
                raise EnvRequestError(self.name, self.url, r.status_code, _detail(r))
            if self._down_since is not None:
                self.metrics["outage_seconds_max"] = max(self.metrics["outage_seconds_max"],
                                                         time.monotonic() - self._down_since)
                self._down_since = None
            return r.content
        self.metrics["failures"] += 1
        if self._down_since is None:
            self._down_since = started
            self.metrics["outages"] += 1
        raise EnvUnavailable(self.name, self.url,
                             f"environment {self.name!r} at {self.url} unavailable after {attempt} attempt(s) over "
                             f"{time.monotonic() - started:.1f}s, last error {last}; check that its server is "
                             f"running (python -m environments.serve {self.name}) and envs.{self.name}.url")

    # -------------------------------------------------------------------------------------- API
    async def health(self) -> bool:
        """One quick probe, no retries: True when the server answers /health."""
        try:
            r = await self._client().get(self.url + "/health", timeout=min(self.timeout_s, 5.0))
        except httpx.TransportError:
            return False
        return r.status_code == 200

    async def info(self) -> EnvInfo:
        info = EnvInfo.from_json(await self._request("GET", "/info"))
        if info.name != self.name:
            raise EnvRequestError(self.name, self.url, 200, f"this server runs environment {info.name!r}, not "
                                                            f"{self.name!r}; check envs.{self.name}.url")
        return info

    async def tasks(self, ids: Sequence[str] | None = None, *, count: int = 0, difficulty: str | None = None,
                    seed: int = 0) -> list[Task]:
        """Tasks by id, or `count` sampled ones (of one difficulty if given). Prompts only, no references."""
        req = TasksRequest(ids=tuple(ids) if ids is not None else None, count=count, difficulty=difficulty,
                           seed=seed)
        return list(TasksResponse.from_json(await self._request("POST", "/tasks", req)).tasks)

    async def reset(self, task_id: str) -> ResetResponse:
        return ResetResponse.from_json(await self._request("POST", "/reset", ResetRequest(task_id=task_id)))

    async def step(self, session_id: str, action: str) -> StepResponse:
        req = StepRequest(session_id=session_id, action=action)
        return StepResponse.from_json(await self._request("POST", "/step", req, idempotent=False))

    async def verify(self, items: Sequence[VerifyItem]) -> list[Verdict]:
        """One Verdict per item, in order. Never raises for transport failures: those items get error Verdicts."""
        items = list(items)
        sem = asyncio.Semaphore(self.max_concurrency)

        async def one(batch: list[VerifyItem]) -> list[Verdict]:
            async with sem:
                return await self._verify_batch(batch)

        parts = await asyncio.gather(*(one(items[i:i + self.verify_batch])
                                       for i in range(0, len(items), self.verify_batch)))
        verdicts = [v for part in parts for v in part]
        self.metrics["verify_items"] += len(verdicts)
        return verdicts

    def _errors(self, n: int, reason: str) -> list[Verdict]:
        self.metrics["verify_errors"] += n
        return [Verdict.error(reason)] * n

    def down_for(self) -> float:
        """Seconds since the current outage began (0 while the server answers)."""
        return 0.0 if self._down_since is None else time.monotonic() - self._down_since

    async def _post_verify(self, batch: list[VerifyItem]) -> bytes:
        """POST /verify; within the grace period an unreachable server is waited for, then EnvDown."""
        while True:
            try:
                return await self._request("POST", "/verify", VerifyRequest(items=tuple(batch)))
            except EnvUnavailable as e:
                if self.grace_s <= 0:
                    raise
                down = self.down_for()
                if down >= self.grace_s:
                    raise EnvDown(self.name, self.url,
                                  f"environment {self.name!r} at {self.url} has been unreachable for {down:.0f}s, "
                                  f"longer than its grace period (envs.{self.name}.grace_s={self.grace_s:g}); "
                                  f"{len(batch)} responses could not be verified. Last error: {e}") from e
                self.metrics["verify_waits"] += 1
                await asyncio.sleep(min(self.max_backoff_s, max(0.05, self.grace_s - down)))

    async def _verify_batch(self, batch: list[VerifyItem]) -> list[Verdict]:
        try:
            raw = await self._post_verify(batch)
            verdicts = list(VerifyResponse.from_json(raw).verdicts)
        except EnvDown:
            raise
        except EnvUnavailable as e:
            return self._errors(len(batch), str(e))
        except EnvRequestError as e:
            if e.status != 413:
                raise  # wrong secret, version mismatch: a configuration error must stop the run loudly
            if len(batch) == 1:
                return self._errors(1, str(e))
            half = len(batch) // 2  # too large for the server's body limit: split until it fits
            return await self._verify_batch(batch[:half]) + await self._verify_batch(batch[half:])
        except ValidationError as e:
            return self._errors(len(batch), f"environment {self.name!r} at {self.url} sent an invalid "
                                            f"VerifyResponse: {e}")
        if len(verdicts) != len(batch):
            return self._errors(len(batch), f"environment {self.name!r} at {self.url} returned {len(verdicts)} "
                                            f"verdicts for {len(batch)} items")
        self.metrics["verify_server_errors"] += sum(v.status == "error" for v in verdicts)
        return verdicts

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def __aenter__(self) -> EnvClient:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"EnvClient({self.name!r}, {self.url!r})"


class SyncEnvClient:
    """Blocking EnvClient for scripts and tests (one private event loop; not for use inside a running loop)."""

    def __init__(self, name: str, url: str, **kwargs: Any):
        self.client = EnvClient(name, url, **kwargs)
        self._loop = asyncio.new_event_loop()

    @property
    def metrics(self) -> dict[str, int]:
        return self.client.metrics

    def _run(self, coro: Any) -> Any:
        return self._loop.run_until_complete(coro)

    def health(self) -> bool:
        return self._run(self.client.health())

    def info(self) -> EnvInfo:
        return self._run(self.client.info())

    def tasks(self, ids: Sequence[str] | None = None, **kwargs: Any) -> list[Task]:
        return self._run(self.client.tasks(ids, **kwargs))

    def reset(self, task_id: str) -> ResetResponse:
        return self._run(self.client.reset(task_id))

    def step(self, session_id: str, action: str) -> StepResponse:
        return self._run(self.client.step(session_id, action))

    def verify(self, items: Sequence[VerifyItem]) -> list[Verdict]:
        return self._run(self.client.verify(items))

    def close(self) -> None:
        if not self._loop.is_closed():
            self._run(self.client.aclose())
            self._loop.close()

    def __enter__(self) -> SyncEnvClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
