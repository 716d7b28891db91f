"""One caller's conversation over its whole plan, reconnecting when the server drops it (opt-in).

A caller whose connection the gateway drops (a restart, a proxy restart) has its pending utterances
ended as errors where they stood (webrtc_client: "disconnected by server after N s"). Then, with
`scenario.reconnect = true`, it connects again -- a new conversation (`<name>-r<attempt>`), retried every
RECONNECT_BACKOFF_S while the plan lasts -- and speaks the rest of its plan on the original timetable
(utterances whose slot passed while it was down are not sent: an open model never catches up). Each
successful reconnect is counted on the caller's rows (`reconnects`; the report sums them). Without it
the caller stays down.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import time
from collections.abc import Callable, Iterable, Iterator

from loadtest.rows import ActiveUsers
from loadtest.signaling import SignalingError
from loadtest.webrtc_client import START_LEAD_S, PipelineClient, ScheduledUtterance

RECONNECT_BACKOFF_S = 1.0  # between reconnect attempts: pacing, not synchronisation

Plan = Callable[[float], Iterable[ScheduledUtterance]]  # the plan's items not due before t (s), re-based
ClientFactory = Callable[[int], PipelineClient]  # attempt number → a new, unconnected client


def resume(items: Iterable[ScheduledUtterance], elapsed_s: float) -> Iterator[ScheduledUtterance]:
    """The items whose slot is `elapsed_s` or later after the plan's start, offsets re-based to then
    (items come in offset order, the plan may be endless)."""
    rest = itertools.dropwhile(lambda item: item.offset_s < elapsed_s, items)
    return (dataclasses.replace(item, offset_s=item.offset_s - elapsed_s) for item in rest)


async def converse(client: PipelineClient, plan: Plan, stop: asyncio.Event, active: ActiveUsers,
                   reconnect_with: ClientFactory | None = None) -> None:
    """Speak `plan` on the connected `client` until it ends or `stop` is set; with `reconnect_with`, a
    dropped conversation is connected again and continues (bounded: until the plan ends or `stop`)."""
    t0 = time.monotonic() + START_LEAD_S
    todo: Iterable[ScheduledUtterance] = plan(0.0)
    reconnects = 0
    attempts = itertools.count(1)  # every attempt is a new conversation: a half-joined one never collides
    while True:
        client.result.reconnects = reconnects
        active.change(time.monotonic(), +1)
        stats = asyncio.ensure_future(client.sample_stats())
        try:
            await client.speak(todo, stop)
        finally:
            stats.cancel()
            active.change(time.monotonic(), -1)
            await client.close()
        if reconnect_with is None or stop.is_set() or not client.dropped:
            return
        found = await _reconnect(reconnect_with, attempts, plan, t0, stop)
        if found is None:
            return
        client = found
        reconnects += 1
        todo = plan(time.monotonic() + START_LEAD_S - t0)


async def _reconnect(make: ClientFactory, attempts: Iterator[int], plan: Plan, t0: float,
                     stop: asyncio.Event) -> PipelineClient | None:
    while not stop.is_set():
        if next(iter(plan(time.monotonic() - t0)), None) is None:
            return None  # the plan is over: nothing left to reconnect for
        client = make(next(attempts))
        try:
            await client.connect()
            return client
        except (SignalingError, OSError, TimeoutError):
            await client.close()  # the server is not back yet
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), RECONNECT_BACKOFF_S)
    return None
