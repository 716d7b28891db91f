"""Applies a caller's network impairment where aioice meets its sockets, and counts what it did.

aiortc's every datagram (STUN, DTLS, SRTP, SRTCP) passes through aioice's ``StunProtocol``: sent with
``self.transport.sendto`` (a UDP socket's transport, or a ``TurnTransport`` for a relayed candidate),
received in ``datagram_received`` (for a relay: the unwrapped payload). Those are the two points
patched here, process-wide but inert for any connection no caller claimed: a protocol serves the
caller whose peer connection owns its ICE connection (``attach``), and that caller's ``Link`` decides
each datagram's fate — send/deliver now, later (a timer releases held datagrams in order), or never.
ICE, DTLS and SRTP above see the impaired path as they would see a real network.

Not impaired: Socket.IO signaling (TCP, not through aioice) and a TURN client's own allocation
traffic. Counters are per direction; the RTP ones (the media itself) are what the report sets against
what the SFU and the listener observed.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from loadtest.impairments.models import DROP_QUEUE, PathModel
from loadtest.impairments.profiles import Profile

RTP, RTCP, STUN, DTLS, OTHER = "rtp", "rtcp", "stun", "dtls", "other"
HELD_MIN_S = 0.0005  # a datagram held at least this long counts as delayed


def classify(data: bytes) -> str:
    """RFC 7983 demultiplexing by the first byte; RTCP by its packet type (RFC 5761)."""
    if not data:
        return OTHER
    first = data[0]
    if first < 4:
        return STUN
    if 20 <= first <= 63:
        return DTLS
    if 128 <= first <= 191 and len(data) >= 12:
        return RTCP if 192 <= data[1] <= 223 else RTP
    return OTHER


@dataclass
class Counters:
    """What one direction of a link did. ``packets``/``dropped``: every datagram; ``rtp_*``: media only."""

    packets: int = 0
    dropped: int = 0
    rtp: int = 0
    rtp_dropped: int = 0
    rtp_queue_dropped: int = 0  # of rtp_dropped: tail drops at the bandwidth cap
    rtp_delayed: int = 0
    rtp_added_s: float = 0.0  # total delay added to delivered RTP packets

    def rtp_mean_added_ms(self) -> float | None:
        delivered = self.rtp - self.rtp_dropped
        return self.rtp_added_s / delivered * 1000.0 if delivered > 0 else None


class Releaser:
    """Held datagrams, released at their times in (time, arrival) order with one timer for the earliest."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._heap: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self._order = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._armed_for = float("inf")

    def hold(self, at: float, release: Callable[..., None], *args: Any) -> None:
        heapq.heappush(self._heap, (at, next(self._order), release, args))
        if at < self._armed_for:
            if self._timer is not None:
                self._timer.cancel()
            self._armed_for = at
            self._timer = self._loop.call_at(at, self._fire)

    def _fire(self) -> None:
        self._timer, self._armed_for = None, float("inf")
        now = self._loop.time()
        while self._heap and self._heap[0][0] <= now:
            _at, _n, release, args = heapq.heappop(self._heap)
            release(*args)
        if self._heap:
            self._armed_for = self._heap[0][0]
            self._timer = self._loop.call_at(self._armed_for, self._fire)

    def __len__(self) -> int:
        return len(self._heap)


