"""Bad input gets one clear error line naming what was wrong, a non-zero exit, and no traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.stackrun import MANIFEST, REPO, running_stack

pytestmark = pytest.mark.integration


def loadtest(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loadtest.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_clean_failure(proc: subprocess.CompletedProcess[str], *needles: str, code: int = 3) -> str:
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("loadtest: error:")]
    assert len(errors) == 1, proc.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def test_unreachable_target(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = loadtest(
        "run", "--target", "https://127.0.0.1:9", "--callers", "1", "--duration", "2", "--out", str(out)
    )
    assert_clean_failure(proc, "cannot reach target", "127.0.0.1:9")
    assert json.loads((out / "run-failed.json").read_text())["error"]


def test_wrong_ca_is_named(tmp_path: Path, state_dir: Path) -> None:
    with running_stack("fixed-delays", state_dir, port_offset=140) as info:
        proc = loadtest(
            "run",
            "--target",
            info.target_url,
            *info.resolve_args,
            "--ca-cert",
            "/etc/ssl/certs/ca-certificates.crt",
            "--callers",
            "1",
            "--duration",
            "2",
            "--out",
            str(tmp_path / "run"),
        )
    assert_clean_failure(proc, "TLS certificate", info.target_url)


def test_unknown_profile_key(tmp_path: Path) -> None:
    profile = tmp_path / "gw.toml"
    text = (REPO / "loadtest" / "profiles" / "reference.toml").read_text()
    profile.write_text(text.replace("[ack]\n", '[ack]\nok_pth = "ok"\n'))
    proc = loadtest(
        "run", "--target", "https://127.0.0.1:9", "--profile", str(profile), "--out", str(tmp_path / "run")
    )
    assert_clean_failure(proc, "ack.ok_pth", code=4)


def test_missing_fixture(tmp_path: Path) -> None:
    entries = json.loads(MANIFEST.read_text())
    entries = entries["fixtures"] if isinstance(entries, dict) else entries
    broken = [dict(entries[0], file=str((MANIFEST.parent / entries[0]["file"]).resolve()))]
    broken.append(dict(entries[1], id="ghost", file="does-not-exist.wav"))
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps(broken))
    proc = loadtest(
        "run", "--target", "https://127.0.0.1:9", "--fixtures", str(manifest), "--out", str(tmp_path / "run")
    )
    assert_clean_failure(proc, "ghost", "does-not-exist.wav", code=4)


def test_unknown_run_config_key(tmp_path: Path) -> None:
    config = tmp_path / "run.toml"
    config.write_text("[scenario]\ncalers = 2\n")
    proc = loadtest("run", "--config", str(config), "--out", str(tmp_path / "run"))
    assert_clean_failure(proc, "scenario.calers", code=4)
