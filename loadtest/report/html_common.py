"""Pieces shared by the HTML pages: one self-contained file each, inline CSS and SVG, no JavaScript."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from html import escape

from loadtest.report.model import BUDGET_BANDS, ChartFile, Interval, StageStats

CSS = """
:root { --pass:#1b7f3b; --fail:#b00020; --warn:#b26a00; --muted:#666; --line:#ddd; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       margin: 0 auto; max-width: 1120px; padding: 0 20px 40px; color: #1a1a1a; background: #fff; }
h1 { margin: 0; font-size: 28px; } h2 { margin-top: 32px; border-bottom: 2px solid var(--line); }
.banner { margin: 20px 0 12px; padding: 16px 20px; border-radius: 8px; color: #fff; }
.banner p { margin: 4px 0 0; }
.banner.pass { background: var(--pass); } .banner.fail, .banner.run-failed { background: var(--fail); }
.banner.regression { background: var(--warn); } .banner.neutral { background: #37474f; }
.banner.inconclusive { background: #616161; }
.banner code { background: rgba(255, 255, 255, 0.2); color: #fff; }
.tag { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px; font-weight: 600;
       background: #eee; color: #333; margin-left: 6px; vertical-align: middle; }
.tag.partial { background: #ffe082; color: #5d4000; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(170px, 1fr)); gap: 10px; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: 10px 12px; }
.card .k { color: var(--muted); font-size: 12px; } .card .v { font-size: 22px; font-weight: 600; }
.card .s { color: var(--muted); font-size: 12px; }
table { border-collapse: collapse; width: 100%; margin: 8px 0 16px; font-variant-numeric: tabular-nums; }
th, td { border-bottom: 1px solid var(--line); padding: 5px 8px; text-align: right; }
th:first-child, td:first-child, td.l, th.l { text-align: left; }
th { background: #f6f6f6; font-weight: 600; }
.pass-t { color: var(--pass); font-weight: 700; } .fail-t { color: var(--fail); font-weight: 700; }
.nodata-t { color: var(--warn); font-weight: 700; }
.ci { color: var(--muted); font-size: 12px; }
figure { margin: 18px 0 26px; } figcaption { color: var(--muted); font-size: 13px; margin-top: 4px; }
figure svg { width: 100%; height: auto; max-width: 1000px; display: block; }
ul.warn li { color: var(--warn); }
.muted { color: var(--muted); } code { background: #f3f3f3; padding: 0 3px; border-radius: 3px; }
"""


def e(value: object) -> str:
    return escape(str(value), quote=True)


def finite(x: float | None) -> bool:
    return x is not None and not (isinstance(x, float) and not math.isfinite(x))


def ms(x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return "—"
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:,.1f}"


def pct(x: float | None, digits: int = 1) -> str:
    return "—" if x is None or not math.isfinite(x) else f"{x * 100:.{digits}f} %"


def num(x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return "—"
    if float(x).is_integer():
        return f"{int(x):,}"
    return f"{x:,.4g}"


def ci(i: Interval, fmt: Callable[[float], str] = ms) -> str:
    if not (finite(i.low) and finite(i.high)):
        return ""
    return f'<div class="ci">[{fmt(i.low)} – {fmt(i.high)}]</div>'


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], left_cols: int = 1) -> str:
    """Rows are pre-escaped HTML cells; the first `left_cols` columns are left-aligned."""
    head = "".join(
        f'<th class="l">{h}</th>' if i < left_cols else f"<th>{h}</th>" for i, h in enumerate(headers)
    )
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="l">{c}</td>' if i < left_cols else f"<td>{c}</td>" for i, c in enumerate(row)
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def card(key: str, value: str, sub: str = "") -> str:
    return (
        f'<div class="card"><div class="k">{e(key)}</div><div class="v">{value}</div>'
        f'<div class="s">{sub}</div></div>'
    )


def figure(chart: ChartFile) -> str:
    return (
        f'<figure id="chart-{e(chart.name)}">{chart.svg}'
        f"<figcaption><b>{e(chart.title)}.</b> {e(chart.caption)} "
        f'<span class="muted">({e(chart.png.name)}, {e(chart.svg_path.name)})</span></figcaption></figure>'
    )


def verdict_cell(verdict: str) -> str:
    cls = {"pass": "pass-t", "fail": "fail-t"}.get(verdict, "nodata-t")
    return f'<span class="{cls}">{e(verdict.upper())}</span>'


def page(title: str, body: str) -> str:
    # The empty data: icon stops the browser from requesting /favicon.ico (a console error on file://).
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<title>{e(title)}</title><style>{CSS}</style></head><body>{body}</body></html>\n"
    )


def sig(x: float | None) -> str:
    """Three significant digits: WER 0.083 must not print as 0.1."""
    return f"{x:.3g}" if finite(x) else "—"


def stage_row(name: str, st: StageStats, budget: bool) -> tuple[str, ...]:
    band = BUDGET_BANDS.get(name)
    f = ms if budget or name.endswith("_ms") else sig
    cells = [
        e(name),
        f"{st.count:,}",
        f(st.mean),
        f(st.p50) + ci(st.p50_ci, f),
        f(st.p90),
        f(st.p95) + ci(st.p95_ci, f),
        f(st.p99) + ci(st.p99_ci, f),
        f(st.max),
    ]
    if budget:
        cells.append(f"{band[0]:.0f}–{band[1]:.0f}" if band else "—")
    return tuple(cells)


def stage_table(stages: dict[str, StageStats], budget: bool, first: str = "stage") -> str:
    head = [first, "count", "mean", "p50", "p90", "p95", "p99", "max"]
    if budget:
        head.append("budget range")
    rows = [stage_row(name, st, budget) for name, st in stages.items()]
    return table(head, rows) + '<p class="muted">milliseconds; 95 % bootstrap CIs under the percentiles.</p>'
