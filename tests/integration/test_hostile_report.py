"""Server-provided text is shown as text in the HTML report: a crafted samples file whose error texts,
stage names, replica names and statuses hold markup renders in headless Chromium with no script run
and no element injected."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from loadtest.report.report import build_report
from loadtest.report.synthetic import SyntheticSpec, make_samples, write_journal
from tests.html_elements import Elements
from tests.integration.test_report_html import chromium, console_lines, needs_chromium

pytestmark = pytest.mark.integration

MARK = "data-pwned"
PAYLOADS = (
    f"<script>document.documentElement.setAttribute('{MARK}','script')</script>",
    f"<img src=x onerror=\"document.documentElement.setAttribute('{MARK}','img')\">",
    f"\"><svg onload=\"document.documentElement.setAttribute('{MARK}','svg')\">",
    f"</td></tr></table><iframe srcdoc=\"<script>parent.document.documentElement"
    f".setAttribute('{MARK}','iframe')</script>\"></iframe>",
)


def hostile_run(run_dir: Path) -> None:
    frame = make_samples(SyntheticSpec(rows=600, steps=(4,), seed=3, error_rate=0.2))
    errors = frame["status"] == "error"
    n = int(errors.sum())
    frame.loc[errors, "error"] = [f"pipelineError: {PAYLOADS[i % len(PAYLOADS)]}" for i in range(n)]
    frame.loc[errors, "status_stage"] = [PAYLOADS[(i + 1) % len(PAYLOADS)] for i in range(n)]
    frame["transcript"] = PAYLOADS[0]
    frame["translation"] = PAYLOADS[1]
    frame["speaker_node"] = np.where(np.arange(len(frame)) % 2 == 0, PAYLOADS[2], "gw-0")
    frame["listener_node"] = "gw-0"
    frame.loc[frame.index[:12], "status"] = PAYLOADS[3]  # an unknown status is named in a warning
    write_journal(run_dir, frame)
    (run_dir / "run.json").write_text(json.dumps({"run_id": PAYLOADS[0], "target": PAYLOADS[1]}))


def render(tmp_path: Path, page: Path) -> subprocess.CompletedProcess[str]:
    return chromium(tmp_path / "profile", "--virtual-time-budget=3000", "--dump-dom", page.as_uri())


@needs_chromium
def test_the_check_sees_a_script_that_runs(tmp_path: Path) -> None:
    """Control: the same payloads, unescaped, do run and do leave their mark in the dumped DOM."""
    page = tmp_path / "unescaped.html"
    page.write_text(f"<!doctype html><html><body><p>{''.join(PAYLOADS[:2])}</p></body></html>")
    dom = Elements()
    dom.feed(render(tmp_path, page).stdout)
    assert any(MARK in attrs for _, attrs in dom.tags)


@needs_chromium
def test_markup_from_the_server_renders_as_text(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    hostile_run(run_dir)
    result = build_report(run_dir, charts=False)
    html = result.html_path.read_text()
    assert "<script" not in html and "<img" not in html and "<iframe" not in html and "<svg" not in html
    done = render(tmp_path, result.html_path)
    assert done.returncode == 0, done.stderr[-2000:]
    dom = Elements()
    dom.feed(done.stdout)
    injected = [(tag, attrs) for tag, attrs in dom.tags
                if tag in ("script", "img", "iframe", "svg") or MARK in attrs
                or any(name.startswith("on") for name in attrs)]
    assert not injected, injected[:5]
    text = "".join(dom.text)
    shown = [p for p in PAYLOADS if p in text]
    assert len(shown) >= 3, "the hostile texts should be on the page, as text"
    assert not [line for line in console_lines(done.stderr) if "pwned" in line.lower()]
    print(f"{len(dom.tags)} elements, none injected; {len(shown)} of {len(PAYLOADS)} payloads shown as text")
