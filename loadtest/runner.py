"""``loadtest run``: resolve the target, drive the conversations, journal every utterance, report.

The conversations here run on one asyncio loop in this process. Every run is bounded: each
conversation speaks for ``duration_s`` and each utterance waits at most ``response_timeout_s``.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import logging
import ssl
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from loadtest.config import RunConfig
from loadtest.fixtures import FixtureLibrary, silence_packet
from loadtest.journal import JournalShard, merge_to_parquet, worker_name
from loadtest.profile import load_profile
from loadtest.quality import score
from loadtest.signaling import SignalingError
from loadtest.timeline import RowContext, SampleRow, UtteranceTimeline, outcome, to_row
from loadtest.webrtc_client import (
    ClientOptions,
    PipelineClient,
    ScheduledUtterance,
    restrict_ice_host_addresses,
)

log = logging.getLogger(__name__)
EXIT_RUN_FAILED = 3


class RunFailed(RuntimeError):
    """The run could not measure anything; the message says why."""


@dataclass(frozen=True)
class Target:
    url: str
    ca_cert: str
    insecure: bool


def ssl_context(target: Target) -> ssl.SSLContext | bool:
    if not target.url.startswith("https"):
        return False
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if target.insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    try:
        if target.ca_cert:
            ctx.load_verify_locations(cafile=target.ca_cert)
        else:
            ctx.load_default_certs()
    except (ssl.SSLError, OSError) as exc:
        raise RunFailed(f"cannot load CA certificate {target.ca_cert}: {exc}") from None
    return ctx


@dataclass
class ActiveUsers:
    """How many conversations were connected at each moment (for rows' ``active_users``)."""

    times: list[float] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    current: int = 0

    def change(self, t: float, delta: int) -> None:
        self.current += delta
        self.times.append(t)
        self.counts.append(self.current)

    def at(self, t: float) -> int:
        index = bisect.bisect_right(self.times, t) - 1
        return self.counts[index] if index >= 0 else 0


@dataclass
class Tally:
    sent: int = 0
    ok: int = 0
    timeout: int = 0
    error: int = 0
    e2e_ms: list[float] = field(default_factory=list)

    def line(self, elapsed: float, connected: int) -> str:
        ordered = sorted(self.e2e_ms)
        p50 = f"{ordered[len(ordered) // 2]:.0f} ms" if ordered else "–"
        return (f"[{elapsed:6.1f}s] callers {connected}  utterances {self.sent}: ok {self.ok} "
                f"timeout {self.timeout} error {self.error}  e2e p50 {p50}")


@dataclass(frozen=True)
class RowMaker:
    """Turns a finished utterance's timeline into its journal row (quality scores, RTC stats, load)."""

    run_id: str
    worker: str
    library: FixtureLibrary
    active: ActiveUsers

    def __call__(self, tl: UtteranceTimeline, client: PipelineClient, user: int) -> SampleRow:
        fixture = self.library.fixture(tl.fixture_id)
        reference_translation = fixture.translations.get(tl.target_language)
        quality = score(tl.transcript, fixture.transcript, tl.translation, reference_translation)
        ctx = RowContext(
            run_id=self.run_id, worker=self.worker, user=user, connect_ms=client.result.connect_ms,
            reference_transcript=fixture.transcript, reference_translation=reference_translation,
            wer=quality.wer, chrf=quality.chrf, jitter_ms=client.stats["jitter_ms"],
            packets_lost=client.stats["packets_lost"], rtt_ms=client.stats["rtt_ms"],
            active_users=self.active.at(tl.t_planned))
        return to_row(tl, ctx)


def new_run_id() -> str:
    return f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"


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

    def options(self) -> ClientOptions:
        t, s = self.cfg.target, self.cfg.scenario
        return ClientOptions(
            url=self.target.url, profile=load_profile(t.profile), ssl_context=ssl_context(self.target),
            connect_timeout_s=s.connect_timeout_s, request_timeout_s=s.connect_timeout_s,
            response_timeout_s=s.response_timeout_s, source_language=s.source_language,
            target_language=s.target_language, auth_token=t.auth_token)

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
        self._count(tl, row.e2e_ms)

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
            self.connect_errors.append(str(exc))
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
        restrict_ice_host_addresses(self.cfg.target.ice_addresses)
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


def warn_about_plan(cfg: RunConfig, library: FixtureLibrary) -> None:
    longest = max(library.fixture(i).duration_s for i in cfg.scenario.fixture_ids or library.ids)
    if longest + 0.5 > cfg.scenario.utterance_interval_s:
        print(f"warning: utterance interval {cfg.scenario.utterance_interval_s:.1f} s leaves less than 0.5 s "
              f"after the longest clip ({longest:.1f} s): utterances will run together", file=sys.stderr)


def probe_target(cfg: RunConfig, target: Target) -> None:
    """One Socket.IO connection to the target, so a wrong URL or CA fails fast with its reason."""
    from loadtest.signaling import SignalingChannel

    async def probe() -> None:
        channel = SignalingChannel(target.url, load_profile(cfg.target.profile), ssl_context(target),
                                   cfg.scenario.connect_timeout_s)
        await channel.connect(cfg.scenario.connect_timeout_s)
        await channel.close()

    asyncio.run(probe())


def prepare_run_dir(out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("run-failed.json", "samples.parquet", "summary.json", "locust_stats.csv"):
        with contextlib.suppress(FileNotFoundError):
            (out / stale).unlink()
    for folder in ("journal", "worker-journal"):
        for shard in (out / folder).glob("*.jsonl") if (out / folder).is_dir() else []:
            shard.unlink()
    return out


def write_failure(run_dir: Path, message: str) -> None:
    (run_dir / "run-failed.json").write_text(json.dumps({"error": message}) + "\n")


def execute_run(cfg: RunConfig, target: Target, run_dir: Path, library: FixtureLibrary) -> Run:
    """Drive the conversations and merge their journal; raises RunFailed when nothing was measured."""
    run = Run(cfg, target, run_dir, library)
    # Encode every clip before the clock starts: encoding on the media loop would stall every caller.
    for fixture_id in cfg.scenario.fixture_ids or library.ids:
        library.get(fixture_id)
    (run_dir / "run.json").write_text(json.dumps(
        {"run_id": run.run_id, "target": target.url, "insecure_tls": target.insecure,
         "callers": cfg.scenario.callers, "duration_s": cfg.scenario.duration_s,
         "started_unix": time.time()}, indent=2) + "\n")
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



def run_from_args(argv: list[str], out_dir: Path) -> int:
    """``loadtest run <argv> --out out_dir`` as a function (nightly runs it into its history)."""
    from loadtest.cli import main

    return main(["run", *argv, "--out", str(out_dir)])
