"""The report opens in headless Chromium without console errors, and renders (screenshot)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from loadtest.report.report import build_comparison, build_report
from loadtest.report.synthetic import SyntheticSpec, make_samples, write_run
from tests.prereq import needs

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = needs(CHROMIUM is not None, "chromium not installed (apt-get install chromium)")


def chromium(profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def console_lines(stderr: str) -> list[str]:
    """Page console messages as Chromium logs them: `...:INFO:CONSOLE:1] "text", source: ... (1)`."""
    return [line for line in stderr.splitlines() if "CONSOLE" in line]


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("html")
    base, cand = root / "base", root / "cand"
    write_run(base, make_samples(SyntheticSpec(rows=4000, steps=(10, 20, 40), seed=1)))
    write_run(cand, make_samples(SyntheticSpec(rows=4000, steps=(10, 20, 40), seed=2, stt_median=360)))
    build_report(base)
    report = build_report(cand, baseline_dir=base).html_path
    compare = build_comparison(base, cand, root / "cmp").html_path
    assert compare is not None
    return {"report": report, "compare": compare}


@needs_chromium
def test_console_check_catches_errors(tmp_path: Path) -> None:
    # Negative control: the scan below must see a console error when there is one.
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><link rel="icon" href="data:,"><script>console.error("boom")</script>')
    proc = chromium(tmp_path / "profile", "--dump-dom", bad.as_uri())
    assert any("boom" in line for line in console_lines(proc.stderr)), proc.stderr[-2000:]


@needs_chromium
@pytest.mark.parametrize("name", ["report", "compare"])
def test_page_opens_without_console_errors(pages: dict[str, Path], name: str, tmp_path: Path) -> None:
    proc = chromium(tmp_path / "profile", "--dump-dom", pages[name].as_uri())
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert console_lines(proc.stderr) == []
    assert "<svg" in proc.stdout and "</html>" in proc.stdout  # the DOM was built, charts included


@needs_chromium
def test_report_screenshot(pages: dict[str, Path], tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    proc = chromium(
        tmp_path / "profile",
        "--hide-scrollbars",
        "--window-size=1200,2400",
        f"--screenshot={shot}",
        pages["report"].as_uri(),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert console_lines(proc.stderr) == []
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000
