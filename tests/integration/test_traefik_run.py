"""`loadtest run` with default options (no --target: the embedded reference stack behind Traefik) works
end to end: the stack tells the tester its host names' address, the preflight of the embedded stack
reads Traefik's routers and passes, and the report puts Traefik's own counters over the run (its
Prometheus endpoint, before/after) beside the tester's figures. Port offset 1370.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.stackrun import REPO, short_fixture_ids

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CALLERS = 2


def test_embedded_run_reports_traefiks_counters_beside_the_testers(tmp_path: Path) -> None:
    ids = short_fixture_ids(max_duration_s=3.5, count=2)
    config = tmp_path / "run.toml"
    config.write_text(f"[scenario]\nfixture_ids = {json.dumps(list(ids))}\n"
                      f"[stack]\nstate_dir = \"{tmp_path / 'stack'}\"\n")
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "loadtest.cli", "run", "--config", str(config), "--callers", str(CALLERS),
            "--spawn-rate", str(CALLERS), "--duration", "9", "--interval", "4.5", "--port-offset", "1370",
            "--out", str(out)]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode in (0, 1), done.stderr[-4000:]  # 1: a budget threshold, still a measured run
    assert "target https://webrtc.speechload.test:9813" in done.stderr

    preflight = json.loads((out / "preflight.json").read_text())
    checks = {c["key"]: c for c in preflight["checks"]}
    assert preflight["exit_code"] == 0
    gateway = checks["traefik.router[gateway@file]"]
    assert gateway["status"] == "ok" and "WebSocket upgrade 101" in gateway["evidence"], gateway

    summary = json.loads((out / "summary.json").read_text())
    sent = summary["utterances"]["sent"]
    assert sent == summary["utterances"]["ok"] >= CALLERS * 2
    proxy = summary["proxy"]
    assert proxy["error"] is None and proxy["source"] == "http://127.0.0.1:8850/metrics", proxy
    tester = proxy["tester"]
    assert tester["conversations"] >= CALLERS and tester["utterances_sent"] == sent, tester
    connections = tester["signaling_connections"]
    assert connections == 2 * tester["conversations"]
    # Traefik counted each of the tester's signaling connections on the gateway's router: one WebSocket
    # per peer (code 0: Traefik 3 labels an upgraded connection so, at its close), and nothing else.
    routers = proxy["routers"]
    assert routers["gateway@file"] == {"requests": connections, "by_code": {"0": connections}}, routers
    assert routers["www@file"]["requests"] == 0 and routers["grafana@file"]["requests"] == 0
    websecure = proxy["entrypoints"]["websecure"]["open_connections"]
    assert websecure["peak"] >= 2 * CALLERS and websecure["after"] <= websecure["before"], websecure
    assert proxy["servers"]["gateway@file"] == {"http://127.0.0.1:4370": {"before": 1, "after": 1}}
    html = (out / "report.html").read_text()
    assert "Proxy (Traefik)" in html and f"WebSocket × {connections}" in html
    print(f"\nTraefik over the run: {routers['gateway@file']} on gateway@file, websecure open connections "
          f"{websecure}; tester: {proxy['tester']}")
