"""The proxy's own view of a run: Traefik's Prometheus counters read before and after the run, its open
connections sampled while it lasts, written to ``<run_dir>/proxy_metrics.json`` for the report
(loadtest/report/proxy.py).

Per router: requests by status code (the difference after − before; a WebSocket counts once, when it
closes, with code 0). Traefik 3 counts open connections per entrypoint, not per router: those are
sampled every second (before, peak, after). An endpoint that does not answer at the start is recorded
as such (the report says so); the run goes on either way. Stdlib only: `loadtest run` stays light.
"""

from __future__ import annotations

import contextlib
import json
import re
import ssl
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FILE = "proxy_metrics.json"
SAMPLE_EVERY_S = 1.0
TIMEOUT_S = 3.0
SETTLE_S = 3.0  # at most this long for the run's connections to close on the proxy's side
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


@dataclass
class Snapshot:
    """What one scrape of Traefik's /metrics says (counters summed over the labels not kept)."""

    at_unix: float
    router_requests: dict[str, dict[str, float]] = field(default_factory=dict)  # router → code → n
    entrypoint_requests: dict[str, dict[str, float]] = field(default_factory=dict)  # entrypoint → code → n
    open_connections: dict[str, float] = field(default_factory=dict)  # entrypoint → n (all protocols)
    servers_up: dict[str, dict[str, float]] = field(default_factory=dict)  # service → server URL → 0/1


def _add(table: dict[str, dict[str, float]], key: str, code: str, value: float) -> None:
    inner = table.setdefault(key, {})
    inner[code] = inner.get(code, 0.0) + value


def parse(text: str, at_unix: float = 0.0) -> Snapshot:
    """The Traefik series the report uses, from Prometheus text exposition format."""
    snap = Snapshot(at_unix)
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match is None:
            continue
        name, raw_labels, raw_value = match.groups()
        try:
            value = float(raw_value)
        except ValueError:
            continue
        labels = dict(_LABEL.findall(raw_labels or ""))
        if name == "traefik_router_requests_total" and "router" in labels:
            _add(snap.router_requests, labels["router"], labels.get("code", "?"), value)
        elif name == "traefik_entrypoint_requests_total" and "entrypoint" in labels:
            _add(snap.entrypoint_requests, labels["entrypoint"], labels.get("code", "?"), value)
        elif name == "traefik_open_connections" and "entrypoint" in labels:
            ep = labels["entrypoint"]
            snap.open_connections[ep] = snap.open_connections.get(ep, 0.0) + value
        elif name == "traefik_service_server_up" and "service" in labels:
            snap.servers_up.setdefault(labels["service"], {})[labels.get("url", "?")] = value
    return snap


def _delta(before: dict[str, dict[str, float]], after: dict[str, dict[str, float]],
           skip_internal: bool) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for key in sorted(set(before) | set(after)):
        if skip_internal and key.endswith("@internal"):  # Traefik's own API/metrics: our scrapes
            continue
        codes = {code: after.get(key, {}).get(code, 0.0) - before.get(key, {}).get(code, 0.0)
                 for code in set(before.get(key, {})) | set(after.get(key, {}))}
        by_code = {code: int(n) for code, n in sorted(codes.items()) if n > 0}
        out[key] = {"requests": int(sum(codes.values())), "by_code": by_code}
    return out


def summarise(source: str, before: Snapshot, after: Snapshot, peaks: dict[str, float],
              samples: int) -> dict[str, Any]:
    """The proxy_metrics.json document: per router and per entrypoint, over the run."""
    entrypoints = _delta(before.entrypoint_requests, after.entrypoint_requests, skip_internal=False)
    for ep in sorted(set(before.open_connections) | set(after.open_connections) | set(peaks)):
        entrypoints.setdefault(ep, {"requests": 0, "by_code": {}})["open_connections"] = {
            "before": int(before.open_connections.get(ep, 0)), "peak": int(peaks.get(ep, 0)),
            "after": int(after.open_connections.get(ep, 0))}
    servers = {svc: {url: {"before": int(before.servers_up.get(svc, {}).get(url, 0)), "after": int(up)}
                     for url, up in urls.items()} for svc, urls in sorted(after.servers_up.items())}
    return {
        "kind": "traefik", "source": source, "started_unix": before.at_unix, "ended_unix": after.at_unix,
        "samples": samples, "routers": _delta(before.router_requests, after.router_requests, True),
        "entrypoints": entrypoints, "servers": servers, "error": None,
    }


