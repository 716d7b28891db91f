"""The run report page: verdict first, then the figures that explain it, then the details."""

from __future__ import annotations

import dataclasses

from loadtest.report.compare import stage_call
from loadtest.report.html_common import (
    card,
    ci,
    e,
    figure,
    finite,
    ms,
    num,
    page,
    pct,
    stage_table,
    table,
    verdict_cell,
)
from loadtest.report.html_conditions import conditions_section
from loadtest.report.html_scenarios import by_section, listening_section, scenario_sections
from loadtest.report.model import STAGES, ChartFile, Comparison, RunSummary
from loadtest.report.proxy import proxy_section

HEADLINES = {
    "pass": "PASS",
    "fail": "FAIL: a threshold was not met",
    "regression": "REGRESSION against the baseline",
    "inconclusive": "INCONCLUSIVE: too few samples to rule out a regression",
    "run-failed": "RUN FAILED",
}


def render_report(summary: RunSummary, charts: list[ChartFile]) -> str:
    run_charts = [c for c in charts if not c.name.startswith("compare")]
    parts = [
        _banner(summary),
        _headline_cards(summary),
        _thresholds(summary),
        comparison_section(summary.comparison, [c for c in charts if c.name.startswith("compare")])
        if summary.comparison
        else "",
        _warnings(summary),
        "<h2>Stages</h2>",
        stage_table(summary.stages, budget=True),
        "<h2>Charts</h2>" if run_charts else "",
        *(figure(c) for c in run_charts),
        by_section(summary.by),
        scenario_sections(summary.scenarios, summary.by),
        listening_section(summary.scenarios.listening),
        _levels(summary),
        _placement(summary),
        proxy_section(summary.proxy),
        conditions_section(summary.conditions),
        _failures(summary),
        _metrics(summary),
        _metadata(summary),
        _method(summary),
    ]
    title = f"Load test report: {HEADLINES.get(summary.verdict, summary.verdict)}"
    return page(title, "".join(parts))


def _banner(s: RunSummary) -> str:
    partial = (
        '<span class="tag partial">PARTIAL: the run was cut short, figures cover what was recorded</span>'
    )
    tags = partial if s.partial else ""
    if s.metadata.insecure_tls:
        tags += '<span class="tag partial">INSECURE TLS: certificates were not verified</span>'
    detail = f"exit code {s.exit_code}"
    if s.run_failed:
        detail += f" · {e(s.run_failed)}"
    else:
        e2e = s.stages["e2e"]
        detail += (
            f" · e2e p95 {ms(e2e.p95)} ms vs target {ms(s.target_ms)} ms"
            f" · {pct(s.rates.e2e_under_target)} of sent utterances under target"
        )
        failed = [v for v in s.thresholds if v.verdict != "pass"]
        detail += f" · {len(s.thresholds) - len(failed)}/{len(s.thresholds)} thresholds met"
        if s.comparison:
            regs = s.comparison.regressions
            detail += f" · regressions vs baseline: {', '.join(regs) if regs else 'none'}"
            if s.comparison.inconclusive:
                detail += f" · inconclusive (too few samples): {', '.join(s.comparison.inconclusive)}"
    run = e(s.metadata.run_id) if s.metadata.run_id else ""
    return (
        f'<header class="banner {e(s.verdict)}"><h1>{e(HEADLINES.get(s.verdict, s.verdict))}{tags}</h1>'
        f"<p>{detail}</p><p>{run}</p></header>"
    )


