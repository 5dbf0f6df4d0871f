"""The HTML run report (issue 9), from synthetic runs written through the real MetricsLogger (no training run).

The browser test opens the report in Debian's headless Chromium, dumps the DOM and takes a screenshot.
"""

import doctest
import json
import math
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import rl.report
from rl.metrics import MetricsLogger
from rl.report import ReportError, load_run, render, write_report

REPO = Path(__file__).resolve().parents[2]
HEADINGS = ["Runs", "Reward per environment", "Pass rate per environment", "Response length",
            "Importance sampling (rollout vs learner)", "Staleness", "Throughput and idle time", "Held-out evaluation",
            "Curriculum: target vs realised pass rate", "GenRM", "Learner", "Other metrics"]


def synth_run(run_dir: Path, seed: int, steps: int = 24, curriculum: bool = True, genrm: bool = True) -> Path:
    """A run's metrics as rl/orchestrator.py and the curriculum sampler log them (same tags, same logger)."""
    rnd = random.Random(seed)
    m = MetricsLogger(run_dir)
    for s in range(1, steps + 1):
        sc = {}
        for env, base in (("math", 0.2), ("json_schema", 0.5)):
            r = min(1.0, base + 0.4 * s / steps + rnd.uniform(-0.08, 0.08) + 0.05 * seed)
            sc.update({f"env/{env}/reward": r, f"env/{env}/pass_rate": max(0.0, r - 0.1),
                       f"env/{env}/length": 40 + 10 * math.sin(s / 3) + 5 * seed, f"env/{env}/truncation_rate": 0.1})
        sc.update({"learner/is_masked_fraction": 0.02 * rnd.random(), "learner/is_weight_mean": 1 + 0.01 * rnd.random(),
                   "learner/is_weight_max": 1.5 + rnd.random(), "learner/kl_rollout_learner": 1e-4 * rnd.random(),
                   "learner/pg_loss": rnd.uniform(-0.01, 0.01), "learner/wait_seconds": 1 + rnd.random(),
                   "learner/train_seconds": 3 + rnd.random(), "sync/export_seconds": 0.1, "sync/load_seconds": 0.05,
                   "rollout/tokens_per_s": 1500 + 100 * rnd.random(), "rollout/samples_per_s": 3 + rnd.random(),
                   "learner/tokens_per_s": 2500.0, "buffer/staleness_mean": 0.5, "learner/elapsed_seconds": 5.0 * s,
                   "learner/policy_version": s})
        m.log(s, sc, {"buffer/staleness": [0] * 8 + [1] * (8 + 4 * seed)})
        if curriculum:  # what curricula/pass_rate_gaussian.py logs after each step
            mu = 0.8 - 0.6 * s / steps
            m.log(s, {"curriculum/math/mu": mu, "curriculum/math/pool_size": 900.0},
                  {"curriculum/math/target": [min(1, max(0, rnd.gauss(mu, 0.15))) for _ in range(200)],
                   "curriculum/math/drawn": [min(1, max(0, rnd.gauss(mu + 0.05, 0.2))) for _ in range(16)]})
        if genrm:
            m.log(s, {"genrm/parse_failures": rnd.randint(0, 2), "genrm/first_position_win_rate": rnd.uniform(0.4, 0.6)},
                  {"genrm/score": [rnd.randint(1, 5) for _ in range(32)]})
        if s % 8 == 0:
            m.log(s, {"eval/math/easy/pass_rate": 0.2 + s / 100 + 0.1 * seed, "eval/json_schema/easy/pass_rate": 0.5})
    m.close()
    return run_dir


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return (synth_run(root / "sync", seed=0), synth_run(root / "async", seed=1, curriculum=False, genrm=False))


