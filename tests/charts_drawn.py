"""What the run report's charts draw, read back from their matplotlib figures and checked against the data.

A PNG's size says nothing about its content: a chart with empty axes is a valid, large PNG. These
helpers capture every Figure as it is saved (the files are still written) and compare the artists on it
(line data, box statistics, bar heights, scatter points) with figures computed here from the samples
with numpy/pandas, not with the report's aggregation code. Two things are borrowed: the bin width
(timeseries.choose_bin, tested on its own) and, for the knee chart, the per-level table of the summary
(test_report_aggregate checks it against np.percentile).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import PathPatch

from loadtest.report.charts_common import time_unit
from loadtest.report.model import BUDGET_BANDS, RunSummary
from loadtest.report.timeseries import LINE_MIN_PER_BIN, P99_MIN_PER_BIN, SCATTER_POINTS, choose_bin

STAGES = ("connect", "stt", "translation", "tts", "e2e")
PIPELINE = ("stt", "translation", "tts")
RTC = ("jitter_ms", "packets_lost", "rtt_ms")
REL = 1e-9  # same numbers computed two ways: only float rounding may differ


@contextmanager
def captured_figures() -> Iterator[dict[str, Figure]]:
    """Every Figure saved meanwhile, by file stem ("e2e_cdf"), still written to disk as usual."""
    figures: dict[str, Figure] = {}
    original = Figure.savefig

    def savefig(self: Figure, fname: Any, *args: Any, **kwargs: Any) -> Any:
        figures.setdefault(Path(str(fname)).stem, self)
        return original(self, fname, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Figure, "savefig", savefig)
        yield figures


def lines(ax: Any) -> dict[str, Line2D]:
    return {ln.get_label(): ln for ln in ax.get_lines()}


def line(ax: Any, label: str) -> Line2D:
    drawn = lines(ax)
    assert label in drawn, f"no line {label!r} on {ax.get_title()!r}: {sorted(drawn)}"
    return drawn[label]


def xy(line: Line2D) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(line.get_xdata(), dtype=float), np.asarray(line.get_ydata(), dtype=float)


def close(actual: Any, expected: Any, what: str, rel: float = REL, abs_: float = 1e-9) -> None:
    np.testing.assert_allclose(np.asarray(actual, float), np.asarray(expected, float), rtol=rel, atol=abs_,
                               err_msg=what)


# --------------------------------------------------------------------------- the data, computed here

def status_of(frame: pd.DataFrame) -> np.ndarray:
    return frame["status"].astype(str).str.strip().str.lower().to_numpy()


def finite(values: Any) -> np.ndarray:
    x = np.asarray(values, dtype=float)
    return np.sort(x[np.isfinite(x)])


def stage_samples(frame: pd.DataFrame, stage: str) -> np.ndarray:
    if stage == "connect":  # once per conversation, as docs/samples.md defines the connect stage
        sub = frame.loc[frame["connect_ms"].notna(), ["worker", "conversation", "connect_ms"]]
        return finite(sub.drop_duplicates()["connect_ms"])
    return finite(frame[f"{stage}_ms"])


def time_bins(frame: pd.DataFrame) -> tuple[pd.Series, float]:
    """Each row's time bin (seconds since the first send // bin width) and the width."""
    t = frame["wall_start"] - frame["wall_start"].min()
    bin_s = choose_bin(float(t.max()), int(t.notna().sum()))
    return np.floor(t / bin_s).astype(int), bin_s


def per_bin(frame: pd.DataFrame, column: str, q: float) -> tuple[np.ndarray, np.ndarray]:
    """(mean send time, quantile of `column`) of every bin holding a value, in time order."""
    bins, _ = time_bins(frame)
    t = frame["wall_start"] - frame["wall_start"].min()
    t_mean = t.groupby(bins).mean()
    q_by_bin = frame[column].groupby(bins).quantile(q).dropna()
    return t_mean.loc[q_by_bin.index].to_numpy(), q_by_bin.to_numpy()


# --------------------------------------------------------------------------- one check per chart

def check_e2e_cdf(fig: Figure, frame: pd.DataFrame, target_ms: float) -> None:
    (ax,) = fig.axes
    x = stage_samples(frame, "e2e")
    sent = len(frame)
    lx, ly = xy(line(ax, "e2e (voice to voice)"))
    if x.size <= 2001:  # the exact empirical CDF: a step per utterance
        close(lx, np.concatenate(([x[0]], x)), "e2e CDF steps at the samples")
        close(ly, np.arange(x.size + 1) / sent * 100, "e2e CDF rises 1/sent per sample")
    else:
        p = np.linspace(0, 1, lx.size)
        close(lx, np.quantile(x, p), "e2e CDF is the quantile function of the e2e samples")
        close(ly, p * x.size / sent * 100, "e2e CDF as a share of sent")
    ok = int(((status_of(frame) == "ok") & frame["e2e_ms"].notna()).sum())
    assert ly[-1] == pytest.approx(100 * ok / sent), "the CDF must top out at the success rate"
    under = int(((status_of(frame) == "ok") & (frame["e2e_ms"] < target_ms)).sum())
    target = next(ln for label, ln in lines(ax).items() if label.startswith(f"target {target_ms:.0f} ms"))
    close(xy(target)[0], [target_ms, target_ms], "target line")
    share = [ln for ln in ax.get_lines() if ln.get_linestyle() == ":"]
    assert len(share) == 1
    close(xy(share[0])[1], [100 * under / sent] * 2, "under-target share line")


