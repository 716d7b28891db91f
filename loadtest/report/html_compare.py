"""Pages across runs: compare.html (baseline vs candidate) and the nightly history index."""

from __future__ import annotations

from collections.abc import Sequence

from loadtest.report.html import comparison_section
from loadtest.report.html_common import e, figure, ms, page, pct, table
from loadtest.report.model import ChartFile, Comparison, HistoryEntry, Rates


def _rates_rows(base: Rates | None, cand: Rates | None) -> list[tuple[str, str, str]]:
    if base is None or cand is None:
        return []
    return [
        ("e2e under target", pct(base.e2e_under_target), pct(cand.e2e_under_target)),
        ("timeout rate", pct(base.timeout_rate, 2), pct(cand.timeout_rate, 2)),
        ("error rate", pct(base.error_rate, 2), pct(cand.error_rate, 2)),
    ]


def render_compare(cmp: Comparison, charts: list[ChartFile], exit_code: int) -> str:
    regs = cmp.regressions
    verdict = "regression" if regs else "pass"
    headline = f"REGRESSION in {', '.join(regs)}" if regs else "No regression"
    rates = _rates_rows(cmp.baseline_rates, cmp.candidate_rates)
    body = (
        f'<header class="banner {verdict}"><h1>{e(headline)}</h1>'
        f"<p>exit code {exit_code} · candidate <code>{e(cmp.candidate_dir)}</code></p></header>"
        + comparison_section(cmp, charts)
        + ("<h2>Outcome rates</h2>" + table(["", "baseline", "candidate"], rates) if rates else "")
        + '<p class="muted">Outcome rates are informational: the regression call is on per-stage p95.</p>'
    )
    return page(f"Comparison: {headline}", body)


def render_history(entries: Sequence[HistoryEntry], chart: ChartFile) -> str:
    rows = []
    for entry in reversed(entries):
        cls = "pass-t" if entry.good else "fail-t"
        rows.append(
            (
                f'<a href="{e(entry.dir)}/report.html">{e(entry.id)}</a>',
                f'<span class="{cls}">{e(entry.verdict)}</span>' + (" (partial)" if entry.partial else ""),
                str(entry.exit_code),
                f"{entry.sent:,}",
                ms(entry.p50.get("e2e")),
                ms(entry.p95.get("e2e")),
                pct(entry.e2e_under_target),
                e(entry.baseline or "—"),
                e(", ".join(entry.regressions) or "—"),
            )
        )
    head = ["run", "verdict", "exit", "sent", "e2e p50", "e2e p95", "under target", "baseline", "regressions"]
    body = (
        '<header class="banner neutral"><h1>Nightly history</h1>'
        f"<p>{len(entries)} run(s); a run with exit code 0 is a baseline for the next one.</p></header>"
        + figure(chart)
        + "<h2>Runs (newest first)</h2>"
        + table(head, rows)
    )
    return page("Nightly history", body)
