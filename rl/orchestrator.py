"""The asynchronous GRPO loop: tasks -> rollouts -> verification -> buffer -> learner step -> weight sync.

Pipelining (issue 4): before training step s, rollouts for steps s..s+max_staleness are in flight. A batch
submitted while the rollout workers hold weights version v is trained at learner version <= v + max_staleness,
so `max_staleness: 0` is synchronous GRPO on the same code. The buffer still checks every group's version and
drops (and counts) any older than the bound. Ray runs an actor's calls in submission order, so a weight update
sent after step s applies after the generate calls already queued and before the ones submitted later.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import json
import os
import random
import shutil
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
import torch

from curricula.base import TaskSampler, build_sampler, split_prompts
from curricula.split import is_heldout, training_tasks
from environments.client import EnvClient
from rl.evaluate import pass_rate
from rl.learner import collate
from rl.loss import grpo_advantages
from rl.metrics import drop_partial_last_line
from rl.dashboard import open_metrics
from rl.faults import FaultPlan
from rl.progress import Progress
from rl.types import ScoredGroup, Task, Verdict, VerifyItem
from rl.watchdog import Watchdog

# A dead actor (SIGKILL, OOM, preemption), or one Ray is still restarting.
_ACTOR_DIED = (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError)


# Ray results are waited for in threads (ray.get), not by awaiting ObjectRefs on the event loop: under pytest's
# output capture the latter once left the loop waiting forever for a result that had arrived.
_RAY_WAITERS = concurrent.futures.ThreadPoolExecutor(max_workers=32, thread_name_prefix="ray-get")


async def wait(refs):
    """await the result of one ObjectRef or a list of them."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_RAY_WAITERS, ray.get, refs)


async def wait_ready(ref) -> None:
    """await an ObjectRef without fetching its value into this process (weights stay in the object store)."""
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(_RAY_WAITERS, lambda: ray.wait([ref], num_returns=1, fetch_local=False))


@dataclass
class Roles:
    """Handles of everything the loop drives; created by rl/train.py's _create_* functions."""

    rollout: list[Any]
    learners: list[Any]
    clients: dict[str, EnvClient]
    servers: list[Any] = field(default_factory=list)
    env_urls: dict[str, dict] = field(default_factory=dict)  # what a restarted rollout worker is re-sent


@dataclass
class RolloutBatch:
    step: int
    tasks: list[Task]
    groups: list[ScoredGroup]
    tokens: int
    seconds: float
    submitted_at: float
    verify_errors: int