def scrape(url: str, ca_cert: str = "", timeout_s: float = TIMEOUT_S) -> Snapshot:
    """One scrape (raises OSError / ValueError when the endpoint does not answer with metrics)."""
    context = ssl.create_default_context(cafile=ca_cert or None) if url.startswith("https") else None
    with urllib.request.urlopen(url, timeout=timeout_s, context=context) as response:  # noqa: S310
        text = response.read(8 << 20).decode("utf-8", "replace")
    snap = parse(text, time.time())
    if not (snap.router_requests or snap.entrypoint_requests or snap.open_connections):
        raise ValueError("no traefik_* series (is this Traefik's Prometheus endpoint?)")
    return snap


class _Sampler(threading.Thread):
    """Open connections per entrypoint, every SAMPLE_EVERY_S until stopped (the peak is kept)."""

    def __init__(self, url: str, ca_cert: str, first: Snapshot) -> None:
        super().__init__(name="proxy-metrics", daemon=True)
        self.url, self.ca_cert = url, ca_cert
        self.peaks = dict(first.open_connections)
        self.samples = 1
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(SAMPLE_EVERY_S):  # a sampling period, not a synchronisation
            try:
                snap = scrape(self.url, self.ca_cert)
            except (OSError, ValueError):
                continue
            self.samples += 1
            for ep, n in snap.open_connections.items():
                self.peaks[ep] = max(self.peaks.get(ep, 0.0), n)


def _settled(url: str, ca_cert: str, before: Snapshot) -> Snapshot:
    """The last scrape, once the run's connections have closed on Traefik's side too (it counts a
    WebSocket when it ends): polled until the open connections are back to where they were, bounded."""
    deadline = time.monotonic() + SETTLE_S
    pause = threading.Event()  # never set: its wait is the polling period
    while True:
        snap = scrape(url, ca_cert)
        settled = all(n <= before.open_connections.get(ep, 0.0) for ep, n in snap.open_connections.items()
                      if ep != "traefik")  # that one carries this very scrape
        if settled or time.monotonic() >= deadline:
            return snap
        pause.wait(0.2)


def _write(run_dir: Path, doc: dict[str, Any]) -> None:
    (run_dir / FILE).write_text(json.dumps(doc, indent=2) + "\n")


@contextlib.contextmanager
def watch_proxy(url: str, run_dir: Path, ca_cert: str = "") -> Iterator[None]:
    """Around a run: Traefik's counters at `url` before and after, into run_dir/proxy_metrics.json.
    No URL: nothing is recorded. Never fails the run."""
    if not url:
        yield
        return
    try:
        before = scrape(url, ca_cert)
    except (OSError, ValueError) as exc:
        _write(run_dir, {"kind": "traefik", "source": url, "error": f"not reachable at the start: {exc}"})
        yield
        return
    sampler = _Sampler(url, ca_cert, before)
    sampler.start()
    try:
        yield
    finally:
        sampler.stopping.set()
        sampler.join(timeout=TIMEOUT_S + SAMPLE_EVERY_S + 1)
        try:
            after = _settled(url, ca_cert, before)
        except (OSError, ValueError) as exc:
            _write(run_dir, {"kind": "traefik", "source": url, "error": f"not reachable at the end: {exc}"})
        else:
            for ep, n in after.open_connections.items():
                sampler.peaks[ep] = max(sampler.peaks.get(ep, 0.0), n)
            _write(run_dir, summarise(url, before, after, sampler.peaks, sampler.samples + 1))
