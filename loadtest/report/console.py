"""The report in the terminal: the stage table, and the per-group and per-scenario sections (when present).

Lines, not printing: the caller decides the stream (the run and `report` print them to stderr).
"""

from __future__ import annotations

from loadtest.report.model import STAGES, RunSummary, StageStats
from loadtest.report.scenarios_model import SEGMENTATIONS, GroupBy, ListeningSummary, ScenarioSections


def _ms(x: float | None) -> str:
    return "–" if x is None or x != x else f"{x:.0f}"


def stage_lines(stages: dict[str, StageStats], indent: str = "") -> list[str]:
    """Count and exact percentiles per stage (ms), in pipeline order."""
    lines = [f"{indent}{'stage':<12}{'count':>7}{'p50':>10}{'p95':>10}{'p99':>10}{'max':>10}   (ms)"]
    for name in STAGES:
        st = stages.get(name)
        if st is None or not st.count:
            lines.append(f"{indent}{name:<12}{0:>7}{'–':>10}{'–':>10}{'–':>10}{'–':>10}")
            continue
        lines.append(f"{indent}{name:<12}{st.count:>7}{st.p50:>10.1f}{st.p95:>10.1f}{st.p99:>10.1f}"
                     f"{st.max:>10.1f}")
    return lines


def group_lines(by: GroupBy, title: str) -> list[str]:
    lines = [title]
    for g in by.groups:
        c = g.counts
        lines.append(f"  {g.key}: sent {c.sent}  ok {c.ok}  timeout {c.timeout}  error {c.error}")
        lines += stage_lines(g.stages, indent="    ")
    return lines


def listening_lines(x: ListeningSummary) -> list[str]:
    so, eo = x.start_offset, x.end_offset
    lines = [
        f"listener experience ({x.utterances} utterances):",
        f"  start offset p50 {_ms(so.p50)}  p95 {_ms(so.p95)}  max {_ms(so.max)} ms   "
        f"end offset p50 {_ms(eo.p50)}  p95 {_ms(eo.p95)}  max {_ms(eo.max)} ms",
        f"  received short of announced by > 1 packet: {x.short} of {x.compared}   "
        f"gaps: {x.with_gaps} of {x.gap_rows} utterances, {x.gaps} gaps, {x.missing_packets} packets missing",
    ]
    if x.checked:
        rms = "" if x.rms_dbfs_p50 is None else f", RMS p50 {x.rms_dbfs_p50:.1f} dBFS"
        lines.append(f"  decoded {x.checked}: silent {x.silent}  clipped {x.clipped}{rms}")
    return lines


def scenario_lines(s: ScenarioSections, by: GroupBy | None = None) -> list[str]:
    """by: the --by groups; grouped by direction alone, they already are the per-direction table."""
    lines: list[str] = []
    if s.two_way is not None and not (by is not None and by.columns == ("direction",)):
        lines += group_lines(s.two_way, "per direction:")
    if (g := s.group) is not None:
        lines.append(f"group: {g.utterances} spoken utterances, {g.measured} heard by >= 2 listeners, "
                     f"{g.incomplete} missed by a listener; spread p50 {_ms(g.spread_p50_ms)}  "
                     f"p95 {_ms(g.spread_p95_ms)}  max {_ms(g.spread_max_ms)} ms")
        for r in g.listeners:
            lines.append(f"  {r.listener} ({r.language}): sent {r.sent}  ok {r.ok}  timeout {r.timeout}  "
                         f"error {r.error}  e2e p50 {_ms(r.e2e_p50_ms)}  p95 {_ms(r.e2e_p95_ms)} ms  "
                         f"behind the first p50 {_ms(r.behind_first_p50_ms)} ms")
    if (b := s.barge_in) is not None:
        lines.append(f"barge-in: {b.sentence}")
        lines.append(f"  {b.overlapped} of {b.utterances} translations ready while the previous one played; "
                     f"tts p50 {_ms(b.tts_p50_overlapped_ms)} ms (others {_ms(b.tts_p50_others_ms)} ms), "
                     f"after the previous p50 {_ms(b.after_previous_p50_ms)} ms, "
                     f"previous cut {b.previous_cut}")
    if (m := s.monologue) is not None:
        lines.append(f"monologue: {m.sentence}")
        lines.append(f"  {'fixture':<24}" + "".join(f"{k:>8}" for k in SEGMENTATIONS))
        for r in (*m.fixtures, m.total):
            lines.append(f"  {r.fixture_id[:24]:<24}" + "".join(f"{getattr(r, k):>8}" for k in SEGMENTATIONS))
    if s.listening is not None:
        lines += listening_lines(s.listening)
    return lines


def section_lines(summary: RunSummary) -> list[str]:
    """Everything after the stage table; no line at all for a run without groups or scenario columns."""
    lines = group_lines(summary.by, f"by {','.join(summary.by.columns)}:") if summary.by is not None else []
    return lines + scenario_lines(summary.scenarios, summary.by)
