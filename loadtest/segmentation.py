"""How the gateway cut a long take into utterances, judged against what the tester planned (monologue).

A transcription that carries its speech span (``speech_start_ts``..``speech_end_ts``, server clock) and
its ``server_ts`` is placed on the tester's clock with ``offset = arrival − server_ts`` of that same event:
the mapped span is late by the event's one-way delay (milliseconds on a LAN; more on an impaired
network or an overloaded tester). The same event's timestamps always come from one gateway host, so the
mapping holds when replicas on different hosts serve one conversation (a running minimum over events
would mix their clocks).

The planned utterances a segment overlaps (their ``t_send_start``..``t_speech_end``, by at least
``min_overlap_s`` or half the shorter of the two) are judged, per utterance:

* ``single``: one segment overlaps it, and that segment overlaps no other utterance;
* ``merged``: the segment timing it also overlaps other utterances (the gateway ran them together);
* ``split``: several segments overlap it; it is timed by the segment holding its speech end;
* ``lost``: no segment overlapped it (it times out at stt).

A segment times the utterances whose speech ended within it (``t_speech_end ≤ mapped end + END_SLACK_S``:
the gateway's VAD may end a breath earlier than the fixture's last voiced packet) and that no segment
timed before. ``summarise`` counts the judgements of a run's rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

SEGMENTATIONS = ("single", "merged", "split", "lost")
MIN_OVERLAP_S = 0.1
END_SLACK_S = 0.25  # below a VAD hangover: a segment that ended this much earlier cut the utterance


@dataclass(frozen=True)
class Span:
    """A gateway segment's speech, on the tester's clock (seconds)."""

    start: float
    end: float


def map_span(speech_start_ts: float, speech_end_ts: float, server_ts: float, arrival: float) -> Span:
    """Server-clock span (seconds) → tester clock, with the offset of the event that carried it."""
    offset = arrival - server_ts
    return Span(speech_start_ts + offset, speech_end_ts + offset)


def overlap_s(span: Span, start: float, end: float) -> float:
    return max(0.0, min(span.end, end) - max(span.start, start))


def overlaps(span: Span, start: float, end: float, min_overlap_s: float = MIN_OVERLAP_S) -> bool:
    """The segment covers enough of [start, end]: ``min_overlap_s``, or half of the shorter of the two
    (a short segment or utterance wholly inside the other still counts)."""
    need = min(min_overlap_s, 0.5 * (span.end - span.start), 0.5 * (end - start))
    got = overlap_s(span, start, end)
    return got > 0.0 and got >= need


def holds_end(span: Span, speech_end: float | None, slack_s: float = END_SLACK_S) -> bool:
    """The segment holds this speech end (the utterance's speech ended, and not after the segment did)."""
    return speech_end is not None and speech_end <= span.end + slack_s


def judge(segments_overlapping: int, utterances_in_segment: int) -> str:
    """single | merged | split for a timed utterance."""
    if segments_overlapping > 1:
        return "split"
    return "merged" if utterances_in_segment > 1 else "single"


@dataclass
class SegmentationSummary:
    """Counts over the rows span matching judged; ``judged`` = their number, ``share`` per judgement."""

    judged: int = 0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SEGMENTATIONS, 0))
    segments: int = 0  # distinct gateway utterances that timed rows

    def share(self, kind: str) -> float | None:
        return None if self.judged == 0 else self.counts.get(kind, 0) / self.judged

    def to_dict(self) -> dict[str, Any]:
        return {"judged": self.judged, "segments": self.segments, **self.counts,
                **{f"{k}_share": self.share(k) for k in SEGMENTATIONS}}


def summarise(rows: Iterable[Mapping[str, Any]]) -> SegmentationSummary:
    """Segmentation counts of rows (dicts or SampleRow.to_dict()); rows without a judgement are skipped.
    An utterance is counted once (conversation, party, seq) however many listeners heard it: the cut is the
    gateway's, the same for every listener."""
    out = SegmentationSummary()
    seen: set[tuple[Any, Any, Any]] = set()
    segments: set[tuple[Any, Any]] = set()
    for row in rows:
        kind = row.get("segmentation")
        if not isinstance(kind, str) or kind not in out.counts:
            continue
        key = (row.get("conversation"), row.get("party"), row.get("seq"))
        if key in seen:
            continue
        seen.add(key)
        out.judged += 1
        out.counts[kind] += 1
        if row.get("segment_id") is not None:
            segments.add((row.get("conversation"), row.get("segment_id")))
    out.segments = len(segments)
    return out
