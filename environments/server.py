"""The HTTP server every environment plugin runs behind (DESIGN.md: envs are FastAPI servers reached over httpx).

One process serves one Environment, so it can live on another host, crash and restart without taking training
down, and be written by someone who never reads rl/. Endpoints (bodies are the wire models of rl/types.py):

    GET  /health                              liveness, never needs the secret
    GET  /info     -> EnvInfo
    GET  /stats                               open episode sessions (leak diagnostics for long runs)
    POST /tasks    TasksRequest  -> TasksResponse   prompts only: references never leave this process
    POST /reset    ResetRequest  -> ResetResponse   multi-turn environments only
    POST /step     StepRequest   -> StepResponse    multi-turn environments only
    POST /verify   VerifyRequest -> VerifyResponse  one Verdict per item, in order; failures are error Verdicts

Bodies are parsed with `Model.model_validate_json` on the raw bytes, so a wrong wire_version or an unknown field is
a 422 carrying pydantic's message; nothing from HTTP is ever unpickled.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import multiprocessing
import queue
import random
import signal
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import Depends, FastAPI, HTTPException, Request, Response
from pydantic import ValidationError

from environments.base import Environment, TaskRecord
from environments.client import SECRET_HEADER
from rl.types import (EnvInfo, ResetRequest, ResetResponse, StepRequest, StepResponse, TasksRequest, TasksResponse,
                      Verdict, VerifyRequest, VerifyResponse, Wire)

# A verify batch of 256 responses of 16k tokens is ~16 MB of JSON; the client sends smaller batches than that.
DEFAULT_MAX_BODY_BYTES = 32 * 2**20
# Per-item budget: a sympy simplification that runs longer is almost always stuck, not about to succeed.
DEFAULT_VERIFY_TIMEOUT_S = 30.0
_REASON_CHARS = 2000  # keep error reasons readable in logs and small on the wire

W = TypeVar("W", bound=Wire)


# --------------------------------------------------------------------------------------------- scoring
def safe_verify(env: Environment, record: TaskRecord, response: str) -> Verdict:
    """env.verify that never raises and never returns a non-Verdict (STYLE.md rule 11)."""
    try:
        verdict = env.verify(record, response)
    except Exception as e:  # a plugin bug must cost one item, not the batch
        return Verdict.error(f"{env.name}.verify raised {type(e).__name__}: {e}"[:_REASON_CHARS])
    if not isinstance(verdict, Verdict):
        return Verdict.error(f"{env.name}.verify returned {type(verdict).__name__}, expected a Verdict")
    return verdict


def safe_verify_episode(env: Environment, record: TaskRecord, session_id: str, response: str) -> Verdict:
    try:
        verdict = env.verify_episode(record, session_id, response)
    except Exception as e:
        return Verdict.error(f"{env.name}.verify_episode raised {type(e).__name__}: {e}"[:_REASON_CHARS])
    if not isinstance(verdict, Verdict):
        return Verdict.error(f"{env.name}.verify_episode returned {type(verdict).__name__}, expected a Verdict")
    return verdict


def _ids_digest(records: Sequence[TaskRecord]) -> str:
    return hashlib.sha256("\n".join(r.task.task_id for r in records).encode()).hexdigest()


def _timeout_reason(timeout_s: float, what: str) -> str:
    return (f"verify timed out after {timeout_s:g}s ({what}); raise the server's --verify-timeout or make "
            "the verifier faster")


# ---------------------------------------------------------------------------------- inline verification
async def run_inline(jobs: Sequence[Callable[[], Verdict]], timeout_s: float) -> list[Verdict]:
    """Run `jobs` one after another in a background thread; an item over `timeout_s` becomes an error Verdict.

    A thread cannot be killed, so a stuck item is abandoned (its thread finishes or hangs on its own) and the
    remaining items continue in a fresh thread: the request always answers. Environments whose verify can hang
    should set verify_workers > 0, where a stuck worker process is killed instead.
    """
    n = len(jobs)
    results: list[Verdict | None] = [None] * n
    loop = asyncio.get_running_loop()
    tick = min(1.0, timeout_s / 4)
    start = 0
    while start < n:
        lock = threading.Lock()
        state = {"index": start, "started": time.monotonic(), "abandoned": False}
        done = loop.create_future()

        def work(first: int = start, state: dict = state, lock: threading.Lock = lock,
                 done: asyncio.Future = done) -> None:
            for i in range(first, n):
                verdict = jobs[i]()
                with lock:
                    if state["abandoned"]:
                        return
                    results[i] = verdict
                    state["index"], state["started"] = i + 1, time.monotonic()
            loop.call_soon_threadsafe(lambda: done.done() or done.set_result(None))

        threading.Thread(target=work, name="verify-inline", daemon=True).start()
        while True:
            finished, _ = await asyncio.wait({done}, timeout=tick)
            if finished:
                start = n
                break
            with lock:
                if time.monotonic() - state["started"] > timeout_s:
                    state["abandoned"] = True
                    stuck = state["index"]
                    results[stuck] = Verdict.error(_timeout_reason(timeout_s, "inline verifier thread abandoned"))
                    start = stuck + 1
                    break
    return [r if r is not None else Verdict.error("internal error: item was not verified") for r in results]


# ------------------------------------------------------------------------------------ process pool
def _worker_main(conn: Any, env_cls: type[Environment], options: dict, seed: int) -> None:
    """A pool worker: build the Environment once, then verify chunks of (task_id, response), one reply per item."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the server's to handle; it then closes the pool
    try:
        env = env_cls(options, seed)
        records = env.load_tasks()
        index = {r.task.task_id: r for r in records}
    except BaseException as e:
        conn.send(("error", f"{type(e).__name__}: {e}"))
        return
    conn.send(("ready", _ids_digest(records)))
    while True:
        try:
            chunk = conn.recv()
        except (EOFError, OSError):  # the server went away
            break
        if chunk is None:
            break
        for task_id, response in chunk:
            # JSON, not a pickled model: small, and the parent validates what it reads.
            conn.send(safe_verify(env, index[task_id], response).model_dump_json())
    env.close()


