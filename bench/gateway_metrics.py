"""The reference gateway's /metrics as the benches read it: one sample at a time, Prometheus text.

``loop_delay_p99_ms`` reads ``gateway_event_loop_delay_seconds{quantile="0.99"}``: how late the gateway's
event loop ran its timers over its last complete 10-s window (the gateway keeps that window itself, so
every reader sees the same figure). A bench window of 10 s or more holds that window whole.
"""

from __future__ import annotations

import urllib.request

LOOP_DELAY = "gateway_event_loop_delay_seconds"


def scrape(url: str, timeout_s: float = 2.0) -> str | None:
    """The body of ``{url}/metrics`` (None when unreachable)."""
    try:
        with urllib.request.urlopen(f"{url}/metrics", timeout=timeout_s) as resp:
            return resp.read().decode("utf-8", "replace")
    except OSError:
        return None


def sample(text: str, name: str, labels: str = "") -> float | None:
    """The value of the series ``name`` (``name{labels}`` when labels are given, as the gateway writes
    them: ``quantile="0.99"``); None when absent."""
    key = f"{name}{{{labels}}} " if labels else f"{name} "
    for line in text.splitlines():
        if line.startswith(key):
            return float(line.split()[-1])
    return None


def metric(url: str, name: str, labels: str = "") -> float | None:
    """One sample of a gateway's /metrics (None when absent or unreachable)."""
    text = scrape(url)
    return None if text is None else sample(text, name, labels)


def loop_delay_p99_ms(urls: tuple[str, ...]) -> float | None:
    """The worst replica's event-loop delay p99 (ms) over its last 10-s window; None if none says."""
    got = [metric(u, LOOP_DELAY, 'quantile="0.99"') for u in urls]
    known = [1000.0 * v for v in got if v is not None]
    return max(known) if known else None
