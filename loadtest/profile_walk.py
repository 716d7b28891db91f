"""`loadtest profile check`: walk a signaling profile against a live gateway, one step at a time.

Handshake, each join and role step (payload → answer), the router capabilities, create_transport,
produce and the ICE + DTLS completion it starts, the announcements and which one `producers.consume`
picks, consume, resume, then media (mode "sfu") or result events (mode "pipeline", profile_walk_media).
The walk stops at the first failure and names the key behind it (profile_hints). Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pymediasoup.rtp_parameters import RtpParameters

from loadtest.announcements import Announcements
from loadtest.credentials import Credentials
from loadtest.fixtures import DEFAULT_MANIFEST, silence_packet
from loadtest.linkwatch import LinkWatch, wait_link, watch_link
from loadtest.media import UtteranceTrack
from loadtest.profile import SignalingProfile
from loadtest.profile_hints import (
    Hint,
    announcement_hint,
    caps_path,
    handshake_hint,
    join_hint,
    placeholder_hint,
    request_hint,
)
from loadtest.profile_steps import Printer, StepFailure, WalkStopped
from loadtest.session import Party, PeerSession
from loadtest.signaling import SignalingError
from loadtest.tracing import NO_ANSWER, NOT_BUILT, Exchange, open_traced, traced
from loadtest.transport import answer_produce, create_transport, load_device, receiver_of

ROLES_BOTH = ("listener", "speaker")  # the listener first: it must hear the speaker's producer announced
HintFor = Callable[[str], Hint | None]
Finish = Callable[["Walk"], Awaitable[None]]  # what comes after consume (profile_walk_media)


@dataclass(frozen=True)
class WalkOptions:
    url: str
    profile: SignalingProfile
    ssl_context: ssl.SSLContext | bool
    credentials: Credentials
    roles: tuple[str, ...] = ROLES_BOTH
    timeout_s: float = 10.0
    source_language: str = "en"
    target_language: str = "es"
    fixtures: str = str(DEFAULT_MANIFEST)


class Walk:
    def __init__(self, opts: WalkOptions, printer: Printer) -> None:
        self.opts, self.p, self.profile = opts, printer, opts.profile
        self.room = f"profile-check-{uuid.uuid4().hex[:8]}"
        self.sessions: dict[str, PeerSession] = {}
        self.devices: dict[str, Any] = {}
        self.transports: dict[str, Any] = {}
        self.links: dict[str, LinkWatch] = {}
        self.announcements = Announcements(self.profile.producers)
        self.changed = asyncio.Event()  # an announcement or event arrived, or a channel was lost
        self.other_events: list[str] = []  # events the listener got that the profile does not name
        self.events: dict[str, list[tuple[float, Any]]] = {}
        self.lost: str | None = None
        self.track = UtteranceTrack(silence_packet())
        self.mic_id = ""
        self.receiver: Any = None
        self.consumer_producer = ""

    # ---- printing ------------------------------------------------------------------------------

    def on_exchange(self, ex: Exchange) -> None:
        """Every request prints its own line: payload → answer, or the failure and its hint."""
        sent = self.p.show(ex.payload) if ex.payload is not NOT_BUILT else "(payload not built)"
        got = self.p.show(ex.answer) if ex.answer is not NO_ANSWER else "no answer"
        label, detail = f"requests.{ex.name} ({ex.role})", f"'{ex.event}' {sent} → {got}"
        if ex.ok:
            self.p.ok(label, detail, ex.ms)
            return
        why = str(ex.error)
        hint = request_hint(ex.name, ex.role, why, ex.answer, ex.answer is not NO_ANSWER, self.profile)
        key = hint.key if hint.key.startswith(f"requests.{ex.name}.") else f"requests.{ex.name}"
        self.p.fail(label, detail, StepFailure(key, why, hint), ex.ms)

    @contextlib.asynccontextmanager
    async def step(self, key: str, label: str,
                   hint_for: HintFor | None = None) -> AsyncIterator[dict[str, str]]:
        """One step: any failure inside is printed once (a request's own line may already have) and
        stops the walk. The yielded dict's "detail" is shown on a failure line."""
        shown: dict[str, str] = {"detail": ""}
        t0 = time.monotonic()
        try:
            yield shown
        except WalkStopped:
            raise
        except Exception as exc:  # noqa: BLE001 — any failure of a step is the step's result, named
            if self.p.failure is None:
                why = str(exc) or type(exc).__name__
                placeholder = placeholder_hint(why)
                hint = placeholder or (hint_for(why) if hint_for is not None else None)
                failed = key
                if placeholder is not None or (hint is not None and hint.key.startswith(f"{key}.")):
                    failed = hint.key if hint is not None else key
                self.p.fail(label, shown["detail"], StepFailure(failed, why, hint),
                            (time.monotonic() - t0) * 1000.0)
            raise WalkStopped from None

    # ---- the walk ------------------------------------------------------------------------------

    async def run(self, finish: Finish | None = None) -> bool:
        """The whole walk, then `finish` (media or events); True when every step passed."""
        t0 = time.monotonic()
        # A safety net over the bounded steps (each has its own timeout); never the expected ending.
        budget = self.opts.timeout_s * 8 + 30
        try:
            async with asyncio.timeout(budget):
                await self._walk()
                if finish is not None and self.opts.roles == ROLES_BOTH:
                    await finish(self)
        except WalkStopped:
            pass
        except TimeoutError:
            self.p.fail("walk", "", StepFailure("walk", f"did not finish within {budget:g} s"))
        finally:
            await self._close()
        self.p.summary(time.monotonic() - t0)
        return self.p.failure is None

    async def _walk(self) -> None:
        roles = self.opts.roles
        await self._open_sessions()
        for role in roles:
            await self._handshake(role)
        for role in roles:
            await self._join(role)
        for role in roles:
            await self._transport(role)
        if "speaker" in roles:
            await self._produce()
        if roles != ROLES_BOTH:
            self.p.skip("consume", "not walked: needs a speaker and a listener (--role both)")
            return
        await self._consume()

    async def _open_sessions(self) -> None:
        o = self.opts

        def hint(why: str) -> Hint:
            return Hint("[credentials]", f"the credentials cannot be made: {why}")

        async with self.step("credentials", "credentials", hint):
            for role in o.roles:
                party = Party(self.room, role, 0, o.source_language, o.target_language)
                session = open_traced(o.url, self.profile, o.ssl_context, o.timeout_s, party,
                                      o.credentials, self.on_exchange)
                self.sessions[role] = session
                self.p.add_secret(str(session.variables.get("token") or ""))
            self.p.ok("credentials", describe_credentials(self.profile, o.credentials))

    async def _handshake(self, role: str) -> None:
        session, sio = self.sessions[role], self.profile.socketio
        label = f"handshake ({role})"
        async with self.step("socketio", label, lambda why: handshake_hint(why, self.profile)) as shown:
            url, headers, auth = session.channel.handshake()
            shown["detail"] = (f"{url} · path /{sio.path.strip('/')} · namespace {sio.namespace} · "
                               f"{'+'.join(sio.transports)} · headers {self.p.show(headers)} · "
                               f"auth {self.p.show(auth)}")
            t0 = time.monotonic()
            await session.connect(self.opts.timeout_s)
            self.p.ok(label, shown["detail"] + " · connected", (time.monotonic() - t0) * 1000.0)
        session.channel.on_lost(lambda reason: self._on_lost(role, reason))
        if role == "listener":
            channel = session.channel
            channel.on(self.profile.producers.announce_event, self._on_announcement)
            channel.on("*", self._on_other_event)
            for kind, spec in self.profile.events.items():
                channel.on(spec.event, self._event_recorder(kind))

    async def _join(self, role: str) -> None:
        session = self.sessions[role]
        steps = self.profile.steps(role)
        async with self.step("sequence", f"join ({role})"):
            await session.join()  # each request prints its own line
        if role == "listener" and session.answers.get("producers"):
            self._on_announcement(session.answers["producers"])
        exchanges = [e for e in traced(session).exchanges if e.name in steps]

        def hint(why: str) -> Hint:
            if "rtp_capabilities" not in session.answers:
                return join_hint(role, [(e.name, e.answer) for e in exchanges], self.profile)
            source = _caps_source(exchanges)
            guess = caps_path(exchanges[-1].answer) if exchanges else None
            better = f": try \"{guess}\"" if guess else ""
            return Hint(f"requests.{source}.response.rtp_capabilities",
                        f"the value there is not router RTP capabilities{better}")

        label = f"rtp_capabilities ({role})"
        async with self.step(f"requests.{steps[-1] if steps else 'join'}.response", label, hint):
            if "rtp_capabilities" not in session.answers:
                names = ", ".join(sorted(session.answers)) or "nothing"
                raise SignalingError(f"the {role}'s join steps ({', '.join(steps) or 'none'}) gave no router "
                                     f"RTP capabilities (their responses name: {names})")
            caps = session.answers["rtp_capabilities"]
            tracks = [self.track] if role == "speaker" else []
            self.devices[role] = await load_device(caps, tracks)
            codecs = [str(c.get("mimeType")) for c in caps.get("codecs", []) if isinstance(c, dict)]
            source = _caps_source(exchanges)
            path = self.profile.requests[source].response.get("rtp_capabilities", "?")
            self.p.ok(label, f"from requests.{source}.response.rtp_capabilities = \"{path}\": "
                             f"{len(codecs)} codecs ({', '.join(sorted(set(codecs)))})")

    async def _transport(self, role: str) -> None:
        session = self.sessions[role]
        direction = "send" if role == "speaker" else "recv"
        label = f"transport ({role}, {direction})"

        def hint(why: str) -> Hint:
            last = traced(session).last_exchange()
            answer = last.answer if last is not None else NO_ANSWER
            return request_hint("create_transport", role, why, answer, answer is not NO_ANSWER, self.profile)

        async with self.step("requests.create_transport.response", label, hint):
            transport = await create_transport(session, self.devices[role], direction)
            self.transports[role] = transport
            self.links[role] = watch_link(transport, direction)
            last = traced(session).last_exchange()
            candidates = (last.fields or {}).get("ice_candidates", []) if last is not None else []
            where = ", ".join(f"{c.get('ip') or c.get('address')}:{c.get('port')}/{c.get('protocol')}"
                              for c in candidates if isinstance(c, dict))
            self.p.ok(label, f"id {transport.id} · ICE candidates: {where or 'none'}")

    async def _produce(self) -> None:
        session, send = self.sessions["speaker"], self.transports["speaker"]
        answer_produce(send, session)
        self.links["speaker"].started = time.monotonic()
        async with self.step("requests.produce", "produce (speaker)"):
            producer = await send.produce(track=self.track, stopTracks=False, appData={"type": "mic"})
            self.mic_id = producer.id
            self.p.ok("produce (speaker)", f"producer {producer.id} (kind {producer.kind})")
        await self._connected("speaker")

    async def _connected(self, role: str) -> None:
        link = self.links[role]
        label = f"connect ({role}, {link.direction})"

        def hint(why: str) -> Hint:
            if link.ice_at is None:
                return Hint("--ice-address", "ICE did not connect: the gateway's candidates must be "
                            "reachable from this host (UDP), and ours from it; for a gateway on another host "
                            "try --ice-address with this host's address it can reach")
            return Hint("requests.connect_transport.payload", "ICE connected but DTLS did not: the gateway "
                        "must get our DTLS parameters (payload dtls_parameters = \"{dtls_parameters}\")")

        async with self.step("requests.connect_transport", label, hint):
            await wait_link(self.transports[role], link, self.opts.timeout_s)
            pair = _pair(self.transports[role])
            ice, dtls = link.ice_ms or 0.0, link.dtls_ms or 0.0
            self.p.ok(label, f"ICE + DTLS completed: ICE {ice:.0f} ms, DTLS {dtls:.0f} ms · {pair}")

    async def _consume(self) -> None:
        listener = self.sessions["listener"]
        variables = {**listener.variables, "mic_producer": self.mic_id}
        label = "announcements (listener)"
        spec = self.profile.producers

        def hint(why: str) -> Hint:
            return announcement_hint(spec, list(self.announcements.announced.values()), variables,
                                     self.other_events, self.announcements.malformed, self.profile.version)

        async with self.step("producers.consume", label, hint) as shown:
            shown["detail"] = f"waiting for '{spec.announce_event}'"
            pid = await self._wanted(variables)
            info = self.announcements.announced[pid]
            others = [p for p in self.announcements.announced if p != pid]
            rest = f" · not matched: {self.p.show(others, 80)}" if others else ""
            seen = len(self.announcements.announced)
            self.p.ok(label, f"{seen} seen via '{spec.announce_event}' · matched producers.consume: "
                             f"{self.p.show(info, 120)}{rest}")
        recv = self.transports["listener"]
        self.links["listener"].started = time.monotonic()
        async with self.step("requests.consume.response", "consume (listener)") as shown:
            caps = self.devices["listener"].rtpCapabilities.model_dump(exclude_none=True)
            info = await listener.request("consume", transport_id=recv.id, producer_id=pid,
                                          rtp_capabilities=caps)
            shown["detail"] = f"answer fields {self.p.show(sorted(info))}"
            consumer = await recv.consume(id=info["id"], producerId=info["producer_id"], kind=info["kind"],
                                          rtpParameters=RtpParameters.model_validate(info["rtp_parameters"]))
            self.receiver = consumer.rtpReceiver or receiver_of(recv, consumer)
            self.consumer_producer = pid
            self.p.ok("consume (listener)", f"consumer {info['id']} of producer {info['producer_id']} "
                                            f"(kind {info['kind']})")
        await self._connected("listener")
        if self.profile.has_request("resume_consumer"):
            async with self.step("requests.resume_consumer", "resume (listener)"):
                await listener.request("resume_consumer", consumer_id=info["id"])
        else:
            self.p.skip("requests.resume_consumer", "skipped: no [requests.resume_consumer] (the gateway's "
                                                    "consumers must start unpaused)")

    async def _wanted(self, variables: dict[str, Any]) -> str:
        """The first announced producer the consume rules pick; waits for announcements until the timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.opts.timeout_s
        while True:  # bounded: each pass waits for a new announcement, and the deadline ends it
            if self.lost is not None:
                raise SignalingError(self.lost)
            wanted = self.announcements.wanted(variables)
            if wanted:
                return wanted[0]
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise SignalingError(f"no announced producer matched producers.consume within "
                                     f"{self.opts.timeout_s:g} s ({self.announcements.describe()})")
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), remaining)

    # ---- what the listener hears ---------------------------------------------------------------

    def _on_announcement(self, payload: Any = None, *_extra: Any) -> None:
        self.announcements.add(payload)
        self.changed.set()

    def _on_other_event(self, event: str, *_args: Any) -> None:
        self.other_events.append(str(event))
        self.changed.set()

    def _event_recorder(self, kind: str) -> Callable[..., None]:
        def record(payload: Any = None, *_extra: Any) -> None:
            self.events.setdefault(kind, []).append((time.monotonic(), payload))
            self.changed.set()

        return record

    def _on_lost(self, role: str, reason: str) -> None:
        self.lost = self.lost or f"the {role}'s connection: {reason}"
        self.changed.set()

    async def _close(self) -> None:
        self.track.stop()
        for transport in self.transports.values():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(transport.close(), 5)
        await asyncio.gather(*(s.close() for s in self.sessions.values()), return_exceptions=True)


def _caps_source(exchanges: list[Exchange]) -> str:
    for ex in exchanges:
        if ex.fields and "rtp_capabilities" in ex.fields:
            return ex.name
    return exchanges[-1].name if exchanges else "join"


def _pair(transport: Any) -> str:
    """The nominated ICE pair, "local ↔ remote" (best effort: aiortc internals)."""
    try:
        for transceiver in transport._handler.pc.getTransceivers():
            pair = transceiver.receiver.transport.transport._connection._nominated.get(1)
            if pair is not None:
                lc, rc = pair.local_candidate, pair.remote_candidate
                return f"{lc.type} {lc.host}:{lc.port} ↔ {rc.type} {rc.host}:{rc.port}"
    except AttributeError:
        pass
    return "pair ?"


def describe_credentials(profile: SignalingProfile, credentials: Credentials) -> str:
    spec = profile.credentials
    where = [f"socketio.{part}" for part in ("query", "headers", "auth")
             if any("{token}" in str(v) for v in getattr(profile.socketio, part).values())]
    travels = f" · {{token}} in {', '.join(where)}" if where else ""
    if credentials.kind == "jwt":
        source = f"secret from ${spec.secret_env}" if spec.secret_env else "secret in the profile"
        return (f"jwt {credentials.algorithm}, {source}, claims {json.dumps(credentials.claims)}, "
                f"ttl {credentials.ttl_s:g} s{travels}")
    if credentials.kind == "file":
        return f"one token per caller from {spec.path} ({len(credentials.tokens)} tokens){travels}"
    if credentials.kind == "static":
        return f"static token (run config or profile){travels or ' · in socketio.auth.token'}"
    return "none (no token)"