def _headline_cards(s: RunSummary) -> str:
    e2e = s.stages["e2e"]
    c = s.counts
    if not e2e.count:
        p95_card = card("e2e p95", "—", "no e2e sample")
        p50_card = card("e2e p50", "—", "")
    else:
        p95_card = card(
            "e2e p95", f"{ms(e2e.p95)} ms", f"95 % CI {ms(e2e.p95_ci.low)}–{ms(e2e.p95_ci.high)} ms"
        )
        p50_card = card("e2e p50", f"{ms(e2e.p50)} ms", f"p99 {ms(e2e.p99)} ms · max {ms(e2e.max)} ms")
    cards = [
        p95_card,
        p50_card,
        card(
            f"under {ms(s.target_ms)} ms",
            pct(s.rates.e2e_under_target),
            f"{s.rates.e2e_under_target_count:,} of {c.sent:,} sent",
        ),
        card("utterances sent", f"{c.sent:,}", f"ok {c.ok:,} · timeout {c.timeout:,} · error {c.error:,}"),
        card("timeout rate", pct(s.rates.timeout_rate, 2), ""),
        card("error rate", pct(s.rates.error_rate, 2), ""),
    ]
    if s.capacity_callers is not None:
        cards.append(
            card("capacity at target", f"{s.capacity_callers} callers", "e2e p95 < target, ≤ 1 % failed")
        )
    return f'<div class="cards">{"".join(cards)}</div>'


def _fmt_observed(metric: str, value: float) -> str:
    if "." in metric:
        return num(value) if metric.endswith(".count") else ms(value)
    return pct(value, 2)


def _thresholds(s: RunSummary) -> str:
    if not s.thresholds:
        return ""
    rows = [
        (
            f"<code>{e(v.threshold.expression)}</code>",
            _fmt_observed(v.threshold.metric, v.observed),
            verdict_cell(v.verdict),
        )
        for v in s.thresholds
    ]
    note = '<p class="muted">no-data counts as not met: a budget that could not be checked is not a pass.</p>'
    return "<h2>Thresholds</h2>" + table(["threshold", "observed", "verdict"], rows) + note


def comparison_section(cmp: Comparison, charts: list[ChartFile]) -> str:
    rows = []
    for st in cmp.stages:
        q = {d.q: d for d in st.quantiles}
        p95 = q["p95"]
        call = stage_call(st, none="—")
        rows.append(
            (
                e(st.stage),
                f"{ms(q['p50'].baseline)} → {ms(q['p50'].candidate)}",
                f"{ms(p95.baseline)} → {ms(p95.candidate)}",
                f"{ms(p95.delta_ms)} ms ({'+' if finite(p95.delta_pct) and p95.delta_pct > 0 else ''}"
                f"{num(round(p95.delta_pct, 1)) if finite(p95.delta_pct) else '—'} %)"
                f'<div class="ci">CI [{ms(p95.delta_ci.low)} – {ms(p95.delta_ci.high)}] ms</div>',
                f"{ms(q['p99'].baseline)} → {ms(q['p99'].candidate)}",
                f"{st.mannwhitney_p:.3g}" if finite(st.mannwhitney_p) else "—",
                f'<span class="{"fail-t" if st.regression else ""}">{call}</span>',
            )
        )
    head = ["stage", "p50 (ms)", "p95 (ms)", "p95 change", "p99 (ms)", "Mann–Whitney p", "call"]
    return (
        f"<h2>Against the baseline</h2><p>Baseline <code>{e(cmp.baseline_dir)}</code>. Regression = the "
        "p95 difference significantly above zero (a permutation test, or with large samples the 95 % "
        f"bootstrap CI) AND p95 worse by more than {num(cmp.tolerance_pct)} % AND more than "
        f"{num(cmp.tolerance_ms)} ms. Fewer than 20 samples a side without a significant change: "
        "inconclusive.</p>"
        + table(head, rows)
        + "".join(figure(c) for c in charts)
    )


def _warnings(s: RunSummary) -> str:
    if not s.warnings:
        return ""
    items = "".join(f"<li>{e(w)}</li>" for w in s.warnings)
    return f'<h2>Warnings</h2><ul class="warn">{items}</ul>'


