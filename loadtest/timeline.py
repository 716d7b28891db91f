"""One utterance's life on one monotonic clock, and which timestamps make which stage.

Pure data and pure functions: everything here is unit-tested without a network.
Stage definitions (docs/design.md):
  stt         = transcript event − end of speech (last voiced packet sent)
  translation = translation event − transcript event
  tts         = first translated audio at the listener − translation event
  e2e         = first translated audio at the listener − end of speech
  sfu         = (mode "sfu") first voiced packet at the listener − its send time at the speaker
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from enum import StrEnum

STAGES = ("connect", "stt", "translation", "tts", "e2e")
PACKET_MS = 20.0  # one translated-audio RTP packet (the reference gateway's and browsers' ptime)
PIPELINE_STAGES = ("stt", "translation", "tts", "e2e")


class Status(StrEnum):
    OK = "ok"
    TIMEOUT = "timeout"
    ERROR = "error"


# The order in which an utterance reaches its milestones. A timeout's status_stage is the stage that
# never finished (the one after the last milestone reached); its message names the last one reached.
MILESTONES = ("planned", "sent", "stt", "translation", "tts_event", "audio")
STALLED_STAGE = {"planned": "send", "sent": "stt", "stt": "translation", "translation": "tts",
                 "tts_event": "tts"}
SFU_STALLED_STAGE = {"planned": "send", "sent": "sfu"}


@dataclass
class UtteranceTimeline:
    """Everything measured about one utterance. ``t_*``: seconds, tester's CLOCK_MONOTONIC."""

    utterance_id: str
    conversation: str
    seq: int
    fixture_id: str
    source_language: str
    target_language: str
    t_planned: float
    wall_start: float
    t_send_start: float | None = None
    t_speech_end: float | None = None
    t_transcript: float | None = None
    t_translation: float | None = None
    t_tts_event: float | None = None
    t_audio_onset: float | None = None
    t_sfu_arrival: float | None = None  # mode "sfu": first voiced packet of this utterance at the listener
    mode: str = "pipeline"
    server_utterance_id: str | None = None
    server_speech_end: float | None = None
    server_transcript: float | None = None
    server_translation: float | None = None
    server_tts: float | None = None
    transcript: str | None = None
    translation: str | None = None
    tts_audio_ms: float | None = None
    tts_rtp_timestamp: int | None = None
    error: str | None = None
    error_stage: str | None = None
    send_lateness: list[float] = field(default_factory=list, repr=False)
    snr_db: float | None = None  # noise mixed into the clip at this SNR (None: clean speech)
    # Who spoke and who heard (a conversation may have two parties and several listeners).
    scenario: str = "one-way"
    party: str = "a"
    listener: str = "l1"
    # What the listener heard of the translated audio (loadtest/hearing.py).
    t_audio_end: float | None = None  # last packet's arrival + 20 ms; None while unknown
    audio_packets: int | None = None  # None: no translated audio was announced for this utterance
    audio_missing_packets: int | None = None
    audio_gaps: int | None = None
    listen_checked: bool = False
    listen_silent: bool | None = None
    listen_clipped: bool | None = None
    listen_rms_dbfs: float | None = None
    previous_audio_end: float | None = None  # end of the audio this listener heard just before this one's
    previous_cut: bool | None = None
    segmentation: str | None = None  # span matching only: single | merged | split | lost
    segment_id: str | None = None  # the gateway utterance whose events timed this one

    def last_milestone(self) -> str:
        if self.mode == "sfu":
            if self.t_sfu_arrival is not None:
                return "sfu"
            return "sent" if self.t_speech_end is not None else "planned"
        reached = {
            "planned": True,
            "sent": self.t_speech_end is not None,
            "stt": self.t_transcript is not None,
            "translation": self.t_translation is not None,
            "tts_event": self.t_tts_event is not None,
            "audio": self.t_audio_onset is not None,
        }
        last = "planned"
        for name in MILESTONES:
            if reached[name]:
                last = name
        return last

    def is_complete(self) -> bool:
        if self.mode == "sfu":
            heard = self.t_sfu_arrival is not None and self.t_speech_end is not None
            return self.error is not None or heard
        return self.error is not None or (
            self.t_audio_onset is not None
            and self.t_translation is not None
            and self.t_transcript is not None
            and self.t_speech_end is not None
        )


def _ms(later: float | None, earlier: float | None) -> float | None:
    if later is None or earlier is None:
        return None
    return (later - earlier) * 1000.0


@dataclass(frozen=True)
class StageLatencies:
    stt_ms: float | None
    translation_ms: float | None
    tts_ms: float | None
    e2e_ms: float | None
    sfu_ms: float | None = None