def box_stats(ax: Any, pos: int) -> dict[str, float]:
    """The statistics bxp drew at x = pos: box, median, whiskers, caps and the p1/p99 fliers."""
    at = [ln for ln in ax.get_lines() if len(ln.get_xdata()) == 2 and np.mean(ln.get_xdata()) == pos]
    out: dict[str, float] = {}
    for ln in at:
        x, y = xy(ln)
        if ln.get_marker() == "_":
            out["p1"], out["p99"] = sorted(y)
        elif x[0] == x[1]:  # a whisker: from the box edge out to p5 or p95
            edge, end = y
            out["p5" if end < edge else "p95"] = end
        elif x[1] - x[0] == pytest.approx(0.5):
            out["p50"] = y[0]
    boxes = [p for p in ax.patches if isinstance(p, PathPatch)]
    verts = next(
        b.get_path().vertices for b in boxes if np.mean(b.get_path().vertices[:4, 0]) == pytest.approx(pos)
    )
    out["p25"], out["p75"] = float(verts[:, 1].min()), float(verts[:, 1].max())
    return out


def _near(offsets: Any, x: float, tol: float) -> bool:
    points = np.asarray(offsets)
    return bool(points.size) and abs(float(np.mean(points[:, 0])) - x) < tol


def check_stage_distributions(fig: Figure, frame: pd.DataFrame, summary: RunSummary) -> None:
    (ax,) = fig.axes
    drawn = 0
    for pos, stage in enumerate(STAGES):
        x = stage_samples(frame, stage)
        if x.size == 0:
            continue
        drawn += 1
        qs = {"p1": 0.01, "p5": 0.05, "p25": 0.25, "p50": 0.5, "p75": 0.75, "p95": 0.95, "p99": 0.99}
        got = box_stats(ax, pos)
        assert set(got) == set(qs), (stage, got)
        for name, q in qs.items():
            assert got[name] == pytest.approx(float(np.quantile(x, q)), rel=REL), (stage, name)
        strip = [c for c in ax.collections if _near(c.get_offsets(), pos + 0.36, 0.13)]  # jittered points
        if x.size <= 100:  # few samples: every one drawn beside its box
            assert len(strip) == 1 and sorted(strip[0].get_offsets()[:, 1]) == pytest.approx(list(x)), stage
        else:
            assert strip == [], stage
    assert len([p for p in ax.patches if isinstance(p, PathPatch)]) == drawn
    target = [c for c in ax.collections if isinstance(c, LineCollection)]  # the e2e target, at the e2e box
    (segments,) = [c.get_segments() for c in target]
    e2e_pos = STAGES.index("e2e")
    target_ms = summary.target_ms
    close(segments, [[[e2e_pos - 0.42, target_ms], [e2e_pos + 0.42, target_ms]]], "e2e target at the e2e box")


def check_stage_breakdown(fig: Figure, frame: pd.DataFrame) -> None:
    (ax,) = fig.axes
    rows: dict[float, list[Any]] = {}
    for bar in ax.patches:
        rows.setdefault(round(bar.get_y() + bar.get_height() / 2, 6), []).append(bar)
    assert sorted(rows) == [0.0, 1.0, 2.0]
    expected = {
        0.0: [np.percentile(stage_samples(frame, s), 50) for s in PIPELINE],
        1.0: [np.percentile(stage_samples(frame, s), 95) for s in PIPELINE],
        2.0: [BUDGET_BANDS[s][1] for s in PIPELINE],
    }
    for y, widths in expected.items():
        bars = sorted(rows[y], key=lambda b: b.get_x())
        close([b.get_width() for b in bars], widths, f"stacked widths of row {y}")
        close([b.get_x() for b in bars], np.concatenate(([0.0], np.cumsum(widths)[:-1])), f"row {y} stacks")
    e2e = stage_samples(frame, "e2e")
    ticks = [ln for ln in ax.get_lines() if ln.get_color() == "black"]
    close([xy(t)[0][0] for t in ticks], [np.percentile(e2e, 50), np.percentile(e2e, 95)], "e2e ticks")


