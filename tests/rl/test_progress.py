"""Console progress (issue 9): an in-place line on a terminal, plain lines elsewhere, hooked into record()."""

import doctest
import io
import os

import rl.progress
from rl.config import build_config
from rl.metrics import read_jsonl
from rl.orchestrator import Orchestrator, RolloutBatch, Roles
from rl.progress import CLEAR_LINE, Progress, eta_seconds, format_duration
from rl.types import Message, Sample, ScoredGroup, Task, Verdict

SCALARS = {"env/math/reward": 0.5, "env/json_schema/reward": 0.25, "rollout/samples_per_s": 3.2,
           "learner/pg_loss": -0.0012, "rollout/tokens_per_s": 1500.0, "learner/train_seconds": 4.1}


def test_docstring_examples():
    assert doctest.testmod(rl.progress).failed == 0


def test_plain_lines_when_not_a_terminal():
    logged = []
    stream = io.StringIO()  # isatty() is False: a CI log
    p = Progress(3, log=logged.append, stream=stream)
    assert p.tty is False
    for step in (1, 2, 3):
        p.update(step, SCALARS, elapsed=10.0 * step, envs=["math", "json_schema"])
    assert stream.getvalue() == ""  # everything went through the log function, one message per step
    assert len(logged) == 3
    assert all("\r" not in line and "\x1b" not in line for line in logged)
    first = logged[0]
    assert first.startswith("step    1/3")
    assert "reward math 0.500 json_schema 0.250" in first
    assert "3.2 samples/s" in first and "loss -0.0012" in first
    assert first.endswith("ETA 20s")  # 10 s per step, 2 steps left
    assert logged[-1].endswith("ETA 0s")


def test_in_place_line_on_a_terminal():
    stream = io.StringIO()
    logged = []
    p = Progress(3, log=logged.append, stream=stream, tty=True, width=200)
    log = p.wrap(lambda m: stream.write(m + "\n"))
    p.update(1, SCALARS, elapsed=10.0, envs=["math"])
    p.update(2, SCALARS, elapsed=20.0, envs=["math"])
    log("eval @ step 2: math 0.300")
    p.update(3, SCALARS, elapsed=30.0, envs=["math"])
    out = stream.getvalue()
    assert logged == []  # nothing went to the plain log
    # each update redraws from column 0 and clears the rest: no newline between steps
    frames = out.split(CLEAR_LINE)
    assert frames[0] == ""
    assert frames[1].startswith("step    1/3") and "\n" not in frames[1]
    assert frames[2].startswith("step    2/3") and "\n" not in frames[2]
    # a log message clears the line, prints on its own line, and the progress line is redrawn below it
    assert frames[3] == "eval @ step 2: math 0.300\n"
    assert frames[4].startswith("step    2/3")
    # the last step stays on screen and ends the line
    assert frames[5].startswith("step    3/3") and frames[5].endswith("ETA 0s\n")
    assert p.line == ""


def test_terminal_line_is_cut_to_the_width():
    stream = io.StringIO()
    p = Progress(100, stream=stream, tty=True, width=40)
    p.update(1, SCALARS, elapsed=1.0)
    drawn = stream.getvalue().split(CLEAR_LINE)[-1]
    assert len(drawn) == 39  # one column short: a full-width line wraps on some terminals
    p.close()
    assert stream.getvalue().endswith("\n")


def test_a_real_pseudo_terminal_is_detected():
    master, slave = os.openpty()
    try:
        with open(slave, "w", closefd=True) as tty:
            p = Progress(5, stream=tty)
            assert p.tty is True
            p.update(1, SCALARS, elapsed=2.0, envs=["math"])
            tty.flush()
            data = os.read(master, 4096).decode()
        assert data.startswith(CLEAR_LINE) and "step    1/5" in data and "ETA 8s" in data
    finally:
        os.close(master)


def test_eta_after_resume_uses_only_steps_done_since_restart():
    logged = []
    p = Progress(20, log=logged.append, stream=io.StringIO())
    p.update(11, SCALARS, elapsed=5.0)  # resumed at step 10: one step in 5 s, 9 to go
    assert logged[-1].endswith("ETA 45s")
    assert eta_seconds(11, 20, 5.0, first_step=10) == 45.0
    assert format_duration(3 * 3600 + 61) == "3h01m"


def _group(tid, rewards, version=0):
    task = Task(env="echo", task_id=tid, prompt=(Message(role="user", content="x"),), difficulty="easy")
    samples = tuple(Sample(env="echo", task_id=tid, sample_index=i, prompt_ids=(1,), response_ids=(2, 3),
                           logprobs=(-1.0, -1.0), loss_mask=(1, 1), policy_version=version, finish_reason="stop")
                    for i in range(len(rewards)))
    return ScoredGroup(task=task, samples=samples, verdicts=tuple(Verdict(reward=r) for r in rewards))


def test_orchestrator_record_logs_the_namespace_and_a_progress_line(tmp_path):
    logged = []
    cfg = build_config(envs="echo", overrides=[f"run.output_dir={tmp_path}", "run.steps=4"])
    orch = Orchestrator(cfg, Roles(rollout=[], learners=[], clients={}), tmp_path / "run", log=logged.append)
    groups = [_group("a", [1.0, 0.0]), _group("b", [1.0, 1.0])]
    batch = RolloutBatch(step=0, tasks=[g.task for g in groups], groups=groups, tokens=8, seconds=2.0,
                         submitted_at=0.0, verify_errors=0)
    orch.counters["samples_generated"] = 4
    orch.version, orch.step = 1, 1
    orch.record(batch, groups, {"pg_loss": 0.01, "tokens": 12.0}, learner_wait=0.5, train_s=1.5, export_s=0.1,
                sync_s=0.05, elapsed=2.0)
    orch.metrics.close()
    rec = read_jsonl(tmp_path / "run" / "metrics.jsonl")[-1]
    assert rec["env/echo/reward"] == 0.75 and rec["env/echo/length"] == 2.0
    assert rec["rollout/samples_per_s"] == 2.0 and rec["learner/elapsed_seconds"] == 2.0
    assert rec["learner/policy_version"] == 1 and "rollout/batch_latency_seconds" in rec
    allowed = ("env/", "eval/", "rollout/", "learner/", "sync/", "buffer/", "curriculum/", "genrm/")
    assert all(k.startswith(allowed) for k in rec if k != "step"), sorted(rec)
    line = logged[-1]
    assert line.startswith("step    1/4") and "reward echo 0.750" in line and "2.0 samples/s" in line
    assert line.endswith("ETA 6s")
