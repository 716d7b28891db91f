"""Charts across runs: baseline vs candidate CDFs, and the nightly trend."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from loadtest.report.charts_common import (
    BAND_COLOR,
    STAGE_COLORS,
    TARGET_COLOR,
    new_figure,
    no_data,
    save,
    style,
)
from loadtest.report.compare import stage_call
from loadtest.report.model import BUDGET_BANDS, STAGES, ChartFile, Comparison
from loadtest.report.stats import clean_sorted

CDF_POINTS = 1001


def compare_charts(
    out_dir: Path,
    cmp: Comparison,
    baseline: dict[str, np.ndarray],
    candidate: dict[str, np.ndarray],
    target_ms: float,
) -> list[ChartFile]:
    with style():
        return [_compare_cdfs(out_dir, cmp, baseline, candidate, target_ms)]


def _compare_cdfs(
    out_dir: Path,
    cmp: Comparison,
    baseline: dict[str, np.ndarray],
    candidate: dict[str, np.ndarray],
    target_ms: float,
) -> ChartFile:
    fig, axes = new_figure(2, 3, figsize=(11.0, 6.6))
    flat = list(np.ravel(axes))
    p = np.linspace(0.0, 1.0, CDF_POINTS)
    for ax, stage in zip(flat, STAGES, strict=False):
        b, c = clean_sorted(baseline.get(stage, np.empty(0))), clean_sorted(candidate.get(stage, np.empty(0)))
        if b.size == 0 and c.size == 0:
            no_data(ax)
            ax.set_title(stage)
            continue
        for x, label, ls in ((b, "baseline", "--"), (c, "candidate", "-")):
            if x.size:
                ax.plot(
                    np.quantile(x, p),
                    p * 100,
                    ls=ls,
                    color=STAGE_COLORS[stage] if ls == "-" else "#555555",
                    lw=1.8,
                    label=f"{label} (n={x.size:,})",
                )
        st = next(s for s in cmp.stages if s.stage == stage)
        flag = f" {stage_call(st)}".rstrip()
        ax.set_title(f"{stage}{flag}", color=TARGET_COLOR if st.regression else "black")
        ax.axhline(95, color="#999999", lw=0.8, ls=":")
        if stage == "e2e":
            ax.axvline(target_ms, color=TARGET_COLOR, ls="--", lw=1.2, label=f"target {target_ms:.0f} ms")
        band = BUDGET_BANDS.get(stage)
        if band:
            ax.axvspan(*band, color=BAND_COLOR, alpha=0.12, lw=0)
        hi = max(np.quantile(x, 0.995) for x in (b, c) if x.size) * 1.05
        ax.set_xlim(0, max(hi, target_ms * 1.1) if stage == "e2e" else hi)
        ax.set_ylim(0, 101)
        ax.set_xlabel("latency (ms)")
        ax.set_ylabel("samples at or below (%)")
        ax.legend(loc="lower right", fontsize=8)
    _delta_panel(flat[-1], cmp)
    fig.suptitle("Baseline vs candidate", fontweight="bold")
    caption = (
        "Overlaid CDFs per stage (dotted line: p95), and the p95 change with its 95 % bootstrap CI. "
        f"Regression = CI above zero and worse by > {cmp.tolerance_pct:g} % and > {cmp.tolerance_ms:g} ms."
    )
    return save(fig, out_dir, "compare_cdf", "Baseline vs candidate", caption)


def _delta_panel(ax, cmp: Comparison) -> None:
    names, deltas, lows, highs, colors = [], [], [], [], []
    for st in cmp.stages:
        d = next(q for q in st.quantiles if q.q == "p95")
        if not np.isfinite(d.delta_ms):
            continue
        names.append(st.stage)
        deltas.append(d.delta_ms)
        lows.append(d.delta_ms - d.delta_ci.low)
        highs.append(d.delta_ci.high - d.delta_ms)
        colors.append(TARGET_COLOR if st.regression else ("#2e7d32" if st.improvement else "#777777"))
    if not names:
        no_data(ax)
        return
    y = np.arange(len(names))
    ax.barh(y, deltas, xerr=[lows, highs], color=colors, alpha=0.75, capsize=3)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_xlabel("p95 change, candidate − baseline (ms)")
    ax.set_title("p95 change (95 % CI)")


@dataclass(frozen=True)
class TrendPoint:
    """One run of the nightly history, as the trend chart needs it."""

    label: str
    good: bool
    p50: dict[str, float]
    p95: dict[str, float]
    e2e_under_target: float
    budget_failed: bool = False  # a threshold failed (or had no data)
    regression: bool = False  # a stage regressed against the night's baseline
    inconclusive: bool = False  # the comparison had too few samples to rule a regression out


REGRESSION_COLOR = "#ef6c00"


def trend_chart(out_dir: Path, points: list[TrendPoint], target_ms: float) -> ChartFile:
    with style():
        fig, axes = new_figure(2, 3, figsize=(11.0, 6.6))
        flat = list(np.ravel(axes))
        x = np.arange(len(points))
        budget = np.array([pt.budget_failed for pt in points], dtype=bool)
        regressed = np.array([pt.regression for pt in points], dtype=bool)
        unsure = np.array([pt.inconclusive for pt in points], dtype=bool)
        for ax, stage in zip(flat, STAGES, strict=False):
            p50 = np.array([pt.p50.get(stage, np.nan) for pt in points], dtype=float)
            p95 = np.array([pt.p95.get(stage, np.nan) for pt in points], dtype=float)
            ax.plot(x, p50, marker="o", ms=3, color=STAGE_COLORS[stage], ls="--", label="p50")
            ax.plot(x, p95, marker="o", ms=3, color=STAGE_COLORS[stage], label="p95")
            # The two verdicts apart: a budget miss (x) and a regression (triangle) can mark one night.
            for mask, marker, color, size in (
                (budget, "x", TARGET_COLOR, 50),
                (regressed, "^", REGRESSION_COLOR, 70),
                (unsure, "o", "#9e9e9e", 60),
            ):
                if mask.any():
                    hollow = marker == "o"
                    style_kw = {"facecolors": "none", "edgecolors": color} if hollow else {"color": color}
                    ax.scatter(x[mask], p95[mask], marker=marker, s=size, zorder=3, **style_kw)
            band = BUDGET_BANDS.get(stage)
            if band:
                ax.axhspan(*band, color=BAND_COLOR, alpha=0.12, lw=0)
            if stage == "e2e":
                ax.axhline(target_ms, color=TARGET_COLOR, ls="--", lw=1.2, label="target")
            ax.set_title(stage)
            ax.set_ylabel("latency (ms)")
            ax.set_ylim(bottom=0)
        share = np.array([pt.e2e_under_target for pt in points], dtype=float) * 100
        last = flat[-1]
        last.plot(x, share, marker="o", ms=3, color="#6a1b9a")
        last.set_title("e2e under target")
        last.set_ylabel("% of sent utterances")
        last.set_ylim(0, 101)
        step = max(1, len(points) // 8)  # at most ~8 date labels per panel stay readable
        for ax in flat:
            ax.set_xticks(x[::step], [pt.label for pt in points][::step], rotation=30, ha="right", fontsize=8)
            ax.set_xlabel("run")
        handles = [
            Line2D([], [], color="#444444", ls="--", marker="o", ms=3, label="p50"),
            Line2D([], [], color="#444444", marker="o", ms=3, label="p95"),
            Line2D([], [], color=TARGET_COLOR, marker="x", ls="", ms=8, label="budget missed"),
            Line2D([], [], color=REGRESSION_COLOR, marker="^", ls="", ms=8, label="regression vs baseline"),
            Line2D([], [], color="#9e9e9e", marker="o", mfc="none", ls="", ms=8, label="inconclusive"),
            Line2D([], [], color=TARGET_COLOR, ls="--", label=f"e2e target {target_ms:g} ms"),
            Patch(color=BAND_COLOR, alpha=0.25, label="production budget range"),
        ]
        fig.legend(handles=handles, loc="outside lower center", ncols=4)  # one legend for all panels
        fig.suptitle("Nightly trend: p50 (dashed) and p95 per stage", fontweight="bold")
        caption = (
            "One point per nightly run (history/index.json), on p95: red crosses missed the budget, orange "
            "triangles regressed against their baseline, grey circles had too few samples to tell."
        )
        return save(fig, out_dir, "trend", "Nightly trend", caption)