@dataclass(frozen=True)
class HeardTimes:
    """The listener's view of one utterance, in ms (docs/samples.md)."""

    start_offset_ms: float | None  # first translated audio − start of the source speech
    end_offset_ms: float | None  # end of the translated audio − end of the source speech
    audio_received_ms: float | None
    overlap_ms: float | None  # the previous audio still played this long after this translation was ready
    after_previous_ms: float | None  # this audio's onset − the previous audio's end (negative: overlap)


def heard_times(tl: UtteranceTimeline) -> HeardTimes:
    overlap = _ms(tl.previous_audio_end, tl.t_translation)
    return HeardTimes(
        start_offset_ms=_ms(tl.t_audio_onset, tl.t_send_start),
        end_offset_ms=_ms(tl.t_audio_end, tl.t_speech_end),
        audio_received_ms=None if tl.audio_packets is None else tl.audio_packets * PACKET_MS,
        overlap_ms=None if overlap is None else max(0.0, overlap),
        after_previous_ms=_ms(tl.t_audio_onset, tl.previous_audio_end),
    )


def stage_latencies(tl: UtteranceTimeline) -> StageLatencies:
    return StageLatencies(
        stt_ms=_ms(tl.t_transcript, tl.t_speech_end),
        translation_ms=_ms(tl.t_translation, tl.t_transcript),
        tts_ms=_ms(tl.t_audio_onset, tl.t_translation),
        e2e_ms=_ms(tl.t_audio_onset, tl.t_speech_end),
        sfu_ms=_ms(tl.t_sfu_arrival, tl.t_send_start),
    )


@dataclass(frozen=True)
class Outcome:
    status: Status
    status_stage: str | None
    error: str | None


def outcome(tl: UtteranceTimeline) -> Outcome:
    """Exactly one status per utterance: ok, timeout (naming the last stage reached) or error."""
    if tl.error is not None:
        return Outcome(Status.ERROR, tl.error_stage, tl.error)
    if tl.is_complete():
        return Outcome(Status.OK, None, None)
    last = tl.last_milestone()
    if tl.mode == "sfu":
        stage = SFU_STALLED_STAGE.get(last, "sfu")
        if stage == "sfu":
            return Outcome(Status.TIMEOUT, stage, "no voiced packet of this utterance reached the listener")
        return Outcome(Status.TIMEOUT, stage, f"timed out in {stage} (last reached: {last})")
    stage = STALLED_STAGE[last]
    if last == "tts_event":
        return Outcome(Status.TIMEOUT, stage, "tts event received but no translated audio arrived")
    return Outcome(Status.TIMEOUT, stage, f"timed out in {stage} (last reached: {last})")


def lateness_p99_ms(samples: list[float]) -> float | None:
    if not samples:
        return None
    ordered = sorted(samples)
    # Nearest-rank p99: small per-utterance sets, no interpolation wanted.
    rank = max(0, math.ceil(0.99 * len(ordered)) - 1)
    return ordered[rank] * 1000.0


@dataclass
class SampleRow:
    """The flat record written to the journal and samples.parquet (docs/samples.md)."""

    run_id: str
    worker: str
    user: int
    conversation: str
    utterance_id: str
    server_utterance_id: str | None
    seq: int
    fixture_id: str
    source_language: str
    target_language: str
    wall_start: float
    t_planned: float
    t_send_start: float | None
    t_speech_end: float | None
    t_transcript: float | None
    t_translation: float | None
    t_tts_event: float | None
    t_audio_onset: float | None
    t_sfu_arrival: float | None
    server_speech_end: float | None
    server_transcript: float | None
    server_translation: float | None
    server_tts: float | None
    connect_ms: float | None
    stt_ms: float | None
    translation_ms: float | None
    tts_ms: float | None
    e2e_ms: float | None
    sfu_ms: float | None
    status: str
    status_stage: str | None
    error: str | None
    transcript: str | None
    translation: str | None
    reference_transcript: str | None
    reference_translation: str | None
    wer: float | None
    chrf: float | None
    tts_audio_ms: float | None
    send_lateness_p99_ms: float | None
    jitter_ms: float | None
    packets_lost: float | None
    rtt_ms: float | None
    active_users: int
    speaker_node: str | None = None
    listener_node: str | None = None
    # Adverse conditions (docs/samples.md, docs/impairment.md): the caller's impairment profile and the
    # speech's SNR; the network counters are cumulative over the conversation when the row was made.
    impairment: str | None = None
    snr_db: float | None = None
    net_up_packets: float | None = None
    net_up_dropped: float | None = None
    net_up_delayed: float | None = None
    net_up_delay_ms: float | None = None
    net_down_packets: float | None = None
    net_down_dropped: float | None = None
    net_down_delayed: float | None = None
    net_down_delay_ms: float | None = None
    sfu_up_lost: float | None = None
    sfu_up_expected: float | None = None
    rx_down_lost: float | None = None
    rx_down_expected: float | None = None
    net_ice_ms: float | None = None
    reconnects: int = 0  # the caller's successful reconnects before this utterance (scenario.reconnect)
    # Scenarios and what the listener heard (docs/samples.md, "Listeners").
    scenario: str = "one-way"
    party: str = "a"
    listener: str = "l1"
    direction: str = ""
    t_audio_end: float | None = None
    start_offset_ms: float | None = None
    end_offset_ms: float | None = None
    audio_packets: int | None = None
    audio_received_ms: float | None = None
    audio_missing_packets: int | None = None
    audio_gaps: int | None = None
    listen_checked: bool = False
    listen_silent: bool | None = None
    listen_clipped: bool | None = None
    listen_rms_dbfs: float | None = None
    overlap_ms: float | None = None
    after_previous_ms: float | None = None
    previous_cut: bool | None = None
    segmentation: str | None = None
    segment_id: str | None = None

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class RowContext:
    """What the caller knows about an utterance beyond its timeline."""

    run_id: str
    worker: str
    user: int
    connect_ms: float | None
    reference_transcript: str | None
    reference_translation: str | None
    wer: float | None
    chrf: float | None
    jitter_ms: float | None
    packets_lost: float | None
    rtt_ms: float | None
    active_users: int
    speaker_node: str | None = None
    listener_node: str | None = None
    network: dict[str, float | str | None] = field(default_factory=dict)  # impairment columns (SampleRow)
    reconnects: int = 0


