"""What the three reference-stack services share: latency model, worker pool, app factory, CLI.

Each service is a small aiohttp app. Requests are validated first (a bad one costs no worker slot),
then served inside one of ``workers`` slots; requests beyond that wait, which is the queueing a load
test must be able to find. The ``model`` engines simulate service time by sleeping inside the slot.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp import web

from sut.config import (
    FaultsConfig,
    LatencyModel,
    ServiceConfig,
    StackConfig,
    StackConfigError,
    load_stack_config,
)

# Utterances arrive as whole WAV bodies (15 s at 48 kHz is ~1.4 MB): aiohttp's 1 MiB default is too small.
MAX_BODY_BYTES = 32 * 1024 * 1024

log = logging.getLogger("sut.services")


class BadRequest(Exception):
    """The client sent something we cannot serve; the message names what was wrong (becomes a 400)."""


class StartupError(RuntimeError):
    """The service cannot start with this config (e.g. its corpus is missing); names what to fix."""


# --------------------------------------------------------------------------- latency model


class LatencySampler:
    """Draws simulated service times (ms) from a configured LatencyModel; never negative."""

    def __init__(self, model: LatencyModel, seed: int | None = None) -> None:
        self.model = model
        self._rng = np.random.default_rng(seed)

    def draw_ms(self) -> float:
        m, rng = self.model, self._rng
        if m.distribution == "constant":
            value = m.ms
        elif m.distribution == "normal":
            value = rng.normal(m.mean_ms, m.sd_ms)
        elif m.distribution == "lognormal":
            # median_ms is exp(mu): the parameter people can read off a latency histogram.
            value = m.median_ms * float(np.exp(rng.normal(0.0, m.sigma))) if m.median_ms > 0 else 0.0
        elif m.distribution == "uniform":
            value = rng.uniform(m.min_ms, m.max_ms)
        else:  # config.py validates; this guards hand-built models
            raise ValueError(f"unknown latency distribution {m.distribution!r}")
        return max(0.0, float(value))


# --------------------------------------------------------------------------- worker pool


@dataclass
class Slot:
    index: int  # which worker slot (engines keep per-slot state, e.g. one decoder each)
    queue_ms: float  # time spent waiting for the slot


class WorkerPool:
    """``workers`` concurrent slots; the rest wait in FIFO order and are counted as queued."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._sem = asyncio.Semaphore(workers)
        self._free = list(range(workers))
        self.busy = 0
        self.queued = 0
        self.served = 0

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[Slot]:
        t0 = time.perf_counter()
        self.queued += 1
        try:
            await self._sem.acquire()
        finally:
            self.queued -= 1
        # Holding the semaphore guarantees a free index: slots and permits are released together.
        index = self._free.pop(0)
        self.busy += 1
        try:
            yield Slot(index, (time.perf_counter() - t0) * 1000.0)
        finally:
            self.busy -= 1
            self.served += 1
            self._free.append(index)
            self._sem.release()


async def sleep_remaining(delay_ms: float, started: float) -> None:
    """Sleep so the work since ``started`` (perf_counter) plus the sleep totals the drawn delay.

    The engine's own compute (e.g. envelope matching) is part of the modelled service time, so the
    configured distribution is what clients observe rather than distribution + compute.
    """
    remaining = delay_ms / 1000.0 - (time.perf_counter() - started)
    if remaining > 0:
        await asyncio.sleep(remaining)


# --------------------------------------------------------------------------- app factory


@dataclass
class ServiceState:
    name: str
    engine: str
    pool: WorkerPool
    extra_health: dict[str, Any] = field(default_factory=dict)


STATE_KEY = web.AppKey("service_state", ServiceState)
LOG_DETAIL = web.RequestKey("log_detail", str)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def set_log_detail(request: web.Request, detail: str) -> None:
    """What the request log line should say about this request beyond status and time."""
    request[LOG_DETAIL] = detail


def short(text: str, limit: int = 48) -> str:
    return json.dumps(text if len(text) <= limit else text[: limit - 1] + "…", ensure_ascii=False)


