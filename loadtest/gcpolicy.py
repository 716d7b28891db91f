"""Keep the cyclic garbage collector's pauses short while callers speak.

A collection stops the whole process, so every packet due meanwhile leaves late by its length. Two
things make CPython's own schedule pause for long in a tester:

* **Full collections walk every object.** With ~100 connected callers one process holds millions of
  tracked objects (aiortc transports, their RTP/RTCP state, pymediasoup handlers): measured 107-175 ms
  per full collection at 50-100 callers. A connected call's objects live as long as the call, so once
  a caller is connected they are moved out of the collector's reach (``settle_connected``). Reference
  counting still frees frozen objects that are not in cycles; frozen cycles (rare: a closed
  transport's) are kept until the process ends -- the price of bounded pauses, which
  ``bench/soak.py`` measures as the RSS slope.
* **Young collections run on a count that media traffic cancels out.** CPython collects the youngest
  generation when allocations minus deallocations pass 700. A caller's steady traffic allocates
  objects that live a few seconds (RTCP and consent timers, sleeps in flight) and frees ones promoted
  earlier, so the difference hovers near zero: at 150 callers young collections came every ~1.3 s
  and found ~10 000 live objects each (5-13 ms), middle ones 28 ms. ``Cadence`` collects on a clock
  instead while callers are connected: the youngest generation every 50 ms, the middle one every
  0.25 s, a full collection every 20 s; each finds only what the last period left (measured at 150
  callers: young ~1 ms, middle ~3-7 ms, full ~28 ms).

Frozen objects are never collected, so a caller that closes leaves its reference cycles (aiortc's
transports and their handlers) in the frozen set for good. ``Cadence.release`` thaws the set
(unfreeze, full collection, freeze again) once the callers closed since the last thaw are as many as
those still connected, and when the last one closes: the leak stays below the live set's own size,
at the price of one full-heap pause per thaw (as long as a full collection before the freeze:
107-175 ms at 50-100 callers) while callers are leaving anyway.
"""

from __future__ import annotations

import asyncio
import gc
import weakref

YOUNG_PERIOD_S = 0.05
YOUNG_PER_MIDDLE = 5  # young collections per middle-generation collection: every 0.25 s
MIDDLE_PER_FULL = 80  # middle collections per full collection: every 20 s
THAW_MIN_CLOSED = 8  # closed callers below which a thaw is not worth its pause while others speak


def settle_connected() -> None:
    """A caller finished connecting: what exists now lives long; take it out of full collections."""
    gc.freeze()
    # CPython runs a full collection only once the objects promoted since the last one exceed a quarter
    # of the long-lived count it measured then, and freezing does not update that count: without a
    # collection now, the stale (large) count postpones every later full collection, and garbage
    # cycles that reached the oldest generation pile up (measured: RSS +267 MB/hour over a 30-minute
    # soak). Right after the freeze the collection has nothing to walk: it only resets the count.
    gc.collect()


class Cadence:
    """Collections on a clock, for as long as anyone holds it (connected callers do)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, period_s: float = YOUNG_PERIOD_S) -> None:
        self._loop = weakref.ref(loop)  # weak: see media.Pacer (the registry is keyed weakly by loop)
        self.period_s = period_s
        self.holders = 0
        self.collections = [0, 0, 0]  # by generation, for tests and diagnostics
        self.closed_since_thaw = 0
        self.thaws = 0
        self._ticks = 0
        self._timer: asyncio.TimerHandle | None = None

    def hold(self) -> None:
        self.holders += 1
        loop = self._loop()
        if self._timer is None and loop is not None:
            self._timer = loop.call_later(self.period_s, self._tick)

    def release(self) -> None:
        """A caller closed: its frozen garbage waits for the next thaw."""
        self.holders = max(0, self.holders - 1)
        self.closed_since_thaw += 1
        if self.holders == 0:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._thaw()
        elif self.closed_since_thaw >= max(THAW_MIN_CLOSED, self.holders):
            self._thaw()

    def _thaw(self) -> None:
        gc.unfreeze()
        gc.collect()
        if self.holders:
            gc.freeze()  # the callers still connected are long-lived again
        self.closed_since_thaw = 0
        self.thaws += 1

    def _tick(self) -> None:
        self._ticks += 1
        if self._ticks % (YOUNG_PER_MIDDLE * MIDDLE_PER_FULL) == 0:
            generation = 2
        elif self._ticks % YOUNG_PER_MIDDLE == 0:
            generation = 1
        else:
            generation = 0
        gc.collect(generation)
        self.collections[generation] += 1
        # Bounded by its holders: the last caller to close cancels the next tick.
        loop = self._loop()
        self._timer = loop.call_later(self.period_s, self._tick) if loop is not None else None


_cadences: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Cadence] = weakref.WeakKeyDictionary()


def cadence_for(loop: asyncio.AbstractEventLoop) -> Cadence:
    cadence = _cadences.get(loop)
    if cadence is None:
        cadence = _cadences[loop] = Cadence(loop)
    return cadence
