"""Media checks: the WebRTC path through the SFU, TURN allocation, relayed media, and one utterance
through the whole pipeline (PipelineClient)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from aioice import stun, turn

from loadtest.fixtures import EncodedClip, FixtureLibrary, silence_packet
from loadtest.ice import choose_ice, local_address_toward
from loadtest.preflight.config import TurnServer
from loadtest.preflight.context import AuditContext
from loadtest.preflight.media_probe import MediaOutcome, ProbeOptions, media_round_trip
from loadtest.preflight.model import CheckFailed, Verdict, describe_error
from loadtest.profile_hints import handshake_hint
from loadtest.signaling import ConnectionRefused, SignalingError, TargetUnreachable, TlsUntrusted
from loadtest.timeline import Status, UtteranceTimeline, outcome, stage_latencies
from loadtest.webrtc_client import ClientOptions, PipelineClient, ScheduledUtterance

PROBE_SECONDS = 1.0
# Signaling inside a media check gives up this long before the check's own timeout, so a stuck step is
# reported in its own words (which request went unanswered) instead of "no result within N s".
INNER_MARGIN_S = 1.0


def inner_timeout(check_timeout_s: float) -> float:
    return max(check_timeout_s * 0.5, check_timeout_s - INNER_MARGIN_S)


def _probe_options(ctx: AuditContext, relay: TurnServer | None) -> ProbeOptions:
    c = ctx.config
    return ProbeOptions(url=c.target_url, profile=ctx.profile, ssl_context=ctx.ssl_for(c.target_url),
                        timeout_s=inner_timeout(c.media_timeout_s), seconds=PROBE_SECONDS, relay=relay,
                        credentials=ctx.credentials, source_language=c.source_language,
                        target_language=c.target_language)


def judge_media(result: MediaOutcome, relay: bool) -> Verdict:
    """Media passed when the SFU sent back (nearly) every probe packet, on the expected candidate type."""
    s = result.steps_ms
    timings = " · ".join(f"{k} {v:.0f} ms" for k, v in s.items())
    pair = f"{result.local_candidate} ↔ {result.remote_candidate}"
    packets = (f"{result.probe_received}/{result.probe_sent} probe packets back through the SFU "
               f"(RTP stats: sent {result.rtp_sent}, received {result.rtp_received}, lost {result.rtp_lost})")
    line = f"{packets} · {pair} · {timings}"
    details = result.as_dict()
    wanted = "relay" if relay else None
    if wanted and result.candidate_type != wanted:
        return Verdict("fail", f"media did not go through the relay ({result.candidate_type}) · {line}",
                       "", details)
    if result.probe_sent == 0 or result.probe_received < 0.9 * result.probe_sent:
        return Verdict("fail", f"media lost on the way · {line}",
                       "UDP between tester and media server is filtered or lossy: check the RTC port range",
                       details)
    return Verdict("ok", line, "", details)


def signaling_failed(ctx: AuditContext, exc: SignalingError) -> CheckFailed:
    """A signaling failure in its own words, with where to look next."""
    if isinstance(exc, ConnectionRefused | TargetUnreachable | TlsUntrusted):
        hint = handshake_hint(str(exc), ctx.profile)
        return CheckFailed(str(exc), f"{hint.key}: {hint.text}")
    return CheckFailed(str(exc), f"walk the profile step by step to see which key: loadtest profile check "
                                 f"--target {ctx.config.target_url} --profile {ctx.config.profile}")


async def _round_trip(ctx: AuditContext, relay: TurnServer | None) -> MediaOutcome:
    try:
        return await media_round_trip(_probe_options(ctx, relay))
    except SignalingError as exc:
        raise signaling_failed(ctx, exc) from None


async def check_media(ctx: AuditContext) -> Verdict:
    return judge_media(await _round_trip(ctx, None), relay=False)


async def check_relay_media(ctx: AuditContext, server: TurnServer) -> Verdict:
    return judge_media(await _round_trip(ctx, server), relay=True)


# --------------------------------------------------------------------------- TURN allocation

class _Echo(asyncio.DatagramProtocol):
    """The far end of the relay round trip: echoes every datagram back to its sender."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(data, addr)  # type: ignore[attr-defined]


