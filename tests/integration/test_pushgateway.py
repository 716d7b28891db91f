"""`loadtest nightly --pushgateway URL` against a real Pushgateway (Debian's prometheus-pushgateway, started
here on a loopback port): the night's percentiles, pass rate and verdicts arrive as gauges.

Port 10271 (9091 + 1180, inside this suite's offset range 1180-1189).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from loadtest.report.commands import add_report_commands
from loadtest.report.synthetic import SyntheticSpec, make_samples, write_run
from tests.prereq import needs

BINARY = Path("/usr/bin/prometheus-pushgateway")
PORT = 9091 + 1180
pytestmark = [pytest.mark.integration,
              needs(BINARY.exists(), "Debian package prometheus-pushgateway not installed")]


@pytest.fixture
def pushgateway(tmp_path: Path) -> Iterator[str]:
    log = (tmp_path / "pushgateway.log").open("w")
    # Debian's build persists to /var/lib/prometheus by default: in memory only here.
    argv = [str(BINARY), f"--web.listen-address=127.0.0.1:{PORT}", "--persistence.file=", "--log.level=warn"]
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{PORT}"
    try:
        deadline = time.monotonic() + 20
        while True:  # bounded poll of its readiness endpoint: another process, no event to await
            assert proc.poll() is None, (tmp_path / "pushgateway.log").read_text()
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=2):
                    break
            except OSError:
                assert time.monotonic() < deadline, "pushgateway not ready in 20 s"
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


def factory(argv: list[str]) -> Callable[[Path], int]:
    def run(run_dir: Path) -> int:
        write_run(run_dir, make_samples(SyntheticSpec(rows=400, steps=(5,), seed=3)))
        return 0

    return run


def test_nightly_pushes_its_summary(tmp_path: Path, pushgateway: str) -> None:
    parser = argparse.ArgumentParser(prog="loadtest")
    add_report_commands(parser.add_subparsers(dest="command", required=True), run_factory=factory)
    hist = tmp_path / "nightly-h"
    args = parser.parse_args(["nightly", "--history", str(hist), "-t", "e2e.p95 < 5000", "-t", "stt.p95 < 1",
                              "--pushgateway", pushgateway])
    assert args.func(args) == 1
    summary = json.loads(next(hist.glob("2*/summary.json")).read_text())
    with urllib.request.urlopen(f"{pushgateway}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    got = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.labels.get("job") == "speechload_nightly":
                assert s.labels["history"] == "nightly-h"
                grouping = ("job", "history", "instance")
                labels = tuple(sorted((k, v) for k, v in s.labels.items() if k not in grouping))
                got[(s.name, labels)] = s.value
    for stage, q, key in (("e2e", "0.95", "p95"), ("stt", "0.5", "p50"), ("tts", "0.99", "p99")):
        value = got[("speechload_nightly_stage_seconds", (("quantile", q), ("stage", stage)))]
        assert value == pytest.approx(summary["stages"][stage][key] / 1000)
    assert got[("speechload_nightly_pass_rate", ())] == pytest.approx(summary["e2e_under_target"])
    assert got[("speechload_nightly_thresholds_passed_ratio", ())] == 0.5
    assert got[("speechload_nightly_verdict", (("kind", "budget"), ("verdict", "fail")))] == 1
    assert got[("speechload_nightly_verdict", (("kind", "regression"), ("verdict", "no-baseline")))] == 1
    assert got[("speechload_nightly_exit_code", ())] == 1
    assert got[("speechload_nightly_utterances", (("status", "sent"),))] == summary["utterances"]["sent"]
