"""What one listener hears of the translated speech: every RTP packet assigned to its utterance, counted,
and the moment each utterance's audio ended.

A ``Stream`` is the translated audio of one gateway utterance (opened by its ``tts`` event), or a talk
spurt nobody has claimed yet. Packets are assigned:

* by RTP timestamp when the ``tts`` event gives one: a packet whose timestamp lies in
  [rtpTimestamp, rtpTimestamp + announced duration) is that utterance's (the gateway's RTP timestamps
  follow the wall clock, so back-to-back utterances' ranges never overlap; without a duration the range
  runs until a later utterance's range starts);
* else by talk spurt order: a spurt starts at a packet with the marker bit or after ``SPURT_GAP_S`` of
  no packets, and spurts go to the utterances in the order of their ``tts`` events.

Packets that arrive before their ``tts`` event (RTP and signaling race) wait in an unclaimed spurt,
which the event's stream absorbs. A stream's audio has ended when every announced packet arrived, when a
later stream's audio began (audio plays in utterance order), or after ``quiet_s`` without a packet (one
timer per open stream, re-armed lazily, never per packet). Per packet the cost is a range check, a few
counters and one append to a typed array (sequence numbers, for the holes); payloads are kept only for
streams that will be decoded (``--listen-sample``).
"""

from __future__ import annotations

import asyncio
import math
from array import array
from collections import deque
from collections.abc import Callable
from typing import Any

RTP_MASK = 0xFFFFFFFF
RTP_HALF = 1 << 31
SAMPLES_PER_PACKET = 960  # 20 ms at 48 kHz, the reference gateway's packetization
PACKET_S = 0.020
SPURT_GAP_S = 0.100  # as the onset rule always was: no packet for this long starts a new talk spurt
QUIET_S = 0.3  # no packet for this long: the stream's audio has ended
MAX_STREAM_S = 600.0  # a stream open longer than this is closed (every wait is bounded)
MAX_REARMS = 20_000  # quiet-timer wake-ups per stream (≥ 100 min at 0.3 s; bounds a frozen test clock)
MAX_SEQS = 30_000  # sequence numbers kept per stream (10 min of audio; below half the 16-bit space)
MAX_PAYLOADS = 3_000  # payloads kept per decoded stream (60 s of audio)
MAX_SPURTS = 16  # unclaimed talk spurts kept
MAX_OPEN = 32  # streams with a range awaiting or receiving audio
UNBOUNDED_SPAN = RTP_HALF  # a range without an announced duration

Schedule = Callable[..., Any]  # loop.call_later's shape: (delay_s, callback, *args)


def _call_later(delay: float, callback: Callable[..., None], *args: Any) -> Any:
    return asyncio.get_running_loop().call_later(delay, callback, *args)


class Stream:
    """One utterance's translated audio as this listener received it (or an unclaimed talk spurt)."""

    __slots__ = ("announced", "audible", "bounded", "closed", "end", "key", "max_rel", "order", "packets",
                 "payloads", "prev_cut", "prev_end", "rearms", "rtp0", "seqs", "span", "t_first", "t_last",
                 "timer", "ts_base", "check", "checking")

    def __init__(self, key: str | None, order: int, rtp0: int | None = None, duration_ms: float | None = None,
                 keep_payloads: bool = False) -> None:
        self.key = key  # the gateway's utterance id; None: a talk spurt nobody claimed (yet)
        self.order = order  # creation order: streams play in this order
        self.rtp0 = rtp0
        known = duration_ms is not None and 0 < duration_ms <= MAX_STREAM_S * 1000  # (NaN is not)
        self.announced = max(1, math.ceil(duration_ms / (PACKET_S * 1000))) if known else None  # type: ignore[operator]
        self.bounded = rtp0 is not None and self.announced is not None
        self.span = self.announced * SAMPLES_PER_PACKET if self.bounded else UNBOUNDED_SPAN  # type: ignore[operator]
        self.ts_base: int | None = rtp0  # RTP timestamps count from here (else from the first packet's)
        self.max_rel = -1  # furthest RTP timestamp heard, relative to ts_base
        self.t_first = math.inf
        self.t_last = -math.inf
        self.packets = 0
        self.seqs = array("H")
        self.payloads: list[tuple[int, bytes]] | None = [] if keep_payloads else None
        self.audible = False
        self.closed = False
        self.end: float | None = None
        self.prev_end: float | None = None  # the audio this listener heard before this one
        self.prev_cut: bool | None = None
        self.timer = False
        self.rearms = 0
        self.check: Any = None  # what the listen check found (listening.ListenCheck), once decoded
        self.checking = False  # its payloads are being decoded (the rows wait for the check)

    @property
    def ranged(self) -> bool:
        return self.rtp0 is not None

    def add(self, t: float, ts: int, seq: int, payload: bytes | None) -> None:
        self.packets += 1
        if t > self.t_last:
            self.t_last = t
        if t < self.t_first:
            self.t_first = t
        if self.ts_base is None:
            self.ts_base = ts
        rel = (ts - self.ts_base) & RTP_MASK
        if rel < RTP_HALF and rel > self.max_rel:
            self.max_rel = rel
        if len(self.seqs) < MAX_SEQS:
            self.seqs.append(seq)
        if self.payloads is not None and payload is not None and len(self.payloads) < MAX_PAYLOADS:
            self.payloads.append((seq, payload))

    def absorb(self, other: Stream) -> None:
        """Take over an unclaimed spurt's packets (they arrived before this stream's event)."""
        if other.packets == 0:
            return
        if self.ts_base is None:
            self.ts_base = other.ts_base
        assert other.ts_base is not None and self.ts_base is not None
        offset = (other.ts_base - self.ts_base) & RTP_MASK
        if offset < RTP_HALF and other.max_rel >= 0:
            self.max_rel = max(self.max_rel, offset + other.max_rel)
        self.packets += other.packets
        self.t_first = min(self.t_first, other.t_first)
        self.t_last = max(self.t_last, other.t_last)
        self.seqs.extend(other.seqs[: max(0, MAX_SEQS - len(self.seqs))])
        if self.payloads is not None and other.payloads:
            self.payloads.extend(other.payloads[: max(0, MAX_PAYLOADS - len(self.payloads))])

    def full(self) -> bool:
        return self.announced is not None and self.packets >= self.announced

    def holes(self) -> tuple[int, int]:
        """(missing packets, holes) between the first and the last sequence number received."""
        return holes(self.seqs)

    def cut(self) -> bool | None:
        """The audio stopped short of its announced duration (its last packet more than one packet early).
        None when the duration was not announced."""
        if self.announced is None or self.packets == 0:
            return None
        heard_packets = self.max_rel // SAMPLES_PER_PACKET + 1
        return heard_packets < self.announced - 1