def to_row(tl: UtteranceTimeline, ctx: RowContext) -> SampleRow:
    lat = stage_latencies(tl)
    out = outcome(tl)
    heard = heard_times(tl)
    return SampleRow(
        run_id=ctx.run_id,
        worker=ctx.worker,
        user=ctx.user,
        conversation=tl.conversation,
        utterance_id=tl.utterance_id,
        server_utterance_id=tl.server_utterance_id,
        seq=tl.seq,
        fixture_id=tl.fixture_id,
        source_language=tl.source_language,
        target_language=tl.target_language,
        wall_start=tl.wall_start,
        t_planned=tl.t_planned,
        t_send_start=tl.t_send_start,
        t_speech_end=tl.t_speech_end,
        t_transcript=tl.t_transcript,
        t_translation=tl.t_translation,
        t_tts_event=tl.t_tts_event,
        t_audio_onset=tl.t_audio_onset,
        t_sfu_arrival=tl.t_sfu_arrival,
        server_speech_end=tl.server_speech_end,
        server_transcript=tl.server_transcript,
        server_translation=tl.server_translation,
        server_tts=tl.server_tts,
        connect_ms=ctx.connect_ms,
        stt_ms=lat.stt_ms,
        translation_ms=lat.translation_ms,
        tts_ms=lat.tts_ms,
        e2e_ms=lat.e2e_ms,
        sfu_ms=lat.sfu_ms,
        status=out.status.value,
        status_stage=out.status_stage,
        error=out.error,
        transcript=tl.transcript,
        translation=tl.translation,
        reference_transcript=ctx.reference_transcript,
        reference_translation=ctx.reference_translation,
        wer=ctx.wer,
        chrf=ctx.chrf,
        tts_audio_ms=tl.tts_audio_ms,
        send_lateness_p99_ms=lateness_p99_ms(tl.send_lateness),
        jitter_ms=ctx.jitter_ms,
        packets_lost=ctx.packets_lost,
        rtt_ms=ctx.rtt_ms,
        active_users=ctx.active_users,
        speaker_node=ctx.speaker_node,
        listener_node=ctx.listener_node,
        snr_db=tl.snr_db,
        reconnects=ctx.reconnects,
        scenario=tl.scenario,
        party=tl.party,
        listener=tl.listener,
        direction=f"{tl.source_language}-{tl.target_language}",
        t_audio_end=tl.t_audio_end,
        start_offset_ms=heard.start_offset_ms,
        end_offset_ms=heard.end_offset_ms,
        audio_packets=tl.audio_packets,
        audio_received_ms=heard.audio_received_ms,
        audio_missing_packets=tl.audio_missing_packets,
        audio_gaps=tl.audio_gaps,
        listen_checked=tl.listen_checked,
        listen_silent=tl.listen_silent,
        listen_clipped=tl.listen_clipped,
        listen_rms_dbfs=tl.listen_rms_dbfs,
        overlap_ms=heard.overlap_ms,
        after_previous_ms=heard.after_previous_ms,
        previous_cut=tl.previous_cut,
        segmentation=tl.segmentation,
        segment_id=tl.segment_id,
        **ctx.network,  # type: ignore[arg-type]
    )
