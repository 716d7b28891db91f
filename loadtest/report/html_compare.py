"""Pages across runs: compare.html (baseline vs candidate) and the nightly history index."""

from __future__ import annotations

from collections.abc import Sequence

from loadtest.report.compare import inconclusive_reason
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
    verdict = cmp.verdict
    headline = {
        "regression": f"REGRESSION in {', '.join(regs)}",
        "inconclusive": f"INCONCLUSIVE: too few samples in {', '.join(cmp.inconclusive)}",
    }.get(verdict, "No regression")
    rates = _rates_rows(cmp.baseline_rates, cmp.candidate_rates)
    body = (
        f'<header class="banner {verdict}"><h1>{e(headline)}</h1>'
        f"<p>exit code {exit_code} · candidate <code>{e(cmp.candidate_dir)}</code></p></header>"
        + (f"<p>{e(inconclusive_reason(cmp) or '')}</p>" if cmp.inconclusive else "")
        + comparison_section(cmp, charts)
        + ("<h2>Outcome rates</h2>" + table(["", "baseline", "candidate"], rates) if rates else "")
        + '<p class="muted">Outcome rates are informational: the regression call is on per-stage p95.</p>'
    )
    return page(f"Comparison: {headline}", body)


def render_history(entries: Sequence[HistoryEntry], chart: ChartFile) -> str:
    rows = []
    for entry in reversed(entries):
        budget = entry.budget_verdict or ("fail" if entry.verdict == "fail" else entry.verdict)
        compared = entry.regression_verdict or ("regression" if entry.regressions else "—")
        if compared == "regression":
            compared += f" ({', '.join(entry.regressions)})"
        elif compared == "inconclusive":
            compared += f" ({', '.join(entry.inconclusive)}: too few samples)"
        rows.append(
            (
                f'<a href="{e(entry.dir)}/report.html">{e(entry.id)}</a>',
                _tag(budget) + (" (partial)" if entry.partial else ""),
                _tag(compared),
                str(entry.exit_code),
                f"{entry.sent:,}" + (f" ({entry.samples()} e2e)" if entry.counts else ""),
                ms(entry.p50.get("e2e")),
                ms(entry.p95.get("e2e")),
                pct(entry.e2e_under_target),
                e(entry.baseline or "—") + (f" ({e(entry.baseline_rule)})" if entry.baseline_rule else ""),
            )
        )
    head = ["run", "budget", "vs baseline", "exit", "sent", "e2e p50", "e2e p95", "under target", "baseline"]
    body = (
        '<header class="banner neutral"><h1>Nightly history</h1>'
        f"<p>{len(entries)} run(s). The budget and the regression verdicts are separate: each night is "
        "compared with the pinned baseline, else the last night that completed with enough samples and "
        "did not regress, whether or not it met the budget.</p></header>"
        + figure(chart)
        + "<h2>Runs (newest first)</h2>"
        + table(head, rows)
    )
    return page("Nightly history", body)


def _tag(verdict: str) -> str:
    cls = "pass-t" if verdict == "pass" else "fail-t" if verdict.split(" ")[0] in BAD else ""
    return f'<span class="{cls}">{e(verdict)}</span>'


BAD = {"fail", "regression", "run-failed", "inconclusive"}