@dataclass(eq=False)  # identity hash: workers live in a set
class _Worker:
    process: Any  # multiprocessing.Process
    conn: Any  # parent end of a duplex Pipe

    def kill(self) -> None:
        self.process.kill()
        self.process.join(5)
        self.conn.close()


class VerifyPool:
    """Processes that verify in parallel, each holding its own Environment (built from class, options and seed;
    tasks loaded once per worker). A batch is sent as chunks of (task_id, response), so pickling stays small.

    Each worker answers item by item; an item that takes longer than `item_timeout_s` (or a worker that dies)
    gets an error Verdict, the worker is killed and replaced, and the rest of its chunk continues on the new one.
    """

    def __init__(self, env: Environment, records: Sequence[TaskRecord], workers: int, item_timeout_s: float,
                 start_timeout_s: float = 120.0):
        self.name = env.name
        self.workers = workers
        self.item_timeout_s = item_timeout_s
        self.start_timeout_s = start_timeout_s
        self.recycled = 0  # workers killed for a timeout or found dead
        self._spec = (type(env), env.options, env.seed)
        self._digest = _ids_digest(records)
        # spawn, not fork: the server process runs threads and an event loop, which fork does not copy safely.
        self._ctx = multiprocessing.get_context("spawn")
        self._idle: queue.SimpleQueue[_Worker | None] = queue.SimpleQueue()
        self._threads = ThreadPoolExecutor(workers, thread_name_prefix=f"verify-{env.name}")
        self._live: set[_Worker] = set()
        self._lock = threading.Lock()
        self._started = False
        self._closed = False

    def start(self) -> None:
        """Start all workers in parallel and wait until each has loaded its tasks (raises with the cause)."""
        with self._lock:
            if self._started:
                return
            launched = [self._launch() for _ in range(self.workers)]
            try:
                for w in launched:
                    self._await_ready(w)
            except BaseException:
                for w in launched:
                    self._discard(w)
                raise
            for w in launched:
                self._idle.put(w)
            self._started = True

    def _launch(self) -> _Worker:
        parent, child = self._ctx.Pipe()
        proc = self._ctx.Process(target=_worker_main, args=(child, *self._spec), daemon=True,
                                 name=f"verify-{self.name}")
        proc.start()
        child.close()
        w = _Worker(proc, parent)
        self._live.add(w)
        return w

    def _await_ready(self, w: _Worker) -> None:
        if not w.conn.poll(self.start_timeout_s):
            raise RuntimeError(f"{self.name}: a verify worker did not load its tasks within {self.start_timeout_s}s")
        try:
            kind, payload = w.conn.recv()
        except EOFError:
            raise RuntimeError(f"{self.name}: a verify worker exited with code {w.process.exitcode} while "
                               "building the environment; its traceback is on the server's stderr") from None
        if kind == "error":
            raise RuntimeError(f"{self.name}: a verify worker could not build the environment: {payload}")
        if payload != self._digest:
            raise RuntimeError(f"{self.name}: load_tasks returned different task ids in a verify worker than in "
                               "the server; make load_tasks depend only on options and seed")

    def _discard(self, w: _Worker) -> None:
        self._live.discard(w)
        w.kill()

    def _fresh(self) -> _Worker:
        w = self._launch()
        try:
            self._await_ready(w)
        except BaseException:
            self._discard(w)
            raise
        return w

    def _run_chunk(self, chunk: list[tuple[str, str]]) -> list[Verdict]:
        out: list[Verdict] = []
        w = self._idle.get()
        try:
            while len(out) < len(chunk):
                if w is None:
                    if self._closed:  # shutting down: no new workers
                        return out + [Verdict.error(f"{self.name}: server shutting down")] * (len(chunk) - len(out))
                    try:
                        w = self._fresh()
                    except Exception as e:
                        reason = f"{self.name}: could not restart a verify worker: {e}"[:_REASON_CHARS]
                        return out + [Verdict.error(reason)] * (len(chunk) - len(out))
                try:
                    w.conn.send(chunk[len(out):])
                except OSError:  # died while idle (killed from outside): replace it and resend
                    self.recycled += 1
                    self._discard(w)
                    w = None
                    continue
                while len(out) < len(chunk):
                    if not w.conn.poll(self.item_timeout_s):
                        reason = _timeout_reason(self.item_timeout_s, "worker process killed and replaced")
                    else:
                        try:
                            out.append(Verdict.model_validate_json(w.conn.recv()))
                            continue
                        except EOFError:
                            w.process.join(1)
                            reason = (f"{self.name}: verify worker died (exit code {w.process.exitcode}) on this "
                                      "item; it was replaced")
                    out.append(Verdict.error(reason))
                    self.recycled += 1
                    self._discard(w)
                    w = None
                    break
            return out
        finally:
            self._idle.put(w)

    async def verify(self, pairs: Sequence[tuple[str, str]]) -> list[Verdict]:
        """Verdicts for (task_id, response) pairs whose task ids are known, in order."""
        if not pairs:
            return []
        if not self._started:
            await asyncio.to_thread(self.start)
        # ~4 chunks per worker balances uneven item costs; the cap keeps one chunk's pickle small.
        size = max(1, min(256, -(-len(pairs) // (self.workers * 4))))
        chunks = [list(pairs[i:i + size]) for i in range(0, len(pairs), size)]
        loop = asyncio.get_running_loop()
        parts = await asyncio.gather(*(loop.run_in_executor(self._threads, self._run_chunk, c) for c in chunks))
        return [v for part in parts for v in part]

    def close(self) -> None:
        self._closed = True
        self._threads.shutdown(wait=False, cancel_futures=True)
        for w in list(self._live):
            try:
                w.conn.send(None)
            except OSError:
                pass
        deadline = time.monotonic() + 3
        for w in list(self._live):
            w.process.join(max(0.0, deadline - time.monotonic()))
            self._discard(w)


# ------------------------------------------------------------------------------------------ security
def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve to anything


def ensure_safe_bind(host: str, secret: str | None) -> None:
    """Refuse to expose an environment beyond this machine without a shared secret."""
    if not is_loopback(host) and not secret:
        raise ValueError(f"refusing to listen on {host!r} without a secret: anyone who can reach the port could "
                         "read tasks and use the verifier; export a secret in an environment variable and pass "
                         "--secret-env VAR (clients send it via envs.NAME.secret_env), or bind 127.0.0.1")


# ---------------------------------------------------------------------------------------------- app
def _index(env: Environment) -> tuple[dict[str, TaskRecord], dict[str, list[TaskRecord]], list[TaskRecord]]:
    records = list(env.load_tasks())
    by_id: dict[str, TaskRecord] = {}
    by_level: dict[str, list[TaskRecord]] = {d: [] for d in env.difficulties}
    for r in records:
        tid = r.task.task_id
        if tid in by_id:
            raise ValueError(f"{env.name}: load_tasks returned task_id {tid!r} twice; task ids must be unique")
        if r.task.env != env.name:
            raise ValueError(f"{env.name}: task {tid!r} has env={r.task.env!r}; build tasks with env=self.name")
        if r.task.difficulty not in by_level:
            raise ValueError(f"{env.name}: task {tid!r} has difficulty {r.task.difficulty!r}, not one of "
                             f"{env.difficulties}; add it to the class's `difficulties`")
        by_id[tid] = r
        by_level[r.task.difficulty].append(r)
    return by_id, by_level, records


def create_app(env: Environment, *, secret: str | None = None, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
               verify_workers: int | None = None,
               verify_timeout_s: float = DEFAULT_VERIFY_TIMEOUT_S) -> FastAPI:
    """The FastAPI app serving `env`. Tasks are loaded and indexed by id here, once.

    verify_workers: size of the verify process pool (default: the class's `verify_workers`; 0 verifies inline).
    verify_timeout_s: per-item verify budget; an item over it is an error Verdict.
    """
    by_id, by_level, records = _index(env)
    info = EnvInfo(name=env.name, version=env.version, multi_turn=env.multi_turn, task_count=len(records),
                   difficulties=tuple(env.difficulties),
                   counts_by_difficulty={d: len(rs) for d, rs in by_level.items()})
    info_json = info.to_json()
    workers = env.verify_workers if verify_workers is None else verify_workers
    pool = VerifyPool(env, records, workers, verify_timeout_s) if workers > 0 else None
    sessions: dict[str, str] = {}  # session_id -> task_id of live multi-turn episodes

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if pool is not None:
            await asyncio.to_thread(pool.start)  # fail at start-up, with the cause, rather than on first verify
        try:
            yield
        finally:
            if pool is not None:
                await asyncio.to_thread(pool.close)
            env.close()

    def require_secret(request: Request) -> None:
        if secret is None:
            return
        given = request.headers.get(SECRET_HEADER, "")
        if not hmac.compare_digest(given.encode(), secret.encode()):
            raise HTTPException(401, f"{env.name}: missing or wrong {SECRET_HEADER} header; set the client's "
                                     "secret (envs.NAME.secret_env) to the server's --secret-env value")

    async def parse(request: Request, model: type[W]) -> W:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_body_bytes:
            raise HTTPException(413, f"request body of {declared} bytes exceeds the server limit of "
                                     f"{max_body_bytes}; send smaller batches")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body_bytes:
                raise HTTPException(413, f"request body exceeds the server limit of {max_body_bytes} bytes; "
                                         "send smaller batches")
            chunks.append(chunk)
        try:
            return model.model_validate_json(b"".join(chunks))
        except ValidationError as e:
            raise HTTPException(422, f"{env.name}: invalid {model.__name__}: {e}") from None

    def reply(obj: Wire) -> Response:
        return Response(obj.to_json(), media_type="application/json")

    def record_of(task_id: str) -> TaskRecord:
        record = by_id.get(task_id)
        if record is None:
            raise HTTPException(404, f"{env.name}: unknown task_id {task_id!r}")
        return record

    def require_multi_turn(endpoint: str) -> None:
        if not env.multi_turn:
            raise HTTPException(409, f"{env.name} is a single-turn environment: it has no {endpoint}; send "
                                     "responses straight to /verify")

    app = FastAPI(title=f"polyrl environment {env.name}", version=env.version, lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url=None)
    guarded = [Depends(require_secret)]

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok", "env": env.name}

    @app.get("/info", dependencies=guarded)
    async def get_info() -> Response:
        return Response(info_json, media_type="application/json")

    @app.get("/stats", dependencies=guarded)
    async def stats() -> dict[str, Any]:
        """Leak diagnostics for long runs (issue 10 soak): open episodes here and in the environment itself."""
        live = getattr(env, "live_sessions", None)
        return {"env": env.name, "sessions": len(sessions),
                "env_sessions": await asyncio.to_thread(live) if callable(live) else None,
                "verify_workers_recycled": pool.recycled if pool is not None else 0}

    @app.post("/tasks", dependencies=guarded)
    async def tasks(request: Request) -> Response:
        req = await parse(request, TasksRequest)
        if req.ids is not None:
            if req.count or req.difficulty is not None:
                raise HTTPException(400, "TasksRequest: give either ids or count (+ difficulty), not both")
            missing = [i for i in req.ids if i not in by_id]
            if missing:
                more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
                raise HTTPException(404, f"{env.name}: unknown task ids {missing[:5]}{more}")
            return reply(TasksResponse(tasks=tuple(by_id[i].task for i in req.ids)))
        if req.difficulty is not None and req.difficulty not in by_level:
            raise HTTPException(400, f"{env.name}: unknown difficulty {req.difficulty!r}; this environment has "
                                     f"{list(by_level)}")
        pool_ = records if req.difficulty is None else by_level[req.difficulty]
        if req.count and not pool_:
            raise HTTPException(404, f"{env.name}: no tasks of difficulty {req.difficulty!r}")
        # Without replacement; a count larger than the pool walks through further shuffled passes of it.
        rng = random.Random(req.seed)
        picked: list[TaskRecord] = []
        while len(picked) < req.count:
            picked += rng.sample(pool_, min(len(pool_), req.count - len(picked)))
        return reply(TasksResponse(tasks=tuple(r.task for r in picked)))

    @app.post("/reset", dependencies=guarded)
    async def reset(request: Request) -> Response:
        req = await parse(request, ResetRequest)
        require_multi_turn("/reset")
        record = record_of(req.task_id)
        session_id = uuid.uuid4().hex
        try:
            observation = await asyncio.to_thread(env.reset, record, session_id)
        except Exception as e:
            raise HTTPException(500, f"{env.name}.reset raised {type(e).__name__}: {e}"[:_REASON_CHARS]) from None
        sessions[session_id] = req.task_id
        return reply(ResetResponse(session_id=session_id, observation=observation or ""))

    @app.post("/step", dependencies=guarded)
    async def step(request: Request) -> Response:
        req = await parse(request, StepRequest)
        require_multi_turn("/step")
        if req.session_id not in sessions:
            raise HTTPException(400, f"{env.name}: unknown session_id {req.session_id!r}: call /reset first "
                                     "(sessions end at /verify and do not survive a server restart)")
        try:
            observation, done = await asyncio.to_thread(env.step, req.session_id, req.action)
        except Exception as e:
            raise HTTPException(500, f"{env.name}.step raised {type(e).__name__}: {e}"[:_REASON_CHARS]) from None
        return reply(StepResponse(observation=observation, done=bool(done)))

    async def verify_whole_request(req: VerifyRequest) -> list[Verdict]:
        """batch_verify environments get every valid item of the request in one call (issue 7: chat groups)."""
        verdicts: list[Verdict | None] = [None] * len(req.items)
        batch: list[tuple[int, tuple[TaskRecord, str]]] = []
        for i, item in enumerate(req.items):
            record = by_id.get(item.task_id)
            if record is None:
                verdicts[i] = Verdict.error(f"{env.name}: unknown task_id {item.task_id!r}")
            elif item.session_id is not None:
                verdicts[i] = Verdict.error(f"{env.name} verifies batches: items must not carry a session_id")
            else:
                batch.append((i, (record, item.response)))
        try:
            got = await asyncio.to_thread(env.verify_batch, [b for _, b in batch])
            if len(got) != len(batch) or not all(isinstance(v, Verdict) for v in got):
                got = [Verdict.error(f"{env.name}.verify_batch returned {len(got)} items for {len(batch)}, or "
                                     "not Verdicts")] * len(batch)
        except Exception as e:
            got = [Verdict.error(f"{env.name}.verify_batch raised {type(e).__name__}: {e}"[:_REASON_CHARS])] * len(batch)
        for (i, _), v in zip(batch, got):
            verdicts[i] = v
        return [v if v is not None else Verdict.error("internal error: item was not verified") for v in verdicts]

    @app.post("/verify", dependencies=guarded)
    async def verify(request: Request) -> Response:
        req = await parse(request, VerifyRequest)
        if env.batch_verify:
            return reply(VerifyResponse(verdicts=tuple(await verify_whole_request(req))))
        verdicts: list[Verdict | None] = [None] * len(req.items)
        pooled: list[tuple[int, tuple[str, str]]] = []
        inline: list[tuple[int, Callable[[], Verdict]]] = []
        for i, item in enumerate(req.items):
            record = by_id.get(item.task_id)
            sid = item.session_id
            if record is None:
                verdicts[i] = Verdict.error(f"{env.name}: unknown task_id {item.task_id!r}")
            elif sid is not None and not env.multi_turn:
                verdicts[i] = Verdict.error(f"{env.name} is single-turn: verify items must not carry a session_id")
            elif sid is not None:
                owner = sessions.pop(sid, None)  # verify_episode releases the episode
                if owner != item.task_id:
                    what = "unknown session_id" if owner is None else f"session of task {owner!r}, not this task"
                    verdicts[i] = Verdict.error(f"{env.name}: {what} {sid!r}")
                else:
                    inline.append((i, lambda r=record, s=sid, t=item.response: safe_verify_episode(env, r, s, t)))
            elif pool is not None:
                pooled.append((i, (item.task_id, item.response)))
            else:
                inline.append((i, lambda r=record, t=item.response: safe_verify(env, r, t)))
        results = await asyncio.gather(pool.verify([p for _, p in pooled]) if pool else asyncio.sleep(0, []),
                                       run_inline([f for _, f in inline], verify_timeout_s))
        for (i, _), v in zip(pooled + inline, [*results[0], *results[1]]):
            verdicts[i] = v
        return reply(VerifyResponse(verdicts=tuple(verdicts)))

    app.state.env = env
    app.state.pool = pool
    return app
