"""Kills and signals, on real processes: `loadtest run` with its embedded stack (and locust child).

* SIGTERM / SIGINT stop a run gracefully: in-flight utterances finish or time out, the report is
  written marked partial, the exit code is the one its figures earn, no child survives.
* kill -9 of `loadtest run`: every child (stack processes, their workers, locust) dies with it, and
  `loadtest report DIR` recovers every utterance journaled before the kill.
* An embedded stack whose run died is reclaimed by the next run; a `stack up` stack never is.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.integration.proctree import (
    Proc,
    descendants,
    journal_lines,
    loadtest,
    run_toml,
    wait_until,
)
from tests.integration.stackrun import short_fixture_ids
from tests.prereq import require_worker

pytestmark = [pytest.mark.integration, pytest.mark.slow]
RESPONSE_TIMEOUT_S = 6.0
INTERVAL_S = 4.0
DURATION_S = 120.0  # far longer than any test waits: every run here ends by a signal


@pytest.fixture(autouse=True)
def _prerequisites() -> None:
    require_worker()


def start_run(tmp_path: Path, engine: str, offset: int, callers: int = 2,
              duration_s: float = DURATION_S) -> tuple[subprocess.Popen[bytes], Path]:
    out = tmp_path / "out"
    config = run_toml(tmp_path / "run.toml", tmp_path / "state", short_fixture_ids(2.0, 4),
                      utterance_interval_s=INTERVAL_S, response_timeout_s=RESPONSE_TIMEOUT_S)
    log = (tmp_path / "run.log").open("wb")
    proc = loadtest("run", "--config", str(config), "--engine", engine, "--callers", str(callers),
                    "--duration", str(duration_s), "--port-offset", str(offset), "--skip-preflight",
                    "--stack-config", "fixed-delays", "--out", str(out), stdout=log, stderr=subprocess.STDOUT)
    return proc, out


def wait_for_rows(proc: subprocess.Popen[bytes], out: Path, rows: int, tmp_path: Path) -> list[Proc]:
    """Until `rows` utterances are journaled; returns the run's process tree at that moment."""
    try:
        wait_until(lambda: len(journal_lines(out)) >= rows or proc.poll() is not None, 120,
                   f"{rows} journaled utterances")
    finally:
        if proc.poll() is not None:
            pytest.fail(f"the run exited early ({proc.returncode}):\n{(tmp_path / 'run.log').read_text()}")
    return descendants(proc.pid)


def assert_all_gone(tree: list[Proc], timeout_s: float = 30.0) -> None:
    wait_until(lambda: not any(p.alive() for p in tree), timeout_s,
               "every child to die: " + "; ".join(p.cmd[:80] for p in tree if p.alive()))


def assert_graceful(proc: subprocess.Popen[bytes], out: Path, tree: list[Proc], sig: signal.Signals,
                    tmp_path: Path) -> None:
    t0 = time.monotonic()
    proc.send_signal(sig)
    code = proc.wait(timeout=90)
    took = time.monotonic() - t0
    log = (tmp_path / "run.log").read_text()
    assert code in (0, 1), log
    summary = json.loads((out / "summary.json").read_text())
    u = summary["utterances"]
    assert summary["partial"] is True
    assert u["sent"] == u["ok"] + u["timeout"] + u["error"] == len(journal_lines(out))
    assert u["ok"] >= 1, u
    assert u["sent"] < 2 * DURATION_S / INTERVAL_S  # cut short
    assert json.loads((out / "run.json").read_text())["stopped_by"] == sig.name
    assert (out / "report.html").is_file()
    assert f"{sig.name}: stopping the run" in log
    # In flight: a clip (<= 2 s) plus the response timeout; then the stack stops (seconds).
    assert took < RESPONSE_TIMEOUT_S + 2.0 + 30.0, f"stopping took {took:.1f} s"
    assert_all_gone(tree, 15.0)
    print(f"{sig.name}: {u} stopped in {took:.1f} s")


