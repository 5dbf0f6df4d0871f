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
import json
import os
import shutil
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
import torch

from curricula.base import TaskSampler, build_sampler, split_prompts
from curricula.split import is_heldout
from environments.client import EnvClient
from rl.evaluate import pass_rate
from rl.learner import collate
from rl.loss import grpo_advantages
from rl.dashboard import open_metrics
from rl.progress import Progress
from rl.types import ScoredGroup, Task, VerifyItem


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
    def __init__(self, cfg, roles: Roles, run_dir: Path, log=print):
        self.cfg, self.roles, self.run_dir, self.log = cfg, roles, Path(run_dir), log
        self.metrics = open_metrics(cfg, self.run_dir)  # TensorBoard + metrics.jsonl (+ W&B: dashboard.wandb)
        self.progress = Progress(cfg.run.steps, log=log)  # in place on a terminal, one line per step in CI logs
        self.log = self.progress.wrap(log)  # other messages print above the progress line
        self.step = 0
        self.version = 0
        self.tasks: dict[str, dict[str, Task]] = {}
        self.heldout: dict[str, list[Task]] = {}
        self.sampler: TaskSampler | None = None
        self.pending_tasks: deque[list[Task]] = deque()  # drawn but not yet trained on (checkpointed)
        self.resume_queue: deque[list[Task]] = deque()  # after --resume: those batches, regenerated first
        self.counters = {"stale_groups_dropped": 0, "zero_signal_groups": 0, "verify_errors": 0,
                         "samples_generated": 0, "groups_trained": 0}
        self.history: list[dict] = []

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
            train = sorted(tid for tid in unique if not is_heldout(name, tid))
            held = sorted((t for tid, t in unique.items() if is_heldout(name, tid) and t.difficulty == self.cfg.eval.difficulty),
                          key=lambda t: t.task_id)
            self.heldout[name] = held[: self.cfg.eval.tasks_per_env]
            pools[name] = train
            self.log(f"env {name}: {info.task_count} tasks ({len(train)} train, {len(self.heldout[name])} held-out "
                     f"{self.cfg.eval.difficulty} for evaluation), levels {', '.join(info.difficulties)}")
        self.sampler = build_sampler(self.cfg.curriculum, pools, seed=self.cfg.run.seed, total_steps=self.cfg.run.steps,
                                     run_dir=self.run_dir, log=self.log)

    def draw(self, step: int | None = None) -> list[Task]:
        """The tasks of training step `step` (default the current one): curricula move with the step."""
        step = self.step if step is None else step
        counts = split_prompts(self.cfg.run.prompts_per_step, {n: e.weight for n, e in self.cfg.envs.items()})
        return [self.tasks[env][tid] for env, k in counts.items() for tid in self.sampler.sample(env, k, step=step)]

    # ------------------------------------------------------------------------------------------ rollouts
    async def generate(self, tasks: list[Task], n: int) -> tuple[list[list], int, float]:
        """Split tasks over the rollout workers; returns groups of Samples in task order."""
        workers = self.roles.rollout
        shards = [tasks[i :: len(workers)] for i in range(len(workers))]
        refs = [w.generate.remote(shard, n) for w, shard in zip(workers, shards) if shard]
        results = await wait(refs)
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

    async def verify(self, tasks: list[Task], groups: list[list]) -> tuple[list[ScoredGroup], int]:
        by_env: dict[str, list[int]] = {}
        for i, t in enumerate(tasks):
            by_env.setdefault(t.env, []).append(i)

        async def one_env(env: str, idx: list[int]):
            items = [VerifyItem(task_id=tasks[i].task_id, response=s.response_text, session_id=s.session_id)
                     for i in idx for s in groups[i]]
            return env, idx, await self.roles.clients[env].verify(items)

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
        groups, tokens, seconds = await self.generate(tasks, self.cfg.run.samples_per_prompt)
        scored, errors = await self.verify(tasks, groups)
        return RolloutBatch(step, tasks, scored, tokens, seconds, t0, errors)

    # ------------------------------------------------------------------------------------------ learner
    def build_shards(self, groups: list[ScoredGroup]) -> tuple[list[dict], int]:
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
        results = await wait([lr.train_step.remote(shard, self.version + 1)
                              for lr, shard in zip(self.roles.learners, shards)])
        total = sum(r.get("valid_tokens", 0.0) for r in results) or 1.0
        merged = {}
        for k in results[0]:
            if k in ("valid_tokens", "overlong_dropped_sequences", "sequences", "tokens"):
                merged[k] = sum(r.get(k, 0.0) for r in results)
            elif k in ("seconds", "grad_norm", "total_valid_tokens"):
                merged[k] = max(r.get(k, 0.0) for r in results)
            else:
                merged[k] = sum(r.get(k, 0.0) * r.get("valid_tokens", 0.0) for r in results) / total
        self.version += 1
        return merged

    async def sync_weights(self) -> tuple[Any, float]:
        """Rank 0's weights into the object store, then to every rollout worker (queued behind their work)."""
        t0 = time.time()
        state_ref = self.roles.learners[0].state_dict.remote()
        await wait_ready(state_ref)
        export_s = time.time() - t0
        futures = [w.update_weights.remote(state_ref, self.version) for w in self.roles.rollout]
        return futures, export_s

    # ------------------------------------------------------------------------------------------ the loop
    async def run(self, start_step: int = 0, stop_after: int | None = None) -> dict:
        """Train from start_step to run.steps. `stop_after` ends the loop abruptly after that step, without the
        final evaluation and checkpoint, as a kill would (fault-injection tests of resume)."""
        cfg = self.cfg
        self.step = start_step
        inflight: deque[tuple[list[Task], asyncio.Task]] = deque()

        def submit(s: int) -> None:
            tasks = self.resume_queue.popleft() if self.resume_queue else self.draw(s)
            inflight.append((tasks, asyncio.ensure_future(self.rollout_batch(s, tasks))))

        await self.evaluate(self.step)
        submitted = self.step
        sync_futures: list = []
        t_run = time.time()
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
            loaded = await wait(sync_futures) if sync_futures else [0.0]
            sync_futures, export_s = await self.sync_weights()
            self.step += 1
            self.record(batch, groups, stats, learner_wait, train_s, export_s, max(loaded), time.time() - t_run)
            self.metrics.log(self.step, *self.sampler.metrics(batch.step))  # curriculum/<env>/...: target vs drawn
            # the tasks still in flight are the "buffer" a checkpoint must keep
            self.pending_tasks = deque(t for t, _ in inflight)
            if cfg.run.checkpoint_every and self.step % cfg.run.checkpoint_every == 0 and self.step < cfg.run.steps:
                await self.checkpoint()
            if cfg.eval.every and self.step % cfg.eval.every == 0 and self.step < cfg.run.steps:
                await self.evaluate(self.step)
            if stop_after is not None and self.step >= stop_after:
                for _, fut in inflight:
                    fut.cancel()
                return {"steps": self.step, "killed": True, **self.counters}
        if sync_futures:
            await wait(sync_futures)
        self.pending_tasks.clear()
        final = await self.evaluate(self.step)
        await self.checkpoint()
        return {"steps": self.step, "final_eval": final, **self.counters}

    def accept(self, batch: RolloutBatch) -> list[ScoredGroup]:
        """Staleness bound and zero-signal accounting; returns the groups to train on."""
        keep = []
        for g in batch.groups:
            if self.sampler is not None:  # every verified group, stale ones too, informs the pass-rate estimates
                self.sampler.update(g.task.env, g.task.task_id, [v.reward for v in g.verdicts if v.status != "error"])
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
        with open(self.run_dir / "batches.jsonl", "a") as f:  # the data position, step by step (resume audits)
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
        groups, _, _ = await self.generate(tasks, self.cfg.eval.samples)
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
        await wait([lr.save_state.remote(str(tmp / "learner"), "state") for lr in self.roles.learners])
        await wait(self.roles.learners[0].save_hf.remote(str(tmp / "policy")))
        state = {
            "step": self.step, "version": self.version, "sampler": self.sampler.state_dict(),
            "pending_tasks": [[[t.env, t.task_id] for t in batch] for batch in self.pending_tasks],
            "counters": self.counters,
        }
        (tmp / "orchestrator.json").write_text(json.dumps(state, indent=1))
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        pointer = root / "latest.tmp"
        pointer.write_text(final.name)
        os.replace(pointer, root / "latest")
        self.log(f"checkpoint: {final}")
        return final

    async def restore(self) -> int:
        root = self.run_dir / "checkpoints"
        if not (root / "latest").is_file():
            raise FileNotFoundError(f"--resume: no checkpoint in {root} (runs checkpoint every run.checkpoint_every steps)")
        ckpt = root / (root / "latest").read_text().strip()
        state = json.loads((ckpt / "orchestrator.json").read_text())
        await wait([lr.load_state.remote(str(ckpt / "learner"), "state") for lr in self.roles.learners])
        self.step, self.version = state["step"], state["version"]
        self.sampler.load_state_dict(state["sampler"])
        self.resume_queue = deque([[self.tasks[e][tid] for e, tid in batch] for batch in state["pending_tasks"]])
        self.counters.update(state["counters"])
        futures, _ = await self.sync_weights()
        await wait(futures)
        self.log(f"resumed from {ckpt}: step {self.step}, policy version {self.version}, "
                 f"{len(self.resume_queue)} drawn batches to regenerate")
        return self.step


def _empty_batch() -> dict:
    z = torch.zeros(0, 2)
    return {"input_ids": z.long(), "attention": z.long(), "targets": z[:, 1:].long(), "mask": z[:, 1:],
            "logp_rollout": z[:, 1:], "advantages": torch.zeros(0), "finished_by_length": torch.zeros(0, dtype=torch.bool)}
