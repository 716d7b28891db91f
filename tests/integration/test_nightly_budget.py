"""Nightlies against a stack that misses its budget every night still get regression detection.

Three short direct-engine nights (`loadtest nightly ... -- --engine direct`): nights 1 and 2 on
fixed-delays (e2e about 1.25 s against a 900 ms budget: exit 1 each), night 2 compared with night 1;
night 1 is then pinned, and night 3 on slow-tts (TTS about 900 ms instead of 400) is compared with the
pin, exits 2 (a regression wins over the budget miss) naming tts. Each night writes JUnit XML that
validates and fails exactly the thresholds that failed (and the regressed stages).

Port offset 1160 (this file's range: 1160-1179).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.stackrun import short_fixture_ids
from tests.junit_check import junit_outcomes

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
BUDGET = ["e2e.p95 < 900", "error_rate < 0.5"]
RUN = ["--engine", "direct", "--callers", "2", "--duration", "24", "--port-offset", "1160",
       "--skip-preflight"]


def loadtest(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "loadtest.cli", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, check=False)


def run_config(tmp_path: Path) -> Path:
    path = tmp_path / "run.toml"
    ids = ", ".join(json.dumps(i) for i in short_fixture_ids(2.0, 4))
    rules = ", ".join(json.dumps(r) for r in BUDGET)
    path.write_text(f'[stack]\nstate_dir = "{tmp_path / "stack"}"\n'
                    f"[scenario]\nutterance_interval_s = 3.0\nfixture_ids = [{ids}]\n"
                    f"[thresholds]\nrules = [{rules}]\n")
    return path


def night(hist: Path, config: Path, junit: Path, stack: str) -> subprocess.CompletedProcess[str]:
    proc = loadtest("nightly", "--history", str(hist), "--config", str(config), "--junit", str(junit),
                    "--", *RUN, "--stack-config", stack)
    print(proc.stdout[-3000:], proc.stderr[-3000:])
    return proc


def check_junit(junit: Path, summary: dict) -> dict[str, str]:
    outcomes = junit_outcomes(junit)
    failed = {f"thresholds/{t['expression']}" for t in summary["thresholds"] if t["verdict"] != "pass"}
    stages = (summary["comparison"] or {}).get("regressions", [])
    regressed = {f"regression/{s} p95 vs baseline" for s in stages}
    assert {k for k, v in outcomes.items() if v == "failure"} == failed | regressed
    assert {k for k in outcomes if k.startswith("thresholds/")} == {f"thresholds/{r}" for r in BUDGET}
    return outcomes


def test_three_nights_over_budget_then_a_slowdown(tmp_path: Path) -> None:
    hist, config = tmp_path / "history", run_config(tmp_path)
    first = night(hist, config, tmp_path / "n1.xml", "fixed-delays")
    assert first.returncode == 1, first.stderr[-3000:]
    second = night(hist, config, tmp_path / "n2.xml", "fixed-delays")
    assert second.returncode == 1, second.stderr[-3000:]
    index = json.loads((hist / "index.json").read_text())["runs"]
    n1, n2 = index
    assert n1["budget_verdict"] == n2["budget_verdict"] == "fail" and n1["baseline"] is None
    assert n2["baseline"] == n1["id"] and n2["baseline_rule"] == "last-completed"
    assert n2["regression_verdict"] in ("pass", "inconclusive") and not n2["regressions"]
    assert n1["counts"]["e2e"] >= 10, "night 1 must be big enough to be a baseline"
    assert second.stdout.count("verdict:") == 1  # the run does not print a verdict block of its own
    s2 = json.loads((hist / n2["dir"] / "summary.json").read_text())
    outcomes = check_junit(tmp_path / "n2.xml", s2)
    if n2["regression_verdict"] == "inconclusive":  # e.g. connect: 2 conversations a night
        assert any(v == "skipped" for k, v in outcomes.items() if k.startswith("regression/"))

    pinned = loadtest("nightly", "--history", str(hist), "--pin", n1["id"])
    assert pinned.returncode == 0, pinned.stderr
    third = night(hist, config, tmp_path / "n3.xml", "slow-tts")
    assert third.returncode == 2, third.stdout[-3000:] + third.stderr[-3000:]
    n3 = json.loads((hist / "index.json").read_text())["runs"][2]
    assert n3["baseline"] == n1["id"] and n3["baseline_rule"] == "pinned"  # the pin, not night 2
    assert n3["budget_verdict"] == "fail" and n3["regression_verdict"] == "regression"
    assert "tts" in n3["regressions"] and n3["exit_code"] == 2
    tts_line = next(line for line in third.stdout.splitlines() if line.strip().startswith("tts "))
    assert "REGRESSION" in tts_line
    s3 = json.loads((hist / n3["dir"] / "summary.json").read_text())
    assert s3["verdict"] == "regression" and s3["budget_verdict"] == "fail"
    assert s3["comparison"]["stages"]["tts"]["method"] == "permutation"
    check_junit(tmp_path / "n3.xml", s3)
    html = (hist / "index.html").read_text()
    assert "regression (" in html and "pinned" in html
