"""Result events from the gateway, typed, and their correlation to the utterances we spoke.

A transcription names the speaker's producer, not our utterance: it goes to the oldest utterance of
that producer still awaiting one (utterances are spoken in order, one at a time). Later events name the
gateway's utterance id. Translated audio is matched to its ``tts`` event by RTP timestamp when the
gateway sends one, else by order of talk spurts. Malformed events are counted and ignored.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from loadtest.media import Onset
from loadtest.profile import EventSpec, MissingField, SignalingProfile
from loadtest.timeline import UtteranceTimeline


@dataclass(frozen=True)
class Transcription:
    utterance_id: str
    producer_id: str
    text: str
    server_ts: float | None
    speech_end_ts: float | None


@dataclass(frozen=True)
class Translation:
    utterance_id: str
    text: str
    server_ts: float | None


@dataclass(frozen=True)
class TtsStart:
    utterance_id: str
    tts_producer_id: str | None
    rtp_timestamp: int | None
    duration_ms: float | None
    server_ts: float | None


@dataclass(frozen=True)
class PipelineError:
    utterance_id: str
    stage: str
    error: str
    producer_id: str | None = None  # the speaker's producer, when the error event names it


ResultEvent = Transcription | Translation | TtsStart | PipelineError


class MalformedEvent(ValueError):
    pass


MAX_TEXT = 1000  # characters of a server-provided text kept (transcripts are a sentence or two)
ONSET_SPAN_UNKNOWN_MS = 1000.0  # audio an onset may fall within when the tts event gives no duration


def cap_text(value: str, limit: int = MAX_TEXT) -> str:
    """A server's text, cut before it reaches the journal, the report or a log."""
    return value if len(value) <= limit else f"{value[:limit]}… [{len(value) - limit} more characters cut]"


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise MalformedEvent(f"{name} is not a string")
    return cap_text(value)


