"""Live tester metrics for Prometheus (`loadtest run --metrics-port PORT`), with prometheus-client.

For watching a run in the dashboards users already have (dashboards/speechload.json); exact percentiles
still come from the raw samples (histogram buckets only approximate them). Every finished utterance's
row feeds them, in the process that journals the run directory's rows (docs/observability.md): the
direct engine's process, a single locust process, or the locust master from the rows its workers ship.
Imported only when the flag is given (`loadtest --help` stays fast).

Series (each also labelled `run_id` and `scenario`):
  speechload_stage_seconds{stage}              histogram of stt, translation, tts, e2e (sfu in SFU mode)
  speechload_utterances_total{status, stage}   ok (stage e2e/sfu), timeout (stalled stage), error (stage)
  speechload_active_callers                    connected conversations now
  speechload_send_lateness_seconds             histogram of each utterance's p99 send lateness
  speechload_connect_seconds                   histogram, once per conversation
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import Metric

from loadtest.errors import RunFailed

# Dense around the budget: 50 ms steps up to 2 s, then coarse to 30 s (timeouts are far beyond).
STAGE_BUCKETS: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(1, 41)) + (
    2.5, 3.0, 4.0, 5.0, 7.5, 10.0, 15.0, 30.0,
)
CONNECT_BUCKETS = (0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 15.0)
LATENESS_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0)
ROW_STAGES = ("stt", "translation", "tts", "e2e", "sfu")
DEFAULT_HOST = "127.0.0.1"
DEFAULT_LINGER_S = 15.0


@dataclass(frozen=True)
class MetricsOptions:
    """What `loadtest run` was given: where to serve, and how long to wait for a last scrape."""

    port: int
    host: str = DEFAULT_HOST
    scenario: str = "default"
    linger_s: float = DEFAULT_LINGER_S  # after the last utterance, wait (at most) for one more scrape

    def argv(self) -> list[str]:
        """The same options for locust's command line (locustfile.py)."""
        return ["--metrics-port", str(self.port), "--metrics-host", self.host,
                "--metrics-label", self.scenario,
                "--metrics-linger", str(self.linger_s)]


def _field(row: Any, name: str) -> Any:
    return row.get(name) if isinstance(row, Mapping) else getattr(row, name, None)


def _seconds(ms: Any) -> float | None:
    if ms is None:
        return None
    value = float(ms)
    return None if value != value else value / 1000.0  # NaN: not measured


class LiveMetrics:
    """The tester's series in their own registry; `observe` takes a SampleRow or its dict (shipped rows)."""

    def __init__(self, run_id: str, scenario: str, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.labels = {"run_id": run_id, "scenario": scenario}
        names = ["run_id", "scenario"]
        self.scrapes = ScrapeWatch()
        self.registry.register(self.scrapes)  # first: a scrape counts once it starts collecting
        self.stage = Histogram("speechload_stage_seconds", "Tester-measured stage latency per utterance",
                               [*names, "stage"], buckets=STAGE_BUCKETS, registry=self.registry)
        self.utterances = Counter("speechload_utterances", "Finished utterances by status and stage",
                                  [*names, "status", "stage"], registry=self.registry)
        self.active = Gauge("speechload_active_callers", "Connected conversations", names,
                            registry=self.registry)
        self.lateness = Histogram("speechload_send_lateness_seconds",
                                  "Per-utterance p99 of packet send time minus its plan",
                                  names, buckets=LATENESS_BUCKETS, registry=self.registry)
        self.connect = Histogram("speechload_connect_seconds", "Socket.IO open to send transport connected",
                                 names, buckets=CONNECT_BUCKETS, registry=self.registry)
        # Series that exist from the first scrape, so rates and ratios have a zero to start from.
        self.utterances.labels(run_id, scenario, "ok", "e2e")
        for stage in ROW_STAGES[:4]:
            self.stage.labels(run_id, scenario, stage)
        self.lateness.labels(run_id, scenario)
        self.connect.labels(run_id, scenario)
        self.active.labels(run_id, scenario).set(0)
        self._conversations: set[str] = set()
        self._lock = threading.Lock()

    def track_active(self, current: Callable[[], float]) -> None:
        """Read the active callers at scrape time (from the engine's own count)."""
        self.active.labels(**self.labels).set_function(current)

    def observe(self, row: Any) -> None:
        """One finished utterance (a SampleRow, or the dict a worker shipped)."""
        run_id, scenario = self.labels["run_id"], self.labels["scenario"]
        for stage in ROW_STAGES:
            value = _seconds(_field(row, f"{stage}_ms"))
            if value is not None:
                self.stage.labels(run_id, scenario, stage).observe(value)
        status = str(_field(row, "status") or "error")
        default = "sfu" if _field(row, "sfu_ms") is not None and _field(row, "e2e_ms") is None else "e2e"
        stage = str(_field(row, "status_stage") or default)
        self.utterances.labels(run_id, scenario, status, stage).inc()
        lateness = _seconds(_field(row, "send_lateness_p99_ms"))
        if lateness is not None:
            self.lateness.labels(run_id, scenario).observe(lateness)
        conversation = f"{_field(row, 'worker')}/{_field(row, 'conversation')}"
        connect = _seconds(_field(row, "connect_ms"))
        with self._lock:
            first = conversation not in self._conversations
            self._conversations.add(conversation)
        if first and connect is not None:  # connect repeats on every row of a conversation: count it once
            self.connect.labels(run_id, scenario).observe(connect)


class ScrapeWatch:
    """A collector that yields nothing and counts scrapes, so a run can wait for its final one."""

    def __init__(self) -> None:
        self.count = 0
        self._cond = threading.Condition()

    def describe(self) -> Iterable[Metric]:
        return []  # without describe() the registry would call collect() at registration: a false scrape

    def collect(self) -> Iterable[Metric]:
        with self._cond:
            self.count += 1
            self._cond.notify_all()
        return []

    def wait_next(self, timeout_s: float) -> bool:
        """True once a scrape starts after this call (so it sees every value recorded before it)."""
        with self._cond:
            target = self.count + 1
            return self._cond.wait_for(lambda: self.count >= target, timeout=timeout_s)


class MetricsExporter:
    """LiveMetrics served over HTTP (`/metrics`) on host:port until close()."""

    def __init__(self, metrics: LiveMetrics, options: MetricsOptions) -> None:
        self.metrics = metrics
        self.options = options
        try:
            self._server, self._thread = start_http_server(options.port, options.host, metrics.registry)
        except OSError as exc:
            where = f"{options.host}:{options.port}"
            raise RunFailed(f"--metrics-port: cannot listen on {where}: {exc}") from None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/metrics"

    def final_scrape(self) -> bool:
        """Wait (at most linger_s) until Prometheus scrapes once more, so its totals end exact."""
        if self.options.linger_s <= 0:
            return False
        return self.metrics.scrapes.wait_next(self.options.linger_s)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def serve(run_id: str, options: MetricsOptions) -> MetricsExporter:
    return MetricsExporter(LiveMetrics(run_id, options.scenario), options)