class Orchestrator:
    def __init__(self, cfg, roles: Roles, run_dir: Path, log=print, faults: FaultPlan | None = None):
        self.cfg, self.roles, self.run_dir, self.log = cfg, roles, Path(run_dir), log
        self.faults = faults or FaultPlan()
        self.metrics = open_metrics(cfg, self.run_dir)  # TensorBoard + metrics.jsonl (+ W&B: dashboard.wandb)
        self.progress = Progress(cfg.run.steps, log=log)  # in place on a terminal, one line per step in CI logs
        self.log = self.progress.wrap(log)  # other messages print above the progress line
        self.step = 0
        self.version = 0
        self.tasks: dict[str, dict[str, Task]] = {}
        self.heldout: dict[str, list[Task]] = {}
        self.sampler: TaskSampler | None = None
        self.inflight: deque[tuple[list[Task], asyncio.Future]] = deque()  # submitted, not yet trained on
        self.resume_queue: deque[RolloutBatch] = deque()  # after --resume: the checkpointed buffer, trained first
        self.counters = {"stale_groups_dropped": 0, "zero_signal_groups": 0, "verify_errors": 0,
                         "samples_generated": 0, "groups_trained": 0, "error_samples_dropped": 0,
                         "rollout_worker_failures": 0, "requeued_prompts": 0, "rollout_recovery_seconds": 0.0}
        self.history: deque[dict] = deque(maxlen=1000)  # recent steps' scalars (metrics.jsonl has them all)
        self.stop_requested = ""  # set (to the reason) by a signal handler: stop cleanly after the current step
        self.watchdog = Watchdog(cfg.run.watchdog_s, cfg.run.watchdog_abort_s, log=lambda m: self.log(m),
                                 on_stall=lambda s: self.metrics.log(self.step, s))
        self._state_ref = None  # the latest exported weights (ObjectRef) and their version: a restarted worker's
        self._state_version = 0
        self._recovering: dict[int, asyncio.Lock] = {}

    # ------------------------------------------------------------------------------------------ setup
    async def load_tasks(self) -> None:
        """Fetch every environment's task list once (prompts only) and split train / held-out."""
        pools = {}
        for name, client in self.roles.clients.items():
            info = await client.info()
            tasks = await client.tasks(count=info.task_count, seed=0)
            unique = {t.task_id: t for t in tasks}
            if len(unique) != info.task_count:
                raise RuntimeError(f"environment {name!r} listed {info.task_count} tasks but sent {len(unique)} distinct")
            self.tasks[name] = unique
            levels = self.cfg.envs[name].difficulties
            train = [t.task_id for t in training_tasks(name, unique.values(), levels, info.difficulties)]
            held = sorted((t for tid, t in unique.items() if is_heldout(name, tid) and t.difficulty == self.cfg.eval.difficulty),
                          key=lambda t: t.task_id)
            self.heldout[name] = held[: self.cfg.eval.tasks_per_env]
            pools[name] = train
            self.log(f"env {name}: {info.task_count} tasks ({len(train)} train, {len(self.heldout[name])} held-out "
                     f"{self.cfg.eval.difficulty} for evaluation), levels {', '.join(info.difficulties)}"
                     + (f"; training on {', '.join(levels)}" if levels is not None else ""))
        self.sampler = build_sampler(self.cfg.curriculum, pools, seed=self.cfg.run.seed, total_steps=self.cfg.run.steps,
                                     run_dir=self.run_dir, log=self.log)

    def draw(self, step: int | None = None) -> list[Task]:
        """The tasks of training step `step` (default the current one): curricula move with the step."""
        step = self.step if step is None else step
        counts = split_prompts(self.cfg.run.prompts_per_step, {n: e.weight for n, e in self.cfg.envs.items()})
        return [self.tasks[env][tid] for env, k in counts.items() for tid in self.sampler.sample(env, k, step=step)]

    # ------------------------------------------------------------------------------------------ rollouts
    def _seed(self, label: str, step: int, worker: int) -> int:
        """The sampler seed of one generate call: a function of (run seed, purpose, step, worker) only, so a
        resumed run, or a call re-queued after a worker died, samples what the uninterrupted run sampled."""
        key = f"{self.cfg.run.seed}/{label}/{step}/{worker}".encode()
        return int.from_bytes(hashlib.sha256(key).digest()[:7], "little")

    async def generate(self, tasks: list[Task], n: int, step: int | None = None,
                       label: str = "train") -> tuple[list[list], int, float]:
        """Split tasks over the rollout workers; returns groups of Samples in task order."""
        step = self.step if step is None else step
        workers = self.roles.rollout
        shards = [tasks[i :: len(workers)] for i in range(len(workers))]
        results = await asyncio.gather(*(self._generate_on(wi, shard, n, step, label)
                                         for wi, shard in enumerate(shards) if shard))
        self.watchdog.progress(f"{label} samples of step {step}")
        # speculative-decoding counters and thinking-budget cuts, summed until record() logs them (issue 8)
        extra = self.__dict__.setdefault("rollout_extra", {})
        for r in results:
            for k, v in list((r.get("spec") or {}).items()) + [("thinking_truncated", r.get("thinking_truncated", 0))]:
                if k != "acceptance_rate":
                    extra[k] = extra.get(k, 0) + v
        by_task: dict[int, list] = {}
        for wi, res in enumerate(results):
            for j, group in enumerate(res["groups"]):
                by_task[wi + j * len(workers)] = group
        groups = [by_task[i] for i in range(len(tasks))]
        return groups, sum(r["tokens"] for r in results), max(r["seconds"] for r in results)

    async def _generate_on(self, wi: int, shard: list[Task], n: int, step: int, label: str) -> dict:
        """One worker's share. A worker that dies mid-call (or comes back from a restart without the current
        weights) is recovered and the same prompts are generated again with the same seed: nothing is lost."""
        attempts = self.cfg.rollout.max_restarts + 1
        for attempt in range(1, attempts + 1):
            worker = self.roles.rollout[wi]
            # the weights queued on this worker before this call: its answer must carry at least that version
            submitted_version = self._state_version
            temperature = self.cfg.eval.temperature if label == "eval" else None  # None: rollout.temperature
            ref = worker.generate.remote(shard, n, self._seed(label, step, wi), temperature)
            self.faults.after_generate_submitted(step, label, worker)
            try:
                with self.watchdog.op(f"rollout worker {wi}: generate {len(shard)} prompts x {n} ({label}, step {step})"):
                    res = await wait(ref)
            except _ACTOR_DIED as e:
                reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            else:
                if res["version"] >= submitted_version:
                    return res
                # a restarted actor answers with the checkpoint it was created from (version 0)
                reason = f"answered with policy version {res['version']}, expected >= {submitted_version} (restarted)"
            self.counters["rollout_worker_failures"] += 1
            self.counters["requeued_prompts"] += len(shard)
            if attempt == attempts:
                raise RuntimeError(f"rollout worker {wi} failed {attempts} time(s) generating step {step} "
                                   f"(rollout.max_restarts={self.cfg.rollout.max_restarts}); last: {reason}")
            self.log(f"rollout worker {wi} lost during {label} generation of step {step} ({reason}); "
                     f"re-queueing its {len(shard)} prompts after recovery")
            await self._recover_worker(wi)
        raise AssertionError("unreachable")

    async def _recover_worker(self, wi: int) -> None:
        """Wait for Ray to restart the actor, then re-send what its constructor does not know: the environment
        URLs and the current weights. Serialised per worker (several calls may notice the same death)."""
        lock = self._recovering.setdefault(wi, asyncio.Lock())
        async with lock:
            worker = self.roles.rollout[wi]
            t0 = time.time()
            with self.watchdog.op(f"rollout worker {wi}: restart"):
                deadline = time.time() + 900
                while True:
                    try:
                        await wait(worker.ready.remote())
                        break
                    except ray.exceptions.ActorUnavailableError:
                        if time.time() > deadline:
                            raise
                        await asyncio.sleep(1.0)
                    except ray.exceptions.RayActorError as e:
                        raise RuntimeError(f"rollout worker {wi} is dead and Ray will not restart it "
                                           f"(rollout.max_restarts={self.cfg.rollout.max_restarts} used up?): {e}") from e
                if self.roles.env_urls:
                    await wait(worker.set_environments.remote(self.roles.env_urls))
                version = (await wait(worker.stats.remote()))["version"]
                if self._state_ref is not None and version < self._state_version:
                    await wait(worker.update_weights.remote(self._state_ref, self._state_version))
            self.counters["rollout_recovery_seconds"] += time.time() - t0
            self.log(f"rollout worker {wi} recovered in {time.time() - t0:.1f}s with policy version {self._state_version}")

    async def verify(self, tasks: list[Task], groups: list[list]) -> tuple[list[ScoredGroup], int]:
        by_env: dict[str, list[int]] = {}
        for i, t in enumerate(tasks):
            by_env.setdefault(t.env, []).append(i)

        async def one_env(env: str, idx: list[int]):
            samples = [s for i in idx for s in groups[i]]
            # an episode the environment failed mid-way (finish_reason "error") is not sent: its verdict is an error
            items = [VerifyItem(task_id=s.task_id, response=s.response_text, session_id=s.session_id)
                     for s in samples if s.finish_reason != "error"]
            with self.watchdog.op(f"environment {env}: verify {len(items)} responses"):
                got = iter(await self.roles.clients[env].verify(items) if items else [])
            broken = Verdict.error(f"environment {env}: the episode's /step failed (server unreachable or the "
                                   "session lost), so it could not be verified")
            return env, idx, [broken if s.finish_reason == "error" else next(got) for s in samples]

        scored: dict[int, ScoredGroup] = {}
        errors = 0
        for env, idx, verdicts in await asyncio.gather(*(one_env(e, i) for e, i in by_env.items())):
            it = iter(verdicts)
            for i in idx:
                vs = tuple(next(it) for _ in groups[i])
                errors += sum(v.status == "error" for v in vs)
                scored[i] = ScoredGroup(task=tasks[i], samples=tuple(groups[i]), verdicts=vs)
        return [scored[i] for i in range(len(tasks))], errors

    async def rollout_batch(self, step: int, tasks: list[Task]) -> RolloutBatch:
        t0 = time.time()
        groups, tokens, seconds = await self.generate(tasks, self.cfg.run.samples_per_prompt, step=step)
        self.faults.verifying(step)
        scored, errors = await self.verify(tasks, groups)
        return RolloutBatch(step, tasks, scored, tokens, seconds, t0, errors)

    # ------------------------------------------------------------------------------------------ learner
    def build_shards(self, groups: list[ScoredGroup]) -> tuple[list[dict], int]:
        """The step's samples cut into one shard per learner rank, groups kept whole (prompt sharing).

        The groups arrive in environment order (all of math, then all of JSON); they are shuffled, seeded by
        run seed and step, so that each rank's shard and each of `learner.mini_batches` optimizer steps sees
        a mix of environments and lengths. Cut in arrival order, mini-batch 1 was math only and mini-batch 2
        JSON only: two optimizer steps that pull the shared weights towards one task each."""
        groups = list(groups)
        random.Random(f"{self.cfg.run.seed}/shards/{self.step}").shuffle(groups)
        samples, advantages = [], []
        for g in groups:
            adv = grpo_advantages(torch.tensor(g.rewards), normalize_std=self.cfg.loss.normalize_std,
                                  eps=self.cfg.loss.eps)  # [G]
            samples.extend(g.samples)
            advantages.extend(adv.tolist())
        world = len(self.roles.learners)
        per = -(-len(samples) // world)
        mbs = self.cfg.learner.micro_batch_size
        num_micro = max(1, -(-per // mbs))
        shards = []
        for r in range(world):
            part = samples[r * per : (r + 1) * per]
            adv = advantages[r * per : (r + 1) * per]
            batch = collate(part, adv) if part else _empty_batch()
            batch["num_micro"] = num_micro
            shards.append(batch)
        return shards, len(samples)

    async def train(self, groups: list[ScoredGroup]) -> dict:
        shards, n = self.build_shards(groups)
        refs = [lr.train_step.remote(shard, self.version + 1) for lr, shard in zip(self.roles.learners, shards)]
        await self.faults.in_train(self.step + 1)
        with self.watchdog.op(f"learners: train_step {self.step + 1} ({n} samples)"):
            results = await wait(refs)
        total = sum(r.get("valid_tokens", 0.0) for r in results) or 1.0
        merged = {}
        for k in results[0]:
            # pg_loss: each rank's share of sum(token losses) / valid tokens of the whole batch, so the ranks add up
            if k in ("valid_tokens", "overlong_dropped_sequences", "sequences", "tokens", "pg_loss"):
                merged[k] = sum(r.get(k, 0.0) for r in results)
            elif k in ("seconds", "grad_norm", "total_valid_tokens", "is_weight_max", "rss_mb_after_step"):
                merged[k] = max(r.get(k, 0.0) for r in results)
            else:
                merged[k] = sum(r.get(k, 0.0) * r.get("valid_tokens", 0.0) for r in results) / total
        self.version += 1
        return merged

    async def sync_weights(self) -> tuple[Any, float]:
        """Rank 0's weights into the object store, then to every rollout worker (queued behind their work)."""
        t0 = time.time()
        state_ref = self.roles.learners[0].state_dict.remote()
        with self.watchdog.op(f"learner 0: export weights version {self.version}"):
            await wait_ready(state_ref)
        export_s = time.time() - t0
        self._state_ref, self._state_version = state_ref, self.version
        futures = [w.update_weights.remote(state_ref, self.version) for w in self.roles.rollout]
        return futures, export_s

    async def wait_loaded(self, futures: list) -> list[float]:
        """Seconds each worker spent loading; a worker that died meanwhile is recovered (current weights)."""
        out = []
        for wi, f in enumerate(futures):
            try:
                with self.watchdog.op(f"rollout worker {wi}: load weights"):
                    out.append(await wait(f))
            except _ACTOR_DIED:
                self.counters["rollout_worker_failures"] += 1
                await self._recover_worker(wi)
                out.append(0.0)
        return out

    # ------------------------------------------------------------------------------------------ the loop
    async def run(self, start_step: int = 0, stop_after: int | None = None) -> dict:
        """Train from start_step to run.steps. `stop_after` ends the loop abruptly after that step, without the
        final evaluation and checkpoint, as a kill would (fault-injection tests of resume)."""
        dog = asyncio.ensure_future(self.watchdog.run())
        main = asyncio.ensure_future(self._loop(start_step, stop_after))
        try:
            done, _ = await asyncio.wait({main, dog}, return_when=asyncio.FIRST_COMPLETED)
            if dog in done:  # the watchdog only ends by raising StallError (run.watchdog_abort_s)
                main.cancel()
                dog.result()
            return main.result()
        finally:
            dog.cancel()
            for _, fut in self.inflight:
                fut.cancel()

    async def _loop(self, start_step: int, stop_after: int | None) -> dict:
        cfg = self.cfg
        self.step = start_step
        inflight = self.inflight

        def submit(s: int) -> None:
            if self.resume_queue:  # the checkpointed buffer: generated before the kill, trained now
                batch = self.resume_queue.popleft()
                fut = asyncio.get_running_loop().create_future()
                fut.set_result(batch)
                inflight.append((batch.tasks, fut))
                return
            tasks = self.draw(s)
            inflight.append((tasks, asyncio.ensure_future(self.rollout_batch(s, tasks))))

        # a resumed run evaluates where the uninterrupted one did (the checkpoint is written before that eval)
        if start_step == 0 or (cfg.eval.every and start_step % cfg.eval.every == 0):
            await self.evaluate(self.step)
        submitted = self.step
        sync_futures: list = []
        t_run = time.time()
        self.watchdog.progress("loop start")
        while self.step < cfg.run.steps:
            while submitted <= min(self.step + cfg.run.max_staleness, cfg.run.steps - 1):
                submit(submitted)
                submitted += 1
            t_wait = time.time()
            tasks, fut = inflight.popleft()
            batch = await fut
            learner_wait = time.time() - t_wait  # learner idle while waiting for rollouts
            groups = self.accept(batch)
            t_train = time.time()
            stats = await self.train(groups) if groups else {"skipped": 1.0}
            train_s = time.time() - t_train
            # the previous step's weight loads finished long ago (they queue behind one generate call)
            loaded = await self.wait_loaded(sync_futures) if sync_futures else [0.0]
            sync_futures, export_s = await self.sync_weights()
            self.step += 1
            self.watchdog.progress(f"step {self.step}")
            self.record(batch, groups, stats, learner_wait, train_s, export_s, max(loaded), time.time() - t_run)
            self.metrics.log(self.step, *self.sampler.metrics(batch.step))  # curriculum/<env>/...: target vs drawn
            if cfg.run.checkpoint_every and self.step % cfg.run.checkpoint_every == 0 and self.step < cfg.run.steps:
                await self.checkpoint()
            if cfg.eval.every and self.step % cfg.eval.every == 0 and self.step < cfg.run.steps:
                await self.evaluate(self.step)
            if stop_after is not None and self.step >= stop_after:
                for _, f in inflight:
                    f.cancel()
                return {"steps": self.step, "killed": True, **self.counters}
            if self.stop_requested and self.step < cfg.run.steps:
                # a clean stop (SIGINT/SIGTERM): checkpoint here unless this step just wrote one, then leave
                if not (cfg.run.checkpoint_every and self.step % cfg.run.checkpoint_every == 0):
                    await self.checkpoint()
                self.log(f"stopped after step {self.step} ({self.stop_requested}); continue with --resume")
                return {"steps": self.step, "stopped": self.stop_requested, **self.counters}
        if sync_futures:
            await self.wait_loaded(sync_futures)
        final = await self.evaluate(self.step)
        await self.checkpoint()
        return {"steps": self.step, "final_eval": final, **self.counters}

    def accept(self, batch: RolloutBatch) -> list[ScoredGroup]:
        """Staleness bound and zero-signal accounting; returns the groups to train on."""
        keep = []
        for g in batch.groups:
            if self.sampler is not None:  # every verified group, stale ones too, informs the pass-rate estimates
                self.sampler.update(g.task.env, g.task.task_id, [v.reward for v in g.verdicts if v.status != "error"])
            errors = [i for i, v in enumerate(g.verdicts) if v.status == "error"]
            if errors:
                # an error verdict's reward is not the response's quality: its sample leaves the group (counted)
                self.counters["error_samples_dropped"] += len(errors)
                ok = [i for i in range(len(g.verdicts)) if i not in set(errors)]
                if len(ok) < 2:
                    continue
                g = ScoredGroup(task=g.task, samples=tuple(g.samples[i] for i in ok),
                                verdicts=tuple(g.verdicts[i] for i in ok))
            if self.version - g.min_policy_version > self.cfg.run.max_staleness:
                self.counters["stale_groups_dropped"] += 1
                continue
            if g.zero_signal:
                self.counters["zero_signal_groups"] += 1
                if self.cfg.loss.drop_zero_signal:
                    continue
            keep.append(g)
        self.counters["verify_errors"] += batch.verify_errors
        self.counters["samples_generated"] += sum(len(g.samples) for g in batch.groups)
        self.counters["groups_trained"] += len(keep)
        return keep

    def record(self, batch: RolloutBatch, groups: list[ScoredGroup], stats: dict, learner_wait: float,
               train_s: float, export_s: float, sync_s: float, elapsed: float) -> None:
        scalars: dict[str, float] = {}
        for env in self.cfg.envs:
            env_groups = [g for g in batch.groups if g.task.env == env]
            rewards = [r for g in env_groups for r in g.rewards]
            samples = [s for g in env_groups for s in g.samples]
            if not samples:
                continue
            scalars[f"env/{env}/reward"] = sum(rewards) / len(rewards)
            scalars[f"env/{env}/pass_rate"] = pass_rate(rewards)
            scalars[f"env/{env}/length"] = sum(len(s.response_ids) for s in samples) / len(samples)
            scalars[f"env/{env}/truncation_rate"] = sum(s.finish_reason == "length" for s in samples) / len(samples)
            scalars[f"env/{env}/zero_signal_fraction"] = sum(g.zero_signal for g in env_groups) / len(env_groups)
            scalars[f"env/{env}/verify_errors"] = sum(v.status == "error" for g in env_groups for v in g.verdicts)
        staleness = [self.version - 1 - s.policy_version for g in groups for s in g.samples]
        step_time = max(1e-9, time.time() - batch.submitted_at)
        scalars.update({f"learner/{k}": v for k, v in stats.items()})
        scalars.update({
            "rollout/tokens_per_s": batch.tokens / max(batch.seconds, 1e-9),
            "rollout/samples": sum(len(g.samples) for g in batch.groups),
            "rollout/seconds": batch.seconds,
            "learner/tokens_per_s": stats.get("tokens", 0.0) / max(train_s, 1e-9),
            "learner/wait_seconds": learner_wait,
            "learner/train_seconds": train_s,
            "sync/export_seconds": export_s,
            "sync/load_seconds": sync_s,
            "buffer/staleness_mean": sum(staleness) / len(staleness) if staleness else 0.0,
            "buffer/stale_groups_dropped": self.counters["stale_groups_dropped"],
            "buffer/zero_signal_groups": self.counters["zero_signal_groups"],
            "learner/elapsed_seconds": elapsed,
            "rollout/samples_per_s": self.counters["samples_generated"] / max(elapsed, 1e-9),
            "learner/policy_version": self.version,
        })
        scalars["rollout/batch_latency_seconds"] = step_time
        extra, self.rollout_extra = getattr(self, "rollout_extra", {}), {}
        if extra.get("draft_tokens"):
            scalars["rollout/spec_acceptance_rate"] = extra["accepted_tokens"] / extra["draft_tokens"]
        if extra.get("thinking_truncated"):
            scalars["rollout/thinking_truncated"] = extra["thinking_truncated"]
        self.metrics.log(self.step, scalars, {"buffer/staleness": staleness})
        batches = self.run_dir / "batches.jsonl"
        if not getattr(self, "_batches_checked", False):  # once per process: a kill may have cut the last line
            drop_partial_last_line(batches)
            self._batches_checked = True
        with open(batches, "a") as f:  # the data position, step by step (resume audits)
            f.write(json.dumps({"step": self.step, "tasks": [t.key for t in batch.tasks]}) + "\n")
        self.history.append(scalars)
        self.progress.update(self.step, scalars, elapsed, envs=list(self.cfg.envs))

    # ------------------------------------------------------------------------------------------ eval
    async def evaluate(self, step: int) -> dict[str, float]:
        if not self.cfg.eval.tasks_per_env:
            return {}
        tasks = [t for env in self.cfg.envs for t in self.heldout.get(env, [])]
        if not tasks:
            return {}
        groups, _, _ = await self.generate(tasks, self.cfg.eval.samples, step=step, label="eval")
        scored, _ = await self.verify(tasks, groups)
        out = {}
        for env in self.cfg.envs:
            rewards = [r for g in scored if g.task.env == env for r in g.rewards]
            if rewards:
                out[f"eval/{env}/{self.cfg.eval.difficulty}/pass_rate"] = pass_rate(rewards)
                out[f"eval/{env}/{self.cfg.eval.difficulty}/reward"] = sum(rewards) / len(rewards)
        self.metrics.log(step, out)
        self.log(f"eval @ step {step}: " + "  ".join(f"{k.split('/')[1]} {v:.3f}" for k, v in out.items() if k.endswith("pass_rate")))
        return out

    # ------------------------------------------------------------------------------------------ checkpoints
    async def checkpoint(self) -> Path:
        """policy/ (HF), learner/ (DeepSpeed: weights + optimizer), orchestrator.json (step, version, sampler
        position, tasks drawn but not yet trained). Written to a temporary directory, then renamed; `latest`
        is replaced atomically, so a kill mid-write leaves the previous checkpoint usable."""
        root = self.run_dir / "checkpoints"
        final = root / f"step_{self.step:06d}"
        tmp = root / f".tmp_step_{self.step:06d}_{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        # The buffer: batches submitted before this step's weights were synced. They were generated by older
        # policy versions, so resuming must train on these very samples, not regenerate them. Their generate
        # calls were queued before the weight update, so waiting here costs what the next step would wait anyway.
        with self.watchdog.op(f"checkpoint {self.step}: the buffer's {len(self.inflight)} in-flight batch(es)"):
            buffer = [await fut for _, fut in self.inflight]
        with self.watchdog.op(f"checkpoint {self.step}: learner state"):
            await wait([lr.save_state.remote(str(tmp / "learner"), "state") for lr in self.roles.learners])
            await wait(self.roles.learners[0].save_hf.remote(str(tmp / "policy")))
        state = {
            "step": self.step, "version": self.version, "sampler": self.sampler.state_dict(),
            "counters": self.counters,
            "rng": {"python": _jsonable(random.getstate()), "torch": torch.get_rng_state().tolist()},
        }
        with open(tmp / "buffer.jsonl", "w") as f:
            for b in buffer:
                f.write(json.dumps({"step": b.step, "tokens": b.tokens, "seconds": b.seconds,
                                    "verify_errors": b.verify_errors, "tasks": [t.key for t in b.tasks],
                                    "groups": [json.loads(g.to_json()) for g in b.groups]}) + "\n")
            f.flush()
            os.fsync(f.fileno())
        (tmp / "orchestrator.json").write_text(json.dumps(state, indent=1))
        self.faults.in_checkpoint(self.step)
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        pointer = root / "latest.tmp"
        pointer.write_text(final.name)
        os.replace(pointer, root / "latest")
        keep = self.cfg.run.keep_checkpoints
        if keep:  # 137 MB each for the tiny policy: a day of checkpoints would fill a disk
            for old in sorted(root.glob("step_*"))[:-keep]:
                shutil.rmtree(old, ignore_errors=True)
        self.log(f"checkpoint: {final}")
        return final

    async def restore(self) -> int:
        root = self.run_dir / "checkpoints"
        if not (root / "latest").is_file():
            raise FileNotFoundError(f"--resume: no checkpoint in {root} (runs checkpoint every run.checkpoint_every steps)")
        ckpt = root / (root / "latest").read_text().strip()
        for stale in root.glob(".tmp_step_*"):  # writes a kill interrupted: never published, never valid
            shutil.rmtree(stale, ignore_errors=True)
            self.log(f"resume: removed the unfinished checkpoint write {stale.name}")
        state = json.loads((ckpt / "orchestrator.json").read_text())
        await wait([lr.load_state.remote(str(ckpt / "learner"), "state") for lr in self.roles.learners])
        self.step, self.version = state["step"], state["version"]
        self.sampler.load_state_dict(state["sampler"])
        self.resume_queue = deque()
        for line in (ckpt / "buffer.jsonl").read_text().splitlines():
            b = json.loads(line)
            groups = [ScoredGroup.from_json(json.dumps(g)) for g in b["groups"]]
            self.resume_queue.append(RolloutBatch(b["step"], [g.task for g in groups], groups, b["tokens"],
                                                  b["seconds"], time.time(), b["verify_errors"]))
        self.counters.update(state["counters"])
        random.setstate(_from_jsonable(state["rng"]["python"]))
        torch.set_rng_state(torch.tensor(state["rng"]["torch"], dtype=torch.uint8))
        futures, _ = await self.sync_weights()
        await wait(futures)
        self.log(f"resumed from {ckpt}: step {self.step}, policy version {self.version}, "
                 f"{len(self.resume_queue)} buffered batch(es) of samples to train on first")
        return self.step


def _jsonable(x):
    return [_jsonable(v) for v in x] if isinstance(x, tuple) else x


def _from_jsonable(x):
    return tuple(_from_jsonable(v) for v in x) if isinstance(x, list) else x


def _empty_batch() -> dict:
    z = torch.zeros(0, 2)
    return {"input_ids": z.long(), "attention": z.long(), "targets": z[:, 1:].long(), "mask": z[:, 1:],
            "logp_rollout": z[:, 1:], "advantages": torch.zeros(0), "finished_by_length": torch.zeros(0, dtype=torch.bool)}
