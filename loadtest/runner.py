"""The direct engine: every conversation of a run on one asyncio loop in this process, no locust.

Every run is bounded: each conversation speaks for ``duration_s`` and each utterance waits at most
``response_timeout_s``.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from loadtest.adverse import network_plan, pre_encode, stamp
from loadtest.config import RunConfig
from loadtest.conversation import converse, resume
from loadtest.credentials import credentials_for
from loadtest.errors import RunFailed
from loadtest.fixtures import FixtureLibrary, silence_packet
from loadtest.ice import choose_ice
from loadtest.journal import JournalShard, merge_to_parquet, worker_name
from loadtest.profile_file import load_profile
from loadtest.redaction import redact_url, scrub
from loadtest.rows import ActiveUsers, RowMaker
from loadtest.rundir import new_run_id, write_run_json
from loadtest.scenarios import finite_plan, spoken_ids
from loadtest.selfwatch import append_sample
from loadtest.signaling import SignalingError
from loadtest.target import Target, ssl_context
from loadtest.timeline import UtteranceTimeline, outcome
from loadtest.webrtc_client import (
    ClientOptions,
    PipelineClient,
    ScheduledUtterance,
)

if TYPE_CHECKING:
    from loadtest.metrics import LiveMetrics, MetricsOptions
    from loadtest.stopping import StopRequest

log = logging.getLogger(__name__)


@dataclass
class Tally:
    sent: int = 0
    ok: int = 0
    timeout: int = 0
    error: int = 0
    e2e_ms: list[float] = field(default_factory=list)
    stage: str = "e2e"  # the headline stage: e2e, or sfu for a plain SFU

    def line(self, elapsed: float, connected: int) -> str:
        ordered = sorted(self.e2e_ms)
        p50 = f"{ordered[len(ordered) // 2]:.1f} ms" if ordered else "–"
        return (f"[{elapsed:6.1f}s] callers {connected}  utterances {self.sent}: ok {self.ok} "
                f"timeout {self.timeout} error {self.error}  {self.stage} p50 {p50}")


class Run:
    def __init__(self, cfg: RunConfig, target: Target, run_dir: Path, library: FixtureLibrary) -> None:
        self.cfg = cfg
        self.target = target
        self.run_dir = run_dir
        self.library = library
        self.run_id = new_run_id()
        self.worker = worker_name()
        self.active = ActiveUsers()
        self.tally = Tally()
        self.connect_errors: list[str] = []
        self._shard = JournalShard(run_dir)
        self.rows = RowMaker(self.run_id, self.worker, library, self.active)
        self.ice = choose_ice(cfg.target.ice_addresses, target.url)
        self.networks = network_plan(cfg.impairment)  # each caller's impaired network, if any
        self.metrics: LiveMetrics | None = None  # live Prometheus series (--metrics-port)
        self.stop_request: StopRequest | None = None  # SIGINT/SIGTERM: no new utterance starts
        self._stop: asyncio.Event | None = None

    def options(self) -> ClientOptions:
        t, s = self.cfg.target, self.cfg.scenario
        profile = load_profile(t.profile)
        return ClientOptions(
            url=self.target.url, profile=profile, ssl_context=ssl_context(self.target),
            connect_timeout_s=s.connect_timeout_s, request_timeout_s=s.connect_timeout_s,
            response_timeout_s=s.response_timeout_s, source_language=s.source_language,
            target_language=s.target_language, credentials=credentials_for(profile, t.auth_token),
            relay=t.relay(), cast=s.cast(), listen_sample=s.listen_sample)

    def plan(self, caller: int) -> list[ScheduledUtterance]:
        s = self.cfg.scenario
        return finite_plan(s.cast(), self.library, s.fixture_ids, caller, s.utterance_interval_s,
                           s.duration_s,
                           self.cfg.noise)

    def record(self, tl: UtteranceTimeline, client: PipelineClient, user: int) -> None:
        row = self.rows(tl, client, user)
        self._shard.append(row)
        if self.metrics is not None:
            self.metrics.observe(row)
        self.tally.stage = "sfu" if tl.mode == "sfu" else "e2e"
        self._count(tl, row.sfu_ms if tl.mode == "sfu" else row.e2e_ms)

    def _count(self, tl: UtteranceTimeline, e2e_ms: float | None) -> None:
        self.tally.sent += 1
        status = outcome(tl).status.value
        setattr(self.tally, status, getattr(self.tally, status) + 1)
        if e2e_ms is not None:
            self.tally.e2e_ms.append(e2e_ms)

    async def conversation(self, user: int, options: ClientOptions, silence: bytes) -> None:
        assert self._stop is not None
        if self._stop.is_set():
            return  # stopped before this caller connected: it never starts

        def new_client(attempt: int) -> PipelineClient:
            name = f"{self.run_id}-u{user}" + (f"-r{attempt}" if attempt else "")
            return PipelineClient(options, silence, lambda tl, c: self.record(tl, c, user), conversation=name,
                                  network=self.networks.watch_for(user) if self.networks else None)

        client = new_client(0)
        try:
            await client.connect()
        except (SignalingError, OSError, TimeoutError) as exc:
            # A bare TimeoutError (ICE/DTLS never completed, e.g. no relay allocation) has no message.
            self.connect_errors.append(scrub(str(exc)) or f"connect gave up after "
                                       f"{options.connect_timeout_s:.0f} s ({type(exc).__name__})")
            await client.close()
            return
        await converse(client, lambda elapsed: resume(self.plan(user), elapsed), self._stop, self.active,
                       new_client if self.cfg.scenario.reconnect else None)

    async def _progress(self, started: float) -> None:
        while True:
            await asyncio.sleep(5.0)  # reporting period
            line = self.tally.line(time.monotonic() - started, self.active.current)
            print(line, file=sys.stderr, flush=True)
            append_sample(self.run_dir, time.monotonic() - started, self.active.current)  # long-run leaks

    async def execute(self) -> None:
        options = self.options()
        self._stop = asyncio.Event()
        if self.stop_request is not None:
            loop, stop = asyncio.get_running_loop(), self._stop
            self.stop_request.on_stop(lambda: loop.call_soon_threadsafe(stop.set))
        self.ice.apply()
        silence = silence_packet()
        started = time.monotonic()
        progress = asyncio.create_task(self._progress(started))
        try:
            await asyncio.gather(*(self.conversation(u, options, silence)
                                   for u in range(self.cfg.scenario.callers)))
        finally:
            progress.cancel()
            self._shard.close()
        if self.tally.sent:
            print(self.tally.line(time.monotonic() - started, 0), file=sys.stderr, flush=True)


def execute_run(cfg: RunConfig, target: Target, run_dir: Path, library: FixtureLibrary,
                metrics: MetricsOptions | None = None, stop: StopRequest | None = None) -> Run:
    """Drive the conversations and merge their journal; raises RunFailed when nothing was measured.

    metrics: serve live Prometheus series while the run lasts, and wait (bounded) for a last scrape.
    stop: a graceful stop (SIGINT/SIGTERM) ends every plan early; utterances in flight still finish."""
    run = Run(cfg, target, run_dir, library)
    run.stop_request = stop
    exporter = None
    if metrics is not None:
        from loadtest.metrics import serve

        exporter = serve(run.run_id, metrics)
        run.metrics = exporter.metrics
        run.metrics.track_active(lambda: run.active.current)
        print(f"metrics: {exporter.url}", file=sys.stderr, flush=True)
    # Encode every clip before the clock starts: encoding on the media loop would stall every caller.
    pre_encode(library, spoken_ids(cfg.scenario.cast(), library, cfg.scenario.fixture_ids), cfg.noise)
    print(run.ice.describe(), file=sys.stderr, flush=True)
    write_run_json(run_dir, {
        "run_id": run.run_id, "engine": "direct", "target": redact_url(target.url),
        "insecure_tls": target.insecure,
        "callers": cfg.scenario.callers, "duration_s": cfg.scenario.duration_s, "started_unix": time.time(),
        **run.ice.stamp(), "relay_only": cfg.target.relay_only, **stamp(cfg.impairment, cfg.noise)})
    try:
        asyncio.run(run.execute())
        if exporter is not None and not exporter.final_scrape():
            print(f"metrics: no scrape within {exporter.options.linger_s:g} s after the last utterance",
                  file=sys.stderr)
    finally:
        if exporter is not None:
            exporter.close()
    merged = merge_to_parquet(run_dir)
    if run.connect_errors and not merged.rows:
        raise RunFailed(run.connect_errors[0])
    if run.connect_errors:
        print(f"warning: {len(run.connect_errors)} of {cfg.scenario.callers} callers failed to connect: "
              f"{run.connect_errors[0]}", file=sys.stderr)
    if not merged.rows:
        raise RunFailed("no utterance was sent")
    return run

