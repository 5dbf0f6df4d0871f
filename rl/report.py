"""Run reports (issue 9): one self-contained HTML file comparing one or more training runs.

    python -m rl.report runs/tiny-cpu                              # writes runs/tiny-cpu/report.html
    python -m rl.report runs/sync runs/async --out compare.html    # two runs overlaid in every chart

The charts are inline SVG written here (no JavaScript, no CDN, nothing fetched), so the file opens offline and
can be mailed or attached to an issue. Scalars come from each run's metrics.jsonl (or, when a directory holds only
TensorBoard event files, from those); histograms (staleness, curriculum pass rates, GenRM) only exist in the event
files and are read with TensorBoard's own EventAccumulator. Thin lines are raw values, thick lines the same series
smoothed with TensorBoard's debiased exponential moving average (--smoothing, 0 turns it off).
"""

from __future__ import annotations

import argparse
import datetime
import html
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

from rl.metrics import read_jsonl

# Names used before the namespace was settled (issue 9); older runs still render.
ALIASES = {"time/samples_per_s": "rollout/samples_per_s", "time/step_seconds": "rollout/batch_latency_seconds",
           "time/elapsed_seconds": "learner/elapsed_seconds", "policy/version": "learner/policy_version"}
PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
UNIT_INTERVAL = ("pass_rate",)  # drawn on [0, 1]: runs and environments compare at a glance
FROM_ZERO = ("fraction", "_rate", "_per_s", "seconds")  # non-negative: axis from 0 (small IS fractions stay visible)
MAX_POINTS = 800  # per drawn series: a 10k-step run stays a few MB


class ReportError(ValueError):
    """A directory given to the report is not a run (the message says what one holds)."""


@dataclass
class Hist:
    step: int
    lo: float
    hi: float
    limits: list[float]  # right edges of TensorBoard's buckets
    counts: list[float]
    sum: float = 0.0
    sum_squares: float = 0.0


@dataclass
class Run:
    name: str
    path: Path
    scalars: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    hists: dict[str, list[Hist]] = field(default_factory=dict)
    summary: dict | None = None
    color: str = PALETTE[0]

    def last(self, tag: str) -> float | None:
        pts = self.scalars.get(tag)
        return pts[-1][1] if pts else None


# ----------------------------------------------------------------------------------------------- loading


def _event_dirs(path: Path) -> list[Path]:
    return sorted({f.parent for f in path.rglob("events.out.tfevents*")})


def _accumulators(path: Path):
    from tensorboard.backend.event_processing import event_accumulator as ea

    keep_all = {ea.SCALARS: 0, ea.HISTOGRAMS: 0, ea.COMPRESSED_HISTOGRAMS: 1, ea.IMAGES: 1, ea.AUDIO: 1,
                ea.TENSORS: 1}  # 0 = keep every event (the default keeps a sample of 500 scalars)
    for d in _event_dirs(path):
        acc = ea.EventAccumulator(str(d), size_guidance=keep_all)
        acc.Reload()
        yield acc


def _by_step(points) -> list[tuple[int, float]]:
    # a resumed run logs the steps after its checkpoint again: the later value wins
    return sorted({int(s): float(v) for s, v in points}.items())


def load_run(path: Path, name: str | None = None) -> Run:
    path = Path(path)
    if not path.is_dir():
        raise ReportError(f"{path}: no such directory (pass run directories, e.g. runs/tiny-cpu)")
    run = Run(name=name or path.name, path=path)
    raw: dict[str, list] = {}
    jsonl = path / "metrics.jsonl"
    if jsonl.is_file():
        for rec in read_jsonl(jsonl):
            step = rec.get("step")
            for k, v in rec.items():
                if k != "step" and isinstance(v, (int, float)) and math.isfinite(v):
                    raw.setdefault(ALIASES.get(k, k), []).append((step, v))
    accs = list(_accumulators(path))
    for acc in accs:
        tags = acc.Tags()
        if not jsonl.is_file():
            for tag in tags.get("scalars", []):
                raw.setdefault(ALIASES.get(tag, tag), []).extend((e.step, e.value) for e in acc.Scalars(tag))
        for tag in tags.get("histograms", []):
            by_step = {}
            for e in acc.Histograms(tag):
                h = e.histogram_value
                by_step[e.step] = Hist(e.step, h.min, h.max, list(h.bucket_limit), list(h.bucket), h.sum, h.sum_squares)
            run.hists[tag] = [by_step[s] for s in sorted(by_step)]
    if not raw and not run.hists:
        raise ReportError(f"{path}: neither metrics.jsonl nor TensorBoard event files with data; a training run "
                          "writes both into its run directory (run.output_dir/run.name) from its first step on")
    run.scalars = {k: _by_step(v) for k, v in sorted(raw.items())}
    if (path / "summary.json").is_file():
        run.summary = json.loads((path / "summary.json").read_text())
    return run


