"""Console progress during training (issue 9): one line per step with step, samples/s, reward per environment, ETA.

On a terminal the line is redrawn in place (carriage return, clear to end of line) and other log messages print
above it; elsewhere (CI logs, a file, `ray job logs`) every step is one plain line, because a carriage return in a
log file turns a run into one unreadable line.

    progress = Progress(total_steps=30, log=print)
    log = progress.wrap(print)          # other messages (eval, checkpoints) go through this
    progress.update(1, scalars, elapsed=4.2)
"""

from __future__ import annotations

import shutil
import sys
from typing import Callable, TextIO

CLEAR_LINE = "\r\x1b[K"  # back to column 0, erase to the end of the line (ANSI, every terminal emulator)


def format_duration(seconds: float) -> str:
    """Compact h/m/s for an ETA.

    >>> format_duration(42.4), format_duration(252), format_duration(7384)
    ('42s', '4m12s', '2h03m')
    """
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def eta_seconds(step: int, total: int, elapsed: float, first_step: int) -> float | None:
    """Remaining time at the mean pace since the loop (re)started; None before any step finished.

    >>> eta_seconds(10, 30, 50.0, first_step=0)
    100.0
    >>> eta_seconds(12, 30, 10.0, first_step=10)   # resumed at step 10: pace from the 2 steps done here
    90.0
    """
    done = step - first_step
    if done <= 0:
        return None
    return elapsed / done * max(0, total - step)


def progress_line(step: int, total: int, scalars: dict[str, float], envs: list[str], eta: float | None) -> str:
    """The text of one progress line, from the step's metrics (names from rl/orchestrator.py record()).

    >>> progress_line(3, 30, {"env/math/reward": 0.25, "rollout/samples_per_s": 3.21, "learner/pg_loss": -0.001},
    ...               ["math"], 81.0)
    'step    3/30  10%  reward math 0.250  loss -0.0010  3.2 samples/s  ETA 1m21s'
    """
    width = len(str(total))
    parts = [f"step {step:{max(4, width)}d}/{total}", f"{100 * step / max(total, 1):.0f}%"]
    rewards = [f"{e} {scalars[f'env/{e}/reward']:.3f}" for e in envs if f"env/{e}/reward" in scalars]
    if rewards:
        parts.append("reward " + " ".join(rewards))
    if "learner/pg_loss" in scalars:
        parts.append(f"loss {scalars['learner/pg_loss']:+.4f}")
    if "rollout/tokens_per_s" in scalars:
        parts.append(f"rollout {scalars['rollout/tokens_per_s']:,.0f} tok/s")
    if "learner/train_seconds" in scalars:
        parts.append(f"train {scalars['learner/train_seconds']:.1f}s")
    if "rollout/samples_per_s" in scalars:
        parts.append(f"{scalars['rollout/samples_per_s']:.1f} samples/s")
    parts.append("ETA " + (format_duration(eta) if eta is not None else "?"))
    return "  ".join(parts)


class Progress:
    """Step progress for the training loop. `tty=None` asks the stream (sys.stdout by default)."""

    def __init__(self, total_steps: int, log: Callable[[str], None] = print, stream: TextIO | None = None,
                 tty: bool | None = None, width: int | None = None):
        self.total = total_steps
        self.plain_log = log
        self.stream = stream if stream is not None else sys.stdout
        if tty is None:
            isatty = getattr(self.stream, "isatty", None)
            tty = bool(isatty and isatty())
        self.tty = tty
        self.width = width
        self.first_step: int | None = None
        self.line = ""  # the in-place line currently on screen ("" when none)

    def _columns(self) -> int:
        return self.width or shutil.get_terminal_size((120, 24)).columns

    def _draw(self) -> None:
        # One column short of the width: a line that fills it exactly wraps on some terminals, and a wrapped
        # line can no longer be redrawn with a carriage return.
        self.stream.write(CLEAR_LINE + self.line[: max(10, self._columns() - 1)])
        self.stream.flush()

    def update(self, step: int, scalars: dict[str, float], elapsed: float, envs: list[str] | None = None) -> str:
        """Show step `step` (1-based, after its optimizer step); `elapsed` is seconds since the loop started."""
        if self.first_step is None:
            self.first_step = step - 1  # the loop (re)started just before this step
        if envs is None:
            envs = sorted({k.split("/")[1] for k in scalars if k.startswith("env/") and k.endswith("/reward")})
        text = progress_line(step, self.total, scalars, envs, eta_seconds(step, self.total, elapsed, self.first_step))
        if not self.tty:
            self.plain_log(text)
            return text
        self.line = text
        self._draw()
        if step >= self.total:  # the last step stays on screen; what follows prints below it
            self.stream.write("\n")
            self.stream.flush()
            self.line = ""
        return text

    def wrap(self, log: Callable[[str], None]) -> Callable[[str], None]:
        """A log function that prints a message above the in-place line and redraws the line below it."""

        def wrapped(message: str) -> None:
            if self.tty and self.line:
                self.stream.write(CLEAR_LINE)
                self.stream.flush()
                log(message)
                self._draw()
            else:
                log(message)

        return wrapped

    def close(self) -> None:
        """End the in-place line so that later output starts on a new line."""
        if self.tty and self.line:
            self.stream.write("\n")
            self.stream.flush()
            self.line = ""
