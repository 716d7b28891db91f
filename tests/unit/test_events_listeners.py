"""One listener of a group room: events for other languages or TTS producers are ignored, and counted."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from loadtest.announcements import Announcements
from loadtest.events import EventParser, MalformedEvent, PipelineError, Transcription, Translation, TtsStart
from loadtest.inbox import Inbox
from loadtest.profile_file import load_profile
from tests.unit.listen_kit import correlator, play, timeline

pytestmark = pytest.mark.unit


def test_the_new_optional_fields_are_parsed() -> None:
    parser = EventParser(load_profile())
    event = parser.parse("transcription", {"utteranceId": "u", "producerId": "p", "text": "hi",
                                           "serverTs": 5000, "speechStartTs": 1500, "speechEndTs": 4000})
    assert isinstance(event, Transcription)
    assert (event.speech_start_ts, event.speech_end_ts) == pytest.approx((1.5, 4.0))
    tr = parser.parse("translation", {"utteranceId": "u", "text": "hola", "targetLanguage": "es"})
    assert isinstance(tr, Translation) and tr.target_language == "es"
    tts = parser.parse("tts", {"utteranceId": "u", "ttsProducerId": "t", "rtpTimestamp": 2**32 + 5,
                               "durationMs": 900, "language": "fr"})
    assert isinstance(tts, TtsStart) and tts.target_language == "fr" and tts.rtp_timestamp == 5
    err = parser.parse("error", {"utteranceId": "u", "stage": "stt", "error": "x"})
    assert isinstance(err, PipelineError) and err.target_language is None  # an STT failure: every language
    old = parser.parse("translation", {"utteranceId": "u", "text": "hola"})
    assert isinstance(old, Translation) and old.target_language is None  # a gateway without the field
    with pytest.raises(MalformedEvent, match="target_language"):
        parser.parse("translation", {"utteranceId": "u", "text": "hola", "targetLanguage": 7})
    with pytest.raises(MalformedEvent, match="rtp_timestamp"):
        parser.parse("tts", {"utteranceId": "u", "rtpTimestamp": float("inf")})


def group_listener() -> tuple[Any, ...]:
    corr, done, clock, timers = correlator(language="es", tts_producer_id="tts-es")
    handlers: dict[str, Callable[..., None]] = {}
    profile = load_profile()
    inbox = Inbox(profile, Announcements(profile.producers), corr.on_event, lambda: None, clock)
    inbox.register(lambda name, handler: handlers.__setitem__(name, handler))
    return corr, done, clock, inbox, handlers


def test_a_group_listener_takes_its_language_and_ignores_the_others_harmlessly() -> None:
    corr, done, clock, inbox, on = group_listener()
    tl = timeline(1, send_start=1.0, speech_end=2.0)
    corr.expect(tl)
    base = {"utteranceId": "g1", "serverTs": 1000}
    clock.now = 2.5
    on["transcription"]({**base, "producerId": "mic-1", "text": "hello"})
    clock.now = 2.6
    on["translation"]({**base, "text": "bonjour", "targetLanguage": "fr"})
    on["pipelineError"]({**base, "stage": "tts", "error": "fr voice down", "targetLanguage": "fr"})
    clock.now = 2.7
    on["translation"]({**base, "text": "hola", "targetLanguage": "es"})
    on["tts"]({**base, "ttsProducerId": "tts-fr", "rtpTimestamp": 100, "durationMs": 60, "language": "fr"})
    on["tts"]({**base, "ttsProducerId": "tts-de", "rtpTimestamp": 100, "durationMs": 60})  # not ours
    clock.now = 2.8
    on["tts"]({**base, "ttsProducerId": "tts-es", "rtpTimestamp": 9_000, "durationMs": 60, "language": "es"})
    assert tl.translation == "hola" and tl.t_translation == 2.7 and tl.error is None
    assert tl.tts_rtp_timestamp == 9_000 and tl.t_tts_event == 2.8
    play(corr, clock, 2.9, 9_000, 1, 3)
    assert done == [tl] and tl.audio_packets == 3
    on["tts"]({**base, "ttsProducerId": "tts-it", "rtpTimestamp": 7, "durationMs": 60, "language": "it"})
    on["translation"]({"utteranceId": "g9", "text": "x", "targetLanguage": "fr"})  # an id never ours
    on["translation"]({**base, "text": "hola", "targetLanguage": "es"})  # a duplicate after delivery
    on["translation"]({**base, "text": "hola", "targetLanguage": 7})  # malformed
    counts = inbox.counts
    assert counts.balanced(), counts
    assert (counts.received, counts.handled, counts.unmatched, counts.malformed) == (11, 8, 2, 1)
    assert corr.stats.ignored == 5


def test_without_a_language_every_translation_applies_as_before() -> None:
    corr, done, clock, timers = correlator()
    tl = timeline(1, send_start=1.0, speech_end=2.0)
    corr.expect(tl)
    assert corr.on_event(Transcription("g1", "mic-1", "hello", None, None), 2.5)
    assert corr.on_event(Translation("g1", "bonjour", None, "fr"), 2.6)
    assert tl.translation == "bonjour" and corr.stats.ignored == 0


def test_the_tts_producer_can_be_named_once_consumed() -> None:
    corr, done, clock, timers = correlator(language="es")
    tl = timeline(1, send_start=1.0, speech_end=2.0)
    corr.expect(tl)
    corr.tts_producer_id = "tts-es"  # known once the listener consumed it
    assert corr.on_event(Transcription("g1", "mic-1", "hello", None, None), 2.5)
    assert corr.on_event(TtsStart("g1", "tts-other", 5, 60.0, None), 2.6)
    assert tl.t_tts_event is None and corr.stats.ignored == 1
    assert corr.on_event(TtsStart("g1", "tts-es", 5, 60.0, None, "es"), 2.7)
    assert tl.t_tts_event == 2.7
