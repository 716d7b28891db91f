"""PipelineClient: one synthetic call -- its speaking parties and its listeners in one room, one clock.

Who is in the call is its cast (loadtest/cast.py: one-way, two-way, group, …). Each speaking party
publishes fixture speech on a planned timetable (open model: a slow reply never delays the next
utterance); each listener consumes what the profile's mode times -- a party's translated speech and the
result events (mode "pipeline"), or that party's own voice through the SFU (mode "sfu") -- and every
utterance is timed at every listener of its party: one timeline (one row) per utterance and listener.
Every timeline ends in exactly one status, delivered once to ``on_utterance``; a call that fails after
its transports connected still delivers one error row carrying the connect time, and a connection the
server drops ends every pending timeline as an error at the stage it was in.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import ssl
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from loadtest.cast import Cast, cast_for
from loadtest.credentials import Credentials
from loadtest.fixtures import EncodedClip
from loadtest.gcpolicy import Cadence, cadence_for, settle_connected
from loadtest.ice import TurnRelay
from loadtest.listener import Listener
from loadtest.media import PlannedUtterance
from loadtest.profile import SignalingProfile
from loadtest.session import Party, PeerSession
from loadtest.signaling import SignalingError
from loadtest.speaker import Speaker
from loadtest.timeline import STALLED_STAGE, UtteranceTimeline

if TYPE_CHECKING:
    from loadtest.impairments.observe import NetworkWatch

START_LEAD_S = 0.5
SCHEDULE_AHEAD_S = 1.0
BARGE_IN_MIN_LEAD_S = 0.04  # a barge-in planned from an onset still goes to its track before it is due
MERGE_SLACK_S = 20.0  # monologue: up to ~3 following sentences a segment may hold


@dataclass(frozen=True)
class ClientOptions:
    url: str
    profile: SignalingProfile
    ssl_context: ssl.SSLContext | bool
    connect_timeout_s: float = 15.0
    request_timeout_s: float = 10.0
    response_timeout_s: float = 10.0
    source_language: str = "en"
    target_language: str = "es"
    credentials: Credentials = field(default_factory=Credentials)
    relay: TurnRelay | None = None  # relay-only: every transport goes through this TURN server
    # The listeners' signaling URL when it differs from the speakers' (`url`): e.g. each peer on its own
    # gateway replica. None: every peer uses `url`.
    listener_url: str | None = None
    cast: Cast | None = None  # who is in the call; None: one-way in the languages above
    listen_sample: float = 0.0  # share of utterances whose translated audio is decoded and checked

    def the_cast(self) -> Cast:
        return self.cast or cast_for("one-way", self.source_language, self.target_language)


@dataclass(frozen=True)
class ScheduledUtterance:
    fixture_id: str
    clip: EncodedClip
    offset_s: float  # planned start, relative to the conversation's first slot
    party: str = "a"  # the speaking party (cast.py)
    # Barge-in: start this long after the party's previous utterance's translated speech began at its
    # first listener (offset_s stays the fallback when that audio does not come in time).
    after_onset_s: float | None = None


@dataclass
class ConversationResult:
    conversation: str
    connect_ms: float | None = None
    error: str | None = None
    utterances: int = 0
    handled_events: int = 0  # server messages to the listeners: handled + malformed + unmatched = received
    malformed_events: int = 0
    unmatched_events: int = 0
    translated_packets: int = 0
    speaker_node: str | None = None  # the gateway replica each peer joined (join answer's `node`)
    listener_node: str | None = None
    reconnects: int = 0  # the caller's successful reconnects before this conversation (conversation.py)


UtteranceSink = Callable[[UtteranceTimeline, "PipelineClient"], None]
_ids = itertools.count(1)


class PipelineClient:
    def __init__(self, options: ClientOptions, silence: bytes, on_utterance: UtteranceSink,
                 conversation: str | None = None, clock: Callable[[], float] = time.monotonic,
                 caller: int = 0, network: NetworkWatch | None = None) -> None:
        self.options = options
        self.mode = options.profile.mode
        self.cast = options.the_cast()
        self.conversation = conversation or f"conv-{uuid.uuid4().hex[:8]}-{next(_ids)}"
        self._gc_cadence: Cadence | None = None  # held from connected to close
        self.caller = caller
        self.network = network  # the caller's impaired network (loadtest/impairments), when the run has one
        self.result = ConversationResult(self.conversation)
        self._clock = clock
        self._on_utterance = on_utterance
        self.speakers = {
            v.party: Speaker(v, self._session("speaker", v.party, v.source_language, v.target_language),
                             silence, clock)
            for v in self.cast.voices}
        self.listeners = [
            Listener(e, self._session("listener", e.name, self.cast.voice(e.hears).source_language,
                                      e.language, hears=e.hears),
                     self.mode, self._fail, clock, self.cast.matching, options.listen_sample)
            for e in self.cast.ears]
        self._pending: dict[str, UtteranceTimeline] = {}
        self._all_done = asyncio.Event()
        self._broken = asyncio.Event()
        self._failure: str | None = None
        self._onset_seen = asyncio.Event()
        for listener in self.listeners:
            listener.on_onset_seen = self._onset_seen.set

    def stats_for(self, tl: UtteranceTimeline) -> dict[str, float | None]:
        return self._listener(tl.listener).stats

    def nodes_for(self, tl: UtteranceTimeline) -> tuple[str | None, str | None]:
        """The gateway replicas of the utterance's speaker and listener peers."""
        return self.speakers[tl.party].node, self._listener(tl.listener).node

    def _listener(self, name: str) -> Listener:
        return next((ls for ls in self.listeners if ls.ear.name == name), self.listeners[0])

    # ---- connect -------------------------------------------------------------------------------

    def _session(self, role: str, name: str, source: str, target: str,
                 hears: str | None = None) -> PeerSession:
        o = self.options
        single = self.cast.kind == "one-way" or len(self.cast.voices) + len(self.cast.ears) == 2
        # A one-speaker one-listener call keeps the peer names "<conversation>-speaker"/"-listener".
        party = Party(self.conversation, role, self.caller, source, target,
                      name="" if single else name, speaker_name="" if single else (hears or name))
        url = o.listener_url if role == "listener" and o.listener_url else o.url
        return PeerSession.open(url, o.profile, o.ssl_context, o.request_timeout_s, party, o.credentials)

    async def connect(self) -> None:
        """Every peer joins (listeners first: the gateway learns the languages wanted before anyone
        produces); each listener consumes what the mode times; sets connect_ms (the last speaker's DTLS).

        A failure after the send transports connected is delivered as one error utterance carrying the
        connect time (it was measured), then raised."""
        t_start = self._clock()
        timeout = self.options.connect_timeout_s
        sessions = [s.session for s in self.speakers.values()] + [ls.session for ls in self.listeners]
        await asyncio.gather(*(s.connect(timeout) for s in sessions))
        for session in sessions:
            session.channel.on_lost(self._on_lost)
        for ls in self.listeners:
            ls.listen()
        listener_joins = [await self._join(ls.session) for ls in self.listeners]
        speaker_joins = {party: await self._join(s.session) for party, s in self.speakers.items()}
        for ls, join in zip(self.listeners, listener_joins, strict=True):
            ls.node = _node(join)
        for party, join in speaker_joins.items():
            self.speakers[party].node = _node(join)
        self.result.speaker_node = self.speakers["a"].node if "a" in self.speakers else None
        self.result.listener_node = self.listeners[0].node
        for ls, join in zip(self.listeners, listener_joins, strict=True):
            await ls.open(join, self.options.relay, self.network)
        connected = []
        for party, speaker in self.speakers.items():
            mic = await speaker.produce(speaker_joins[party], self.options.relay, self.network)
            for ls in self.listeners:
                if ls.ear.hears == party:
                    ls.time_party(mic, self._complete)
                    await ls.consume_wanted()
            connected.append(await speaker.connected(timeout, self.options.relay))
        self.result.connect_ms = (max(connected) - t_start) * 1000.0
        try:
            for ls in self.listeners:
                await self._await_consumer(ls, timeout)
        except SignalingError as exc:
            self._deliver_failure(str(exc), "connect")
            raise
        settle_connected()
        self._gc_cadence = cadence_for(asyncio.get_running_loop())
        self._gc_cadence.hold()

    async def _join(self, session: PeerSession) -> dict[str, Any]:
        answer = await session.join()
        if "rtp_capabilities" not in answer:
            role = str(session.variables["role"])
            steps = ", ".join(session.profile.steps(role))
            raise SignalingError(f"the {role}'s join steps ({steps}) gave no router RTP capabilities: "
                                 "name them 'rtp_capabilities' in one step's response table")
        return answer

    async def _await_consumer(self, listener: Listener, timeout: float) -> None:
        await _first_of([listener.consumed, self._broken], timeout)
        if listener.consumed.is_set():
            return
        if self._failure is not None:
            raise SignalingError(self._failure)
        what = "translated-speech producer" if self.mode == "pipeline" else "producer of our speaker"
        who = "" if len(self.listeners) == 1 else f"listener {listener.ear.name}: "
        raise SignalingError(f"{who}no {what} matched producers.consume within {timeout:.0f} s "
                             f"({listener.describe_wait()})")

    # ---- failures ------------------------------------------------------------------------------

    @property
    def dropped(self) -> bool:
        """The server dropped this conversation (or a consume failed): it will not hear more."""
        return self._broken.is_set()

    def _fail(self, message: str) -> None:
        self._failure = self._failure or message
        self._broken.set()

    def _on_lost(self, reason: str) -> None:
        """The server dropped a channel: every pending utterance ends now, as an error where it stood."""
        self.result.error = reason
        self._fail(reason)
        for uid in list(self._pending):
            tl = self._pending.pop(uid)
            self._listener(tl.listener).expire(tl)  # the row keeps what was heard until now
            tl.error = reason
            tl.error_stage = _stage_reached(tl)
            self._deliver(tl)
        self._all_done.set()

    def _deliver_failure(self, message: str, stage: str) -> None:
        o = self.options
        tl = UtteranceTimeline(
            utterance_id=f"{self.conversation}-0", conversation=self.conversation, seq=0, fixture_id="",
            source_language=o.source_language, target_language=o.target_language,
            t_planned=self._clock(), wall_start=time.time(), mode=self.mode, error=message, error_stage=stage,
            scenario=self.cast.kind, party="a", listener=self.listeners[0].ear.name)
        self.result.error = message
        self._deliver(tl)

    # ---- speaking ------------------------------------------------------------------------------

    async def speak(self, plan: Iterable[ScheduledUtterance], stop: asyncio.Event | None = None,
                    first_slot_delay_s: float = START_LEAD_S) -> None:
        """Speak the plan on its timetable; return once every utterance has its final status.

        The plan may be endless (a locust user speaks until stopped): each utterance is handed to its
        party's track shortly before it is due, so the queues stay short; ``stop`` ends the plan.
        Utterances already handed over are still spoken and awaited, each at most until its deadline.
        """
        t0 = self._clock() + first_slot_delay_s
        wall0 = time.time() + first_slot_delay_s
        previous: dict[str, list[UtteranceTimeline]] = {}
        for seq, item in enumerate(plan, start=1):
            planned = t0 + item.offset_s
            if item.after_onset_s is not None and item.party in previous:
                planned = await self._after_onset(previous[item.party], item.after_onset_s, planned, stop)
            if await self._stopped_before(planned - SCHEDULE_AHEAD_S, stop) or self._broken.is_set():
                break
            timelines = self._schedule(seq, item, planned, wall0 + (planned - t0))
            previous[item.party] = timelines
        while self._pending:
            self._all_done.clear()
            await self._all_done.wait()

    def _schedule(self, seq: int, item: ScheduledUtterance, planned: float,
                  wall: float) -> list[UtteranceTimeline]:
        """One timeline per listener of the speaking party, all stamped by its track."""
        speaker = self.speakers[item.party]
        ears = [ls for ls in self.listeners if ls.ear.hears == item.party]
        stamps = []
        for ls in ears:
            uid = f"{self.conversation}-{seq}" + ("" if len(self.listeners) == 1 else f"-{ls.ear.name}")
            tl = UtteranceTimeline(
                utterance_id=uid, conversation=self.conversation, seq=seq, fixture_id=item.fixture_id,
                source_language=speaker.voice.source_language, target_language=ls.ear.language,
                t_planned=planned, wall_start=wall, mode=self.mode, snr_db=item.clip.snr_db,
                scenario=self.cast.kind, party=item.party, listener=ls.ear.name)
            self._pending[uid] = tl
            stamps.append((tl, ls.expect(tl)))
            # Its clip plus the response timeout, then it is a timeout (loop.time() is time.monotonic()).
            # A monologue's sentence may be merged with the ones after it: its results wait for theirs.
            deadline = planned + item.clip.duration_s + self.options.response_timeout_s + (
                MERGE_SLACK_S if self.cast.matching == "span" else 0.0)
            asyncio.get_running_loop().call_at(deadline, self._expire, uid, ls)
        self.result.utterances += 1
        (first, on_end), *also = stamps
        speaker.track.schedule(PlannedUtterance(first, item.clip, on_end, also=tuple(also)))
        return [tl for tl, _ in stamps]

    async def _after_onset(self, previous: list[UtteranceTimeline], after_s: float, fallback: float,
                           stop: asyncio.Event | None) -> float:
        """When the previous utterance's translated speech began (+ after_s), or the fallback slot."""
        first = previous[0]
        events = [self._onset_seen, self._broken] + ([stop] if stop is not None else [])
        while first.t_audio_onset is None and first.error is None and self._clock() < fallback:
            self._onset_seen.clear()  # set whenever a listener times an utterance's audio onset
            await _first_of(events, fallback - self._clock())
            if self._broken.is_set() or (stop is not None and stop.is_set()):
                break
        if first.t_audio_onset is None:
            return fallback
        return max(first.t_audio_onset + after_s, self._clock() + BARGE_IN_MIN_LEAD_S)

    async def _stopped_before(self, moment: float, stop: asyncio.Event | None) -> bool:
        """Wait until ``moment`` (the schedule's horizon); True when asked to stop, or when the server
        dropped the conversation, first."""
        remaining = moment - self._clock()
        if remaining > 0:
            await _first_of([self._broken] + ([stop] if stop is not None else []), remaining)
        return self._broken.is_set() or (stop is not None and stop.is_set())

    def _expire(self, uid: str, listener: Listener) -> None:
        tl = self._pending.pop(uid, None)
        if tl is not None:
            listener.expire(tl)
            self._deliver(tl)
        self._all_done.set()

    def _complete(self, tl: UtteranceTimeline) -> None:
        if self._pending.pop(tl.utterance_id, None) is not None:
            self._deliver(tl)
        self._all_done.set()

    def _deliver(self, tl: UtteranceTimeline) -> None:
        self._on_utterance(tl, self)

    async def sample_stats(self, period_s: float = 2.0) -> None:
        """Refresh the RTC stats every period until cancelled; a failed sample leaves the last one."""
        while True:
            with contextlib.suppress(Exception):
                await self.refresh_stats()
            await asyncio.sleep(period_s)  # sampling period, not synchronisation

    async def refresh_stats(self) -> None:
        """RTC stats for the rows: jitter/loss of each listener's stream, RTT of its party's speaker."""
        for ls in self.listeners:
            await ls.refresh_stats()
            ls.stats["rtt_ms"] = await self.speakers[ls.ear.hears].rtt_ms()

    async def close(self) -> None:
        if self._gc_cadence is not None:
            self._gc_cadence.release()
            self._gc_cadence = None
        self.result.handled_events = sum(ls.inbox.counts.handled for ls in self.listeners)
        self.result.malformed_events = sum(ls.inbox.counts.malformed for ls in self.listeners)
        self.result.unmatched_events = sum(ls.inbox.counts.unmatched for ls in self.listeners)
        self.result.translated_packets = sum(ls.monitor.packets for ls in self.listeners)
        for speaker in self.speakers.values():
            speaker.track.stop()
            if speaker.transport is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(speaker.transport.close(), 5)
        for ls in self.listeners:
            await ls.close()
        for speaker in self.speakers.values():
            await speaker.session.close()


async def _first_of(events: list[asyncio.Event], timeout: float) -> None:
    """Until the first of ``events`` is set, or ``timeout`` s."""
    waits = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()


def _stage_reached(tl: UtteranceTimeline) -> str:
    """The stage an utterance was in when it stopped: the one after its last milestone."""
    last = tl.last_milestone()
    if tl.mode == "sfu":
        return "send" if last == "planned" else "sfu"
    return STALLED_STAGE.get(last, "e2e")


def _node(join: dict[str, Any]) -> str | None:
    node = join.get("node")
    return None if node is None else str(node)