@web.middleware
async def _errors_and_log(request: web.Request, handler: Handler) -> web.StreamResponse:
    t0 = time.perf_counter()
    try:
        response = await handler(request)
    except BadRequest as exc:
        response = web.json_response({"error": str(exc)}, status=400)
        set_log_detail(request, f"error={short(str(exc), 80)}")
    except web.HTTPException as exc:
        response = web.json_response({"error": exc.reason}, status=exc.status)
    except Exception as exc:  # a failing engine must answer 500, not drop the connection
        log.exception("unhandled error in %s %s", request.method, request.path)
        message = f"internal error: {type(exc).__name__}: {exc}"
        response = web.json_response({"error": message}, status=500)
        set_log_detail(request, f"error={short(message, 80)}")
    if request.path not in ("/health", "/metrics"):  # probes and scrapes every second would drown the log
        ms = (time.perf_counter() - t0) * 1000.0
        log.info("%s %d %s %.0fms %s", request.method, response.status, request.path, ms,
                 request.get(LOG_DETAIL, ""))
    return response


async def _health(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    pool = state.pool
    body = {
        "status": "ok",
        "service": state.name,
        "engine": state.engine,
        "workers": pool.workers,
        "busy": pool.busy,
        "queued": pool.queued,
        "served": pool.served,
        **state.extra_health,
    }
    return web.json_response(body)


class _PoolCollector:
    """The worker pool's figures as Prometheus series at scrape time (the stack's Prometheus scrapes them)."""

    def __init__(self, state: ServiceState) -> None:
        self.state = state

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        s, pool = self.state, self.state.pool
        labels, values = ["service", "engine"], [s.name, s.engine]
        for name, doc, value in (("service_workers", "Concurrent request slots", pool.workers),
                                 ("service_busy_workers", "Slots serving a request now", pool.busy),
                                 ("service_queued_requests", "Requests waiting for a slot", pool.queued)):
            family = GaugeMetricFamily(name, doc, labels=labels)
            family.add_metric(values, value)
            yield family
        served = CounterMetricFamily("service_requests", "Requests served", labels=labels)
        served.add_metric(values, pool.served)
        yield served


async def _metrics(request: web.Request) -> web.Response:
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    registry.register(_PoolCollector(request.app[STATE_KEY]))
    return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


def make_app(state: ServiceState, routes: list[web.RouteDef]) -> web.Application:
    app = web.Application(middlewares=[_errors_and_log], client_max_size=MAX_BODY_BYTES)
    app[STATE_KEY] = state
    app.add_routes([web.get("/health", _health), web.get("/metrics", _metrics), *routes])
    return app


async def read_json_object(request: web.Request) -> dict[str, Any]:
    try:
        doc = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BadRequest("body is not valid JSON") from None
    if not isinstance(doc, dict):
        raise BadRequest("body must be a JSON object")
    return doc


def require_str(doc: dict[str, Any], key: str) -> str:
    value = doc.get(key)
    if value is None:
        raise BadRequest(f"missing field '{key}'")
    if not isinstance(value, str):
        raise BadRequest(f"field '{key}' must be a string, got {type(value).__name__}")
    if not value.strip():
        raise BadRequest(f"field '{key}' is empty")
    return value


# --------------------------------------------------------------------------- config + CLI


@dataclass(frozen=True)
class ServiceArgs:
    stack: StackConfig
    service: ServiceConfig
    port: int
    seed: int | None


def parse_args(name: str, argv: list[str] | None = None) -> ServiceArgs:
    parser = argparse.ArgumentParser(prog=f"python -m sut.services.{name}",
                                     description=f"Reference-stack {name} service.")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--stack-json", type=Path, help="resolved stack config written by sut/stack.py")
    src.add_argument("--config", help="stack TOML: a path or a name in sut/configs (standalone use)")
    parser.add_argument("--port-offset", type=int, default=0, help="shift every port of the stack")
    parser.add_argument("--port", type=int, help="override this service's port (0: any free port)")
    parser.add_argument("--seed", type=int, help="seed the latency model's RNG (repeatable runs)")
    args = parser.parse_args(argv)
    try:
        # load_stack_config reads both: the TOML and the orchestrator's resolved JSON (same layout).
        stack = load_stack_config(args.stack_json if args.stack_json is not None else args.config)
        stack = stack.with_port_offset(args.port_offset)
    except (OSError, StackConfigError) as exc:
        parser.exit(2, f"{name}: bad stack config: {exc}\n")
    service = with_latency_factor(stack.service(name), stack.faults.latency_factor(name))
    port = service.port if args.port is None else args.port
    return ServiceArgs(stack=stack, service=service, port=port, seed=args.seed)


def with_latency_factor(service: ServiceConfig, factor: float) -> ServiceConfig:
    """The service with its modelled service time scaled (fault `<name>_latency_factor`)."""
    if factor == 1.0:
        return service
    from dataclasses import replace

    m = service.latency
    scaled = replace(m, ms=m.ms * factor, mean_ms=m.mean_ms * factor, sd_ms=m.sd_ms * factor,
                     median_ms=m.median_ms * factor, min_ms=m.min_ms * factor, max_ms=m.max_ms * factor)
    return replace(service, latency=scaled)


def install_faults(app: web.Application, name: str, faults: FaultsConfig, seed: int | None = None) -> None:
    """The stack config's [faults] for this service: a fraction of requests answered HTTP 500
    (`<name>_error_rate`) and, for TTS, answers whose body is no audio (`tts_garbage_audio`).
    Health and metrics are never faulted: the service looks up, as a failing one often does."""
    rate = faults.error_rate(name)
    garbage = name == "tts" and faults.tts_garbage_audio
    if not rate and not garbage:
        return
    rng = np.random.default_rng(seed)

    @web.middleware
    async def faulty(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method != "POST":
            return await handler(request)
        if rate and rng.random() < rate:
            set_log_detail(request, "fault=error_rate")
            return web.json_response({"error": f"injected fault: {name} failing"}, status=500)
        response = await handler(request)
        if garbage and isinstance(response, web.Response) and response.status == 200:
            size = max(64, len(response.body or b"")) if isinstance(response.body, bytes) else 4096
            set_log_detail(request, "fault=garbage_audio")
            return web.Response(body=rng.bytes(size), status=200, headers={
                k: v for k, v in response.headers.items() if k.lower() != "content-length"})
        return response

    app.middlewares.append(faulty)
    log.warning("faults: error_rate=%g garbage_audio=%s", rate, garbage)


def setup_logging(name: str) -> None:
    # One concise line per request on stdout: the orchestrator captures it into the service's log file.
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format=f"%(asctime)s.%(msecs)03d {name} %(message)s", datefmt="%H:%M:%S", force=True)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


async def serve(app: web.Application, host: str, port: int) -> None:
    """Serve until SIGTERM/SIGINT, then stop accepting, finish in-flight requests briefly, clean up."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=3.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as exc:  # typically the port is taken: say so instead of a traceback
            raise StartupError(f"cannot listen on {host}:{port}: {exc}") from None
        state = app[STATE_KEY]
        bound = runner.addresses[0][1] if runner.addresses else port
        # The orchestrator and tests look for this line to learn the port (useful with --port 0).
        log.info("listening on http://%s:%d engine=%s workers=%d", host, bound, state.engine,
                 state.pool.workers)
        await stop.wait()
        log.info("SIGTERM/SIGINT received: shutting down")
    finally:
        await runner.cleanup()


def run_service(name: str, build: Callable[[ServiceArgs], Awaitable[web.Application]],
                argv: list[str] | None = None) -> None:
    args = parse_args(name, argv)
    setup_logging(name)

    async def main() -> None:
        app = await build(args)
        install_faults(app, name, args.stack.faults, args.seed)
        await serve(app, args.stack.host, args.port)

    try:
        asyncio.run(main())
    except StartupError as exc:
        log.error("cannot start: %s", exc)
        sys.exit(2)
