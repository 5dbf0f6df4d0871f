"""Wire types of the GenRM service's HTTP API (STYLE.md rule 4: typed, versioned, never raw dicts).

They subclass rl.types.Wire (frozen, extra="forbid", wire_version checked), and live next to the service so the
core wire module stays the training system's; the chat environment imports them from here.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from rl.types import Wire


_MAX_WEIGHT = 1e6  # length-control weights beyond this are a mistake (rewards are judge scores of 1-5)


class LengthControlParams(Wire):
    """Group relative length control (genrm/length_control.py); enabled=False returns the base rewards."""

    enabled: bool = True
    # Bounded (issue 10 fuzzing): NaN or +-inf, which JSON bodies may carry, or weights big enough to overflow
    # made rewards NaN/inf, serialised as null and unreadable by the client; real settings are around 0.5.
    lambda_think: float = Field(0.5, ge=-_MAX_WEIGHT, le=_MAX_WEIGHT)
    lambda_answer: float = Field(0.5, ge=-_MAX_WEIGHT, le=_MAX_WEIGHT)
    beta_think: float = Field(0.5, ge=-_MAX_WEIGHT, le=_MAX_WEIGHT)
    beta_answer: float = Field(0.5, ge=-_MAX_WEIGHT, le=_MAX_WEIGHT)
    percentile: float = Field(80, ge=0, le=100)


class ScoreItem(Wire):
    index: int = Field(ge=0, description="Position of the response in its cohort (0..group_size-1).")
    response: str
    think_tokens: int = Field(ge=0, description="Length of the <think> part in policy tokens.")
    answer_tokens: int = Field(ge=0, description="Length of the answer part in policy tokens.")


class ScoreRequest(Wire):
    """Some or all responses of one cohort (a prompt's group of N). The call returns once the cohort is scored:
    when all N have arrived (in any order, over any number of requests) or its timeout has passed."""

    cohort_id: str = Field(min_length=1)
    group_size: int = Field(ge=1, le=4096)
    prompt: str
    items: tuple[ScoreItem, ...] = Field(min_length=1)
    length_control: LengthControlParams = LengthControlParams()


class ScoreResult(Wire):
    index: int
    reward: float = Field(description="Base reward after length control.")
    base: float = Field(description="Mean judge score received (1-5).")
    comparisons: int = Field(description="Judgements this response took part in.")
    failed: int = Field(description="Of those, judgements unparseable after retries (scored as ties).")
    status: Literal["ok", "error"] = "ok"
    reason: str = ""


class ScoreResponse(Wire):
    cohort_id: str
    complete: bool = Field(description="False when the cohort was scored at its timeout with members missing.")
    results: tuple[ScoreResult, ...]


class GenRMMetrics(Wire):
    """Cumulative counters since the service started (GET /metrics)."""

    cohorts: int = 0
    incomplete_cohorts: int = 0
    responses: int = 0
    judge_calls: int = Field(0, description="Judge generations, retries included.")
    comparisons: int = 0
    retries: int = 0
    parse_failures: int = Field(0, description="Comparisons still unparseable after retries (scored as ties).")
    first_position_wins: int = 0
    second_position_wins: int = 0
    position_ties: int = 0
    judge_batches: int = 0
    judge_seconds: float = 0.0
    reward_before_sum: float = 0.0
    reward_after_sum: float = 0.0
    think_tokens_sum: int = 0
    answer_tokens_sum: int = 0

    def summary(self) -> dict[str, float]:
        """The issue's figures: judge calls per group, parse failures, position bias, rewards, lengths."""
        n = max(1, self.responses)
        decided = self.first_position_wins + self.second_position_wins
        return {
            "judge_calls_per_group": self.judge_calls / max(1, self.cohorts),
            "parse_failures": float(self.parse_failures),
            "parse_failure_rate": self.parse_failures / max(1, self.comparisons),
            "first_position_win_rate": self.first_position_wins / decided if decided else 0.5,
            "reward_before_length_control": self.reward_before_sum / n,
            "reward_after_length_control": self.reward_after_sum / n,
            "think_tokens_mean": self.think_tokens_sum / n,
            "answer_tokens_mean": self.answer_tokens_sum / n,
            "incomplete_cohorts": float(self.incomplete_cohorts),
            "cohorts_per_judge_batch": self.cohorts / max(1, self.judge_batches),
        }
