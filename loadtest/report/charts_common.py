"""Matplotlib setup shared by every chart: headless backend, house style, PNG + SVG output."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless; must precede pyplot

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from loadtest.report.model import ChartFile  # noqa: E402

STAGE_COLORS = {
    "connect": "#8c564b",
    "stt": "#1f77b4",
    "translation": "#ff7f0e",
    "tts": "#2ca02c",
    "e2e": "#d62728",
}
Q_STYLES = {"p50": ("#1f77b4", "-"), "p95": ("#d62728", "-"), "p99": ("#7f0000", ":")}
TARGET_COLOR = "#b00020"
BAND_COLOR = "#4caf50"
CALLERS_COLOR = "#555555"
FIGSIZE = (10.0, 4.8)
DPI = 100

RC: dict[str, Any] = {
    "svg.fonttype": "none",  # text stays text: small SVGs, selectable in the HTML
    "svg.hashsalt": "loadtest-report",  # deterministic ids across builds
    "font.size": 10,
    "axes.titlesize": 12,
    "axes.titleweight": "bold",
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.fontsize": 9,
    "legend.framealpha": 0.85,
}


def style() -> contextlib.AbstractContextManager[None]:
    """The house style, scoped: rcParams are read while artists are made, so wrap whole chart builds."""
    return matplotlib.rc_context(RC)  # type: ignore[arg-type]  # stubs want literal rc keys


def new_figure(
    nrows: int = 1, ncols: int = 1, figsize: tuple[float, float] = FIGSIZE, **kwargs: Any
) -> tuple[Figure, Any]:
    return plt.subplots(nrows, ncols, figsize=figsize, dpi=DPI, layout="constrained", **kwargs)


def save(fig: Figure, out_dir: Path, name: str, title: str, caption: str) -> ChartFile:
    """Write <name>.png and <name>.svg, close the figure, keep the SVG text for inlining."""
    out_dir.mkdir(parents=True, exist_ok=True)
    png, svg = out_dir / f"{name}.png", out_dir / f"{name}.svg"
    fig.savefig(png, dpi=DPI)
    # The layout is solved by the first save; freezing it halves the cost of the second (it dominates).
    fig.set_layout_engine("none")
    fig.savefig(svg, metadata={"Date": None})
    plt.close(fig)
    return ChartFile(name, title, caption, png, svg, inline_svg(svg.read_text(encoding="utf-8"), name))


_ID = re.compile(r'\bid="([^"]+)"')
_URL = re.compile(r"url\(#([^)]+)\)")
_HREF = re.compile(r'(xlink:href|href)="#([^"]+)"')


def inline_svg(text: str, prefix: str) -> str:
    """SVG fit to sit inside HTML: no XML prologue/doctype, ids prefixed so charts never share an id."""
    start = text.find("<svg")
    body = text[start:] if start >= 0 else text
    body = _ID.sub(lambda m: f'id="{prefix}-{m.group(1)}"', body)
    body = _URL.sub(lambda m: f"url(#{prefix}-{m.group(1)})", body)
    body = _HREF.sub(lambda m: f'{m.group(1)}="#{prefix}-{m.group(2)}"', body)
    return body


def no_data(ax: Any, text: str = "no data") -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=14, color="#777777")
    ax.set_xticks([])
    ax.set_yticks([])


POINT_COLOR = "#3b5b92"
FAIL_STYLES = {"timeout": ("#ff9800", "timeout (no e2e)"), "error": ("#d62728", "error")}
MARKER_MAX_POINTS = 30  # lines with at most this many points get a marker on each (sparse runs)


def time_unit(span_s: float) -> tuple[float, str]:
    """Divisor and unit for a time axis: seconds for short runs, minutes/hours for long ones."""
    if span_s <= 1800:
        return 1.0, "s"
    if span_s <= 48 * 3600:
        return 60.0, "min"
    return 3600.0, "h"


def fmt_span(seconds: float) -> str:
    """A bin width for labels: 5 s, 15 min, 6 h."""
    if seconds < 60:
        return f"{seconds:g} s"
    if seconds < 3600:
        return f"{seconds / 60:g} min"
    return f"{seconds / 3600:g} h"


def point_style(n: int) -> dict[str, Any]:
    """Scatter style by point count: a handful of utterances must read as points, 4000 as a haze."""
    if n <= 100:
        return {"s": 28, "alpha": 0.85, "edgecolors": "white", "linewidths": 0.6}
    if n <= 1000:
        return {"s": 10, "alpha": 0.6, "linewidths": 0}
    return {"s": 3, "alpha": 0.35, "linewidths": 0, "rasterized": True}  # one bitmap in the SVG


def line_through(ax: Any, x: np.ndarray, y: np.ndarray, **kwargs: Any) -> Any:
    """Plot only the finite points, joined: empty bins would otherwise cut a line into invisible pieces."""
    keep = np.isfinite(x) & np.isfinite(y)
    if keep.sum() <= MARKER_MAX_POINTS:
        kwargs.setdefault("marker", "o")
        kwargs.setdefault("markersize", 4)
    return ax.plot(x[keep], y[keep], **kwargs)[0]
