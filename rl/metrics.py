"""Metrics: TensorBoard event files (the live dashboard) plus metrics.jsonl (tests, reports, resume checks).

One namespace (issue 9): env/<name>/..., eval/<name>/..., rollout/..., learner/..., sync/..., buffer/...
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


class MetricsLogger:
    def __init__(self, run_dir: Path, enabled_tensorboard: bool = True):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        path = self.run_dir / "metrics.jsonl"
        drop_partial_last_line(path)
        self.jsonl = open(path, "a", buffering=1)
        self.writer = None
        if enabled_tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"))

    def log(self, step: int, scalars: dict[str, float], histograms: dict[str, list[float]] | None = None) -> None:
        clean = {k: float(v) for k, v in scalars.items() if v is not None and math.isfinite(float(v))}
        self.jsonl.write(json.dumps({"step": step, **clean}) + "\n")
        if self.writer is not None:
            for k, v in clean.items():
                self.writer.add_scalar(k, v, step)
            for k, values in (histograms or {}).items():
                if values:
                    import numpy as np

                    self.writer.add_histogram(k, np.asarray(values, dtype=np.float64), step)
            self.writer.flush()

    def close(self) -> None:
        self.jsonl.close()
        if self.writer is not None:
            self.writer.close()


def drop_partial_last_line(path: Path) -> int:
    """A process killed mid-write can leave a JSONL file ending in half a line; a resumed run appending to it
    would bury that fragment mid-file, where every reader fails. Cut it (returns the bytes dropped)."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return 0
    with open(path, "rb+") as f:
        data = f.read()
        if data.endswith(b"\n"):
            return 0
        keep = data.rfind(b"\n") + 1
        f.truncate(keep)
        return len(data) - keep


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
