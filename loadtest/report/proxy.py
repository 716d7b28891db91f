"""The proxy's figures beside the tester's: Traefik's counters over the run (loadtest/proxywatch.py wrote
them to proxy_metrics.json) for summary.json's ``proxy`` and the report's "Proxy" section.

The tester's side of the same traffic: each conversation opens two signaling connections (speaker and
listener), each one WebSocket on the gateway's router. Traefik 3 counts a WebSocket once, when it closes,
with status code 0 (a hijacked connection has no HTTP status; its access log says 0 too).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from loadtest.report.html_common import e, table

FILE = "proxy_metrics.json"
UPGRADED = ("0", "101")  # how Traefik labels a WebSocket's request: 0 (3.x, counted at close), or 101
PEERS_PER_CONVERSATION = 2


def proxy_summary(run_dir: Path, frame: pd.DataFrame, sent: int) -> dict[str, Any] | None:
    """proxy_metrics.json with the tester's figures added; None when the run recorded none."""
    try:
        doc = json.loads((Path(run_dir) / FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict):
        return None
    conversations = int(frame["conversation"].nunique()) if "conversation" in frame else 0
    doc["tester"] = {"conversations": conversations,
                     "signaling_connections": PEERS_PER_CONVERSATION * conversations,
                     "utterances_sent": int(sent)}
    return doc


def _codes(by_code: dict[str, int]) -> str:
    shown = [f"{'WebSocket' if code in UPGRADED else code} × {n:,}" for code, n in by_code.items()]
    return ", ".join(shown) or "—"


def proxy_section(doc: dict[str, Any] | None) -> str:
    """The report's "Proxy" section ("" when the run recorded nothing)."""
    if not doc:
        return ""
    source = e(doc.get("source", "?"))
    if doc.get("error"):
        return (f"<h2>Proxy (Traefik)</h2><p class=\"muted\">Traefik's metrics at <code>{source}</code> were "
                f"{e(doc['error'])}: no proxy figures for this run.</p>")
    tester = doc.get("tester", {})
    connections = tester.get("signaling_connections", 0)
    rows = []
    for name, r in doc.get("routers", {}).items():
        upgrades = sum(r.get("by_code", {}).get(code, 0) for code in UPGRADED)
        beside = (f"{connections:,} signaling connections ({tester.get('conversations', 0):,} conversations "
                  "× speaker + listener)") if upgrades else ""
        rows.append((e(name), f"{r.get('requests', 0):,}", e(_codes(r.get("by_code", {}))),
                     f"{upgrades:,}" if upgrades else "—", e(beside) or "—"))
    eps = [(e(name), f"{ep.get('requests', 0):,}", e(_codes(ep.get("by_code", {}))),
            *(f"{ep.get('open_connections', {}).get(k, 0):,}" for k in ("before", "peak", "after")))
           for name, ep in doc.get("entrypoints", {}).items()]
    servers = [(e(svc), e(url), str(s.get("before")), str(s.get("after")))
               for svc, urls in doc.get("servers", {}).items() for url, s in urls.items()]
    took = float(doc.get("ended_unix", 0)) - float(doc.get("started_unix", 0))
    parts = [
        "<h2>Proxy (Traefik)</h2>",
        f"<p>Traefik's own counters at <code>{source}</code>, after − before the run ({took:.0f} s, "
        f"{doc.get('samples', 0)} scrapes), beside what the tester did: {tester.get('utterances_sent', 0):,} "
        f"utterances over {connections:,} signaling connections. Traefik counts a WebSocket once, when it "
        "closes (status code 0: an upgraded connection).</p>",
        table(["router", "requests", "by status", "WebSocket upgrades", "the tester"], rows, left_cols=1),
        "<p class=\"muted\">Open connections: Traefik 3 counts them per entrypoint (sampled every second), "
        "not per router.</p>",
        table(["entrypoint", "requests", "by status", "open before", "open peak", "open after"], eps),
    ]
    if servers:
        parts.append(table(["service", "server", "up before", "up after"], servers, left_cols=2))
    return "".join(parts)
