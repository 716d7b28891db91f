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

from loadtest.config import RunConfig
from loadtest.credentials import credentials_for
from loadtest.errors import RunFailed
from loadtest.fixtures import FixtureLibrary, silence_packet
from loadtest.ice import choose_ice
from loadtest.journal import JournalShard, merge_to_parquet, worker_name
from loadtest.profile_file import load_profile
from loadtest.rows import ActiveUsers, RowMaker
from loadtest.rundir import new_run_id, write_run_json
from loadtest.signaling import SignalingError
from loadtest.target import Target, ssl_context
from loadtest.timeline import UtteranceTimeline, outcome
from loadtest.webrtc_client import (
    ClientOptions,
    PipelineClient,
    ScheduledUtterance,
)

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

    def options(self) -> ClientOptions:
        t, s = self.cfg.target, self.cfg.scenario
        profile = load_profile(t.profile)
        return ClientOptions(
            url=self.target.url, profile=profile, ssl_context=ssl_context(self.target),
            connect_timeout_s=s.connect_timeout_s, request_timeout_s=s.connect_timeout_s,
            response_timeout_s=s.response_timeout_s, source_language=s.source_language,
            target_language=s.target_language, credentials=credentials_for(profile, t.auth_token),
            relay=t.relay())

    def plan(self, caller: int) -> list[ScheduledUtterance]:
        s = self.cfg.scenario
        ids = list(s.fixture_ids) or self.library.ids
        plan: list[ScheduledUtterance] = []
        k = 0
        while k * s.utterance_interval_s < s.duration_s:
            fixture_id = ids[(caller + k) % len(ids)]
            clip = self.library.get(fixture_id)
            plan.append(ScheduledUtterance(fixture_id, clip, k * s.utterance_interval_s))
            k += 1
        return plan

    def record(self, tl: UtteranceTimeline, client: PipelineClient, user: int) -> None:
        row = self.rows(tl, client, user)
        self._shard.append(row)
        self.tally.stage = "sfu" if tl.mode == "sfu" else "e2e"
        self._count(tl, row.sfu_ms if tl.mode == "sfu" else row.e2e_ms)

    def _count(self, tl: UtteranceTimeline, e2e_ms: float | None) -> None:
        self.tally.sent += 1
        status = outcome(tl).status.value
        setattr(self.tally, status, getattr(self.tally, status) + 1)
        if e2e_ms is not None:
            self.tally.e2e_ms.append(e2e_ms)

    async def conversation(self, user: int, options: ClientOptions, silence: bytes) -> None:
        client = PipelineClient(options, silence, lambda tl, c: self.record(tl, c, user),
                                conversation=f"{self.run_id}-u{user}")
        try:
            await client.connect()
        except (SignalingError, OSError, TimeoutError) as exc:
            # A bare TimeoutError (ICE/DTLS never completed, e.g. no relay allocation) has no message.
            self.connect_errors.append(str(exc) or f"connect gave up after "
                                       f"{options.connect_timeout_s:.0f} s ({type(exc).__name__})")
            await client.close()
            return
        self.active.change(time.monotonic(), +1)
        stats_task = asyncio.create_task(client.sample_stats())
        try:
            await client.speak(self.plan(user))
        finally:
            stats_task.cancel()
            self.active.change(time.monotonic(), -1)
            await client.close()

    async def _progress(self, started: float) -> None:
        while True:
            await asyncio.sleep(5.0)  # reporting period
            line = self.tally.line(time.monotonic() - started, self.active.current)
            print(line, file=sys.stderr, flush=True)

    async def execute(self) -> None:
        options = self.options()
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


def execute_run(cfg: RunConfig, target: Target, run_dir: Path, library: FixtureLibrary) -> Run:
    """Drive the conversations and merge their journal; raises RunFailed when nothing was measured."""
    run = Run(cfg, target, run_dir, library)
    # Encode every clip before the clock starts: encoding on the media loop would stall every caller.
    for fixture_id in cfg.scenario.fixture_ids or library.ids:
        library.get(fixture_id)
    print(run.ice.describe(), file=sys.stderr, flush=True)
    write_run_json(run_dir, {
        "run_id": run.run_id, "engine": "direct", "target": target.url, "insecure_tls": target.insecure,
        "callers": cfg.scenario.callers, "duration_s": cfg.scenario.duration_s, "started_unix": time.time(),
        **run.ice.stamp(), "relay_only": cfg.target.relay_only})
    asyncio.run(run.execute())
    merged = merge_to_parquet(run_dir)
    if run.connect_errors and not merged.rows:
        raise RunFailed(run.connect_errors[0])
    if run.connect_errors:
        print(f"warning: {len(run.connect_errors)} of {cfg.scenario.callers} callers failed to connect: "
              f"{run.connect_errors[0]}", file=sys.stderr)
    if not merged.rows:
        raise RunFailed("no utterance was sent")
    return run