class _Client(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if not self.received.done():
            self.received.set_result(data)


async def check_turn_allocation(ctx: AuditContext, server: TurnServer) -> Verdict:
    host, port, transport = server.address()
    loop = asyncio.get_running_loop()
    t0 = time.monotonic()
    try:
        # turns: is TURN over TLS (TCP); its certificate is verified like the routes'.
        tls = ctx.tls if server.url.startswith("turns:") else None
        relay_transport, client = await turn.create_turn_endpoint(
            _Client, (host, port), server.username or None, server.credential or None, lifetime=60,
            ssl=tls, transport="tcp" if tls else transport)
    except stun.TransactionFailed as exc:
        code, reason = exc.response.attributes.get("ERROR-CODE", (0, "?"))
        hint = ("the TURN credentials were rejected: the server's secret and the clients' ICE config "
                "disagree (rotated secret?)" if code == 401 else "")
        raise CheckFailed(
            f"allocation refused: {code} {reason} for user '{server.username}' at {host}:{port}",
            hint, {"error_code": code}) from None
    except stun.TransactionTimeout:
        raise CheckFailed(f"no answer from {host}:{port}/{transport} (TURN server down or UDP filtered)",
                          "check the TURN server and that its port is reachable") from None
    except OSError as exc:
        raise CheckFailed(f"{host}:{port}: {describe_error(exc)}") from None
    allocate_ms = (time.monotonic() - t0) * 1000.0
    relayed = relay_transport.get_extra_info("sockname")
    # Relay round trip: tester → TURN → a UDP echo on the tester's ICE address → TURN → tester.
    # With "auto" toward a remote target, the echo listens where the route to the TURN server leaves.
    ice = choose_ice(ctx.config.ice_addresses, ctx.config.target_url)
    echo_transport, _ = await loop.create_datagram_endpoint(
        _Echo, local_addr=(local_address_toward(ice, host, port), 0))
    try:
        t1 = time.monotonic()
        relay_transport.sendto(b"speechload-preflight", echo_transport.get_extra_info("sockname"))
        try:
            await asyncio.wait_for(client.received, min(2.0, ctx.config.timeout_s))
        except TimeoutError:
            return Verdict("warn", f"allocated {relayed[0]}:{relayed[1]} in {allocate_ms:.0f} ms, but no "
                                   "data came back through the relay",
                           "the TURN server cannot reach the tester's address (peer restrictions?)")
        rtt = (time.monotonic() - t1) * 1000.0
    finally:
        echo_transport.close()
        relay_transport.close()
    return Verdict("ok", f"allocated relay {relayed[0]}:{relayed[1]} for '{server.username}' in "
                         f"{allocate_ms:.0f} ms · relay round trip {rtt:.1f} ms",
                   "", {"relayed": f"{relayed[0]}:{relayed[1]}", "allocate_ms": round(allocate_ms, 1)})


# --------------------------------------------------------------------------- pipeline smoke

def smoke_fixture(library: FixtureLibrary, wanted: str) -> str:
    if wanted:
        library.require([wanted])
        return wanted
    return min(library.ids, key=lambda i: library.fixture(i).duration_s)


def _smoke_clip(fixtures: str, wanted: str) -> tuple[str, EncodedClip]:
    library = FixtureLibrary(Path(fixtures))
    fixture_id = smoke_fixture(library, wanted)
    return fixture_id, library.get(fixture_id)


def judge_smoke(tl: UtteranceTimeline, connect_ms: float | None) -> Verdict:
    result = outcome(tl)
    lat = stage_latencies(tl)
    if tl.mode == "sfu":  # a plain SFU: our own voice back through it is the whole "pipeline"
        stages = {"connect": connect_ms, "sfu": lat.sfu_ms}
    else:
        stages = {"connect": connect_ms, "stt": lat.stt_ms, "translation": lat.translation_ms,
                  "tts": lat.tts_ms, "e2e": lat.e2e_ms}
    timings = " · ".join(f"{k} {v:.0f} ms" for k, v in stages.items() if v is not None)
    texts = f" · '{tl.transcript}' → '{tl.translation}'" if tl.transcript else ""
    details = {"stages_ms": {k: (round(v, 1) if v is not None else None) for k, v in stages.items()},
               "transcript": tl.transcript, "translation": tl.translation, "status": result.status.value,
               "mode": tl.mode}
    if result.status == Status.OK:
        return Verdict("ok", f"{timings}{texts}", "", details)
    why = result.error or result.status.value
    hint = ("our voice did not come back through the SFU: see the WebRTC check" if tl.mode == "sfu"
            else f"the pipeline stops at {result.status_stage}: see its backend check")
    return Verdict("fail", f"{result.status.value} at {result.status_stage}: {why} · {timings}{texts}",
                   hint, details)


async def check_smoke(ctx: AuditContext) -> Verdict:
    c = ctx.config
    # Reading and Opus-encoding the clip takes a good half second: off the loop, or every check running
    # beside this one would report that much extra latency.
    fixture_id, clip = await asyncio.to_thread(_smoke_clip, c.fixtures, c.smoke_fixture)
    inner = inner_timeout(c.media_timeout_s)
    # The client's own waits (a request, the matching announcement) end well inside `inner`, so their
    # error, which says what was missing, is the one reported.
    patience = inner * 0.6
    # The utterance gets the rest of the check's budget after connecting and speaking.
    response_timeout = max(1.0, c.media_timeout_s - clip.duration_s - 2.5)
    options = ClientOptions(url=c.target_url, profile=ctx.profile, ssl_context=ctx.ssl_for(c.target_url),
                            connect_timeout_s=patience, request_timeout_s=patience,
                            response_timeout_s=response_timeout, source_language=c.source_language,
                            target_language=c.target_language, credentials=ctx.credentials)
    done: list[UtteranceTimeline] = []
    client = PipelineClient(options, silence_packet(), lambda tl, _c: done.append(tl),
                            conversation=f"preflight-smoke-{int(time.time())}")
    try:
        try:
            # Bounded inside the check's own timeout: a connect that stalls says so in its own words.
            await asyncio.wait_for(client.connect(), inner)
        except TimeoutError:
            stalled = SignalingError(f"connecting speaker and listener stalled for {inner:g} s "
                                     f"({client.result.error or 'no answer, no refusal'})")
            raise signaling_failed(ctx, stalled) from None
        except SignalingError as exc:
            raise signaling_failed(ctx, exc) from None
        await client.speak([ScheduledUtterance(fixture_id, clip, 0.0)], first_slot_delay_s=0.1)
    finally:
        await client.close()
    if not done:
        raise CheckFailed("the utterance never ended (no status delivered)")
    return judge_smoke(done[0], client.result.connect_ms)
