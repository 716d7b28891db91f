"""The end of `loadtest profile check`'s walk, after consume: does anything arrive?

Mode "sfu": the speaker's own audio must arrive at the listener through the consumer (a consumer that
started paused and was never resumed shows here). Mode "pipeline": one fixture is spoken and the result
events the profile names (`[events.*]`) must arrive and parse, then the translated audio on the consumed
producer. Every wait ends at its deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loadtest.events import EventParser, MalformedEvent
from loadtest.fixtures import FixtureLibrary
from loadtest.media import PlannedUtterance
from loadtest.profile import PIPELINE_EVENTS
from loadtest.profile_hints import Hint, paths_of
from loadtest.profile_steps import StepFailure, WalkStopped
from loadtest.signaling import SignalingError
from loadtest.timeline import UtteranceTimeline

if TYPE_CHECKING:
    from loadtest.profile_walk import Walk

MEDIA_WAIT_S = 3.0  # for the first packets of a stream that is already flowing
MEDIA_PACKETS = 10
START_LEAD_S = 0.2


class PacketCounter:
    """RTP packets of the consumer as they arrive (before aiortc's jitter buffer)."""

    def __init__(self, receiver: Any) -> None:
        self.packets = 0
        self.first_at: float | None = None
        self.arrived = asyncio.Event()
        original = receiver._handle_rtp_packet

        async def handle(packet: Any, arrival_time_ms: int) -> None:
            self.packets += 1
            if self.first_at is None:
                self.first_at = time.monotonic()
            self.arrived.set()
            await original(packet, arrival_time_ms)

        receiver._handle_rtp_packet = handle

    async def wait(self, count: int, timeout_s: float) -> int:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self.packets < count:  # bounded by the deadline; each pass waits for a packet
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            self.arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), remaining)
        return self.packets


async def after_consume(walk: Walk) -> None:
    counter = PacketCounter(walk.receiver)
    if walk.profile.mode == "sfu":
        await _media(walk, counter)
        walk.p.skip("events", "mode \"sfu\": a plain SFU sends no result events")
    else:
        await _events(walk, counter)


async def _media(walk: Walk, counter: PacketCounter) -> None:
    label = "media (listener)"
    t0 = time.monotonic()

    def hint(why: str) -> Hint:
        if walk.profile.has_request("resume_consumer"):
            return Hint("requests.resume_consumer", "resume was answered but nothing flows: check its "
                        "event and payload (consumer_id = \"{consumer_id}\")")
        return Hint("requests.resume_consumer", "the consumer may start paused on this gateway: add "
                    "[requests.resume_consumer] with the event that resumes it")

    async with walk.step("media", label, hint):
        wait = min(walk.opts.timeout_s, MEDIA_WAIT_S)
        got = await counter.wait(MEDIA_PACKETS, wait)
        if got == 0:
            raise SignalingError(f"no RTP packet of the consumed producer arrived within {wait:g} s")
        first = ((counter.first_at or t0) - t0) * 1000.0
        walk.p.ok(label, f"{got} RTP packets of the speaker's audio arrived through the SFU (first after "
                         f"{first:.0f} ms)")


async def _events(walk: Walk, counter: PacketCounter) -> None:
    o = walk.opts
    library = FixtureLibrary(Path(o.fixtures))
    fixture_id = min(library.ids, key=lambda i: library.fixture(i).duration_s)
    clip = library.get(fixture_id)
    start = time.monotonic() + START_LEAD_S
    tl = UtteranceTimeline(utterance_id=f"{walk.room}-1", conversation=walk.room, seq=1,
                           fixture_id=fixture_id, source_language=o.source_language,
                           target_language=o.target_language, t_planned=start,
                           wall_start=time.time() + START_LEAD_S)
    walk.track.schedule(PlannedUtterance(tl, clip))
    walk.p.ok("speak (speaker)", f"fixture {fixture_id} ({clip.duration_s:.1f} s) on the producer")
    deadline = start + clip.duration_s + o.timeout_s
    await _until(walk, deadline, lambda: all(k in walk.events for k in PIPELINE_EVENTS)
                 or "error" in walk.events)
    parser = EventParser(walk.profile)
    for kind in (*PIPELINE_EVENTS, "error"):
        await _event_line(walk, parser, kind, tl)
    async with walk.step("producers.consume", "translated audio (listener)",
                         lambda why: Hint("producers.consume", "the consumed producer sent nothing after the "
                                          "tts event: the consume rules may pick the wrong producer")):
        got = await counter.wait(MEDIA_PACKETS, max(0.5, deadline + MEDIA_WAIT_S - time.monotonic()))
        if got == 0:
            raise SignalingError("no packet of translated speech arrived on the consumed producer")
        walk.p.ok("translated audio (listener)", f"{got} RTP packets on the consumed producer")


async def _until(walk: Walk, deadline: float, done: Any) -> None:
    while not done() and walk.lost is None:  # bounded by the deadline; each pass waits for an event
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        walk.changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(walk.changed.wait(), remaining)


async def _event_line(walk: Walk, parser: EventParser, kind: str, tl: UtteranceTimeline) -> None:
    spec = walk.profile.events.get(kind)
    if spec is None:
        return
    label = f"events.{kind}"
    got = walk.events.get(kind)
    if kind == "error":
        if got:
            why = f"the gateway reported a pipeline error: {walk.p.show(got[0][1])}"
            walk.p.fail(label, f"'{spec.event}'", StepFailure(label, why, None))
            raise WalkStopped
        return
    if not got:
        heard = sorted(set(walk.other_events))
        close = difflib.get_close_matches(spec.event, heard, n=1, cutoff=0.4)
        guess = f": did you mean \"{close[0]}\"?" if close else ""
        why = walk.lost or f"no '{spec.event}' event arrived"
        others = ", ".join(heard) or "no other event"
        hint = Hint(f"events.{kind}.event", f"the listener received {others}{guess}")
        walk.p.fail(label, f"'{spec.event}'", StepFailure(f"events.{kind}.event", why, hint))
        raise WalkStopped
    t, payload = got[0]
    try:
        parser.parse(kind, payload)
    except MalformedEvent as exc:
        fields = paths_of(payload)
        has = ", ".join(fields) or walk.p.show(payload, 80)
        hint = Hint(f"events.{kind}.fields", f"the event has: {has}")
        walk.p.fail(label, f"'{spec.event}' {walk.p.show(payload)}", StepFailure(f"events.{kind}.fields",
                                                                                 str(exc), hint))
        raise WalkStopped from None
    after = f" {(t - tl.t_speech_end) * 1000.0:.0f} ms after the end of speech" if tl.t_speech_end else ""
    walk.p.ok(label, f"'{spec.event}'{after}: {walk.p.show(payload)}")