def check_latency_over_time(fig: Figure, frame: pd.DataFrame, summary: RunSummary) -> None:
    ax = fig.axes[0]
    e2e = finite(frame["e2e_ms"])
    scatter = next(c for c in ax.collections if c.get_label().startswith("utterances"))
    points = np.asarray(scatter.get_offsets())
    assert len(points) == min(e2e.size, SCATTER_POINTS)
    if e2e.size <= SCATTER_POINTS:
        close(np.sort(points[:, 1]), e2e, "one point per e2e sample")
    else:
        assert np.isin(points[:, 1], e2e).all(), "scatter points are e2e samples"
    bins, bin_s = time_bins(frame)
    counts = frame["e2e_ms"].notna().groupby(bins).sum()
    typical = float(np.median(counts[counts > 0]))
    drawn = lines(ax)
    scale, _ = time_unit(float(bins.max() + 1) * bin_s)  # the axis unit: s, min or h by the run's length
    if typical < LINE_MIN_PER_BIN:  # one or two a bin: the run's percentiles as reference lines
        for name, q in (("p50", 50), ("p95", 95)):
            value = float(np.percentile(e2e, q))
            close(xy(line(ax, f"run e2e {name} {value:.0f} ms"))[1], [value, value], f"run {name} line")
    else:
        names = [("p50", 0.5), ("p95", 0.95)] + ([("p99", 0.99)] if typical >= P99_MIN_PER_BIN else [])
        per = [ln for label, ln in drawn.items() if label.startswith("e2e p") and " per " in label]
        assert len(per) == len(names)
        for (name, q), ln in zip(names, per, strict=True):
            t, v = per_bin(frame, "e2e_ms", q)
            lx, ly = xy(ln)
            assert ln.get_label().startswith(f"e2e {name} per ")
            close(ly, v, f"per-bin e2e {name}")
            close(lx * scale, t, f"per-bin {name} at the bins' mean send time", abs_=1e-6)
    status = status_of(frame)
    failed = status != "ok"
    if 0 < failed.sum() <= 200:
        for kind, label in (("timeout", "timeout (no e2e)"), ("error", "error")):
            marks = [c for c in ax.collections if c.get_label() == label]
            assert sum(len(c.get_offsets()) for c in marks) == int((status == kind).sum()), kind


def check_errors_over_time(fig: Figure, frame: pd.DataFrame) -> None:
    ax = fig.axes[0]
    bins, _ = time_bins(frame)
    status = pd.Series(status_of(frame), index=frame.index)
    err = (status == "error").groupby(bins).mean() * 100
    tout = (status == "timeout").groupby(bins).mean() * 100
    error_bars, timeout_bars = (list(c) for c in ax.containers)
    close([b.get_height() for b in error_bars], err.to_numpy(), "error share per bin")
    close([b.get_height() for b in timeout_bars], tout.to_numpy(), "timeout share per bin")
    close([b.get_y() for b in timeout_bars], err.to_numpy(), "timeouts stacked on errors")


def check_rtc(fig: Figure, frame: pd.DataFrame) -> None:
    axes = [ax for ax in fig.axes if ax.get_title()]
    columns = [c for c in RTC if c in frame and frame[c].notna().any()]
    assert len(axes) == len(columns)
    titles = {"jitter_ms": "jitter", "packets_lost": "packets lost (cumulative)", "rtt_ms": "RTT"}
    for col in columns:
        ax = next(a for a in axes if a.get_title() == titles[col])
        _, v = per_bin(frame, col, 0.5)
        close(xy(line(ax, "p50 per bin"))[1], v, f"{col} p50 per bin")


def check_latency_vs_callers(fig: Figure, summary: RunSummary) -> None:
    ax, ax2 = fig.axes
    levels = summary.levels
    x = [lv.callers for lv in levels]
    for name in ("p50", "p99"):
        close(xy(line(ax, f"e2e {name}"))[0], x, "knee x = caller levels")
        expected = [lv.stages["e2e"].stat(name) for lv in levels]
        close(xy(line(ax, f"e2e {name}"))[1], expected, f"knee e2e {name}")
    (bar,) = ax.containers
    close(xy(bar.lines[0])[1], [lv.stages["e2e"].p95 for lv in levels], "knee e2e p95 (with CI)")
    for stage in PIPELINE:
        close(xy(line(ax, f"{stage} p95"))[1], [lv.stages[stage].p95 for lv in levels], f"knee {stage} p95")
    (bars,) = ax2.containers
    fail = [(lv.rates.error_rate + lv.rates.timeout_rate) * 100 for lv in levels]
    close([b.get_height() for b in bars], fail, "failed share per level")
    if summary.capacity_callers is not None:
        cap = line(ax, f"capacity at target: {summary.capacity_callers} callers")
        close(xy(cap)[0], [summary.capacity_callers] * 2, "capacity line")


def check_run_charts(figures: dict[str, Figure], frame: pd.DataFrame, summary: RunSummary) -> None:
    """Every chart of one run against the samples it was drawn from."""
    check_e2e_cdf(figures["e2e_cdf"], frame, summary.target_ms)
    check_stage_distributions(figures["stage_distributions"], frame, summary)
    check_stage_breakdown(figures["stage_breakdown"], frame)
    check_latency_over_time(figures["latency_over_time"], frame, summary)
    check_errors_over_time(figures["errors_over_time"], frame)
    if "rtc_stats" in figures:
        check_rtc(figures["rtc_stats"], frame)
    if "latency_vs_callers" in figures:
        check_latency_vs_callers(figures["latency_vs_callers"], summary)
