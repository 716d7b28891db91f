"""A hand-driven clock and timer queue for the listener's correlation (no event loop, no network)."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import Any

from loadtest.events import Correlator, Transcription, Translation, TtsStart
from loadtest.timeline import UtteranceTimeline


class Clock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Timers:
    """``loop.call_later``'s shape on a test clock: callbacks run when ``advance`` passes their time."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._queue: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self._order = itertools.count()
        self.fired = 0

    def __call__(self, delay: float, callback: Callable[..., None], *args: Any) -> None:
        heapq.heappush(self._queue, (self.clock.now + delay, next(self._order), callback, args))

    def advance(self, to: float, limit: int = 100_000) -> None:
        """Move the clock to ``to``, running every callback due on the way (bounded)."""
        for _ in range(limit):
            if not self._queue or self._queue[0][0] > to:
                break
            due, _n, callback, args = heapq.heappop(self._queue)
            self.clock.now = max(self.clock.now, due)
            self.fired += 1
            callback(*args)
        else:
            raise AssertionError("timers kept firing: an unbounded re-arm")
        self.clock.now = max(self.clock.now, to)

    def run_pending(self) -> None:
        """Run what is due now (zero-delay work: the listen check's decode steps)."""
        self.advance(self.clock.now)

    @property
    def pending(self) -> int:
        return len(self._queue)


def timeline(seq: int = 1, planned: float = 0.0, send_start: float | None = None,
             speech_end: float | None = None) -> UtteranceTimeline:
    tl = UtteranceTimeline(f"c-{seq}", "c", seq, "fx", "en", "es", t_planned=planned, wall_start=1e9)
    tl.t_send_start, tl.t_speech_end = send_start, speech_end
    return tl


def correlator(**kwargs: Any) -> tuple[Correlator, list[UtteranceTimeline], Clock, Timers]:
    clock = Clock()
    timers = Timers(clock)
    done: list[UtteranceTimeline] = []
    return Correlator("mic-1", done.append, clock, schedule=timers, **kwargs), done, clock, timers


def through_tts(corr: Correlator, server_id: str, t: float, rtp: int | None, duration_ms: float | None,
                producer: str | None = "tts-1") -> None:
    """Transcription, translation and tts events of one gateway utterance, 10 ms apart from ``t``."""
    assert corr.on_event(Transcription(server_id, "mic-1", "hello", None, None), t)
    assert corr.on_event(Translation(server_id, "hola", None), t + 0.01)
    assert corr.on_event(TtsStart(server_id, producer, rtp, duration_ms, None), t + 0.02)


def play(corr: Correlator, clock: Clock, t0: float, rtp0: int, seq0: int, count: int,
         skip: frozenset[int] = frozenset(), payloads: list[bytes] | None = None) -> float:
    """``count`` packets of one talk spurt, 20 ms apart from ``t0`` (indices in ``skip`` lost); the
    arrival time of the last one sent."""
    t = t0
    for i in range(count):
        t = t0 + 0.02 * i
        if i in skip:
            continue
        clock.now = t
        payload = payloads[i] if payloads is not None else None
        corr.on_packet(t, i == 0, (rtp0 + 960 * i) & 0xFFFFFFFF, (seq0 + i) & 0xFFFF, payload)
    return t
