"""WebRTC transports of one peer: a pymediasoup Device loaded with the router's capabilities, and send or
recv transports whose ICE + DTLS completion is awaited as an event, not polled."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from pymediasoup import AiortcHandler, Device
from pymediasoup.rtp_parameters import RtpCapabilities

from loadtest.ice import TurnRelay, force_relay
from loadtest.session import PeerSession
from loadtest.signaling import SignalingError


async def load_device(caps: Any, tracks: list[Any]) -> Device:
    device = Device(handlerFactory=AiortcHandler.createFactory(tracks=tracks))
    try:
        await device.load(RtpCapabilities.model_validate(caps))
    except Exception as exc:  # noqa: BLE001 — pydantic or mediasoup-client validation, named below
        raise SignalingError(f"the router RTP capabilities from the join answer are unusable: "
                             f"{type(exc).__name__}: {str(exc)[:200]}") from None
    return device


async def create_transport(session: PeerSession, device: Device, direction: str,
                           relay: TurnRelay | None = None,
                           clock: Callable[[], float] = time.monotonic, network: Any = None) -> Any:
    """Ask the gateway for a transport (`create_transport`), build its local side; the transport's
    `connected_at` future gives the time ICE + DTLS completed (or fails naming the state).
    `network` (an impairments.observe.NetworkWatch): the caller's impaired network, attached before the
    transport gathers its candidates."""
    info = await session.request("create_transport", direction=direction)
    create = device.createSendTransport if direction == "send" else device.createRecvTransport
    try:
        transport = create(id=info["id"], iceParameters=info["ice_parameters"],
                           iceCandidates=info["ice_candidates"], dtlsParameters=info["dtls_parameters"],
                           sctpParameters=None, iceServers=[])
    except Exception as exc:  # noqa: BLE001 — the answer's fields did not validate
        raise SignalingError(f"request 'create_transport': the answer's transport fields are unusable "
                             f"(requests.create_transport.response): {type(exc).__name__}: "
                             f"{str(exc)[:200]}") from None
    if relay is not None:
        force_relay(transport, relay)
    if network is not None:
        network.attach_transport(transport)
    connected = asyncio.get_running_loop().create_future()
    failures: list[str] = []

    @transport.on("connect")
    async def on_connect(dtls_parameters: Any) -> None:
        try:
            await session.request("connect_transport", transport_id=info["id"],
                                  dtls_parameters=dtls_parameters.model_dump(exclude_none=True))
        except SignalingError as exc:
            # pymediasoup swallows a handler's exception: hand it to whoever awaits the connection.
            failures.append(str(exc))
            if not connected.done():
                connected.set_exception(SignalingError(str(exc)))

    @transport.on("connectionstatechange")
    async def on_state(state: str) -> None:
        if state == "connected" and not connected.done():
            connected.set_result(clock())
        elif state in ("failed", "closed") and not connected.done():
            why = f": {failures[-1]}" if failures else ""
            connected.set_exception(SignalingError(f"{direction} transport {state} (ICE/DTLS){why}"))

    transport.connected_at = connected
    return transport


def answer_produce(transport: Any, session: PeerSession) -> None:
    """Let the send transport's `produce` ask the gateway (the `produce` request) for the producer id."""

    @transport.on("produce")
    async def on_produce(kind: str, rtp_parameters: Any, app_data: Any) -> str:
        answer = await session.request("produce", transport_id=transport.id, kind=kind,
                                       rtp_parameters=rtp_parameters.model_dump(exclude_none=True),
                                       app_data=app_data or {})
        return str(answer["id"])


def receiver_of(transport: Any, consumer: Any) -> Any:
    """A consumer's RTCRtpReceiver: pymediasoup 1.5.0 builds its Consumer without the receiver it got
    from the handler."""
    transceiver = transport._handler._mapMidTransceiver.get(consumer.localId)
    if transceiver is None:
        raise SignalingError(f"no transceiver for consumer {consumer.id}")
    return transceiver.receiver
