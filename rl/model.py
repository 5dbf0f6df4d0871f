"""Which policy to train: the embedded tiny policy or any Hugging Face causal LM directory."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Literal

from pydantic import Field

from rl.section import Section

# `python -m rl.tiny_policy --build` writes the randomly initialised tiny policy to TINY_POLICY_INIT_DIR;
# `python -m rl.warm_start` fine-tunes it into TINY_POLICY_DIR, which `model.path: tiny` means (make demo does both).
REPO_ROOT = Path(__file__).resolve().parent.parent
_CACHE = Path(os.environ.get("POLYRL_CACHE_DIR", REPO_ROOT / ".cache"))
TINY_POLICY_INIT_DIR = _CACHE / "tiny-policy-init"
TINY_POLICY_DIR = _CACHE / "tiny-policy"


class ModelConfig(Section):
    path: str = "tiny"
    """'tiny' for the project's own warm-started tiny MoE policy (built offline, see README), or a local HF
    model directory.
    Nothing is downloaded at run time: a hub id that is not a local directory is an error."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Weights dtype for rollouts and learners. float32 on CPU keeps vLLM and transformers logprobs closest."""
    max_model_len: int = Field(512, ge=16)
    """Longest prompt + response, in tokens (the tiny policy's context is 512 tokens)."""


    def resolved_path(self) -> Path:
        return TINY_POLICY_DIR if self.path == "tiny" else Path(self.path).expanduser()


def save_policy(model, tokenizer, out: Path, extra_files: dict[str, str]) -> Path:
    """Write an HF model directory atomically: a temporary sibling directory, then a rename, so a kill mid-write
    never leaves a half-written policy where `out` was. `extra_files` are small text files (build markers)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        for name, text in extra_files.items():
            (tmp / name).write_text(text)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out