def load_runs(paths: list[Path]) -> list[Run]:
    names = [Path(p).name for p in paths]
    runs = []
    for i, p in enumerate(paths):
        # two runs both called "tiny-cpu" in different parents get their parent in the label
        name = names[i] if names.count(names[i]) == 1 else f"{Path(p).parent.name}/{names[i]}"
        run = load_run(Path(p), name)
        run.color = PALETTE[i % len(PALETTE)]
        runs.append(run)
    return runs


# ----------------------------------------------------------------------------------------------- numbers


def smooth(values: list[float], weight: float) -> list[float]:
    """TensorBoard's debiased exponential moving average (weight 0 returns the values).

    >>> [round(v, 3) for v in smooth([0.0, 1.0, 1.0], 0.5)]
    [0.0, 0.667, 0.857]
    """
    out, last = [], 0.0
    for i, v in enumerate(values, start=1):
        last = last * weight + (1 - weight) * v
        out.append(last / (1 - weight**i) if weight > 0 else v)
    return out


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """Round tick values covering [lo, hi].

    >>> nice_ticks(0.0, 1.0)
    [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    """
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    return [round(first + i * step, 10) for i in range(int((hi - first) / step + 1e-9) + 1)]


def _fmt(v: float) -> str:
    if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
        return f"{v:.1e}"
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"


def tick_labels(ticks: list[float]) -> list[str]:
    """Labels with just enough decimals to tell neighbouring ticks apart.

    >>> tick_labels([0.9985, 0.999, 0.9995, 1.0])
    ['0.9985', '0.9990', '0.9995', '1.0000']
    """
    if len(ticks) < 2:
        return [_fmt(t) for t in ticks]
    step = abs(ticks[1] - ticks[0])
    if step >= 1 or max(abs(t) for t in ticks) >= 1e5 or step < 1e-6:
        return [_fmt(t) for t in ticks]
    decimals = max(0, math.ceil(-math.log10(step) - 1e-9))
    if any(abs(round(t, decimals) - t) > step * 1e-6 for t in ticks):
        decimals += 1  # 2.5, 0.25 steps need one more
    return [f"{t:.{decimals}f}" for t in ticks]


def rebin(hists: list[Hist], lo: float, hi: float, bins: int) -> list[float]:
    """TensorBoard buckets (one step or several, summed) redistributed into `bins` equal bins over [lo, hi], as
    fractions of all values. Each bucket's count goes to the bin of its midpoint, clamped to the observed range."""
    out = [0.0] * bins
    for h in hists:
        left = h.lo
        for right, c in zip(h.limits, h.counts):
            mid = min(max((left + min(right, h.hi)) / 2 if math.isfinite(right) else h.hi, h.lo), h.hi)
            left = right
            if c:
                out[min(bins - 1, max(0, int((mid - lo) / max(hi - lo, 1e-12) * bins)))] += c
    total = sum(out) or 1.0
    return [c / total for c in out]


# ----------------------------------------------------------------------------------------------- SVG

W, H, ML, MR, MT, MB = 420, 250, 56, 12, 28, 34  # chart size and margins (px)


