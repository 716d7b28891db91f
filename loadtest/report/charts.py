"""The run report's charts. Inputs are aggregates and a few thousand points at most, never 1M artists."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.patches import Patch, Rectangle

from loadtest.report.aggregate import LEVEL_MIN_SHARE, MIN_LEVEL_SAMPLES
from loadtest.report.charts_common import (
    BAND_COLOR,
    Q_STYLES,
    STAGE_COLORS,
    TARGET_COLOR,
    new_figure,
    no_data,
    save,
    style,
)
from loadtest.report.charts_time import errors_over_time, latency_over_time, rtc_over_time
from loadtest.report.model import BUDGET_BANDS, PIPELINE_STAGES, STAGES, ChartFile, RunSummary
from loadtest.report.stats import clean_sorted
from loadtest.report.timeseries import TimeSeries

CDF_POINTS = 2001
STRIP_MAX_POINTS = 100


def render_run_charts(
    out_dir: Path, summary: RunSummary, ts: TimeSeries, values: dict[str, np.ndarray]
) -> list[ChartFile]:
    """Every chart of one run into out_dir (PNG + SVG each); knee and RTC charts only when meaningful."""
    charts = []
    with style():
        charts.append(e2e_cdf(out_dir, summary, values["e2e"]))
        charts.append(stage_distributions(out_dir, summary, values))
        charts.append(stage_breakdown(out_dir, summary))
        charts.append(latency_over_time(out_dir, summary, ts))
        if len(summary.levels) > 1:
            charts.append(latency_vs_callers(out_dir, summary))
        charts.append(errors_over_time(out_dir, summary, ts))
        if ts.rtc:
            charts.append(rtc_over_time(out_dir, ts))
    return charts


def _target_line(ax, target_ms: float, vertical: bool = True) -> None:
    line = ax.axvline if vertical else ax.axhline
    line(target_ms, color=TARGET_COLOR, ls="--", lw=1.5, label=f"target {target_ms:.0f} ms")


def e2e_cdf(out_dir: Path, summary: RunSummary, e2e: np.ndarray) -> ChartFile:
    fig, ax = new_figure()
    x = clean_sorted(e2e)
    sent = summary.counts.sent
    target = summary.target_ms
    if x.size == 0 or sent == 0:
        no_data(ax, "no e2e samples")
    else:
        if x.size <= CDF_POINTS:
            # Few samples: the exact empirical CDF, a step per utterance (interpolating would invent values).
            xs = np.concatenate(([x[0]], x))
            ys = np.arange(x.size + 1) / sent
            ax.step(xs, ys * 100, where="post", color=STAGE_COLORS["e2e"], lw=2, label="e2e (voice to voice)")
            if x.size <= 100:
                ax.plot(x, ys[1:] * 100, "o", color=STAGE_COLORS["e2e"], ms=4)
        else:
            # Many: the quantile function at fixed probabilities, exact shape at constant cost.
            p = np.linspace(0.0, 1.0, CDF_POINTS)
            y = p * (x.size / sent)  # a share of *sent* utterances: timeouts/errors keep the curve below 1
            ax.plot(np.quantile(x, p), y * 100, color=STAGE_COLORS["e2e"], lw=2, label="e2e (voice to voice)")
        share = summary.rates.e2e_under_target
        ax.axvline(
            target,
            color=TARGET_COLOR,
            ls="--",
            lw=1.5,
            label=f"target {target:.0f} ms: {share:.1%} of sent under it",  # in the legend: never clipped
        )
        ax.axhline(share * 100, color="#777777", ls=":", lw=1)
        ax.set_xlim(0, max(float(np.quantile(x, 0.999)) * 1.05, target * 1.15))
        ax.set_ylim(0, 102)
        ax.legend(loc="lower right")
    ax.set_xlabel("e2e latency (ms): end of speech → first translated audio")
    ax.set_ylabel("utterances at or below (% of sent)")
    ax.set_title("End-to-end latency, cumulative distribution")
    caption = (
        "Cumulative share of all sent utterances whose voice-to-voice latency is at or below x. "
        "Timed-out and failed utterances never arrive, so the curve tops out at the success rate."
    )
    return save(fig, out_dir, "e2e_cdf", "E2E latency CDF", caption)


def stage_distributions(out_dir: Path, summary: RunSummary, values: dict[str, np.ndarray]) -> ChartFile:
    fig, ax = new_figure()
    boxes, positions, names = [], [], []
    for i, stage in enumerate(STAGES):
        x = clean_sorted(values[stage])
        if x.size == 0:
            continue
        q1, q5, q25, q50, q75, q95, q99 = np.quantile(x, [0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99])
        boxes.append(
            {
                "whislo": q5,
                "q1": q25,
                "med": q50,
                "q3": q75,
                "whishi": q95,
                "fliers": [q1, q99],
                "label": stage,
            }
        )
        positions.append(i)
        names.append(stage)
    if not boxes:
        no_data(ax, "no stage latencies")
    else:
        for i, stage in enumerate(STAGES):
            band = BUDGET_BANDS.get(stage)
            if band:
                ax.add_patch(
                    Rectangle(
                        (i - 0.42, band[0]), 0.84, band[1] - band[0], color=BAND_COLOR, alpha=0.18, lw=0
                    )
                )
        art = ax.bxp(
            boxes,
            positions=positions,
            widths=0.5,
            patch_artist=True,
            showfliers=True,
            flierprops={"marker": "_", "markersize": 14, "markeredgecolor": "#333333"},
            medianprops={"color": "black", "lw": 2},
        )
        for patch, name in zip(art["boxes"], names, strict=True):
            patch.set_facecolor(STAGE_COLORS[name])
            patch.set_alpha(0.55)
        _strip_points(ax, values, positions, names)
        e2e_pos = STAGES.index("e2e")
        ax.hlines(summary.target_ms, e2e_pos - 0.42, e2e_pos + 0.42, color=TARGET_COLOR, ls="--", lw=1.5)
        ax.set_yscale("log")
        # The count under each name: a box drawn from 3 connects must not look as solid as one from 3000.
        counts = {s: clean_sorted(values[s]).size for s in STAGES}
        ax.set_xticks(range(len(STAGES)), [f"{s}\nn = {counts[s]:,}" for s in STAGES])
        ax.set_xlim(-0.6, len(STAGES) - 0.4)
        ax.legend(
            handles=[
                Patch(color=BAND_COLOR, alpha=0.3, label="production budget range"),
                Patch(facecolor="white", edgecolor="black", label="box p25–p75, line p50, whiskers p5–p95"),
                ax.plot([], [], "_", color="#333333", markersize=14, label="p1 / p99")[0],
                ax.plot([], [], "--", color=TARGET_COLOR, label=f"e2e target {summary.target_ms:.0f} ms")[0],
                *(
                    [ax.plot([], [], "o", color="#333333", ms=3, label="samples (stages with ≤ 100)")[0]]
                    if any(0 < clean_sorted(values[n]).size <= STRIP_MAX_POINTS for n in names)
                    else []
                ),
            ],
            loc="upper left",
        )
    ax.set_ylabel("latency (ms, log scale)")
    ax.set_xlabel("stage")
    ax.set_title("Latency per stage")
    caption = (
        "Per-stage distributions (connect once per conversation). Green bands: production budget ranges "
        "(connect/DTLS 50–100, STT 200–500, translation 50–150, TTS 300–800 ms)."
    )
    return save(fig, out_dir, "stage_distributions", "Per-stage distributions", caption)


def _strip_points(ax, values: dict[str, np.ndarray], positions: list[int], names: list[str]) -> None:
    """Each sample as a point beside its box when there are few: percentiles of 12 values are thin."""
    rng = np.random.default_rng(0)  # fixed jitter: the same run draws the same chart
    for pos, name in zip(positions, names, strict=True):
        x = clean_sorted(values[name])
        if 0 < x.size <= STRIP_MAX_POINTS:
            dx = rng.uniform(-0.12, 0.12, x.size)
            ax.scatter(pos + 0.36 + dx, x, s=12, color="#333333", alpha=0.6, lw=0, zorder=3)


def stage_breakdown(out_dir: Path, summary: RunSummary) -> ChartFile:
    fig, ax = new_figure(figsize=(10.0, 3.8))
    rows = [("p50", "median (p50)"), ("p95", "p95")]
    have = all(summary.stages[s].count for s in PIPELINE_STAGES)
    if not have:
        no_data(ax, "a pipeline stage has no samples")
    else:
        labels = []
        for y, (stat, label) in enumerate([*rows, ("budget", "budget (upper)")]):
            left = 0.0
            for stage in PIPELINE_STAGES:
                width = BUDGET_BANDS[stage][1] if stat == "budget" else summary.stages[stage].stat(stat)
                ax.barh(
                    y,
                    width,
                    left=left,
                    color=STAGE_COLORS[stage],
                    alpha=0.35 if stat == "budget" else 0.8,
                    edgecolor="white",
                    label=stage if y == 0 else None,
                )
                if width > 60:
                    ax.text(left + width / 2, y, f"{width:.0f}", ha="center", va="center", fontsize=9)
                left += width
            labels.append(label)
            if stat != "budget" and summary.stages["e2e"].count:
                e2e = summary.stages["e2e"].stat(stat)
                ax.plot(
                    [e2e, e2e],
                    [y - 0.4, y + 0.4],
                    color="black",
                    lw=2.5,
                    label="measured e2e at that percentile" if y == 0 else None,
                )
        _target_line(ax, summary.target_ms)
        ax.set_yticks(range(len(labels)), labels)
        ax.invert_yaxis()
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: bars reach any x
    ax.set_xlabel("latency (ms)")
    ax.set_title("Where the time goes: STT + translation + TTS")
    caption = (
        "Stacked per-stage medians and p95s beside the production budget. Percentiles do not add up: the "
        "black tick is the measured e2e percentile, usually below the sum of the stage p95s."
    )
    return save(fig, out_dir, "stage_breakdown", "Stage breakdown", caption)


def latency_vs_callers(out_dir: Path, summary: RunSummary) -> ChartFile:
    fig, ax = new_figure()
    levels = summary.levels
    x = np.array([lv.callers for lv in levels], dtype=float)
    for name in ("p50", "p95", "p99"):
        color, ls = Q_STYLES[name]
        y = np.array([lv.stages["e2e"].stat(name) for lv in levels])
        if name == "p95":
            lo = np.array([lv.stages["e2e"].p95_ci.low for lv in levels])
            hi = np.array([lv.stages["e2e"].p95_ci.high for lv in levels])
            ax.errorbar(
                x,
                y,
                yerr=[y - lo, hi - y],
                color=color,
                ls=ls,
                marker="o",
                capsize=3,
                label="e2e p95 (95 % CI)",
            )
        else:
            ax.plot(x, y, color=color, ls=ls, marker="o", label=f"e2e {name}")
    for stage in PIPELINE_STAGES:
        y = np.array([lv.stages[stage].p95 for lv in levels])
        ax.plot(x, y, color=STAGE_COLORS[stage], ls="--", lw=1, marker=".", label=f"{stage} p95")
    _target_line(ax, summary.target_ms, vertical=False)
    if summary.capacity_callers is not None:
        ax.axvline(
            summary.capacity_callers,
            color="#2e7d32",
            lw=1.2,
            ls="-.",
            label=f"capacity at target: {summary.capacity_callers} callers",
        )
    ax.set_ylim(bottom=0)
    ax2 = ax.twinx()
    fail = np.array([(lv.rates.error_rate + lv.rates.timeout_rate) * 100 for lv in levels])
    width = max(0.5, (np.ptp(x) / max(len(x), 1)) * 0.3) if len(x) > 1 else 0.5
    bars = ax2.bar(x, fail, width=width, color="#9e9e9e", alpha=0.35, label="failed (error + timeout) %")
    ax2.set_ylabel("failed utterances (%)")
    ax2.set_ylim(0, max(5.0, float(fail.max()) * 1.3) if fail.size else 5.0)
    ax2.grid(False)
    ax2.spines["right"].set_visible(True)
    handles, _ = ax.get_legend_handles_labels()
    ax.legend(handles=[*handles, bars], loc="upper left", ncols=2)  # one legend, drawn above both axes
    ax.set_zorder(ax2.get_zorder() + 1)
    ax.patch.set_visible(False)
    ax.set_xlabel("active callers (summed over tester processes)")
    ax.set_ylabel("latency (ms)")
    ax.set_title("Latency vs concurrency (the knee)")
    caption = (
        f"Per caller level held for ≥ {LEVEL_MIN_SHARE:.0%} of the run's utterances "
        f"(and ≥ {MIN_LEVEL_SAMPLES}): e2e percentiles, stage p95s and the failed share. "
        "Capacity = highest level up to which e2e p95 stays under target with ≤ 1 % failed."
    )
    return save(fig, out_dir, "latency_vs_callers", "Latency vs concurrency", caption)
