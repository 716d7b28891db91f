"""The gateway's result events, typed: what ``[events]`` of a signaling profile maps, parsed and checked.

Every field a server sends is checked for its type and cut to a bound before anything keeps it; a
payload that does not fit raises ``MalformedEvent`` (the inbox counts it and goes on). Optional fields
(server timestamps, the speech span, RTP timestamp, duration, TTS producer, target language) are None
when the profile does not map them or the event lacks them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from loadtest.profile import EventSpec, MissingField, SignalingProfile


@dataclass(frozen=True)
class Transcription:
    utterance_id: str
    producer_id: str
    text: str
    server_ts: float | None
    speech_end_ts: float | None
    speech_start_ts: float | None = None


@dataclass(frozen=True)
class Translation:
    utterance_id: str
    text: str
    server_ts: float | None
    target_language: str | None = None


@dataclass(frozen=True)
class TtsStart:
    utterance_id: str
    tts_producer_id: str | None
    rtp_timestamp: int | None
    duration_ms: float | None
    server_ts: float | None
    target_language: str | None = None


@dataclass(frozen=True)
class PipelineError:
    utterance_id: str
    stage: str
    error: str
    producer_id: str | None = None  # the speaker's producer, when the error event names it
    target_language: str | None = None  # a translation or TTS failure of one language (None: all)
    # The failed utterance's speech span and the event's send time (server clock, seconds), when mapped:
    # span matching places an error as it places a transcription (an STT failure has no transcription).
    server_ts: float | None = None
    speech_end_ts: float | None = None
    speech_start_ts: float | None = None


ResultEvent = Transcription | Translation | TtsStart | PipelineError


class MalformedEvent(ValueError):
    pass


MAX_TEXT = 1000  # characters of a server-provided text kept (transcripts are a sentence or two)


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


def _language(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise MalformedEvent("target_language is not a string")
    return value[:40]


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
                                 self._ts(f.get("speech_end_ts"), "speech_end_ts"),
                                 self._ts(f.get("speech_start_ts"), "speech_start_ts"))
        language = _language(f.get("target_language"))
        if kind == "translation":
            return Translation(uid, _text(f["text"], "text"), self._ts(f.get("server_ts"), "server_ts"),
                               language)
        if kind == "tts":
            rtp = _number(f.get("rtp_timestamp"), "rtp_timestamp")
            if rtp is not None and not math.isfinite(rtp):
                raise MalformedEvent("rtp_timestamp is not finite")
            producer = f.get("tts_producer_id")
            return TtsStart(uid, None if producer is None else _ident(producer, "tts_producer_id"),
                            None if rtp is None else int(rtp) & 0xFFFFFFFF,
                            _number(f.get("duration_ms"), "duration_ms"),
                            self._ts(f.get("server_ts"), "server_ts"), language)
        producer = f.get("producer_id")
        return PipelineError(uid, _text(f["stage"], "stage"), _text(f["error"], "error"),
                             None if producer is None else _ident(producer, "producer_id"), language,
                             self._ts(f.get("server_ts"), "server_ts"),
                             self._ts(f.get("speech_end_ts"), "speech_end_ts"),
                             self._ts(f.get("speech_start_ts"), "speech_start_ts"))