def line_chart(title: str, tag: str, runs: list[Run], smoothing: float, tags: list[str] | None = None) -> str:
    """One chart, every run's series of `tag` overlaid (or several tags of each run, dashed after the first)."""
    tags = tags or [tag]
    series = [(r, t, r.scalars[t]) for r in runs for t in tags if r.scalars.get(t)]
    if not series:
        return ""
    xs = [s for _, _, pts in series for s, _ in pts]
    ys = [v for _, _, pts in series for _, v in pts]
    x0, x1 = min(xs), max(xs)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    y0, y1 = min(ys), max(ys)
    if any(u in tag for u in UNIT_INTERVAL) and y0 >= 0 and y1 <= 1:
        y0, y1 = 0.0, 1.0
    elif any(u in tag for u in FROM_ZERO) and y0 >= 0 and y1 > 0:
        y0, y1 = 0.0, y1 * 1.05
    elif y1 - y0 < 1e-12:
        y0, y1 = y0 - (abs(y0) * 0.1 or 1), y1 + (abs(y1) * 0.1 or 1)
    else:
        pad = (y1 - y0) * 0.05
        y0, y1 = y0 - pad, y1 + pad
    yt = nice_ticks(y0, y1)
    y0, y1 = min(y0, yt[0]), max(y1, yt[-1])
    pw, ph = W - ML - MR, H - MT - MB

    def px(s):
        return ML + (s - x0) / (x1 - x0) * pw

    def py(v):
        return MT + (1 - (v - y0) / (y1 - y0)) * ph

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" role="img">',
           f'<text x="{ML}" y="16" class="ct">{html.escape(title)}</text>']
    for v, label in zip(yt, tick_labels(yt)):
        out.append(f'<line x1="{ML}" x2="{W - MR}" y1="{py(v):.1f}" y2="{py(v):.1f}" class="grid"/>'
                   f'<text x="{ML - 4}" y="{py(v) + 4:.1f}" class="yt">{label}</text>')
    for s in nice_ticks(x0, x1, 6):
        if x0 <= s <= x1 and float(s).is_integer():  # steps are integers
            out.append(f'<text x="{px(s):.1f}" y="{H - MB + 15}" class="xt">{_fmt(s)}</text>')
    out.append(f'<text x="{ML + pw / 2}" y="{H - 4}" class="xt">step</text>'
               f'<rect x="{ML}" y="{MT}" width="{pw}" height="{ph}" class="frame"/>')
    for r, t, pts in series:
        dash = ' stroke-dasharray="5 3"' if t != tags[0] else ""
        stride = max(1, len(pts) // MAX_POINTS)
        steps, vals = [s for s, _ in pts], [v for _, v in pts]
        label = html.escape(f"{r.name} {t}")
        raw = " ".join(f"{px(s):.1f},{py(v):.1f}" for s, v in list(zip(steps, vals))[::stride])
        if smoothing > 0 and len(pts) > 2:
            sm = smooth(vals, smoothing)
            out.append(f'<polyline points="{raw}" class="raw" stroke="{r.color}"{dash}/>')
            pts_sm = " ".join(f"{px(s):.1f},{py(v):.1f}" for s, v in list(zip(steps, sm))[::stride])
            out.append(f'<polyline points="{pts_sm}" class="series" stroke="{r.color}" data-run="{html.escape(r.name)}"'
                       f'{dash}><title>{label} (smoothed {smoothing})</title></polyline>')
        else:
            out.append(f'<polyline points="{raw}" class="series" stroke="{r.color}" data-run="{html.escape(r.name)}"'
                       f'{dash}><title>{label}</title></polyline>')
        if len(pts) <= 40:  # markers with a hover value where they stay readable
            out.extend(f'<circle cx="{px(s):.1f}" cy="{py(v):.1f}" r="2.4" fill="{r.color}"><title>{label}: step {s}, '
                       f'{v:.4g}</title></circle>' for s, v in pts)
    out.append("</svg>")
    legend = "".join(f'<span><i style="background:{r.color}"></i>{html.escape(r.name)}'
                     f'{" " + html.escape(t.rsplit("/", 1)[-1]) if len(tags) > 1 else ""}'
                     f'{" (dashed)" if t != tags[0] else ""}</span>' for r, t, _ in series)
    n_runs = len({r.name for r, _, _ in series})
    return (f'<figure class="chart" data-metric="{html.escape(tag)}" data-runs="{n_runs}">{"".join(out)}'
            f'<figcaption>{legend}</figcaption></figure>')


def bar_chart(title: str, key: str, groups: list[tuple[str, str, list[float]]], edges: list[float],
              note: str = "", integer: bool = False) -> str:
    """Grouped bars: groups = [(label, color, fraction per bin)], bins between `edges`; `integer` labels each
    bin by its centre (one bin per integer value) instead of labelling the edges."""
    if not groups:
        return ""
    bins = len(edges) - 1
    top = max(max(g[2]) for g in groups) or 1.0
    yt = nice_ticks(0.0, top * 1.05, 4)
    y1 = max(top * 1.05, yt[-1])
    pw, ph = W - ML - MR, H - MT - MB
    slot = pw / bins
    bw = slot * 0.8 / len(groups)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" role="img">',
           f'<text x="{ML}" y="16" class="ct">{html.escape(title)}</text>']
    for v, label in zip(yt, tick_labels(yt)):
        y = MT + (1 - v / y1) * ph
        out.append(f'<line x1="{ML}" x2="{W - MR}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
                   f'<text x="{ML - 4}" y="{y + 4:.1f}" class="yt">{label}</text>')
    label_every = max(1, bins // 10)
    for b in range(bins + 1):
        if integer and b < bins and b % label_every == 0:
            centre = (edges[b] + edges[b + 1]) / 2
            out.append(f'<text x="{ML + (b + 0.5) * slot:.1f}" y="{H - MB + 15}" class="xt">{_fmt(centre)}</text>')
        elif not integer and b % label_every == 0:
            out.append(f'<text x="{ML + b * slot:.1f}" y="{H - MB + 15}" class="xt">{_fmt(edges[b])}</text>')
    for gi, (label, color, fracs) in enumerate(groups):
        for b, f in enumerate(fracs):
            x, h = ML + b * slot + slot * 0.1 + gi * bw, f / y1 * ph
            out.append(f'<rect x="{x:.1f}" y="{MT + ph - h:.1f}" width="{bw:.1f}" height="{h:.1f}" fill="{color}" '
                       f'class="bar" data-series="{html.escape(label)}"><title>{html.escape(label)}: '
                       f'[{edges[b]:.3g}, {edges[b + 1]:.3g}) {f:.3f}</title></rect>')
    out.append(f'<rect x="{ML}" y="{MT}" width="{pw}" height="{ph}" class="frame"/></svg>')
    legend = "".join(f'<span><i style="background:{c}"></i>{html.escape(lab)}</span>' for lab, c, _ in groups)
    note = f"<br><small>{html.escape(note)}</small>" if note else ""
    return (f'<figure class="chart hist" data-metric="{html.escape(key)}" data-runs="{len(groups)}">{"".join(out)}'
            f'<figcaption>{legend}{note}</figcaption></figure>')


def _hist_range(hists: list[Hist]) -> tuple[float, float, int, bool]:
    lo, hi = min(h.lo for h in hists), max(h.hi for h in hists)
    # Integer-valued (staleness, counts): integer bounds and either a span over 1 or only 0s and 1s (for values in
    # [0, 1], sum of squares == sum exactly then); pass rates in [0, 1] get 10 bins.
    integer = (all(float(b).is_integer() for h in hists for b in (h.lo, h.hi)) and hi - lo <= 40
               and (hi - lo > 1 or all(abs(h.sum - h.sum_squares) < 1e-9 for h in hists)))
    if integer:  # staleness, counts: one bin per integer
        return lo - 0.5, hi + 0.5, int(hi - lo) + 1, True
    if lo >= 0 and hi <= 1:
        return 0.0, 1.0, 10, False
    return lo, hi if hi > lo else lo + 1, 20, False


# ----------------------------------------------------------------------------------------------- sections


def _scalar_tags(runs: list[Run], prefix: str = "") -> list[str]:
    return sorted({t for r in runs for t in r.scalars if t.startswith(prefix)})


def _hist_tags(runs: list[Run], prefix: str) -> list[str]:
    return sorted({t for r in runs for t in r.hists if t.startswith(prefix)})


def _envs(runs: list[Run]) -> list[str]:
    return sorted({t.split("/")[1] for t in _scalar_tags(runs, "env/") if t.count("/") == 2})


def _derive(run: Run) -> None:
    """learner/idle_fraction: the share of each step the learner waited for rollouts (when not logged itself)."""
    wait, train = dict(run.scalars.get("learner/wait_seconds", [])), dict(run.scalars.get("learner/train_seconds", []))
    export = dict(run.scalars.get("sync/export_seconds", []))
    if wait and train and "learner/idle_fraction" not in run.scalars:
        run.scalars["learner/idle_fraction"] = [
            (s, w / max(w + train[s] + export.get(s, 0.0), 1e-9)) for s, w in sorted(wait.items()) if s in train]


class Page:
    def __init__(self, runs: list[Run], smoothing: float):
        self.runs, self.smoothing, self.used = runs, smoothing, set()

    def lines(self, tags: list[str], title=None) -> str:
        out = []
        for t in tags:
            self.used.add(t)
            out.append(line_chart(title(t) if title else t, t, self.runs, self.smoothing))
        return "".join(out)

    def multi(self, title: str, tags: list[str]) -> str:
        present = [t for t in tags if any(r.scalars.get(t) for r in self.runs)]
        self.used.update(present)
        return line_chart(title, present[0], self.runs, self.smoothing, present) if present else ""

    def hist_overlay(self, tag: str, title: str) -> str:
        """One tag, all steps summed, every run as one bar series."""
        per_run = [(r, r.hists[tag]) for r in self.runs if r.hists.get(tag)]
        lo, hi, bins, integer = _hist_range([h for _, hs in per_run for h in hs])
        edges = [lo + (hi - lo) * i / bins for i in range(bins + 1)]
        groups = [(r.name, r.color, rebin(hs, lo, hi, bins)) for r, hs in per_run]
        return bar_chart(title, tag, groups, edges, "fraction of all values over every logged step", integer)


def _section(sid: str, title: str, body: str, empty_note: str) -> str:
    if not body.strip():
        body = f'<p class="note">{html.escape(empty_note)}</p>'
    return f'<section id="{sid}"><h2>{html.escape(title)}</h2><div class="grid">{body}</div></section>'


def _runs_table(runs: list[Run]) -> str:
    envs = _envs(runs)
    head = "".join(f"<th>{html.escape(e)} reward (last)</th>" for e in envs)
    rows = []
    for r in runs:
        steps = max((s for pts in r.scalars.values() for s, _ in pts), default=0)
        cells = "".join(f"<td>{_fmt(v) if (v := r.last(f'env/{e}/reward')) is not None else '-'}</td>" for e in envs)
        wall = r.last("learner/elapsed_seconds")
        evals = {t.split("/", 1)[1]: r.last(t) for t in r.scalars if t.startswith("eval/") and t.endswith("pass_rate")}
        ev = ", ".join(f"{k.rsplit('/', 1)[0]} {v:.3f}" for k, v in sorted(evals.items())) or "-"
        rows.append(f'<tr><td><i class="sw" style="background:{r.color}"></i>{html.escape(r.name)}</td>'
                    f"<td><code>{html.escape(str(r.path))}</code></td><td>{steps}</td>{cells}"
                    f"<td>{html.escape(ev)}</td><td>{_fmt(wall) + ' s' if wall is not None else '-'}</td></tr>")
    return (f'<table class="runs"><tr><th>run</th><th>directory</th><th>last step</th>{head}'
            f"<th>held-out pass rate (last eval)</th><th>wall time</th></tr>{''.join(rows)}</table>")


def _curriculum(page: Page) -> str:
    runs = page.runs
    out = [page.lines(_scalar_tags(runs, "curriculum/"))]
    for r in runs:
        groups: dict[str, list[str]] = {}
        for t in sorted(r.hists):
            if t.startswith("curriculum/"):
                groups.setdefault(t.rsplit("/", 1)[0], []).append(t)
        for prefix, tags in groups.items():
            hists = [h for t in tags for h in r.hists[t]]
            lo, hi, bins, integer = _hist_range(hists)
            edges = [lo + (hi - lo) * i / bins for i in range(bins + 1)]
            steps = sorted({h.step for h in hists})
            for step in sorted({steps[0], steps[-1]}):
                series = []
                for j, t in enumerate(tags):
                    at = [h for h in r.hists[t] if h.step == step]
                    if at:
                        color = "#9a9a9a" if "target" in t else (r.color if j == 0 or "target" in tags[0] else PALETTE[(j + 3) % 8])
                        series.append((t.rsplit("/", 1)[1], color, rebin(at, lo, hi, bins)))
                out.append(bar_chart(f"{r.name}: {prefix} @ step {step}", f"{prefix}@{step}", series, edges,
                                     "fraction of the logged values per bin (grey: target)", integer))
    if out[0] and len(out) == 1:
        out.append('<p class="note">no curriculum/... histograms (target vs realised pass rates): these runs used '
                   'a sampler that logs none, e.g. curriculum.kind uniform</p>')
    return "".join(out)


def _genrm(page: Page) -> str:
    out = [page.lines(_scalar_tags(page.runs, "genrm/"))]
    out += [page.hist_overlay(t, t) for t in _hist_tags(page.runs, "genrm/")]
    return "".join(out)


def render(runs: list[Run], smoothing: float = 0.6, title: str | None = None) -> str:
    for r in runs:
        _derive(r)
    page = Page(runs, smoothing)
    envs = _envs(runs)
    S = []
    S.append(_section("runs", "Runs", _runs_table(runs), ""))
    S.append(_section("reward", "Reward per environment", page.lines([f"env/{e}/reward" for e in envs]),
                      "no env/<name>/reward metrics in these runs"))
    S.append(_section("pass-rate", "Pass rate per environment", page.lines([f"env/{e}/pass_rate" for e in envs]),
                      "no env/<name>/pass_rate metrics in these runs"))
    S.append(_section("length", "Response length", page.lines(
        [f"env/{e}/{k}" for e in envs for k in ("length", "truncation_rate")]), "no env/<name>/length metrics"))
    S.append(_section("importance-sampling", "Importance sampling (rollout vs learner)", page.lines(
        [t for t in ("learner/is_masked_fraction", "learner/is_weight_mean", "learner/is_weight_max",
                     "learner/kl_rollout_learner") if any(r.scalars.get(t) for r in runs)]),
        "no learner/is_* metrics in these runs"))
    stale = page.lines([t for t in ("buffer/staleness_mean", "buffer/stale_groups_dropped",
                                    "buffer/zero_signal_groups") if any(r.scalars.get(t) for r in runs)])
    stale += "".join(page.hist_overlay(t, f"{t} (policy versions behind)") for t in _hist_tags(runs, "buffer/staleness"))
    S.append(_section("staleness", "Staleness", stale, "no buffer/staleness metrics in these runs"))
    thr = page.lines([t for t in ("rollout/tokens_per_s", "rollout/samples_per_s", "learner/tokens_per_s")
                      if any(r.scalars.get(t) for r in runs)])
    thr += page.lines(["learner/idle_fraction"] if any(r.scalars.get("learner/idle_fraction") for r in runs) else [],
                      title=lambda t: "learner idle fraction (wait / step)")
    thr += page.multi("learner s/step: wait (idle), train (dashed)",
                      ["learner/wait_seconds", "learner/train_seconds"])
    thr += page.multi("weight sync s: export, load (dashed)", ["sync/export_seconds", "sync/load_seconds"])
    thr += page.lines([t for t in ("rollout/seconds", "rollout/batch_latency_seconds") if any(r.scalars.get(t) for r in runs)])
    S.append(_section("throughput", "Throughput and idle time", thr, "no throughput metrics in these runs"))
    S.append(_section("eval", "Held-out evaluation", page.lines(_scalar_tags(runs, "eval/")),
                      "no eval/... metrics: these runs had eval.tasks_per_env = 0"))
    S.append(_section("curriculum", "Curriculum: target vs realised pass rate", _curriculum(page),
                      "no curriculum/... metrics in these runs (uniform sampling logs none)"))
    S.append(_section("genrm", "GenRM", _genrm(page), "no genrm/... metrics in these runs (no environment used "
                                                       "the generative reward model)"))
    learner = [t for t in _scalar_tags(runs, "learner/") if t not in page.used]
    S.append(_section("learner", "Learner", page.lines(learner), "no other learner/... metrics"))
    rest = [t for t in _scalar_tags(runs) if t not in page.used]
    S.append(_section("other", "Other metrics", page.lines(rest), "every logged scalar is shown above"))
    hist_rest = [t for t in {t for r in runs for t in r.hists}
                 if not t.startswith(("curriculum/", "genrm/", "buffer/staleness"))]
    if hist_rest:
        S[-1] = S[-1].replace("</div></section>", "".join(page.hist_overlay(t, t) for t in sorted(hist_rest))
                              + "</div></section>")
    title = title or "polyrl report: " + ", ".join(r.name for r in runs)
    nav = " · ".join(f'<a href="#{sid}">{name}</a>' for sid, name in (
        ("runs", "runs"), ("reward", "reward"), ("pass-rate", "pass rate"), ("length", "length"),
        ("importance-sampling", "IS"), ("staleness", "staleness"), ("throughput", "throughput"), ("eval", "eval"),
        ("curriculum", "curriculum"), ("genrm", "GenRM"), ("learner", "learner"), ("other", "other")))
    legend = "".join(f'<span><i style="background:{r.color}"></i>{html.escape(r.name)}</span>' for r in runs)
    made = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 0 24px 40px; color: #222; background: #fff; }}
h1 {{ font-size: 20px; margin: 18px 0 4px; }} h2 {{ font-size: 17px; border-bottom: 1px solid #ddd; margin-top: 28px; }}
nav, .legend {{ margin: 6px 0; }} nav a {{ color: #1f5fa8; }}
.grid {{ display: flex; flex-wrap: wrap; gap: 10px; }}
figure {{ margin: 0; border: 1px solid #e4e4e4; border-radius: 4px; padding: 4px; }}
figcaption, .legend {{ font-size: 12px; max-width: {W}px; }}
figcaption span, .legend span {{ margin-right: 10px; white-space: nowrap; }}
figcaption i, .legend i, i.sw {{ display: inline-block; width: 10px; height: 10px; margin-right: 4px; border-radius: 2px; }}
.ct {{ font-size: 13px; font-weight: 600; }} .yt {{ font-size: 10px; text-anchor: end; fill: #555; }}
.xt {{ font-size: 10px; text-anchor: middle; fill: #555; }}
.grid line.grid, line.grid {{ stroke: #eee; }} .frame {{ fill: none; stroke: #bbb; }}
polyline {{ fill: none; }} .raw {{ stroke-width: 1; opacity: 0.35; }} .series {{ stroke-width: 2.2; }}
.note {{ color: #777; font-style: italic; }}
table.runs {{ border-collapse: collapse; font-size: 13px; }} table.runs td, table.runs th {{ border: 1px solid #ddd; padding: 3px 8px; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<div>generated {made} by <code>python -m rl.report</code>; thin lines raw, thick lines smoothed (EMA {smoothing})</div>
<div class="legend">{legend}</div>
<nav>{nav}</nav>
{"".join(S)}
</body></html>
"""


def write_report(paths: list[Path], out: Path, smoothing: float = 0.6, title: str | None = None) -> Path:
    runs = load_runs([Path(p) for p in paths])
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(runs, smoothing, title))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rl.report", description="Write one self-contained HTML "
                                     "report (inline SVG, opens offline) for one or more run directories.")
    parser.add_argument("run_dirs", nargs="+", type=Path, help="run directories (runs/NAME); several are overlaid")
    parser.add_argument("--out", type=Path, default=None,
                        help="output file (default: RUN_DIR/report.html for one run, ./report.html for several)")
    parser.add_argument("--smoothing", type=float, default=0.6, help="EMA weight in [0, 1), as TensorBoard's slider")
    parser.add_argument("--title", default=None)
    args = parser.parse_args(argv)
    if not 0 <= args.smoothing < 1:
        print(f"error: --smoothing={args.smoothing}: must be in [0, 1)", file=sys.stderr)
        return 2
    out = args.out or (args.run_dirs[0] / "report.html" if len(args.run_dirs) == 1 else Path("report.html"))
    try:
        path = write_report(args.run_dirs, out, args.smoothing, args.title)
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"report: {path.resolve()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
