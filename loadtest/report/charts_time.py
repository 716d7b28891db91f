"""Charts over run time: e2e latency, errors/timeouts, RTC stats, each with the active callers.

They must read for a 30 s run with a dozen utterances as well as for an hour with a million: bins adapt to
the run (timeseries.choose_bin), lines skip empty bins, and when bins hold too few samples for a per-bin
percentile to mean anything the utterances are drawn one by one with the run's percentiles beside them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.ticker import MaxNLocator

from loadtest.report.charts_common import (
    CALLERS_COLOR,
    FAIL_STYLES,
    POINT_COLOR,
    Q_STYLES,
    TARGET_COLOR,
    fmt_span,
    line_through,
    new_figure,
    no_data,
    point_style,
    save,
    time_unit,
)
from loadtest.report.model import ChartFile, RunSummary
from loadtest.report.timeseries import LINE_MIN_PER_BIN, P99_MIN_PER_BIN, TimeSeries

RTC_LABELS = {
    "jitter_ms": ("jitter", "ms"),
    "packets_lost": ("packets lost (cumulative)", "packets"),
    "rtt_ms": ("RTT", "ms"),
}


def _time_axis(ax: Any, ts: TimeSeries, label: bool = True) -> float:
    """x limits with a little room so points at t = 0 and at the end are not cut in half; returns scale."""
    scale, unit = time_unit(ts.end_s)
    pad = 0.02 * ts.end_s / scale
    ax.set_xlim(-pad, ts.end_s / scale + pad)
    if label:
        ax.set_xlabel(f"time since the first planned send ({unit})")
    return scale


def _with_callers_strip(figsize: tuple[float, float]) -> tuple[Any, Any, Any]:
    """A main panel over a thin active-callers strip sharing its time axis.

    A strip, not a twin axis: a callers line drawn across the latency panel reads as one more latency line.
    """
    fig, (ax, strip) = new_figure(2, 1, figsize=figsize, sharex=True, height_ratios=[4, 1])
    return fig, ax, strip


def _callers_strip(strip: Any, ts: TimeSeries, scale: float) -> None:
    """Active callers as a step line; the last known count holds to the end of the axis."""
    _time_axis(strip, ts)
    strip.set_ylabel("callers")
    strip.yaxis.set_major_locator(MaxNLocator(integer=True, nbins=3))
    if ts.callers_v.size == 0:
        strip.text(0.5, 0.5, "active callers unknown", transform=strip.transAxes, ha="center", color="#777")
        strip.set_yticks([])
        return
    t = np.append(ts.callers_t, max(ts.end_s, float(ts.callers_t[-1]))) / scale
    v = np.append(ts.callers_v, ts.callers_v[-1])
    strip.fill_between(t, v, step="post", color=CALLERS_COLOR, alpha=0.15, lw=0)
    strip.step(t, v, where="post", color=CALLERS_COLOR, lw=1.4, label="active callers")
    strip.set_ylim(0, max(1.0, float(np.max(v))) * 1.3)


def _legend_below(fig: Any, *axes: Any) -> None:
    """One legend under the plot(s): over the data it would hide the points it explains."""
    by_label: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            by_label.setdefault(label, handle)
    if by_label:
        fig.legend(
            by_label.values(), by_label.keys(), loc="outside lower center", ncols=min(len(by_label), 4)
        )


def _y_top(ts: TimeSeries, lines: list[np.ndarray], target_ms: float) -> float:
    """Every drawn line, the target, and the points (all of a small run; a big one's p99.5, not outliers)."""
    tops = [target_ms * 1.15]
    for y in lines:
        if np.isfinite(y).any():
            tops.append(float(np.nanmax(y)) * 1.1)
    if ts.scatter_e2e.size:
        few = ts.scatter_e2e.size <= 1000
        tops.append(float(np.max(ts.scatter_e2e) if few else np.quantile(ts.scatter_e2e, 0.995)) * 1.1)
    return max(tops)


def latency_over_time(out_dir: Path, summary: RunSummary, ts: TimeSeries) -> ChartFile:
    fig, ax, strip = _with_callers_strip((10.0, 6.0))
    sparse = ts.per_bin < LINE_MIN_PER_BIN
    if ts.empty or ts.scatter_total == 0:
        no_data(ax, "no timed e2e samples")
        strip.set_visible(False)
        how = ""
    else:
        scale = _time_axis(ax, ts, label=False)
        n = ts.scatter_e2e.size
        label = (
            f"utterances ({n:,})"
            if n == ts.scatter_total
            else f"utterances (random {n:,} of {ts.scatter_total:,})"
        )
        ax.scatter(
            ts.scatter_t / scale, ts.scatter_e2e, color=POINT_COLOR, label=label, zorder=2, **point_style(n)
        )
        drawn = []
        if sparse:
            # One or two samples a bin: a per-bin "p95" would just repeat the points. The run's own
            # percentiles, as reference lines, are what the points should be read against.
            e2e = summary.stages["e2e"]
            for name in ("p50", "p95"):
                color, _ = Q_STYLES[name]
                value = e2e.stat(name)
                ax.axhline(value, color=color, ls="-.", lw=1.3, label=f"run e2e {name} {value:.0f} ms")
            how = "each utterance's e2e latency at its planned send time, the run's p50/p95 as lines"
        else:
            names = ("p50", "p95", "p99") if ts.per_bin >= P99_MIN_PER_BIN else ("p50", "p95")
            for j, name in enumerate(names):
                color, ls = Q_STYLES[name]
                label = f"e2e {name} per {fmt_span(ts.bin_s)}"
                line_through(
                    ax, ts.t_mean / scale, ts.e2e_q[:, j], color=color, ls=ls, lw=1.8, label=label, zorder=3
                )
                drawn.append(ts.e2e_q[:, j])
            span = fmt_span(ts.bin_s)
            how = f"exact e2e {'/'.join(names)} per {span} bin of planned send time over the points"
        ax.axhline(
            summary.target_ms, color=TARGET_COLOR, ls="--", lw=1.5, label=f"target {summary.target_ms:.0f} ms"
        )
        top = _y_top(ts, drawn, summary.target_ms)
        for status, (color, flabel) in FAIL_STYLES.items():
            at = ts.fail_t[ts.fail_status == status]
            if at.size:  # no e2e to plot: a mark along the top edge at its send time
                ax.scatter(
                    at / scale, np.full(at.size, top * 0.97), marker="x", s=36, color=color, label=flabel
                )
        ax.set_ylim(0, top)
        _callers_strip(strip, ts, scale)
        _legend_below(fig, ax)
    ax.set_ylabel("e2e latency (ms)")
    ax.set_title("E2E latency over time")
    caption = f"{how.capitalize()}; active callers below." if how else "No timed e2e samples."
    if ts.fail_t.size:
        caption += " Crosses along the top: utterances that timed out or failed (no e2e)."
    return save(fig, out_dir, "latency_over_time", "Latency over time", caption)


def errors_over_time(out_dir: Path, summary: RunSummary, ts: TimeSeries) -> ChartFile:
    fig, ax, strip = _with_callers_strip((10.0, 5.0))
    if ts.empty:
        no_data(ax, "no timed samples")
        strip.set_visible(False)
    else:
        scale = _time_axis(ax, ts, label=False)
        have = ts.sent > 0
        left, width = ts.t[have] / scale, ts.bin_s / scale
        err = ts.error_rate[have] * 100
        tout = ts.timeout_rate[have] * 100
        # Bars only where something was sent: an empty bin has no share, not a share of 0 %.
        ax.bar(left, err, width=width, align="edge", color="#d62728", alpha=0.75, label="error")
        ax.bar(
            left, tout, width=width, bottom=err, align="edge", color="#ff9800", alpha=0.75, label="timeout"
        )
        failed = summary.counts.error + summary.counts.timeout
        if failed == 0:
            ax.text(
                0.5, 0.55, f"no errors or timeouts in {summary.counts.sent:,} utterances",
                transform=ax.transAxes, ha="center", va="center", fontsize=13, color="#2e7d32",
            )  # fmt: skip
        peak = float((err + tout).max()) if have.any() else 0.0
        ax.set_ylim(0, min(105.0, max(5.0, peak * 1.2)))
        _callers_strip(strip, ts, scale)
        _legend_below(fig, ax)
    ax.set_ylabel("share of the bin's utterances (%)")
    ax.set_title("Errors and timeouts over time")
    caption = (
        f"Per {fmt_span(ts.bin_s)} bin of planned send time, the share of the utterances sent in it that "
        "ended in error or timeout (stacked; no bar where nothing was sent); active callers below."
    )
    return save(fig, out_dir, "errors_over_time", "Errors and timeouts over time", caption)


def rtc_over_time(out_dir: Path, ts: TimeSeries) -> ChartFile:
    cols = list(ts.rtc)
    fig, axes = new_figure(1, len(cols), figsize=(10.0, 3.8))
    axes = np.atleast_1d(axes)
    for ax, col in zip(axes, cols, strict=True):
        label, unit = RTC_LABELS.get(col, (col, ""))
        scale = _time_axis(ax, ts)
        ax.set_xlabel(ax.get_xlabel().replace("since the first planned send", "since start"))
        top = 1.0
        if col in ts.rtc_points:  # small run: the values themselves, the bin lines only summarise them
            pt, pv = ts.rtc_points[col]
            ax.scatter(pt / scale, pv, color="#999999", s=14, alpha=0.7, lw=0, label="values", zorder=2)
            top = max(top, float(np.max(pv)))
        q = ts.rtc[col]
        counts = ts.rtc_count.get(col, np.ones(len(ts.t)))
        q = np.where((counts > 0)[:, None], q, np.nan)
        names = ("p50", "p95") if np.median(counts[counts > 0]) >= LINE_MIN_PER_BIN else ("p50",)
        for j, name in enumerate(names):
            line_through(
                ax, ts.t_mean / scale, q[:, j], color=Q_STYLES[name][0], lw=1.5, label=f"{name} per bin"
            )
        if np.isfinite(q).any():
            top = max(top, float(np.nanmax(q)))
        if not np.isfinite(q).any() or np.nanmax(q) == 0:
            text = "no packets lost" if col == "packets_lost" else "all values 0"
            ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", fontsize=12, color="#2e7d32")
        ax.set_ylim(-0.04 * top * 1.3, top * 1.3)  # a little below 0: zeros sit above the axis line
        ax.set_title(label)
        ax.set_ylabel(f"{label.split(' (')[0]} ({unit})")
    fig.suptitle("WebRTC stats over time", fontweight="bold")
    _legend_below(fig, *axes)
    missing = [RTC_LABELS[c][0] for c in RTC_LABELS if c not in ts.rtc]
    caption = (
        f"Per {fmt_span(ts.bin_s)} bin p50/p95 of the RTC stats the clients reported with each utterance "
        "(listener's consumer, speaker's producer); a value is missing until the first stats poll."
    )
    if missing:
        caption += f" Not reported in this run: {', '.join(missing)}."
    return save(fig, out_dir, "rtc_stats", "RTC stats", caption)