def test_sigterm_stops_a_direct_run_gracefully(tmp_path: Path) -> None:
    proc, out = start_run(tmp_path, "direct", 1405)
    tree = wait_for_rows(proc, out, 2, tmp_path)
    assert any("sut.services.stt" in p.cmd for p in tree) and any("mediasoup-worker" in p.cmd for p in tree)
    assert_graceful(proc, out, tree, signal.SIGTERM, tmp_path)


def test_sigint_stops_a_locust_run_gracefully(tmp_path: Path) -> None:
    proc, out = start_run(tmp_path, "locust", 1410)
    tree = wait_for_rows(proc, out, 2, tmp_path)
    assert any("locust" in p.cmd for p in tree)
    assert_graceful(proc, out, tree, signal.SIGINT, tmp_path)


@pytest.mark.parametrize(("engine", "offset"), [("direct", 1420), ("locust", 1430)])
def test_kill_9_leaves_no_child_and_the_journal_recovers(tmp_path: Path, engine: str, offset: int) -> None:
    proc, out = start_run(tmp_path, engine, offset)
    tree = wait_for_rows(proc, out, 3, tmp_path)
    before = {json.loads(line)["utterance_id"] for line in journal_lines(out)}
    proc.kill()
    proc.wait(timeout=10)
    # The stack's processes, the mediasoup worker, nginx's workers and locust: all get SIGTERM from
    # the kernel (parent-death signal) and go.
    assert_all_gone(tree)
    assert not (out / "samples.parquet").exists()
    report = loadtest("report", str(out), "--csv", "--no-charts")
    stdout, stderr = report.communicate(timeout=120)
    assert report.returncode in (0, 1), stderr.decode()
    recovered = set(pd.read_csv(out / "samples.csv")["utterance_id"])
    assert before <= recovered  # every utterance finished before the kill (locust drains a few more)
    summary = json.loads((out / "summary.json").read_text())
    u = summary["utterances"]
    assert u["sent"] == u["ok"] + u["timeout"] + u["error"] == len(recovered)
    print(f"kill -9 ({engine}): {len(before)} journaled before the kill, {len(recovered)} recovered")


def test_an_orphaned_run_stack_is_reclaimed_and_a_stack_up_stack_is_not(tmp_path: Path) -> None:
    state = tmp_path / "state"
    up = loadtest("stack", "up", "--config", "fixed-delays", "--port-offset", "1440",
                  "--state-dir", str(state))
    _, err = up.communicate(timeout=120)
    assert up.returncode == 0, err.decode()
    pids = json.loads((state / "pids.json").read_text())
    stack = [Proc(p["pid"], p["start_ticks"], p["name"]) for p in pids["processes"]]
    try:
        proc, out = start_run(tmp_path, "direct", 1440, callers=1, duration_s=3.0)
        _, _ = proc.communicate(timeout=120)
        log = (tmp_path / "run.log").read_text()
        assert proc.returncode == 3 and "a stack is already running" in log, log
        assert all(p.alive() for p in stack)  # a `stack up` stack is nobody's to reclaim
        # The same processes, now recorded as a run's stack whose run died.
        dead = subprocess.Popen(["sleep", "60"])
        ticks = descendants_ticks(dead.pid)
        dead.kill()
        dead.wait()
        pids["owner"] = {"pid": dead.pid, "start_ticks": ticks}
        (state / "pids.json").write_text(json.dumps(pids))
        proc, out = start_run(tmp_path, "direct", 1440, callers=1, duration_s=3.0)
        proc.communicate(timeout=180)
        log = (tmp_path / "run.log").read_text()
        assert proc.returncode in (0, 1), log
        assert "reclaimed an embedded stack whose run had died" in log
        assert not any(p.alive() for p in stack)
    finally:
        loadtest("stack", "down", "--state-dir", str(state)).communicate(timeout=60)


def descendants_ticks(pid: int) -> int:
    from sut.procs import start_ticks

    ticks = start_ticks(pid)
    assert ticks is not None
    return ticks
