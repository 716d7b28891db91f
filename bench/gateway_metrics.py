"""The reference gateway's /metrics as the benches read it: one sample at a time, Prometheus text.

``loop_delay_p99_ms`` reads ``gateway_event_loop_delay_seconds{quantile="0.99"}``: how late the gateway's
event loop ran its timers over its last complete 10-s window (the gateway keeps that window itself, so
every reader sees the same figure). A bench window of 10 s or more holds that window whole.
"""

from __future__ import annotations

import sys
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

LOOP_DELAY = "gateway_event_loop_delay_seconds"


def scrape(url: str, timeout_s: float = 2.0) -> str | None:
    """The body of ``{url}/metrics`` (None when unreachable)."""
    try:
        with urllib.request.urlopen(f"{url}/metrics", timeout=timeout_s) as resp:
            return resp.read().decode("utf-8", "replace")
    except OSError:
        return None


def sample(text: str, name: str, labels: dict[str, str] | None = None) -> float | None:
    """The value of the series ``name`` with exactly ``labels`` (none by default); None when absent.
    A body that is not Prometheus text raises ValueError."""
    want = labels or {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels == want:
                return float(s.value)
    return None


def metric(url: str, name: str, labels: dict[str, str] | None = None) -> float | None:
    """One sample of a gateway's /metrics (None when absent, unreachable or unreadable: a bench reading
    it on the side must not lose the figures it measured; an unreadable body is said on stderr)."""
    text = scrape(url)
    if text is None:
        return None
    try:
        return sample(text, name, labels)
    except ValueError as exc:
        print(f"{url}/metrics is not Prometheus text ({exc}): {name} not read", file=sys.stderr)
        return None


def loop_delay_p99_ms(urls: tuple[str, ...]) -> float | None:
    """The worst replica's event-loop delay p99 (ms) over its last 10-s window; None if none says."""
    got = [metric(u, LOOP_DELAY, {"quantile": "0.99"}) for u in urls]
    known = [1000.0 * v for v in got if v is not None]
    return max(known) if known else None
