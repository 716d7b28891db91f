"""The report's adverse-conditions section: the impairment as configured, injected and observed, side by
side; and per condition (profile, SNR) the outcomes, latency, quality and the e2e target's verdict."""

from __future__ import annotations

from loadtest.report.conditions_model import ConditionRow, ConditionsSummary, DirectionCheck
from loadtest.report.html_common import e, ms, num, pct, table, verdict_cell


def conditions_section(c: ConditionsSummary) -> str:
    if not c:
        return ""
    parts = ["<h2>Adverse conditions</h2>"]
    if c.impairment:
        parts.append(
            "<p>Network impairment injected by the tester (docs/impairment.md). Loss as <b>configured</b> "
            "(the profile's long-run rate), <b>injected</b> (RTP packets the tester's link dropped) and "
            "<b>observed</b> by the far end (uplink: the SFU's RTCP receiver reports; downlink: the "
            "listener's inbound-rtp), over the packets each counted.</p>")
        rows = []
        for check in c.impairment:
            for name in ("uplink", "downlink"):
                d: DirectionCheck = getattr(check, name)
                seen = (f"{pct(d.observed_loss, 2)} <span class=\"muted\">({num(d.observed_lost)} / "
                        f"{num(d.observed_expected)})</span>") if d.observed_expected else "— (no report)"
                rows.append((e(check.profile), e(name), f"{check.conversations:,}", pct(d.configured_loss, 2),
                             f"{pct(d.injected_loss, 2)} <span class=\"muted\">({num(d.dropped)} / "
                             f"{num(d.packets)})</span>", seen, ms(d.configured_delay_ms),
                             ms(d.added_delay_ms), f"{d.delayed:,}"))
        parts.append(table(["profile", "direction", "conversations", "configured loss", "injected loss",
                            "observed loss", "configured delay ms", "added delay ms", "packets delayed"],
                           rows, left_cols=2))
    for title, items in (("Per impairment profile", c.by_impairment), ("Per speech SNR", c.by_snr)):
        if items:
            parts.append(f"<h3>{e(title)}</h3>" + _conditions_table(items))
    return "".join(parts)


def _conditions_table(items: list[ConditionRow]) -> str:
    rows = [(e(r.condition), f"{r.sent:,}", f"{r.ok:,}", f"{r.timeout:,}", f"{r.error:,}",
             ms(r.connect_p50_ms), ms(r.e2e_p50_ms), ms(r.e2e_p95_ms), pct(r.e2e_under_target),
             "—" if r.wer_mean is None else f"{r.wer_mean:.3f}",
             "—" if r.chrf_mean is None else f"{r.chrf_mean:.1f}", verdict_cell(r.verdict))
            for r in items]
    return table(["condition", "sent", "ok", "timeout", "error", "connect p50 ms", "e2e p50 ms", "e2e p95 ms",
                  "under target", "WER mean", "chrF mean", "e2e target"], rows)