def _number(value: Any, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MalformedEvent(f"{name} is not a number")
    return float(value)


def _ident(value: Any, name: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise MalformedEvent(f"{name} is not an id")
    ident = str(value)
    if len(ident) > 256:
        raise MalformedEvent(f"{name} is {len(ident)} characters long, not an id")
    return ident


class EventParser:
    def __init__(self, profile: SignalingProfile) -> None:
        self._specs = profile.events
        self._scale = profile.server_ts_scale

    def _ts(self, value: Any, name: str) -> float | None:
        number = _number(value, name)
        return None if number is None else number * self._scale

    def parse(self, kind: str, payload: Any) -> ResultEvent:
        spec: EventSpec = self._specs[kind]
        try:
            f = spec.parse(payload)
        except MissingField as exc:
            raise MalformedEvent(f"{spec.event}: missing field '{exc.args[0]}'") from None
        uid = _ident(f["utterance_id"], "utterance_id")
        if kind == "transcription":
            return Transcription(uid, _ident(f["producer_id"], "producer_id"), _text(f["text"], "text"),
                                 self._ts(f.get("server_ts"), "server_ts"),
                                 self._ts(f.get("speech_end_ts"), "speech_end_ts"))
        if kind == "translation":
            return Translation(uid, _text(f["text"], "text"), self._ts(f.get("server_ts"), "server_ts"))
        if kind == "tts":
            rtp = _number(f.get("rtp_timestamp"), "rtp_timestamp")
            producer = f.get("tts_producer_id")
            return TtsStart(uid, None if producer is None else _ident(producer, "tts_producer_id"),
                            None if rtp is None else int(rtp), _number(f.get("duration_ms"), "duration_ms"),
                            self._ts(f.get("server_ts"), "server_ts"))
        producer = f.get("producer_id")
        return PipelineError(uid, _text(f["stage"], "stage"), _text(f["error"], "error"),
                             None if producer is None else _ident(producer, "producer_id"))


@dataclass
class CorrelationStats:
    malformed: int = 0
    unmatched: int = 0
    last_malformed: str = ""


@dataclass
class Correlator:
    """Builds timelines of one speaker producer from events and onsets seen by its listener."""

    producer_id: str
    on_complete: Callable[[UtteranceTimeline], None]
    clock: Callable[[], float]
    stats: CorrelationStats = field(default_factory=CorrelationStats)
    _awaiting_transcript: deque[UtteranceTimeline] = field(default_factory=deque)
    _by_server_id: dict[str, UtteranceTimeline] = field(default_factory=dict)
    _awaiting_audio: deque[UtteranceTimeline] = field(default_factory=deque)
    _onsets: deque[Onset] = field(default_factory=lambda: deque(maxlen=64))
    _delivered: set[str] = field(default_factory=set)
    _seen_ids: deque[str] = field(default_factory=lambda: deque(maxlen=256))  # server ids transcribed

    def expect(self, tl: UtteranceTimeline) -> None:
        """An utterance was scheduled; results for it may come once its speech has started."""
        self._awaiting_transcript.append(tl)

    def on_event(self, event: ResultEvent, t: float) -> bool:
        """Apply one result event; False when it belongs to none of our utterances (unmatched)."""
        if isinstance(event, Transcription):
            return self._transcription(event, t)
        tl = self._by_server_id.get(event.utterance_id)
        if tl is None and isinstance(event, PipelineError):
            tl = self._failed_before_transcript(event)
        if tl is None:
            self.stats.unmatched += 1
            return False
        if isinstance(event, Translation):
            if tl.t_translation is None:
                tl.t_translation, tl.translation, tl.server_translation = t, event.text, event.server_ts
        elif isinstance(event, TtsStart):
            self._tts(tl, event, t)
        else:
            tl.error, tl.error_stage = f"gateway: {event.error}", cap_text(event.stage, 40)
        self._maybe_complete(tl)
        return True

    def _transcription(self, event: Transcription, t: float) -> bool:
        if event.producer_id != self.producer_id:
            return False  # another speaker's utterance: not ours to time
        if event.utterance_id in self._seen_ids:
            self.stats.unmatched += 1  # a duplicate: that utterance has its transcript already
            return False
        started = [tl for tl in self._awaiting_transcript if tl.t_send_start is not None]
        if not started:
            self.stats.unmatched += 1
            return False
        tl = started[0]
        self._awaiting_transcript.remove(tl)
        tl.t_transcript, tl.transcript = t, event.text
        tl.server_utterance_id = event.utterance_id
        self._seen_ids.append(event.utterance_id)
        tl.server_transcript, tl.server_speech_end = event.server_ts, event.speech_end_ts
        self._by_server_id[event.utterance_id] = tl
        if tl.t_speech_end is None:
            # The gateway ended the utterance before we finished speaking it.
            tl.error, tl.error_stage = "transcript before end of speech (utterance split)", "stt"
        self._maybe_complete(tl)
        return True

    def _failed_before_transcript(self, event: PipelineError) -> UtteranceTimeline | None:
        """An error of our producer's utterance that has no transcript yet (STT failed): the oldest
        started utterance awaiting its transcript, as the transcript itself would have been matched."""
        if event.producer_id != self.producer_id or event.utterance_id in self._seen_ids:
            return None
        started = [tl for tl in self._awaiting_transcript if tl.t_send_start is not None]
        if not started:
            return None
        tl = started[0]
        self._awaiting_transcript.remove(tl)
        tl.server_utterance_id = event.utterance_id
        self._seen_ids.append(event.utterance_id)
        return tl

    def _tts(self, tl: UtteranceTimeline, event: TtsStart, t: float) -> None:
        if tl.t_tts_event is not None:
            return
        tl.t_tts_event, tl.server_tts = t, event.server_ts
        tl.tts_audio_ms, tl.tts_rtp_timestamp = event.duration_ms, event.rtp_timestamp
        self._awaiting_audio.append(tl)
        self._match_audio()

    def on_onset(self, onset: Onset) -> None:
        self._onsets.append(onset)
        self._match_audio()

    def _match_audio(self) -> None:
        # Audio and its event race (RTP vs. TLS signaling): whichever comes second completes the pair.
        for tl in list(self._awaiting_audio):
            onset = self._find_onset(tl)
            if onset is None:
                continue
            self._onsets.remove(onset)
            self._awaiting_audio.remove(tl)
            tl.t_audio_onset = onset.t_arrival
            self._maybe_complete(tl)

    def _find_onset(self, tl: UtteranceTimeline) -> Onset | None:
        if tl.tts_rtp_timestamp is not None:
            # The first packet of this utterance's audio that arrived: its RTP timestamp is the announced
            # one, or later within the audio when the first packets were lost on the way (a lossy network).
            span = max(int((tl.tts_audio_ms or ONSET_SPAN_UNKNOWN_MS) * 48), 960)  # 48 kHz RTP units
            for onset in self._onsets:
                if (onset.rtp_timestamp - tl.tts_rtp_timestamp) % 2**32 < span:
                    return onset
            return None
        return self._onsets[0] if self._onsets and tl is self._awaiting_audio[0] else None

    def _maybe_complete(self, tl: UtteranceTimeline) -> None:
        if tl.is_complete() and tl.utterance_id not in self._delivered:
            self._delivered.add(tl.utterance_id)
            self._forget(tl)
            self.on_complete(tl)

    def _forget(self, tl: UtteranceTimeline) -> None:
        if tl in self._awaiting_transcript:
            self._awaiting_transcript.remove(tl)
        if tl in self._awaiting_audio:
            self._awaiting_audio.remove(tl)
        if tl.server_utterance_id is not None:
            self._by_server_id.pop(tl.server_utterance_id, None)

    def expire(self, tl: UtteranceTimeline) -> None:
        """The utterance's deadline passed: stop waiting; its outcome is a timeout at its last stage."""
        self._forget(tl)
