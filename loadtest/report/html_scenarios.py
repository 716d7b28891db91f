"""The report page's per-group and per-scenario sections; each is empty when the run has none.

Group values, listener names, fixture ids and sentences come from the samples (the gateway's words
included): every one goes through e().
"""

from __future__ import annotations

from loadtest.report.html_common import ci, e, ms, num, pct, stage_table, table
from loadtest.report.scenarios_model import (
    SEGMENTATIONS,
    GroupBy,
    ListeningSummary,
    ScenarioSections,
)


def _groups(by: GroupBy) -> str:
    """Overview (outcomes and e2e) of every group, then each group's stage table."""
    rows = []
    for g in by.groups:
        c, e2e = g.counts, g.stages["e2e"]
        rows.append((e(g.key), f"{c.sent:,}", f"{c.ok:,}", f"{c.timeout:,}", f"{c.error:,}",
                     pct(g.rates.e2e_under_target), ms(e2e.p50), ms(e2e.p95) + ci(e2e.p95_ci), ms(e2e.p99)))
    head = [e(" / ".join(by.columns)), "sent", "ok", "timeout", "error", "under target", "e2e p50",
            "e2e p95", "e2e p99"]
    parts = [table(head, rows)]
    for g in by.groups:
        c = g.counts
        parts.append(f"<h3>{e(g.key)}</h3><p>sent {c.sent:,} · ok {c.ok:,} · timeout {c.timeout:,} · "
                     f"error {c.error:,}</p>" + stage_table(g.stages, budget=True))
    return "".join(parts)


def by_section(by: GroupBy | None) -> str:
    if by is None:
        return ""
    return (f'<h2 id="by">Per {e(", ".join(by.columns))}</h2><p>The run split by '
            f"<code>{e(','.join(by.columns))}</code> (<code>--by</code>); the groups add up to the run.</p>"
            + _groups(by))


def _two_way(s: ScenarioSections) -> str:
    if s.two_way is None:
        return ""
    return ('<h2 id="two-way">Per direction</h2><p>Each direction of the conversations (speaker language → '
            "listener language) on its own.</p>" + _groups(s.two_way))


def _group(s: ScenarioSections) -> str:
    g = s.group
    if g is None:
        return ""
    facts = table(["spoken utterances", "heard by ≥ 2 listeners", "a listener heard nothing",
                   "spread p50 ms", "spread p95 ms", "spread max ms"],
                  [(f"{g.utterances:,}", f"{g.measured:,}", f"{g.incomplete:,}", ms(g.spread_p50_ms),
                    ms(g.spread_p95_ms), ms(g.spread_max_ms))])
    rows = [(e(r.listener), e(r.language), f"{r.sent:,}", f"{r.ok:,}", f"{r.timeout:,}", f"{r.error:,}",
             ms(r.e2e_p50_ms), ms(r.e2e_p95_ms), ms(r.behind_first_p50_ms), ms(r.behind_first_max_ms))
            for r in g.listeners]
    listeners = table(["listener", "language", "sent", "ok", "timeout", "error", "e2e p50 ms", "e2e p95 ms",
                       "behind the first p50 ms", "behind the first max ms"], rows, left_cols=2)
    return ('<h2 id="group">Group: listeners of one speaker</h2><p>Spread: for each spoken utterance, the '
            "latest listener's first translated audio minus the earliest one's. Behind the first: a "
            "listener's first translated audio minus the earliest listener's, same utterance.</p>"
            + facts + listeners)


def _barge_in(s: ScenarioSections) -> str:
    b = s.barge_in
    if b is None:
        return ""
    rows = [("utterances", f"{b.utterances:,}"),
            ("translation ready while the previous one played", f"{b.overlapped:,}"),
            ("their tts p50 ms", ms(b.tts_p50_overlapped_ms)),
            ("the others' tts p50 ms", ms(b.tts_p50_others_ms)),
            ("previous audio still to play, p50 ms", ms(b.overlap_p50_ms)),
            ("onset after the previous audio's end, p50 ms", ms(b.after_previous_p50_ms)),
            ("previous translation cut", f"{b.previous_cut:,}")]
    return (f'<h2 id="barge-in">Barge-in: queueing</h2><p>What the gateway did: <b>{e(b.sentence)}</b>.</p>'
            + table(["", "value"], rows))


def _monologue(s: ScenarioSections) -> str:
    m = s.monologue
    if m is None:
        return ""
    rows = [(e(r.fixture_id), *(f"{getattr(r, k):,}" for k in SEGMENTATIONS), f"{r.total:,}")
            for r in (*m.fixtures, m.total)]
    sentence = e(m.sentence[:1].upper() + m.sentence[1:])
    return (f'<h2 id="monologue">Monologue: segmentation</h2><p><b>{sentence}</b>. Each fixture of the '
            "take against the manifest: one utterance (single), merged with a neighbour, split into several, "
            "or lost.</p>"
            + table(["fixture", *SEGMENTATIONS, "total"], rows))


def scenario_sections(s: ScenarioSections, by: GroupBy | None = None) -> str:
    """by: the --by groups; grouped by direction alone, they already are the per-direction table."""
    two_way = "" if by is not None and by.columns == ("direction",) else _two_way(s)
    return two_way + _group(s) + _barge_in(s) + _monologue(s)


def listening_section(x: ListeningSummary | None) -> str:
    if x is None:
        return ""
    offsets = stage_table({"start_offset_ms": x.start_offset, "end_offset_ms": x.end_offset}, budget=False,
                          first="offset")
    short = f"{x.short:,} of {x.compared:,} ({pct(x.short / x.compared) if x.compared else '—'})"
    rows = [("received audio short of the announced by more than one packet", short),
            ("median shortfall of those, ms", ms(x.shortfall_p50_ms)),
            ("utterances with sequence gaps", f"{x.with_gaps:,} of {x.gap_rows:,}"),
            ("gaps / missing packets", f"{x.gaps:,} / {x.missing_packets:,}")]
    if x.checked:
        rows += [("decoded (--listen-sample)", f"{x.checked:,}"),
                 ("silent / clipped", f"{x.silent:,} / {x.clipped:,}"),
                 ("RMS dBFS p50 (min – max)", f"{_db(x.rms_dbfs_p50)} ({_db(x.rms_dbfs_min)} – "
                                              f"{_db(x.rms_dbfs_max)})")]
    return ('<h2 id="listening">Listener experience</h2><p>Start offset: first translated audio minus the '
            "start of the source speech; end offset: end of the translated audio minus the end of the source "
            "speech.</p>" + offsets + table(["", "value"], rows))


def _db(x: float | None) -> str:
    return num(None if x is None else round(x, 1))
