"""The live dashboard (issue 9): event files read back with TensorBoard's own reader, the launcher, W&B option."""

import importlib.util
import re
import subprocess
import sys
import time

import httpx
import pytest
from tensorboard.backend.event_processing import event_accumulator as ea

from rl.config import ConfigError, build_config
from rl.dashboard import DashboardConfig, NoEventFiles, WandbMetricsLogger, check_logdir, open_metrics
from rl.metrics import MetricsLogger, read_jsonl

REPO = __import__("pathlib").Path(__file__).resolve().parents[2]


def _write(run_dir, steps=3):
    m = MetricsLogger(run_dir)
    for s in range(1, steps + 1):
        m.log(s, {"env/math/reward": 0.1 * s, "env/math/pass_rate": 0.05 * s, "rollout/tokens_per_s": 1000.0 + s,
                  "learner/is_masked_fraction": 0.01, "bad/nan": float("nan")},
              {"buffer/staleness": [0, 0, 1] * s})
    m.close()


def test_event_files_hold_the_tags_and_values_tensorboard_reads_back(tmp_path):
    _write(tmp_path / "run")
    files = check_logdir(tmp_path / "run")
    assert len(files) == 1 and files[0].parent.name == "tensorboard"
    acc = ea.EventAccumulator(str(files[0].parent), size_guidance={ea.SCALARS: 0, ea.HISTOGRAMS: 0})
    acc.Reload()
    tags = acc.Tags()
    assert set(tags["scalars"]) == {"env/math/reward", "env/math/pass_rate", "rollout/tokens_per_s",
                                    "learner/is_masked_fraction"}  # the NaN was not written
    reward = acc.Scalars("env/math/reward")
    assert [e.step for e in reward] == [1, 2, 3]
    assert [round(e.value, 6) for e in reward] == [0.1, 0.2, 0.3]
    assert acc.Scalars("rollout/tokens_per_s")[-1].value == 1003.0
    assert tags["histograms"] == ["buffer/staleness"]
    h = acc.Histograms("buffer/staleness")[-1].histogram_value
    assert (h.min, h.max, h.num, h.sum) == (0.0, 1.0, 9.0, 3.0)
    # the same scalars in metrics.jsonl (what the report reads)
    assert [r["env/math/reward"] for r in read_jsonl(tmp_path / "run" / "metrics.jsonl")] == pytest.approx([0.1, 0.2, 0.3])


def test_a_directory_without_event_files_is_a_clear_error(tmp_path, python):
    (tmp_path / "empty").mkdir()
    with pytest.raises(NoEventFiles, match="no TensorBoard event files"):
        check_logdir(tmp_path / "empty")
    with pytest.raises(NoEventFiles, match="no such directory"):
        check_logdir(tmp_path / "missing")
    out = subprocess.run([python, "-m", "rl.dashboard", str(tmp_path / "empty")], capture_output=True, text=True,
                         timeout=120, cwd=REPO)
    assert out.returncode == 2
    assert "no TensorBoard event files" in out.stderr and "<run dir>/tensorboard/" in out.stderr


def test_dashboard_starts_tensorboard_and_the_url_answers(tmp_path, python):
    _write(tmp_path / "runs" / "a")
    _write(tmp_path / "runs" / "b")
    proc = subprocess.Popen([python, "-m", "rl.dashboard", str(tmp_path / "runs"), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
    try:
        url, lines, deadline = None, [], time.time() + 180  # a loaded 2-core machine: TensorBoard's import is slow
        while url is None and time.time() < deadline and proc.poll() is None:
            line = proc.stdout.readline()
            lines.append(line)
            m = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
            url = m.group(1) if m else None
        assert url, f"no URL printed: {''.join(lines)}"
        assert "2 event directories" in "".join(lines)
        page = httpx.get(url, timeout=30)
        assert page.status_code == 200 and "<html" in page.text.lower()
        runs = []
        while time.time() < deadline:  # the first load of the event files happens in the background
            runs = httpx.get(url + "data/runs", timeout=30).json()
            if len(runs) == 2:
                break
            time.sleep(1)
        assert sorted(runs) == ["a/tensorboard", "b/tensorboard"]
        tags = httpx.get(url + "data/plugin/scalars/tags", timeout=30).json()
        assert "env/math/reward" in tags["a/tensorboard"]
    finally:
        proc.kill()
        proc.wait(timeout=30)


def test_wandb_flag_without_wandb_installed_is_a_clear_config_error(tmp_path):
    if importlib.util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed here: the missing-package path cannot be exercised")
    with pytest.raises(ConfigError, match="wandb package is not installed: `pip install wandb`"):
        build_config(envs="echo", overrides=["dashboard.wandb=true"])
    with pytest.raises(ValueError, match="dashboard.wandb=false"):
        DashboardConfig(wandb=True)
    with pytest.raises(RuntimeError, match="pip install wandb"):  # constructed past the config check
        WandbMetricsLogger(tmp_path / "run", DashboardConfig.model_construct(wandb=True), "x")
    cfg = build_config(envs="echo", overrides=[f"run.output_dir={tmp_path}"])
    metrics = open_metrics(cfg, tmp_path / "run")
    assert type(metrics) is MetricsLogger  # W&B off: TensorBoard + jsonl only
    metrics.close()
    print("wandb not installed: checked the error path (the W&B logging path needs wandb)", file=sys.stderr)
