"""Locust swarms against the real reference stack: every utterance exactly once, no hidden slowness."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from loadtest.fixtures import FixtureLibrary
from sut.stack import StackInfo
from tests.integration.stackrun import MANIFEST, REPO, running_stack, short_fixture_ids

pytestmark = [pytest.mark.integration, pytest.mark.slow]
STAGE_ROWS = {"connect", "stt", "translation", "tts", "e2e"}


def loadtest_run(
    info: StackInfo, out: Path, *args: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "loadtest.cli", "run", "--target", info.target_url, *info.resolve_args,
           "--ca-cert", str(info.ca_cert), "--out", str(out), *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def stage_rows(stats_csv: Path) -> set[str]:
    with stats_csv.open() as handle:
        return {row["Name"] for row in csv.DictReader(handle) if row["Type"] == "pipeline"}


def test_headless_swarm_accounts_for_every_utterance(tmp_path: Path, state_dir: Path) -> None:
    with running_stack("default", state_dir, port_offset=230) as info:
        proc = loadtest_run(info, tmp_path / "run", "--callers", "10", "--spawn-rate", "5",
                            "--duration", "60", "--interval", "9")
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    frame = pd.read_parquet(tmp_path / "run" / "samples.parquet")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    u = summary["utterances"]
    assert len(frame) == u["sent"] == u["ok"] + u["timeout"] + u["error"]
    assert frame["utterance_id"].is_unique
    assert frame["conversation"].nunique() == 10
    assert len(frame) >= 10 * 6  # 60 s at 9 s intervals: 7 planned per caller, minus late starters
    assert (frame["status"] == "ok").mean() > 0.9, frame["status"].value_counts()
    assert stage_rows(tmp_path / "run" / "locust_stats.csv") == STAGE_ROWS


def test_master_and_two_workers_deliver_the_union_of_the_workers_utterances(
    tmp_path: Path, state_dir: Path
) -> None:
    ids = short_fixture_ids(max_duration_s=3.5, count=4)
    config = tmp_path / "run.toml"
    config.write_text(f'[scenario]\nfixture_ids = {json.dumps(list(ids))}\n')
    with running_stack("fixed-delays", state_dir, port_offset=240) as info:
        base = [sys.executable, "-m", "loadtest.cli", "run", "--target", info.target_url, *info.resolve_args,
                "--ca-cert", str(info.ca_cert), "--interval", "4.5", "--config", str(config)]
        master = subprocess.Popen(
            [*base, "--master", "--expect-workers", "2", "--callers", "4", "--spawn-rate", "4",
             "--duration", "25", "--out", str(tmp_path / "master")],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        workers = [subprocess.Popen([*base, "--worker", "--out", str(tmp_path / f"worker{i}")], cwd=REPO,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                   for i in (1, 2)]
        out, _ = master.communicate(timeout=300)
        for worker in workers:
            worker.wait(timeout=60)
    assert master.returncode in (0, 1), out[-3000:]
    merged = pd.read_parquet(tmp_path / "master" / "samples.parquet")
    trails = [pd.read_json(p, lines=True) for i in (1, 2)
              for p in (tmp_path / f"worker{i}" / "worker-journal").glob("*.jsonl")]
    assert len(trails) == 2 and all(len(t) > 0 for t in trails)
    union = set().union(*(set(t["utterance_id"]) for t in trails))
    assert sum(len(t) for t in trails) == len(union)  # the workers never overlap
    assert set(merged["utterance_id"]) == union and merged["utterance_id"].is_unique
    assert merged["worker"].nunique() == 2


def test_step_shape_records_active_callers_on_every_sample(tmp_path: Path, state_dir: Path) -> None:
    ids = ",".join(short_fixture_ids(max_duration_s=3.5, count=4))
    config = tmp_path / "run.toml"
    config.write_text(f'[scenario]\nfixture_ids = {json.dumps(ids.split(","))}\n')
    with running_stack("fixed-delays", state_dir, port_offset=250) as info:
        proc = loadtest_run(info, tmp_path / "run", "--config", str(config), "--shape", "step",
                            "--callers", "3", "--step-users", "1", "--step-time", "12", "--spawn-rate", "5",
                            "--duration", "36", "--interval", "4")
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    frame = pd.read_parquet(tmp_path / "run" / "samples.parquet")
    assert frame["active_users"].notna().all() and (frame["active_users"] >= 1).all()
    assert set(frame["active_users"]) >= {1, 2, 3}, frame["active_users"].value_counts()
    first_level = frame[frame["t_planned"] < frame["t_planned"].min() + 8]
    assert set(first_level["active_users"]) == {1}


def test_slow_replies_never_delay_the_next_utterance(tmp_path: Path, state_dir: Path) -> None:
    """No coordinated omission: with TTS slow enough to queue, speech still starts on its timetable."""
    ids = short_fixture_ids(max_duration_s=3.5, count=4)
    config = tmp_path / "run.toml"
    config.write_text(f'[scenario]\nfixture_ids = {json.dumps(list(ids))}\n')
    with running_stack("slow-tts", state_dir, port_offset=260) as info:
        proc = loadtest_run(info, tmp_path / "run", "--config", str(config), "--callers", "4",
                            "--spawn-rate", "4", "--duration", "30", "--interval", "4",
                            "--response-timeout", "20")
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    frame = pd.read_parquet(tmp_path / "run" / "samples.parquet")
    library = FixtureLibrary(MANIFEST)
    first_voiced_s = frame["fixture_id"].map(lambda i: library.fixture(i).first_voiced * 0.020)
    start_lateness = frame["t_send_start"] - frame["t_planned"] - first_voiced_s
    # The replies were slow: TTS queued behind two workers...
    assert frame["tts_ms"].max() > 1500, frame["tts_ms"].describe()
    # ...yet every utterance started when planned, and plans stayed exactly one interval apart.
    assert start_lateness.abs().max() < 0.030, start_lateness.describe()
    for _conv, group in frame.sort_values("t_planned").groupby("conversation"):
        assert np.allclose(np.diff(group["t_planned"]), 4.0, atol=1e-6)
