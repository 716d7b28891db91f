"""The tester drives a gateway it was not written for, with a profile file alone.

The foreign SFU (sut/foreign: real Node, the same mediasoup build) shares nothing with the reference
gateway's dialect: Origin check, a per-caller JWT in the query, snake_case, a two-step join whose first
answer feeds the second, the room id in every request, producer/consumer direction names, bare answers
with {error}, plain-string answers, list announcements without type fields, unpaused consumers and no
resume, and no pipeline. `sut/foreign/profile.toml` (mode "sfu") describes it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from sut.foreign.launcher import ForeignGateway, foreign_gateway
from tests.integration.stackrun import MANIFEST, short_fixture_ids

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PROFILE = REPO / "sut" / "foreign" / "profile.toml"
SECRET = "dialect-test-secret-0123456789abcdef"  # long enough for HS256 without PyJWT's warning
ORIGIN = "http://app.test"  # what the profile's Origin header says


@pytest.fixture
def gateway() -> Iterator[ForeignGateway]:
    with foreign_gateway(7611, jwt_secret=SECRET, allowed_origin=ORIGIN, rtc_ports=(46100, 46199)) as gw:
        yield gw


def loadtest(args: list[str], secret: str = SECRET,
             timeout_s: float = 180) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, FOREIGN_SFU_JWT_SECRET=secret)
    return subprocess.run([sys.executable, "-m", "loadtest.cli", *args], cwd=REPO, env=env, text=True,
                          capture_output=True, timeout=timeout_s, check=False)


def run_args(gw: ForeignGateway, out: Path, *extra: str) -> list[str]:
    ids = ",".join(short_fixture_ids(max_duration_s=3.5, count=3))
    config = out.parent / f"{out.name}.toml"
    config.write_text(f'[scenario]\nfixture_ids = {json.dumps(ids.split(","))}\nfixtures = "{MANIFEST}"\n')
    return ["run", "--config", str(config), "--target", gw.url, "--profile", str(PROFILE), "--out", str(out),
            "--skip-preflight", *extra]


def every_output_byte(run_dir: Path) -> bytes:
    return b"".join(p.read_bytes() for p in run_dir.rglob("*") if p.is_file())


def test_sfu_conversations_end_ok_with_connect_and_transit_measured(gateway: ForeignGateway,
                                                                    tmp_path: Path) -> None:
    out = tmp_path / "run"
    done = loadtest(run_args(gateway, out, "--callers", "2", "--duration", "9", "--interval", "4.5",
                             "--spawn-rate", "2"))
    assert done.returncode == 0, done.stderr[-3000:]
    frame = pd.read_parquet(out / "samples.parquet")
    # Locust users speak until the run's time is up: 2 callers × (2 or 3) utterances 4.5 s apart.
    assert 4 <= len(frame) <= 6 and set(frame["status"]) == {"ok"}, frame[["status", "error"]]
    assert frame["connect_ms"].notna().all() and (frame["connect_ms"] > 0).all()
    # Loopback through one SFU: a packet's trip is well under a frame; bounded above by what the SFU
    # budget allows, below by zero (the same clock stamps both ends).
    assert frame["sfu_ms"].between(0.0, 100.0).all(), frame["sfu_ms"]
    assert frame[["stt_ms", "translation_ms", "tts_ms", "e2e_ms"]].isna().all().all()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["verdict"] == "pass"
    assert {t["expression"] for t in summary["thresholds"]} >= {"sfu.p95 < 100"}
    # The JWT secret and the tokens minted from it never reach a file the run wrote.
    assert SECRET.encode() not in every_output_byte(out)
    assert not re.search(rb"eyJ[A-Za-z0-9_-]{10,}\.", every_output_byte(out)), "a JWT was written out"


def test_refusals_carry_the_servers_own_words(gateway: ForeignGateway, tmp_path: Path) -> None:
    wrong_secret = loadtest(run_args(gateway, tmp_path / "a", "--engine", "direct", "--duration", "3"),
                            secret="not-the-secret-0123456789abcdef0123")
    assert wrong_secret.returncode == 3
    assert "refused the connection: invalid token: bad signature" in wrong_secret.stderr
    profile = tmp_path / "wrong-origin.toml"
    profile.write_text(PROFILE.read_text().replace('Origin = "http://app.test"', 'Origin = "http://evil.test"'))
    args = run_args(gateway, tmp_path / "b", "--engine", "direct", "--duration", "3")
    args[args.index(str(PROFILE))] = str(profile)
    wrong_origin = loadtest(args)
    assert wrong_origin.returncode == 3
    assert "refused the connection: Origin not allowed" in wrong_origin.stderr


def test_a_gateway_killed_mid_run_ends_pending_utterances_as_disconnected(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with foreign_gateway(7612, jwt_secret=SECRET, allowed_origin=ORIGIN, rtc_ports=(46200, 46299)) as gw:
        args = run_args(gw, out, "--engine", "direct", "--callers", "2", "--duration", "40",
                        "--interval", "4.5")
        env = dict(os.environ, FOREIGN_SFU_JWT_SECRET=SECRET)
        proc = subprocess.Popen([sys.executable, "-m", "loadtest.cli", *args], cwd=REPO, env=env, text=True,
                                stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
        assert proc.stderr is not None
        lines = []
        try:
            for line in proc.stderr:  # the engine's progress lines: kill once utterances have finished ok
                lines.append(line)
                if re.search(r"utterances \d+: ok [1-9]", line):
                    gw.process.kill()
                    break
            rest, _ = proc.communicate(timeout=90)
        finally:
            if proc.poll() is None:
                proc.kill()
    stderr = "".join(lines) + (rest or "")
    assert proc.returncode == 1, stderr[-3000:]  # measured, and the errors fail the budget: not exit 3
    frame = pd.read_parquet(out / "samples.parquet")
    counts = frame["status"].value_counts()
    ok, timeout, error = (int(counts.get(s, 0)) for s in ("ok", "timeout", "error"))
    assert len(frame) == ok + timeout + error
    errors = frame[frame["status"] == "error"]
    assert ok >= 1 and error == len(errors) >= 1
    assert errors["error"].str.contains("disconnected by server after").all(), errors["error"]
    assert set(errors["status_stage"]) <= {"send", "sfu"}
    # The run stopped planning once the gateway was gone: far fewer than 2 callers × 9 planned utterances.
    assert len(frame) < 18
    report = loadtest(["report", str(out)])
    assert report.returncode == 1 and (out / "report.html").is_file(), report.stderr
