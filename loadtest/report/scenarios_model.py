"""Typed records of the report's per-group and per-scenario sections (no pandas: model.py imports them).

`--by COLUMN[,COLUMN…]` splits the run into groups (GroupBy); the scenario sections (two-way, group,
barge-in, monologue) and the listener experience appear only when the samples carry their columns
(docs/reports.md, "Scenarios and listeners").
"""

from __future__ import annotations

from dataclasses import dataclass

from loadtest.report.records import Rates, StageStats, UtteranceCounts

SEGMENTATIONS: tuple[str, ...] = ("single", "merged", "split", "lost")


@dataclass(frozen=True)
class GroupSummary:
    """One group of rows: its outcomes and stage figures, as the whole run has them."""

    key: str  # the group's values joined with " / " ("(none)" for a row without a value)
    values: tuple[tuple[str, str], ...]  # (column, value) in --by order
    counts: UtteranceCounts
    rates: Rates
    stages: dict[str, StageStats]


@dataclass(frozen=True)
class GroupBy:
    columns: tuple[str, ...]
    groups: tuple[GroupSummary, ...]


@dataclass(frozen=True)
class ListeningSummary:
    """What the listeners heard: when the translated audio started and ended, how much of it arrived."""

    utterances: int  # rows carrying any hearing column
    start_offset: StageStats  # first translated audio − start of the source speech (ms)
    end_offset: StageStats  # end of the translated audio − end of the source speech (ms)
    compared: int  # rows with both the received and the announced duration
    short: int  # ... where the received audio fell short of the announced by more than one packet
    shortfall_p50_ms: float | None  # median shortfall of those
    gap_rows: int  # rows whose sequence-number holes were counted
    with_gaps: int  # ... with at least one hole
    gaps: int  # holes, summed
    missing_packets: int  # packets inside those holes, summed
    checked: int  # rows decoded for --listen-sample
    silent: int
    clipped: int
    rms_dbfs_p50: float | None
    rms_dbfs_min: float | None
    rms_dbfs_max: float | None


@dataclass(frozen=True)
class ListenerRow:
    """One listener (and the language it asked for) in the group scenario."""

    listener: str
    language: str
    sent: int
    ok: int
    timeout: int
    error: int
    e2e_p50_ms: float | None
    e2e_p95_ms: float | None
    behind_first_p50_ms: float | None  # its first translated audio − the first listener's, same utterance
    behind_first_max_ms: float | None


@dataclass(frozen=True)
class GroupSpread:
    """One speaker, N listeners: how far apart the listeners heard the same utterance."""

    utterances: int  # spoken utterances (conversation, party, seq)
    measured: int  # ... heard by at least two listeners: their spread is measured
    incomplete: int  # ... that some listener never heard
    spread_p50_ms: float | None  # max − min of the listeners' first translated audio
    spread_p95_ms: float | None
    spread_max_ms: float | None
    listeners: tuple[ListenerRow, ...]


@dataclass(frozen=True)
class BargeInSummary:
    """What the gateway did with a translation ready while the previous one still played."""

    utterances: int  # barge-in rows
    overlapped: int  # ... whose translation was ready while the previous translated audio played
    tts_p50_overlapped_ms: float | None
    tts_p50_others_ms: float | None
    overlap_p50_ms: float | None  # how long the previous audio still had to play, median
    after_previous_p50_ms: float | None  # this audio's onset − the previous audio's end (overlapped ones)
    previous_cut: int  # overlapped ones whose previous audio stopped short of its announced duration
    behaviour: str  # "queued" | "cut" | "overlaid" | "none"
    sentence: str


@dataclass(frozen=True)
class SegmentationRow:
    fixture_id: str
    single: int
    merged: int
    split: int
    lost: int

    @property
    def total(self) -> int:
        return self.single + self.merged + self.split + self.lost


@dataclass(frozen=True)
class MonologueSummary:
    """The gateway's segmentation of a long take judged against the manifest, per fixture."""

    fixtures: tuple[SegmentationRow, ...]  # in the order they were spoken
    total: SegmentationRow
    sentence: str


@dataclass
class ScenarioSections:
    two_way: GroupBy | None = None  # per direction, when the run had two or more
    group: GroupSpread | None = None
    barge_in: BargeInSummary | None = None
    monologue: MonologueSummary | None = None
    listening: ListeningSummary | None = None

    def __bool__(self) -> bool:
        return any(x is not None for x in (self.two_way, self.group, self.barge_in, self.monologue,
                                           self.listening))
