"""Result events from the gateway, typed, and their correlation to the utterances we spoke.

A transcription names the speaker's producer, not our utterance. Matching ``"order"`` (the default): it
goes to the oldest utterance of that producer still awaiting one (utterances are spoken in order, one at
a time). Matching ``"span"`` (a monologue): it goes to the planned utterances its server speech span
overlaps (loadtest/segmentation.py: single, merged, split, lost); events without a span fall back to
order. An error of an utterance that has no transcription (STT failed) is placed the same way: by its
span when it carries one, else in order. Later events name the gateway's utterance id and apply to every
utterance it timed. Translated
audio is assigned to its ``tts`` event by loadtest/hearing.py, and a row is delivered once its audio
ended. Malformed events are counted and ignored.

One listener hears one target language from one TTS producer: translation, tts and error events of our
utterances for another ``target_language`` or another TTS producer (a group room sends one per
language) are ignored and count as handled (``stats.ignored``): they are ours, meant for another
listener. Events of gateway utterances we never matched stay unmatched, whatever their language.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from loadtest.event_types import (
    MAX_TEXT,
    EventParser,
    MalformedEvent,
    PipelineError,
    ResultEvent,
    Transcription,
    Translation,
    TtsStart,
    cap_text,
)
from loadtest.hearing import QUIET_S, Hearing, Schedule, Stream
from loadtest.listening import ListenDecoder, sampled
from loadtest.segmentation import holds_end, judge, map_span, overlaps
from loadtest.timeline import UtteranceTimeline

__all__ = ["MAX_TEXT", "CorrelationStats", "Correlator", "EventParser", "MalformedEvent", "PipelineError",
           "ResultEvent", "Segment", "Transcription", "Translation", "TtsStart", "cap_text"]

MAX_SEGMENTS = 256  # gateway utterances followed at once (bounded whatever a server sends)
MAX_RECENT = 256  # gateway utterance ids remembered after their rows were delivered
MATCHINGS = ("order", "span")


@dataclass
class CorrelationStats:
    malformed: int = 0
    unmatched: int = 0
    ignored: int = 0  # events of our utterances meant for another listener (language, TTS producer)
    last_malformed: str = ""


@dataclass
class Segment:
    """One gateway utterance as this listener follows it."""

    server_id: str
    timelines: list[UtteranceTimeline]  # the utterances it times (empty: it times none of ours)
    ours: bool = True  # False: our producer's, but it overlapped none of our utterances (unmatched)
    stream: Stream | None = None


class Correlator:
    """Builds timelines of one speaker producer from the events and translated audio one listener gets.

    ``language``: the listener's target language; ``tts_producer_id``: the TTS producer it consumes
    (settable once consumed); events for others are ignored. ``matching``: "order" or "span".
    ``listen_sample``: the fraction of utterances whose audio is decoded and checked. ``schedule``:
    ``loop.call_later``'s shape, for the quiet timer (default: the running loop's)."""

    def __init__(self, producer_id: str, on_complete: Callable[[UtteranceTimeline], None],
                 clock: Callable[[], float], *, language: str | None = None,
                 tts_producer_id: str | None = None, matching: str = "order", listen_sample: float = 0.0,
                 quiet_s: float = QUIET_S, schedule: Schedule | None = None) -> None:
        if matching not in MATCHINGS:
            raise ValueError(f"matching must be one of {', '.join(MATCHINGS)}, not {matching!r}")
        self.producer_id = producer_id
        self.on_complete = on_complete
        self.clock = clock
        self.language = language
        self.tts_producer_id = tts_producer_id
        self.matching = matching
        self.listen_sample = listen_sample
        self.stats = CorrelationStats()
        self.hearing = Hearing(clock, self._audible, self._ended, quiet_s, schedule,
                               keep_unclaimed_payloads=listen_sample > 0)
        self.on_packet = self.hearing.packet  # (t, marker, rtp_timestamp, seq, payload): the monitor's sink
        self._awaiting_transcript: deque[UtteranceTimeline] = deque()
        self._live: dict[str, UtteranceTimeline] = {}  # expected, not yet delivered or expired
        self._by_server_id: dict[str, Segment] = {}
        self._timing: dict[str, Segment] = {}  # utterance id → the segment that times it
        self._overlapped: dict[str, int] = {}  # span matching: segments that overlapped each utterance
        self._recent: dict[str, None] = {}  # gateway ids whose rows are out (later events: duplicates)
        self._span_seen = False
        self.on_onset: Callable[[UtteranceTimeline], None] | None = None  # told when an onset is timed

    @property
    def wants_payloads(self) -> bool:
        """Whether the monitor should pass payloads (some utterances will be decoded)."""
        return self.listen_sample > 0

    def expect(self, tl: UtteranceTimeline) -> None:
        """An utterance was scheduled; results for it may come once its speech has started."""
        self._awaiting_transcript.append(tl)
        self._live[tl.utterance_id] = tl

    # ---- events ----------------------------------------------------------------------------------

    def on_event(self, event: ResultEvent, t: float) -> bool:
        """Apply one result event; False when it belongs to none of our utterances (unmatched)."""
        if isinstance(event, Transcription):
            return self._transcription(event, t)
        seg = self._by_server_id.get(event.utterance_id)
        if self._for_another_listener(event):
            if (seg is not None and seg.ours) or event.utterance_id in self._recent:
                self.stats.ignored += 1
                return True
            self.stats.unmatched += 1
            return False
        if seg is None and isinstance(event, PipelineError):
            if self._spans(event):
                return self._by_span(event, t)
            seg = self._failed_before_transcript(event)
        if seg is None:
            self.stats.unmatched += 1
            return False
        if isinstance(event, Translation):
            for tl in seg.timelines:
                if tl.t_translation is None:
                    tl.t_translation, tl.translation, tl.server_translation = t, event.text, event.server_ts
        elif isinstance(event, TtsStart):
            self._tts(seg, event, t)
        else:
            for tl in seg.timelines:
                self._errored(tl, event)
        for tl in list(seg.timelines):
            self._maybe_complete(tl)
        if isinstance(event, PipelineError) and not seg.timelines:
            self._retire(seg)
        if not seg.ours:
            self.stats.unmatched += 1
        return seg.ours

    def _for_another_listener(self, event: ResultEvent) -> bool:
        language = getattr(event, "target_language", None)
        if language is not None and self.language is not None and language != self.language:
            return True
        return (isinstance(event, TtsStart) and self.tts_producer_id is not None
                and event.tts_producer_id is not None and event.tts_producer_id != self.tts_producer_id)

    def _transcription(self, event: Transcription, t: float) -> bool:
        if event.producer_id != self.producer_id:
            return False  # another speaker's utterance: not ours to time
        if event.utterance_id in self._by_server_id or event.utterance_id in self._recent:
            self.stats.unmatched += 1  # a duplicate: that utterance has its transcript already
            return False
        if self._spans(event):
            return self._by_span(event, t)
        tl = self._oldest_started()
        if tl is None:
            self.stats.unmatched += 1
            return False
        self._awaiting_transcript.remove(tl)
        self._transcribed(tl, event, t)
        self._bind(Segment(event.utterance_id, [tl]))
        if tl.t_speech_end is None:
            # The gateway ended the utterance before we finished speaking it.
            tl.error, tl.error_stage = "transcript before end of speech (utterance split)", "stt"
        self._maybe_complete(tl)
        return True

    def _spans(self, event: Transcription | PipelineError) -> bool:
        """Span matching applies: a monologue, and the event carries its segment's span and send time. An
        error must name our producer (its own utterance id is new: only the span says whose it is)."""
        if isinstance(event, PipelineError) and (event.producer_id != self.producer_id
                                                 or event.utterance_id in self._recent):
            return False
        return (self.matching == "span" and event.speech_start_ts is not None
                and event.speech_end_ts is not None and event.server_ts is not None)

    def _by_span(self, event: Transcription | PipelineError, t: float) -> bool:
        """Monologue: the planned utterances whose speech this segment overlaps (docs in segmentation.py).
        A transcription times those it holds the end of; an error (the segment failed before its
        transcript) ends them as errors at its stage, judged alike."""
        assert event.speech_start_ts is not None and event.speech_end_ts is not None
        assert event.server_ts is not None
        self._span_seen = True
        span = map_span(event.speech_start_ts, event.speech_end_ts, event.server_ts, t)
        hits = [tl for tl in self._live.values() if tl.t_send_start is not None
                and overlaps(span, tl.t_send_start, t if tl.t_speech_end is None else tl.t_speech_end)]
        for tl in hits:
            count = self._overlapped[tl.utterance_id] = self._overlapped.get(tl.utterance_id, 0) + 1
            if count > 1 and tl.utterance_id in self._timing:
                tl.segmentation = "split"  # a later segment covers part of it too
        timed = [tl for tl in hits
                 if tl.utterance_id not in self._timing and holds_end(span, tl.t_speech_end)]
        for tl in timed:
            self._awaiting_transcript.remove(tl)
            if isinstance(event, Transcription):
                self._transcribed(tl, event, t)
            else:
                self._errored(tl, event)
            tl.segmentation = judge(self._overlapped[tl.utterance_id], len(hits))
        seg = Segment(event.utterance_id, timed, ours=bool(hits))
        self._bind(seg)
        for tl in timed:
            self._maybe_complete(tl)
        if isinstance(event, PipelineError) and not seg.timelines:
            self._retire(seg)  # an error ends its segment: nothing waits on it (the timed ones retire it)
        if not hits:
            self.stats.unmatched += 1
        return bool(hits)

    def _transcribed(self, tl: UtteranceTimeline, event: Transcription, t: float) -> None:
        tl.t_transcript, tl.transcript = t, event.text
        tl.server_transcript, tl.server_speech_end = event.server_ts, event.speech_end_ts

    @staticmethod
    def _errored(tl: UtteranceTimeline, event: PipelineError) -> None:
        tl.error, tl.error_stage = f"gateway: {event.error}", cap_text(event.stage, 40)

    def _oldest_started(self) -> UtteranceTimeline | None:
        return next((tl for tl in self._awaiting_transcript if tl.t_send_start is not None), None)

    def _bind(self, seg: Segment) -> None:
        self._by_server_id[seg.server_id] = seg
        for tl in seg.timelines:
            self._timing[tl.utterance_id] = seg
            tl.server_utterance_id = tl.segment_id = seg.server_id
        if len(self._by_server_id) > MAX_SEGMENTS:
            self._retire(next(iter(self._by_server_id.values())))

    def _failed_before_transcript(self, event: PipelineError) -> Segment | None:
        """An error of our producer's utterance that has no transcript yet (STT failed): the oldest
        started utterance awaiting its transcript, as the transcript itself would have been matched."""
        if event.producer_id != self.producer_id or event.utterance_id in self._recent:
            return None
        tl = self._oldest_started()
        if tl is None:
            return None
        self._awaiting_transcript.remove(tl)
        seg = Segment(event.utterance_id, [tl])
        self._bind(seg)
        return seg

    def _tts(self, seg: Segment, event: TtsStart, t: float) -> None:
        if seg.stream is not None:
            return  # a duplicate: its audio is being followed already
        for tl in seg.timelines:
            if tl.t_tts_event is None:
                tl.t_tts_event, tl.server_tts = t, event.server_ts
                tl.tts_audio_ms, tl.tts_rtp_timestamp = event.duration_ms, event.rtp_timestamp
        keep = any(sampled(tl.utterance_id, self.listen_sample) for tl in seg.timelines)
        stream = self.hearing.open(seg.server_id, event.rtp_timestamp, event.duration_ms, keep)
        seg.stream = stream  # (the callbacks may have set it already: open() can start and end a stream)

    # ---- audio -----------------------------------------------------------------------------------

    def _audible(self, stream: Stream) -> None:
        seg = self._by_server_id.get(stream.key or "")
        if seg is None:
            return
        seg.stream = stream
        for tl in seg.timelines:
            if tl.t_audio_onset is None:
                tl.t_audio_onset = stream.t_first
                if self.on_onset is not None:
                    self.on_onset(tl)
            tl.previous_audio_end, tl.previous_cut = stream.prev_end, stream.prev_cut

    def _ended(self, stream: Stream) -> None:
        seg = self._by_server_id.get(stream.key or "")
        if seg is None:
            return
        seg.stream = stream
        if stream.payloads:
            stream.checking = True
            self.hearing.later(self._decode, stream, ListenDecoder(stream.payloads))
        stream.payloads = None
        self._settle(seg)

    def _decode(self, stream: Stream, decoder: ListenDecoder) -> None:
        """--listen-sample: a few packets per loop turn, then the check and the rows that waited for it."""
        if not decoder.step():
            self.hearing.later(self._decode, stream, decoder)
            return
        stream.check, stream.checking = decoder.result(), False
        seg = self._by_server_id.get(stream.key or "")
        if seg is not None:
            self._settle(seg)

    def _settle(self, seg: Segment) -> None:
        for tl in list(seg.timelines):
            self._maybe_complete(tl)
        if not any(tl.utterance_id in self._live for tl in seg.timelines):
            self._retire(seg)

    # ---- delivery --------------------------------------------------------------------------------

    def _maybe_complete(self, tl: UtteranceTimeline) -> None:
        if tl.utterance_id not in self._live or not tl.is_complete():
            return
        seg = self._timing.get(tl.utterance_id)
        stream = seg.stream if seg is not None else None
        if tl.error is None and stream is not None and (not stream.closed or stream.checking):
            return  # complete, but its translated audio still plays (or is being checked): the row waits
        self._hear(tl)
        self._forget(tl)
        self.on_complete(tl)

    def _hear(self, tl: UtteranceTimeline) -> None:
        """What the listener heard of this utterance so far (all of it once its stream has ended)."""
        seg = self._timing.get(tl.utterance_id)
        stream = seg.stream if seg is not None else None
        if stream is None:
            return
        tl.audio_packets = stream.packets
        tl.audio_missing_packets, tl.audio_gaps = stream.holes()
        tl.t_audio_end = stream.end
        check = stream.check
        if check is not None:
            tl.listen_checked, tl.listen_rms_dbfs = True, check.rms_dbfs
            tl.listen_silent, tl.listen_clipped = check.silent, check.clipped

    def _forget(self, tl: UtteranceTimeline) -> None:
        uid = tl.utterance_id
        self._live.pop(uid, None)
        self._overlapped.pop(uid, None)
        if tl in self._awaiting_transcript:
            self._awaiting_transcript.remove(tl)
        seg = self._timing.pop(uid, None)
        if seg is not None and not any(t.utterance_id in self._live for t in seg.timelines):
            self._retire(seg)

    def _retire(self, seg: Segment) -> None:
        """No utterance waits on this gateway utterance any more; later events of it are duplicates (or
        another listener's, still handled)."""
        if self._by_server_id.pop(seg.server_id, None) is None:
            return
        if seg.ours:
            self._recent[seg.server_id] = None
            if len(self._recent) > MAX_RECENT:
                del self._recent[next(iter(self._recent))]
        if seg.stream is not None:
            self.hearing.drop(seg.stream)

    def expire(self, tl: UtteranceTimeline) -> None:
        """The utterance's deadline passed: stop waiting. Its outcome is what it reached: a timeout at its
        last stage, or ok with the end of its audio unknown (end fields None) when only that was missing."""
        if tl.utterance_id not in self._live:
            return
        if self.matching == "span" and tl.utterance_id not in self._timing and tl.t_send_start is not None:
            overlapped = self._overlapped.get(tl.utterance_id, 0)
            if overlapped:
                tl.segmentation = "split"  # cut by the gateway; the part holding its end never came
            elif self._span_seen:
                tl.segmentation = "lost"
        self._hear(tl)
        self._forget(tl)

    def close(self) -> None:
        """The listener left: timers stop acting."""
        self.hearing.stop()
