"""One tester process of a locust swarm: its media loop, its conversations, its raw samples.

Conversations live on the asyncio media loop (bridge.py); locust users only start and stop them.
Finished utterances come back to the gevent side through a thread-safe queue and an async watcher,
where they become locust request events. Every process journals its own rows; a worker also ships
them to the master (custom messages), which journals them once more into the run directory, so
``samples.parquet`` gets every utterance exactly once (the merge de-duplicates by utterance id).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtest.adverse import network_plan, pre_encode
from loadtest.bridge import MediaLoop, wait_in_greenlet
from loadtest.conditions import ImpairmentConfig, NoiseConfig
from loadtest.conversation import converse, resume
from loadtest.fixtures import FixtureLibrary, silence_packet
from loadtest.ice import choose_ice
from loadtest.journal import JournalShard, worker_name
from loadtest.rows import ActiveUsers, RowMaker
from loadtest.scenarios import endless_plan, spoken_ids
from loadtest.timeline import SampleRow, UtteranceTimeline
from loadtest.webrtc_client import (
    ClientOptions,
    PipelineClient,
    ScheduledUtterance,
)

log = logging.getLogger(__name__)
ROWS_MESSAGE = "speechload_rows"
DONE_MESSAGE = "speechload_done"
STOP_MESSAGE = "speechload_stop"
SHIP_BATCH = 200
SHIP_INTERVAL_S = 1.0  # ship at least this often, so the master's live metrics lag by about a second
STAGES = ("stt", "translation", "tts", "e2e")


@dataclass
class SwarmSettings:
    options: ClientOptions
    library: FixtureLibrary
    fixture_ids: list[str]
    interval_s: float
    run_dir: Path
    run_id: str
    ice_addresses: list[str]  # ["auto"] or local IPs: each process resolves them for its own host
    ship_to_master: bool
    impairment: ImpairmentConfig = ImpairmentConfig()  # adverse conditions (docs/impairment.md)
    noise: NoiseConfig = NoiseConfig()
    reconnect: bool = False  # a dropped caller connects again (loadtest/conversation.py)


class Swarm:
    def __init__(self, settings: SwarmSettings, fire: Callable[[SampleRow], None],
                 ship: Callable[[list[dict[str, Any]]], None] | None) -> None:
        self.settings = settings
        self.networks = network_plan(settings.impairment, scope=worker_name())  # each caller's network
        self.media = MediaLoop()
        self.active = ActiveUsers()
        self.worker = worker_name()
        self.rows = RowMaker(settings.run_id, self.worker, settings.library, self.active)
        # A worker's own shard is a crash trail beside what it ships; the master journals the shipped rows.
        folder = "worker-journal" if settings.ship_to_master else "journal"
        self.shard = JournalShard(settings.run_dir, folder=folder)
        self._fire = fire
        self._ship = ship
        self._results: collections.deque[SampleRow] = collections.deque()
        self._outbox: list[dict[str, Any]] = []
        self._running: dict[int, tuple[PipelineClient, asyncio.Event, Any]] = {}
        self._watcher: Any = None
        self.sent = 0
        self.shipped = 0
        self.stopping = False  # drain() began: no new conversation connects
        self._shipped_at = time.monotonic()

    # ---- lifecycle (gevent side) ---------------------------------------------------------------

    def start(self) -> None:
        import gevent

        s = self.settings
        # Before any clock starts: encoding on the media loop would stall every caller.
        pre_encode(s.library, spoken_ids(s.options.the_cast(), s.library, s.fixture_ids), s.noise)
        self.media.start()
        self.media.submit(self._configure()).result(timeout=10)
        self._watcher = gevent.get_hub().loop.async_()
        self._watcher.start(self._drain_results)

    async def _configure(self) -> None:
        choose_ice(self.settings.ice_addresses, self.settings.options.url).apply()
        self._silence = silence_packet()

    def connect(self, user: int, timeout_s: float) -> float:
        """Connect one conversation (blocks the calling greenlet only); returns connect_ms."""
        future = self.media.submit(self._connect(user))
        return wait_in_greenlet(future, timeout_s)

    def stop_conversation(self, user: int) -> None:
        entry = self._running.get(user)
        if entry is not None and self.media.loop is not None:
            self.media.loop.call_soon_threadsafe(entry[1].set)

    def wait_conversation(self, user: int) -> None:
        entry = self._running.get(user)
        if entry is not None:
            wait_in_greenlet(entry[2])

    def drain(self, timeout_s: float) -> None:
        """Stop every conversation and wait (bounded) until each utterance has its final status."""
        deadline = time.monotonic() + timeout_s
        self.stopping = True
        for user in list(self._running):
            self.stop_conversation(user)
        for user, (_client, _stop, future) in list(self._running.items()):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                log.warning("conversation %s did not finish within the drain timeout", user)
                continue
            try:
                wait_in_greenlet(future, remaining)
            except Exception as exc:  # noqa: BLE001 — one failed conversation must not lose the others
                log.warning("conversation %s ended with %s", user, exc)
        self._drain_results()
        self.flush_to_master()

    def close(self) -> None:
        self.shard.close()
        self.media.stop()

    # ---- media-loop side -----------------------------------------------------------------------

    async def _connect(self, user: int) -> float:
        if self.stopping:
            raise RuntimeError("the run is stopping")

        def new_client(attempt: int) -> PipelineClient:
            name = f"{self.settings.run_id}-{self.worker}-u{user}" + (f"-r{attempt}" if attempt else "")
            return PipelineClient(self.settings.options, self._silence,
                                  lambda tl, c: self._record(tl, c, user), conversation=name,
                                  network=self.networks.watch_for(user) if self.networks else None)

        client = new_client(0)
        try:
            await client.connect()
        except BaseException:
            await client.close()
            raise
        stop = asyncio.Event()
        s = self.settings

        def plan(elapsed_s: float) -> Iterator[ScheduledUtterance]:
            items = endless_plan(s.options.the_cast(), s.library, s.fixture_ids, user, s.interval_s, s.noise)
            return resume(items, elapsed_s)

        task = asyncio.ensure_future(converse(client, plan, stop, self.active,
                                              new_client if s.reconnect else None))
        future = asyncio.run_coroutine_threadsafe(_await(task), asyncio.get_running_loop())
        self._running[user] = (client, stop, future)
        assert client.result.connect_ms is not None
        return client.result.connect_ms

    def _record(self, tl: UtteranceTimeline, client: PipelineClient, user: int) -> None:
        row = self.rows(tl, client, user)
        self.shard.append(row)
        self.sent += 1
        self._results.append(row)
        if self._watcher is not None:
            self._watcher.send()

    # ---- back on the gevent side ---------------------------------------------------------------

    def _drain_results(self) -> None:
        while self._results:
            row = self._results.popleft()
            self._fire(row)
            if self._ship is not None:
                self._outbox.append(row.to_dict())
        if len(self._outbox) >= SHIP_BATCH or time.monotonic() - self._shipped_at >= SHIP_INTERVAL_S:
            self.flush_to_master()

    def flush_to_master(self) -> None:
        if self._ship is not None and self._outbox:
            self._shipped_at = time.monotonic()
            batch, self._outbox = self._outbox, []
            self._ship(batch)
            self.shipped += len(batch)


async def _await(task: asyncio.Future[None]) -> None:
    await task


def fire_stage_events(fire: Callable[..., None], row: SampleRow) -> None:
    """One locust request event per stage: measured stages succeed, the stage that failed fails."""
    for stage in STAGES:
        value = getattr(row, f"{stage}_ms")
        if value is not None and value == value:  # not NaN
            fire(request_type="pipeline", name=stage, response_time=value, response_length=0,
                 exception=None, context={})
    if row.status != "ok":
        failed = row.status_stage or "e2e"
        error = RuntimeError(f"{row.status}: {row.error}")  # row texts are scrubbed (rows.py)
        fire(request_type="pipeline", name=failed, response_time=0.0, response_length=0,
             exception=error, context={})
        if failed != "e2e":
            fire(request_type="pipeline", name="e2e", response_time=0.0, response_length=0,
                 exception=error, context={})
