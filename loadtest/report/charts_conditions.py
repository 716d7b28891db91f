"""Charts of the adverse conditions: latency and quality per impairment profile and per SNR, and the
impairment's loss as configured, injected by the tester and observed by the far ends."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from loadtest.report.charts_common import TARGET_COLOR, new_figure, no_data, save, style
from loadtest.report.conditions import CLEAN, UNIMPAIRED, snr_label
from loadtest.report.conditions_model import ConditionRow, ConditionsSummary, ImpairmentCheck
from loadtest.report.model import ChartFile

LOSS_COLORS = {"configured": "#9e9e9e", "injected": "#1f77b4", "observed": "#d62728"}
VERDICT_COLORS = {"pass": "#1b7f3b", "fail": "#b00020", "no-data": "#b26a00"}


def condition_charts(out_dir: Path, conditions: ConditionsSummary, frame: pd.DataFrame,
                     target_ms: float) -> list[ChartFile]:
    """One chart per dimension that the run varied (impairment, SNR), and the loss check."""
    charts: list[ChartFile] = []
    with style():
        if conditions.by_impairment:
            labels = frame["impairment"].astype("object").where(frame["impairment"].notna(), UNIMPAIRED)
            charts.append(_by_condition(out_dir, "impairment_conditions", "Latency and quality per "
                                        "network impairment profile", conditions.by_impairment,
                                        frame, labels, target_ms))
        if conditions.by_snr:
            snr = frame["snr_db"].to_numpy(dtype=np.float64)
            labels = pd.Series([CLEAN if not np.isfinite(v) else snr_label(float(v)) for v in snr],
                               index=frame.index)
            charts.append(_by_condition(out_dir, "snr_conditions", "Latency and quality per speech SNR",
                                        conditions.by_snr, frame, labels, target_ms))
        if conditions.impairment:
            charts.append(_loss_check(out_dir, conditions.impairment))
    return charts


def _by_condition(out_dir: Path, name: str, title: str, rows: list[ConditionRow], frame: pd.DataFrame,
                  labels: pd.Series, target_ms: float) -> ChartFile:
    fig, (ax_e2e, ax_wer, ax_chrf) = new_figure(1, 3, figsize=(11.0, 4.4),
                                               gridspec_kw={"width_ratios": [2.2, 1, 1]})
    names = [r.condition for r in rows]
    x = np.arange(len(names))
    e2e = frame["e2e_ms"].to_numpy(dtype=np.float64)
    drawn = False
    for i, row in enumerate(rows):
        values = e2e[(labels == row.condition).to_numpy() & np.isfinite(e2e)]
        if values.size == 0:
            continue
        drawn = True
        p5, p25, p50, p75, p95 = np.percentile(values, [5, 25, 50, 75, 95])
        color = VERDICT_COLORS[row.verdict]
        ax_e2e.bar(i, p75 - p25, bottom=p25, width=0.55, color=color, alpha=0.35, edgecolor=color)
        ax_e2e.plot([i - 0.27, i + 0.27], [p50, p50], color=color, lw=2)
        ax_e2e.plot([i, i], [p5, p25], color=color, lw=1)
        ax_e2e.plot([i, i], [p75, p95], color=color, lw=1)
        ax_e2e.plot(i, p95, marker="v", color=color, ms=6)
        under = "—" if row.e2e_under_target is None else f"{row.e2e_under_target * 100:.0f} %"
        ax_e2e.annotate(f"{row.verdict.upper()}\n{under} < target", (i, p95), textcoords="offset points",
                        xytext=(0, 8), ha="center", fontsize=8, color=color)
    if drawn:
        ax_e2e.axhline(target_ms, color=TARGET_COLOR, ls="--", lw=1.2, label=f"target {target_ms:.0f} ms")
        ax_e2e.set_ylabel("e2e ms (box p25–p75, line p50, whiskers p5–p95)")
        ax_e2e.set_ylim(0, max(target_ms, float(np.nanmax(e2e))) * 1.15)
        ax_e2e.legend(loc="lower left")
    else:
        no_data(ax_e2e, "no e2e samples")
    _bars(ax_wer, x, [r.wer_mean for r in rows], "WER, mean (lower: better)", "#6a3d9a")
    _bars(ax_chrf, x, [r.chrf_mean for r in rows], "chrF, mean (higher: better)", "#2ca02c")
    for ax in (ax_e2e, ax_wer, ax_chrf):
        ax.set_xticks(x, [f"{n}\n(n={r.sent})" for n, r in zip(names, rows, strict=True)], fontsize=8)
        ax.set_xlim(-0.7, len(rows) - 0.3)
    ax_e2e.set_title("e2e per condition")
    caption = ("Per condition: e2e distribution of delivered utterances with the verdict of the e2e target "
               "(p95 < target) and the share of sent utterances under it; mean WER of the transcripts and "
               "mean chrF of the translations.")
    return save(fig, out_dir, name, title, caption)


def _bars(ax: object, x: np.ndarray, values: list[float | None], title: str, color: str) -> None:
    heights = [v if v is not None else np.nan for v in values]
    if all(np.isnan(h) for h in heights):
        no_data(ax, "no scores")
        ax.set_title(title, fontsize=10)  # type: ignore[attr-defined]
        return
    ax.bar(x, np.nan_to_num(heights), width=0.55, color=color, alpha=0.8)  # type: ignore[attr-defined]
    for xi, h in zip(x, heights, strict=True):
        if np.isfinite(h):
            ax.annotate(f"{h:.2f}" if h < 10 else f"{h:.0f}", (xi, h), textcoords="offset points",  # type: ignore[attr-defined]
                        xytext=(0, 3), ha="center", fontsize=8)
    ax.set_title(title, fontsize=10)  # type: ignore[attr-defined]
    ax.set_ylim(0, max(1.0, float(np.nanmax(heights))) * 1.2)  # type: ignore[attr-defined]


def _loss_check(out_dir: Path, checks: list[ImpairmentCheck]) -> ChartFile:
    fig, ax = new_figure(figsize=(10.0, 4.2))
    groups = [(c.profile, d, getattr(c, d)) for c in checks for d in ("uplink", "downlink")]
    x = np.arange(len(groups))
    width = 0.26
    for k, (kind, color) in enumerate(LOSS_COLORS.items()):
        vals = [getattr(g[2], f"{kind}_loss") for g in groups]
        heights = np.array([v * 100 if v is not None else np.nan for v in vals])
        ax.bar(x + (k - 1) * width, np.nan_to_num(heights), width, color=color, label=kind)
        for xi, h in zip(x + (k - 1) * width, heights, strict=True):
            ax.annotate("n/a" if not np.isfinite(h) else f"{h:.1f}", (xi, 0 if not np.isfinite(h) else h),
                        textcoords="offset points", xytext=(0, 2), ha="center", fontsize=7)
    ax.set_xticks(x, [f"{p}\n{d}" for p, d, _ in groups], fontsize=8)
    ax.set_ylabel("RTP packets lost (%)")
    top = max([0.01] + [getattr(g[2], f"{k}_loss") or 0.0 for g in groups for k in LOSS_COLORS])
    ax.set_ylim(0, top * 100 * 1.35)
    ax.legend(loc="upper center", ncol=3)
    ax.set_title("Packet loss: configured vs injected vs observed")
    caption = ("Configured: the profile's long-run loss. Injected: RTP packets the tester's link dropped "
               "(loss model and bandwidth-cap tail drops). Observed: uplink as the SFU counts it in its "
               "RTCP receiver reports, downlink as the listener counts it (inbound-rtp). Summed over "
               "conversations.")
    return save(fig, out_dir, "impairment_loss", "Impairment verification", caption)