def holes(seqs: array[int] | list[int]) -> tuple[int, int]:
    """(missing, holes): sequence numbers absent between the first and last received, and how many runs
    they form. Reordering and duplicates are harmless; 16-bit wrap is handled."""
    if not seqs:
        return 0, 0
    base = seqs[0]
    rel = sorted({((s - base + 32768) & 0xFFFF) - 32768 for s in seqs})
    missing = rel[-1] - rel[0] + 1 - len(rel)
    gaps = sum(1 for a, b in zip(rel, rel[1:], strict=False) if b - a > 1)
    return missing, gaps


class Hearing:
    """Assigns one listener's translated packets to streams and says when each stream's audio ended.

    ``on_audible(stream)``: the stream's first packet is known (its onset, ``prev_*`` set);
    ``on_ended(stream)``: its audio ended (``end`` set). Both only for streams opened by an event."""

    def __init__(self, clock: Callable[[], float], on_audible: Callable[[Stream], None],
                 on_ended: Callable[[Stream], None], quiet_s: float = QUIET_S,
                 schedule: Schedule | None = None, keep_unclaimed_payloads: bool = False) -> None:
        self._clock = clock
        self._on_audible = on_audible
        self._on_ended = on_ended
        self.quiet_s = quiet_s
        self._schedule = schedule or _call_later
        self.keep_unclaimed_payloads = keep_unclaimed_payloads
        self._orders = 0
        self._ranged: list[Stream] = []  # open streams with an RTP range, in play order
        self._waiting: deque[Stream] = deque()  # open streams without a range awaiting their spurt
        self._spurts: deque[Stream] = deque(maxlen=MAX_SPURTS)  # unclaimed spurts, oldest first
        self._audible: list[Stream] = []  # open streams that have audio
        self._current: Stream | None = None  # the stream the last packet went to
        self._last_heard: Stream | None = None
        self.stopped = False
        self.packets = 0
        self.unclaimed_packets = 0

    # ---- streams opened by events ----------------------------------------------------------------

    def open(self, key: str, rtp_timestamp: int | None, duration_ms: float | None,
             keep_payloads: bool = False) -> Stream:
        """A ``tts`` event: the stream of that utterance; packets that came before it are absorbed."""
        self._orders += 1
        stream = Stream(key, self._orders, rtp_timestamp, duration_ms, keep_payloads)
        if stream.ranged:
            self._ranged.append(stream)
            if len(self._ranged) > MAX_OPEN:
                self._close(self._ranged[0])
            for spurt in list(self._spurts):
                if ((spurt.ts_base or 0) - stream.rtp0) & RTP_MASK < stream.span:  # type: ignore[operator]
                    self._claim(stream, spurt)
        elif self._spurts:
            self._claim(stream, self._spurts[0])
        else:
            self._waiting.append(stream)
            if len(self._waiting) > MAX_OPEN:
                self._close(self._waiting.popleft())
        if stream.packets and not stream.audible:
            self._make_audible(stream)
            if stream.full():
                self._close(stream)
        return stream

    def drop(self, stream: Stream) -> None:
        """Nobody waits for this stream any more (its utterances were delivered): stop tracking it once it
        has no audio; a stream with audio still ends by the usual rules (later streams need its end)."""
        if not stream.audible and not stream.closed:
            self._close(stream)

    def _claim(self, stream: Stream, spurt: Stream) -> None:
        self._spurts.remove(spurt)
        stream.absorb(spurt)
        if self._current is spurt:
            self._current = stream

    # ---- packets ---------------------------------------------------------------------------------

    def packet(self, t: float, marker: bool, ts: int, seq: int, payload: bytes | None = None) -> None:
        """One translated RTP packet as it arrived (``payload`` only when payloads are kept)."""
        self.packets += 1
        cur = self._current
        if cur is not None:
            if cur.ranged:
                if not cur.closed and ((ts - cur.rtp0) & RTP_MASK) < cur.span and (
                        cur.bounded or cur is self._ranged[-1]):
                    cur.add(t, ts, seq, payload)
                    if cur.announced is not None and cur.packets >= cur.announced:
                        self._close(cur)
                    return
            elif not marker and t - cur.t_last <= SPURT_GAP_S:  # the same talk spurt goes on
                if cur.closed:
                    return  # a straggler of a spurt whose every announced packet had come
                if cur.key is not None:
                    cur.add(t, ts, seq, payload)
                    if cur.announced is not None and cur.packets >= cur.announced:
                        self._close(cur)
                    return
                if not self._ranged or self._in_range(ts) is None:
                    cur.add(t, ts, seq, payload)
                    self.unclaimed_packets += 1
                    return
        self._route(t, ts, seq, payload)

    def _route(self, t: float, ts: int, seq: int, payload: bytes | None) -> None:
        stream = self._in_range(ts)
        if stream is None:
            stream = self._new_spurt()
        self._current = stream
        stream.add(t, ts, seq, payload)
        if stream.key is None:
            self.unclaimed_packets += 1
            return
        if not stream.audible:
            self._make_audible(stream)
        if stream.full():
            self._close(stream)

    def _in_range(self, ts: int) -> Stream | None:
        """The open ranged stream whose range holds ``ts`` and starts closest before it."""
        best: Stream | None = None
        best_rel = RTP_HALF
        for stream in self._ranged:
            rel = (ts - stream.rtp0) & RTP_MASK  # type: ignore[operator]
            if rel < stream.span and rel < best_rel:
                best, best_rel = stream, rel
        return best

    def _new_spurt(self) -> Stream:
        """A talk spurt outside every range: the next utterance waiting for one by order, or unclaimed."""
        if self._waiting:
            return self._waiting.popleft()
        spurt = Stream(None, 0, keep_payloads=self.keep_unclaimed_payloads)
        self._spurts.append(spurt)  # the oldest unclaimed spurt falls out beyond MAX_SPURTS
        return spurt

    # ---- ends ------------------------------------------------------------------------------------

    def _make_audible(self, stream: Stream) -> None:
        stream.audible = True
        for earlier in [s for s in self._audible if s.order < stream.order]:
            self._close(earlier)  # audio plays in utterance order: a later one began, the earlier ended
        for earlier in [s for s in self._ranged if s.order < stream.order and not s.audible]:
            self._close(earlier)  # announced, never heard, and now overtaken: it will not come
        previous = self._last_heard
        if previous is not None and previous.order < stream.order:
            stream.prev_end, stream.prev_cut = previous.end, previous.cut()
        self._last_heard = stream
        self._audible.append(stream)
        self._arm(stream)
        self._on_audible(stream)

    def _arm(self, stream: Stream) -> None:
        if stream.timer or stream.closed or self.stopped:
            return
        stream.timer = True
        stream.rearms += 1
        delay = max(0.0, self.quiet_s - (self._clock() - stream.t_last))
        self._schedule(delay, self._quiet, stream)

    def _quiet(self, stream: Stream) -> None:
        stream.timer = False
        if stream.closed or self.stopped:
            return
        now = self._clock()
        too_long = now - stream.t_first > MAX_STREAM_S or stream.rearms > MAX_REARMS
        if now - stream.t_last >= self.quiet_s - 1e-9 or too_long:
            self._close(stream)
        else:
            self._arm(stream)

    def _close(self, stream: Stream) -> None:
        if stream.closed:
            return
        stream.closed = True
        stream.end = stream.t_last + PACKET_S if stream.packets else None
        for group in (self._ranged, self._audible):
            if stream in group:
                group.remove(stream)
        if stream in self._waiting:
            self._waiting.remove(stream)
        if stream.key is not None:
            self._on_ended(stream)

    def later(self, callback: Callable[..., None], *args: Any) -> None:
        """Run ``callback`` on a later loop turn (work split so as not to hold the media loop)."""
        if not self.stopped:
            self._schedule(0.0, callback, *args)

    def stop(self) -> None:
        """The listener left: no timer acts any more."""
        self.stopped = True