class Link:
    """One caller's access network: an uplink and a downlink model, shared by all its transports."""

    def __init__(self, profile: Profile, seed: str) -> None:
        self.profile = profile
        self.models = {"up": PathModel(profile.uplink, f"{seed}/up"),
                       "down": PathModel(profile.downlink, f"{seed}/down")}
        self.counters = {"up": Counters(), "down": Counters()}
        self.first_rtp_seq: dict[int, int] = {}  # uplink: SSRC → the first RTP sequence number sent
        # Loop time of the first ICE connectivity check sent (a STUN Binding request): the speaker's
        # transport's, as its ICE starts (at produce) before the listener's (at consume).
        self.first_check_at: float | None = None
        self._releasers: dict[str, Releaser] = {}

    def _releaser(self, direction: str) -> Releaser:
        releaser = self._releasers.get(direction)
        if releaser is None:
            releaser = self._releasers[direction] = Releaser(asyncio.get_running_loop())
        return releaser

    def decide(self, direction: str, data: bytes, now: float) -> float | None:
        """Count the datagram and return when to pass it on (``now``: at once), or None (dropped)."""
        c = self.counters[direction]
        kind = classify(data)
        c.packets += 1
        if kind == STUN and direction == "up" and self.first_check_at is None and data[:2] == b"\x00\x01":
            self.first_check_at = now
        if kind == RTP:
            c.rtp += 1
            if direction == "up":
                self.first_rtp_seq.setdefault(int.from_bytes(data[8:12], "big"),
                                              int.from_bytes(data[2:4], "big"))
        fate = self.models[direction].admit(now, len(data))
        if fate.deliver_at is None:
            c.dropped += 1
            if kind == RTP:
                c.rtp_dropped += 1
                c.rtp_queue_dropped += fate.cause == DROP_QUEUE
            return None
        if kind == RTP:
            held = fate.deliver_at - now
            c.rtp_added_s += held
            c.rtp_delayed += held >= HELD_MIN_S
        return fate.deliver_at

    def send(self, inner: Any, data: bytes, addr: Any) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        at = self.decide("up", data, now)
        if at is None:
            return
        if at - now < HELD_MIN_S and not self._releasers.get("up"):
            inner.sendto(data, addr)
        else:
            self._releaser("up").hold(at, _late_send, inner, data, addr)

    def receive(self, deliver: Callable[[Any, bytes, Any], None], protocol: Any, data: bytes,
                addr: Any) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        at = self.decide("down", data, now)
        if at is None:
            return
        if at - now < HELD_MIN_S and not self._releasers.get("down"):
            deliver(protocol, data, addr)
        else:
            self._releaser("down").hold(at, deliver, protocol, data, addr)


def _late_send(inner: Any, data: bytes, addr: Any) -> None:
    closing = getattr(inner, "is_closing", None)
    if closing is not None and closing():
        return  # the caller hung up while the datagram was in flight: it is lost with the connection
    inner.sendto(data, addr)


class ImpairedTransport:
    """A datagram transport whose ``sendto`` goes through the caller's link; the rest is the real one."""

    def __init__(self, inner: Any, link: Link) -> None:
        self._inner = inner
        self._link = link

    def sendto(self, data: bytes, addr: Any = None) -> None:
        self._link.send(self._inner, data, addr)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


# --------------------------------------------------------------------------- the aioice patch

_links: weakref.WeakKeyDictionary[Any, Link] = weakref.WeakKeyDictionary()  # RTCPeerConnection → Link
_installed = False


def attach(peer_connection: Any, link: Link) -> None:
    """Every datagram of this aiortc peer connection's ICE sockets goes through ``link`` from now on
    (in time when called before its first transceiver gathers candidates)."""
    install()
    _links[peer_connection] = link


def link_of(connection: Any) -> Link | None:
    """The link of the caller whose peer connection owns this aioice Connection (None: unclaimed)."""
    for pc, link in list(_links.items()):
        for ice in getattr(pc, "_RTCPeerConnection__iceTransports", ()):
            if getattr(ice, "_connection", None) is connection:
                return link
    return None


def install() -> None:
    """Patch aioice's StunProtocol once per process (a no-op for connections no caller attached)."""
    global _installed
    if _installed:
        return
    from aioice.ice import StunProtocol

    made, received = StunProtocol.connection_made, StunProtocol.datagram_received

    def connection_made(self: Any, transport: Any) -> None:
        made(self, transport)
        link = link_of(self.receiver)
        if link is not None:
            self.transport = ImpairedTransport(self.transport, link)
            self._speechload_link = link

    def datagram_received(self: Any, data: Any, addr: Any) -> None:
        link = self.__dict__.get("_speechload_link")
        if link is None:
            received(self, data, addr)
        else:
            link.receive(received, self, data, addr)

    StunProtocol.connection_made = connection_made  # type: ignore[method-assign]
    StunProtocol.datagram_received = datagram_received  # type: ignore[method-assign]
    _installed = True
