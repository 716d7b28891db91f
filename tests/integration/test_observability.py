"""The stack's own Prometheus (sut/configs/observed.toml) scraping the gateway, the services and a running
tester's --metrics-port: the preflight's Prometheus check passes against it, the tester's utterance total
in Prometheus ends equal to `sent` in summary.json, and every query of dashboards/speechload.json returns
data for the run (Grafana is not packaged here: its variables are substituted as Grafana would). And a
locust run with `--processes 2` serves one endpoint, from the master, whose final total is `sent`.

Port offsets 1140 and 1150 (this file's range: 1140-1159).
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from loadtest.preflight.audit import run_preflight_sync
from loadtest.preflight.config import config_from_stack
from tests.integration.stackrun import running_stack, short_fixture_ids
from tests.junit_check import junit_outcomes
from tests.prereq import needs

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "dashboards" / "speechload.json"
OFFSET = 1140
SCENARIO = "observed-test"
pytestmark = [pytest.mark.integration, pytest.mark.slow,
              needs(Path("/usr/bin/prometheus").exists(), "Debian package prometheus not installed")]


def api(base: str, path: str, **params: Any) -> Any:
    url = f"{base}{path}?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            doc = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"{params}: {exc.read().decode()}") from None
    assert doc["status"] == "success", doc
    return doc["data"]


def grafana_expr(expr: str, run_id: str) -> str:
    """Grafana's substitution for this dashboard: $__rate_interval = max(4 x scrape, interval + scrape)."""
    expr = expr.replace("$__rate_interval", "4s").replace("$__interval", "2s")
    assert re.fullmatch(r"[\w.-]+", run_id + SCENARIO), "values a regex matcher takes literally"
    return expr.replace("$scenario", SCENARIO).replace("$run_id", run_id)


def has_data(result: list[dict[str, Any]]) -> bool:
    return any(math.isfinite(float(v)) for series in result for _, v in series["values"])


def test_prometheus_scrapes_the_tester_and_every_dashboard_query_has_data(tmp_path: Path) -> None:
    with running_stack("observed", tmp_path / "stack", OFFSET) as info:
        prom = info.config.prometheus
        base = f"http://127.0.0.1:{prom.port}"
        # Right after the stack is up: it returned once Prometheus had scraped every target.
        report = run_preflight_sync(config_from_stack(tmp_path / "stack", media=False, smoke=False))
        check = next(c for c in report.checks if c.key == "metrics.prometheus")
        assert check.status == "ok", check.evidence
        assert "tester" in check.evidence and "optional" in check.evidence  # no tester yet: down, allowed

        out = tmp_path / "run"
        ids = ",".join(json.dumps(i) for i in short_fixture_ids(2.0, 4))
        config = tmp_path / "run.toml"
        config.write_text(f"[scenario]\nutterance_interval_s = 3.0\nfixture_ids = [{ids}]\n")
        started = time.time()
        proc = subprocess.run(
            [sys.executable, "-m", "loadtest.cli", "run", "--config", str(config), "--target",
             info.target_url, *info.resolve_args, "--ca-cert", str(info.ca_cert), "--engine", "direct",
             "--callers", "2",
             "--duration", "24", "--skip-preflight", "--metrics-port", str(prom.tester_port),
             "--metrics-label", SCENARIO, "--out", str(out), "--junit", str(tmp_path / "run.xml")],
            cwd=REPO, capture_output=True, text=True, timeout=240, check=False)
        assert proc.returncode in (0, 1), proc.stderr[-3000:]
        assert "no scrape within" not in proc.stderr  # the run waited for Prometheus's last scrape
        summary = json.loads((out / "summary.json").read_text())
        run_id = json.loads((out / "run.json").read_text())["run_id"]
        sent = summary["utterances"]["sent"]
        assert sent >= 10
        failed = {f"thresholds/{t['expression']}" for t in summary["thresholds"] if t["verdict"] != "pass"}
        outcomes = junit_outcomes(tmp_path / "run.xml")  # `run --junit`: a case per threshold
        assert {k for k, v in outcomes.items() if v != "pass"} == failed and len(outcomes) == 4

        # The tester target went away with the run: its series are stale now, so read the last samples.
        total = api(base, "/api/v1/query",
                    query=f'sum(last_over_time(speechload_utterances_total{{run_id="{run_id}"}}[10m]))')
        assert float(total["result"][0]["value"][1]) == sent
        ok = api(base, "/api/v1/query", query=f'sum(last_over_time(speechload_stage_seconds_count'
                                               f'{{run_id="{run_id}", stage="e2e"}}[10m]))')
        assert float(ok["result"][0]["value"][1]) == summary["stages"]["e2e"]["count"]

        dashboard = json.loads(DASHBOARD.read_text())
        assert {v["name"] for v in dashboard["templating"]["list"]} >= {"datasource", "scenario", "run_id"}
        end = time.time()
        empty = []
        checked = 0
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                expr = grafana_expr(target["expr"], run_id)
                data = api(base, "/api/v1/query_range", query=expr, start=started - 5, end=end, step=1)
                checked += 1
                if not has_data(data["result"]):
                    empty.append(f"{panel['title']}: {target['expr']}")
        assert checked >= 20 and not empty, "queries without data:\n" + "\n".join(empty)


def test_locust_processes_serve_one_endpoint_from_the_master(tmp_path: Path) -> None:
    """`--processes 2`: the master serves what its workers ship; its final total is the run's `sent`."""
    port = 9464 + 1150
    url = f"http://127.0.0.1:{port}/metrics"
    ids = ",".join(json.dumps(i) for i in short_fixture_ids(2.0, 3))
    config = tmp_path / "run.toml"
    config.write_text(f'[stack]\nstate_dir = "{tmp_path / "stack"}"\n'
                      f"[scenario]\nutterance_interval_s = 3.0\nfixture_ids = [{ids}]\n")
    out, log = tmp_path / "run", tmp_path / "run.log"
    argv = [sys.executable, "-m", "loadtest.cli", "run", "--config", str(config), "--stack-config",
            "fixed-delays", "--port-offset", "1150", "--callers", "2", "--spawn-rate", "2", "--duration",
            "15", "--processes", "2", "--skip-preflight", "--metrics-port", str(port), "--metrics-linger",
            "5", "--out", str(out)]
    with log.open("w") as sink:
        proc = subprocess.Popen(argv, cwd=REPO, stdout=sink, stderr=subprocess.STDOUT)
        last, scrapes = "", 0
        deadline = time.monotonic() + 240
        while proc.poll() is None and time.monotonic() < deadline:  # a scraper, as Prometheus would be
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    last, scrapes = resp.read().decode(), scrapes + 1
            except OSError:
                pass  # not serving yet (stack starting) or already closed
            time.sleep(0.5)  # the scrape interval
        proc.wait(timeout=60)
    output = log.read_text()
    assert proc.returncode in (0, 1), output[-3000:]
    assert "no scrape within" not in output
    sent = json.loads((out / "summary.json").read_text())["utterances"]["sent"]
    total = sum(float(line.rsplit(" ", 1)[1]) for line in last.splitlines()
                if line.startswith("speechload_utterances_total{"))
    assert scrapes >= 5 and sent >= 6 and total == sent