def _levels(s: RunSummary) -> str:
    if not s.levels:
        return ""
    rows = []
    for lv in s.levels:
        e2e = lv.stages["e2e"]
        rows.append(
            (
                f"{lv.callers:,}",
                f"{lv.counts.sent:,}",
                pct(lv.rates.e2e_under_target),
                pct(lv.rates.timeout_rate, 2),
                pct(lv.rates.error_rate, 2),
                *(ms(lv.stages[st].p95) for st in ("stt", "translation", "tts")),
                ms(e2e.p50),
                ms(e2e.p95) + ci(e2e.p95_ci),
                ms(e2e.p99),
            )
        )
    head = [
        "callers",
        "sent",
        "under target",
        "timeout",
        "error",
        "stt p95",
        "transl. p95",
        "tts p95",
        "e2e p50",
        "e2e p95",
        "e2e p99",
    ]
    return "<h2>Per caller level</h2>" + table(head, rows)


def _failures(s: RunSummary) -> str:
    if not (s.timeouts_by_stage or s.errors_by_stage):
        return ""
    out = ["<h2>Failures</h2>"]
    if s.timeouts_by_stage:
        out.append("<p>Timeouts by last stage reached:</p>")
        out.append(table(["stage", "count"], [(e(n.name), f"{n.count:,}") for n in s.timeouts_by_stage]))
    if s.errors_by_stage:
        out.append("<p>Errors by failing stage:</p>")
        out.append(table(["stage", "count"], [(e(n.name), f"{n.count:,}") for n in s.errors_by_stage]))
    if s.top_errors:
        out.append(
            table(["most frequent error texts", "count"], [(e(n.name), f"{n.count:,}") for n in s.top_errors])
        )
    return "".join(out)


def _placement(s: RunSummary) -> str:
    if not s.placement:
        return ""
    rows = [(e(g.placement), f"{g.sent:,}", f"{g.ok:,}", f"{g.timeout:,}", f"{g.error:,}",
             f"{e(g.stage)} {ms(g.p50_ms)}", f"{e(g.stage)} {ms(g.p95_ms)}", e(g.top_failed_stage or "—"))
            for g in s.placement]
    return ("<h2>Gateway replicas</h2><p>Conversations whose speaker and listener joined the same replica, "
            "and those split across replicas (events cross through Redis, media through pipe transports).</p>"
            + table(["placement", "sent", "ok", "timeout", "error", "p50 ms", "p95 ms",
                     "failures stopped at"], rows))


def _metrics(s: RunSummary) -> str:
    if not s.metrics:
        return ""
    return "<h2>Other measurements</h2>" + stage_table(s.metrics, budget=False, first="measurement").replace(
        "milliseconds;", "units as the column name says (ms unless packets, WER, chrF);"
    )


def _metadata(s: RunSummary) -> str:
    meta = dataclasses.asdict(s.metadata)
    extra = meta.pop("extra", {}) or {}
    rows = [(e(k), e(v)) for k, v in meta.items() if v is not None]
    rows += [(e(k), e(v)) for k, v in extra.items()]
    rows.append(("target_ms", ms(s.target_ms)))
    rows.append(("partial", "yes" if s.partial else "no"))
    rows.append(("samples source", e(s.source)))
    if s.metadata.insecure_tls:
        rows.insert(0, ("⚠ insecure_tls", "TLS certificate verification was DISABLED for this run"))
    return "<h2>Run</h2>" + table(["field", "value"], rows, left_cols=2)


def _method(s: RunSummary) -> str:
    return (
        '<h2>Method</h2><p class="muted">Percentiles are exact over every recorded sample (numpy '
        '<code>method="linear"</code>), per stage over the utterances that reached it; connect counts once '
        "per conversation. Shares and rates are over all sent utterances: a timed-out utterance is never "
        f"under target. CIs: 95 % percentile bootstrap, {s.bootstrap_resamples} resamples, "
        f"seed {s.bootstrap_seed}. "
        f"Stages: {', '.join(STAGES)}.</p>"
    )
