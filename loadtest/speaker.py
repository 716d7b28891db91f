"""A speaking party's peer: its signaling session, its microphone track, send transport and producer."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from loadtest import rtphistory
from loadtest.cast import Voice
from loadtest.ice import TurnRelay
from loadtest.linkwatch import wait_link, watch_link
from loadtest.media import UtteranceTrack
from loadtest.session import PeerSession
from loadtest.signaling import SignalingError
from loadtest.transport import answer_produce, create_transport, load_device

if TYPE_CHECKING:
    from loadtest.impairments.observe import NetworkWatch


class Speaker:
    def __init__(self, voice: Voice, session: PeerSession, silence: bytes,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.voice = voice
        self.session = session
        self.track = UtteranceTrack(silence, clock)
        self.transport: Any = None
        self.producer_id: str | None = None
        self.rtp_sender: Any = None
        self.node: str | None = None
        self._clock = clock
        self._link: Any = None

    async def produce(self, join: dict[str, Any], relay: TurnRelay | None,
                      network: NetworkWatch | None) -> str:
        """Create the send transport and the microphone producer; the producer id."""
        device = await load_device(join["rtp_capabilities"], [self.track])
        transport = await create_transport(self.session, device, "send", relay, self._clock, network)
        self.transport = transport
        self._link = watch_link(transport, "send")  # connect ends when DTLS is up, not at ICE (pymediasoup's)
        answer_produce(transport, self.session)
        producer = await transport.produce(track=self.track, stopTracks=False, appData={"type": "mic"})
        self.producer_id = producer.id
        self.rtp_sender = producer.rtpSender
        if network is not None:
            network.attach_sender(producer.rtpSender)  # the SFU's receiver reports about our stream
        self.track.attach_sender(producer.rtpSender)
        rtphistory.install(producer.rtpSender)  # NACK history without a tracked object per sent packet
        return str(producer.id)

    async def connected(self, timeout: float, relay: TurnRelay | None) -> float:
        """Wait for ICE + DTLS of the send transport; when it completed (this clock)."""
        try:
            await wait_link(self.transport, self._link, timeout)
        except SignalingError as exc:
            if "not connected within" not in str(exc):
                raise  # a refused connect_transport, or ICE/DTLS failed: its own words
            hint = ("no relay allocation or relayed path: check the TURN URL and credentials"
                    if relay is not None else
                    "no reachable candidate pair: check --ice-address and the gateway's announced address")
            via = "through the TURN relay " if relay is not None else ""
            raise SignalingError(f"send transport: ICE + DTLS did not complete {via}within {timeout:.0f} s "
                                 f"({self._link.state()}; {hint})") from None
        assert self._link.dtls_at is not None
        return float(self._link.dtls_at) if self._clock is time.monotonic else self._clock()

    async def rtt_ms(self) -> float | None:
        if self.rtp_sender is None:
            return None
        for report in (await self.rtp_sender.getStats()).values():
            if getattr(report, "type", "") == "remote-inbound-rtp":
                return float(report.roundTripTime) * 1000.0
        return None
