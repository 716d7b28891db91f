"""When a pymediasoup transport's ICE and DTLS actually completed.

pymediasoup reports "connected" as soon as ICE is (its `connected_at` future in transport.py); aiortc's
own `connectionState` turns "connected" only once DTLS is up too. The preflight probe and the profile
check report both times, and a transport whose `connect_transport` request was refused fails with that
request's error (create_transport puts it on `connected_at`), not with a later ICE or DTLS timeout.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from loadtest.signaling import SignalingError


@dataclass
class LinkWatch:
    direction: str
    started: float
    connected: asyncio.Future[float]  # DTLS up (aiortc's connectionState "connected"): the time
    ice_at: float | None = None
    dtls_at: float | None = None
    pc: Any = None

    @property
    def ice_ms(self) -> float | None:
        return None if self.ice_at is None else (self.ice_at - self.started) * 1000.0

    @property
    def dtls_ms(self) -> float | None:
        if self.ice_at is None or self.dtls_at is None:
            return None
        return (self.dtls_at - self.ice_at) * 1000.0

    def state(self) -> str:
        pc = self.pc
        ice, connection = getattr(pc, "iceConnectionState", "?"), getattr(pc, "connectionState", "?")
        return f"ICE {ice}, connection {connection}"


def watch_link(transport: Any, direction: str) -> LinkWatch:
    """Start watching a transport just created by loadtest.transport.create_transport (before produce or
    consume starts its ICE); `started` (reset it when produce or consume begins) is when ICE times from."""
    pc = transport._handler.pc
    watch = LinkWatch(direction, time.monotonic(), asyncio.get_running_loop().create_future(), pc=pc)
    # A failure nobody waits for any more (the step already failed for another reason) is not an error.
    watch.connected.add_done_callback(lambda f: f.cancelled() or f.exception())

    @pc.on("iceconnectionstatechange")
    def on_ice() -> None:
        if pc.iceConnectionState in ("completed", "connected") and watch.ice_at is None:
            watch.ice_at = time.monotonic()

    @pc.on("connectionstatechange")
    def on_state() -> None:
        if watch.connected.done():
            return
        if pc.connectionState == "connected":
            watch.dtls_at = time.monotonic()
            watch.connected.set_result(watch.dtls_at)
        elif pc.connectionState in ("failed", "closed"):
            what = "ICE" if watch.ice_at is None else "DTLS"
            failed = SignalingError(f"{direction} transport {pc.connectionState} ({what})")
            watch.connected.set_exception(failed)

    return watch


async def wait_link(transport: Any, watch: LinkWatch, timeout_s: float) -> LinkWatch:
    """Until ICE and DTLS are up; the `connect_transport` refusal, the ICE/DTLS failure, or a timeout
    naming the states reached, whichever comes first."""
    pending: set[asyncio.Future[Any]] = {watch.connected}
    signaled = getattr(transport, "connected_at", None)
    if isinstance(signaled, asyncio.Future):
        pending.add(signaled)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    for _ in range(len(pending) + 1):  # each pass settles one future or ends at the deadline
        if watch.connected.done():
            break
        remaining = deadline - loop.time()
        if remaining <= 0:
            break
        done, pending = await asyncio.wait(pending, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
        for future in done:
            if future.exception() is not None:
                raise future.exception()  # type: ignore[misc]
    if not watch.connected.done():
        raise SignalingError(f"{watch.direction} transport not connected within {timeout_s:g} s "
                             f"({watch.state()})")
    watch.connected.result()
    return watch