@pytest.fixture(scope="module")
def report(two_runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "report.html"
    write_report(list(two_runs), out)
    return out


def _charts(text: str) -> dict[str, str]:
    return {m.group(1): m.group(0) for m in re.finditer(r'<figure class="chart[^"]*" data-metric="([^"]+)".*?</figure>',
                                                         text, re.S)}


def test_docstring_examples():
    assert doctest.testmod(rl.report).failed == 0


def test_load_run_reads_scalars_and_tensorboard_histograms(two_runs):
    run = load_run(two_runs[0])
    assert [s for s, _ in run.scalars["env/math/reward"]] == list(range(1, 25))
    assert [s for s, _ in run.scalars["eval/math/easy/pass_rate"]] == [8, 16, 24]
    assert set(run.hists) == {"buffer/staleness", "curriculum/math/target", "curriculum/math/drawn", "genrm/score"}
    last = run.hists["buffer/staleness"][-1]
    assert (last.step, last.lo, last.hi, sum(last.counts)) == (24, 0.0, 1.0, 16)


def test_two_runs_overlay_in_one_chart(report):
    text = report.read_text()
    charts = _charts(text)
    for tag in ("env/math/reward", "env/json_schema/pass_rate", "env/math/length", "learner/is_masked_fraction",
                "buffer/staleness_mean", "rollout/samples_per_s", "eval/math/easy/pass_rate", "learner/idle_fraction"):
        chart = charts[tag]
        assert 'data-runs="2"' in chart, tag
        assert set(re.findall(r'class="series"[^>]*data-run="([^"]+)"', chart)) == {"sync", "async"}, tag
    # raw and smoothed lines of both runs in the reward chart
    assert charts["env/math/reward"].count('class="raw"') == 2
    # staleness histogram: both runs' bars, one bin per staleness value
    stale = charts["buffer/staleness"]
    assert set(re.findall(r'data-series="([^"]+)"', stale)) == {"sync", "async"}


def test_every_section_is_there_and_absent_metrics_get_a_note(report, two_runs, tmp_path):
    text = report.read_text()
    for h in HEADINGS:
        assert f"<h2>{h}</h2>".replace("&", "&amp;") in text.replace("&amp;", "&"), h
    charts = _charts(text)
    # curriculum target vs realised at the first and last step, grey target bars next to the drawn ones
    assert {"curriculum/math@1", "curriculum/math@24"} <= set(charts)
    assert set(re.findall(r'data-series="([^"]+)"', charts["curriculum/math@24"])) == {"target", "drawn"}
    assert "genrm/first_position_win_rate" in charts and "genrm/score" in charts
    # a run without curriculum or GenRM metrics: the sections say so instead of vanishing
    alone = render([load_run(two_runs[1])])
    assert "no curriculum/... metrics in these runs" in alone and "no genrm/... metrics in these runs" in alone


def test_report_is_self_contained(report):
    text = report.read_text()
    assert "<script" not in text and "<link" not in text and "@import" not in text
    assert not re.search(r'(src|href)="(https?:)?//', text)  # nothing fetched: the file opens offline


def test_resumed_steps_keep_the_later_value_and_old_names_still_render(tmp_path):
    m = MetricsLogger(tmp_path / "old", enabled_tensorboard=False)
    for s, v in ((1, 0.1), (2, 0.2), (2, 0.25), (3, 0.3)):  # step 2 logged again after a resume
        m.log(s, {"env/math/reward": v, "time/samples_per_s": 2.0, "policy/version": s})
    m.close()
    run = load_run(tmp_path / "old")
    assert run.scalars["env/math/reward"] == [(1, 0.1), (2, 0.25), (3, 0.3)]
    assert "rollout/samples_per_s" in run.scalars and "learner/policy_version" in run.scalars
    assert 'data-metric="rollout/samples_per_s"' in render([run])


def test_event_files_alone_are_enough(tmp_path, two_runs):
    shutil.copytree(two_runs[0] / "tensorboard", tmp_path / "tb_only" / "tensorboard")
    run = load_run(tmp_path / "tb_only")
    assert len(run.scalars["env/math/reward"]) == 24
    expected = [json.loads(line)["env/math/reward"] for line in (two_runs[0] / "metrics.jsonl").read_text().splitlines()
                if "env/math/reward" in line]
    assert [v for _, v in run.scalars["env/math/reward"]] == pytest.approx(expected, rel=1e-6)  # float32 events


def test_bad_directories_are_clear_errors(tmp_path, python):
    with pytest.raises(ReportError, match="no such directory"):
        load_run(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReportError, match="neither metrics.jsonl nor TensorBoard event files"):
        load_run(tmp_path / "empty")
    out = subprocess.run([python, "-m", "rl.report", str(tmp_path / "empty")], capture_output=True, text=True,
                         timeout=120, cwd=REPO)
    assert out.returncode == 2 and "error:" in out.stderr and "metrics.jsonl" in out.stderr


def test_cli_writes_one_file_and_prints_its_path(two_runs, tmp_path, python):
    out = subprocess.run([python, "-m", "rl.report", *map(str, two_runs), "--out", str(tmp_path / "cmp.html")],
                         capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"report: {(tmp_path / 'cmp.html').resolve()}"
    assert 'data-runs="2"' in (tmp_path / "cmp.html").read_text()


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _headless(chromium: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    # The flags python.md lists: without the background-networking ones Chromium keeps trying hosts this machine
    # cannot reach; a fresh profile per run so nothing from an earlier run is reused.
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--hide-scrollbars"]
    return subprocess.run([chromium, *flags, *args], capture_output=True, text=True, timeout=180)


@pytest.mark.slow
def test_report_opens_in_headless_chromium_and_the_screenshot_shows_every_section(report, tmp_path):
    chromium = _chromium()
    if chromium is None:
        print("SKIP reason: chromium is not installed (make install apt-gets it as root; "
              "or: apt-get install chromium)", file=sys.stderr)
        pytest.skip("chromium is not installed: apt-get install chromium (make install does it as root)")
    url = report.resolve().as_uri()
    dom = _headless(chromium, tmp_path / "profile-dom", "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    headings = re.findall(r"<h2>(.*?)</h2>", dom.stdout)
    assert [h.replace("&amp;", "&") for h in headings] == HEADINGS
    assert dom.stdout.count("<svg") >= 30  # the charts were parsed as SVG elements
    png = tmp_path / "report.png"
    # A window taller than the page: the whole report is in one screenshot (1500 px wide: three charts per row).
    shot = _headless(chromium, tmp_path / "profile-shot", f"--screenshot={png}", "--window-size=1500,7000", url)
    assert shot.returncode == 0 and png.is_file(), shot.stderr[-2000:]
    assert png.stat().st_size > 100_000
    import numpy as np
    from PIL import Image  # a tensorboard dependency

    img = np.asarray(Image.open(png).convert("RGB")).astype(int)  # [H, W, 3]
    assert img.shape == (7000, 1500, 3)
    ink = img.sum(axis=2) < 720  # [H, W]  anything not white
    colour = (img.max(axis=2) - img.min(axis=2)) > 80  # [H, W]  the runs' line and bar colours
    assert ink.mean() > 0.03 and colour.sum() > 20_000, (ink.mean(), colour.sum())
    rows = np.flatnonzero(ink.any(axis=1))
    # the page ends above the bottom of the screenshot, so every section (all in the DOM above) is in the picture
    assert rows[0] < 100 and rows[-1] < 7000 - 100, (rows[0], rows[-1])
    print(f"screenshot {png}: content rows {rows[0]}..{rows[-1]}, ink {ink.mean():.3f}", file=sys.stderr)
