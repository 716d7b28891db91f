"""What one impaired caller's network did, and what the far ends saw of it.

Three views of the same packets, per direction, so the report can set them side by side:

* **configured** — the profile (``Profile.describe``);
* **injected** — the hook's counters (``Link.counters``): RTP packets offered to and dropped by the
  caller's link;
* **observed** — uplink: the SFU's own count, from the RTCP receiver reports mediasoup sends about the
  speaker's stream (cumulative packets lost; expected = the report's extended highest sequence number −
  the first sequence number we sent + 1); downlink: the listener's ``inbound-rtp`` (packetsLost,
  packetsReceived) for the stream it consumes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from loadtest.conditions import ImpairmentConfig
from loadtest.impairments.hook import Link, attach
from loadtest.impairments.profiles import resolve


@dataclass
class ReceiverReport:
    packets_lost: int
    highest_sequence: int  # extended (cycles · 65536 + sequence number)
    fraction_lost: int  # 0..255, over the interval since the previous report
    reports: int  # how many reports about our stream arrived so far


class UplinkReports:
    """The latest RTCP receiver report about an aiortc sender's stream (wraps its RTCP handler)."""

    def __init__(self, sender: Any) -> None:
        self.last: ReceiverReport | None = None
        self._sender = sender
        original = sender._handle_rtcp_packet

        async def handle(packet: Any) -> None:
            for report in getattr(packet, "reports", ()) or ():
                if report.ssrc == sender._ssrc:
                    count = self.last.reports + 1 if self.last is not None else 1
                    self.last = ReceiverReport(int(report.packets_lost), int(report.highest_sequence),
                                               int(report.fraction_lost), count)
            await original(packet)

        sender._handle_rtcp_packet = handle

    @property
    def ssrc(self) -> int:
        return int(self._sender._ssrc)


class NetworkWatch:
    """One caller's link, attached to its transports and its speaker's sender; makes the row columns."""

    def __init__(self, link: Link) -> None:
        self.link = link
        self.uplink: UplinkReports | None = None
        self.ice_connected_at: float | None = None  # the speaker's transport: ICE connected (monotonic)

    @property
    def profile(self) -> str:
        return self.link.profile.name

    def attach_transport(self, transport: Any) -> None:
        """A pymediasoup transport, right after it is created (before produce/consume gathers)."""
        pc = transport._handler.pc
        attach(pc, self.link)
        if transport.direction == "send":

            @pc.on("iceconnectionstatechange")
            def stamp() -> None:
                if pc.iceConnectionState in ("connected", "completed") and self.ice_connected_at is None:
                    self.ice_connected_at = time.monotonic()  # the loop's clock, as the hook's

    def ice_ms(self) -> float | None:
        """The speaker transport's ICE handshake, first check sent → ICE connected: the part of connect the
        network path sets (the rest is signaling, which is not impaired)."""
        start, end = self.link.first_check_at, self.ice_connected_at
        return (end - start) * 1000.0 if start is not None and end is not None and end >= start else None

    def attach_sender(self, sender: Any) -> None:
        self.uplink = UplinkReports(sender)

    def sfu_observed(self) -> tuple[int, int] | None:
        """(lost, expected) of the speaker's stream as the SFU last reported them."""
        report = self.uplink.last if self.uplink is not None else None
        first = self.link.first_rtp_seq.get(self.uplink.ssrc) if self.uplink is not None else None
        if report is None or first is None:
            return None
        expected = report.highest_sequence - first + 1
        return (report.packets_lost, expected) if expected > 0 else None

    def columns(self, stats: dict[str, float | None]) -> dict[str, Any]:
        """The row's network columns; ``stats``: the client's last RTC stats poll (listener's side)."""
        up, down = self.link.counters["up"], self.link.counters["down"]
        out: dict[str, Any] = {
            "impairment": self.profile,
            "net_up_packets": up.rtp, "net_up_dropped": up.rtp_dropped, "net_up_delayed": up.rtp_delayed,
            "net_up_delay_ms": up.rtp_mean_added_ms(),
            "net_down_packets": down.rtp, "net_down_dropped": down.rtp_dropped,
            "net_down_delayed": down.rtp_delayed, "net_down_delay_ms": down.rtp_mean_added_ms(),
            "sfu_up_lost": None, "sfu_up_expected": None, "rx_down_lost": None, "rx_down_expected": None,
            "net_ice_ms": self.ice_ms(),
        }
        observed = self.sfu_observed()
        if observed is not None:
            out["sfu_up_lost"], out["sfu_up_expected"] = observed
        lost, received = stats.get("packets_lost"), stats.get("packets_received")
        if lost is not None and received is not None:
            out["rx_down_lost"], out["rx_down_expected"] = lost, lost + received
        return out


class NetworkPlan:
    """Which link each caller of a run gets (``ImpairmentConfig`` groups, profiles resolved once)."""

    def __init__(self, config: ImpairmentConfig, scope: str = "") -> None:
        self.config = config
        self.profiles = resolve(config)
        self.scope = scope  # tells apart the callers of different processes (same index, other seeds)

    def watch_for(self, caller: int) -> NetworkWatch | None:
        name = self.config.profile_for(caller)
        if name is None:
            return None
        link = Link(self.profiles[name], f"{self.config.seed}/{self.scope}/{caller}")
        return NetworkWatch(link)
