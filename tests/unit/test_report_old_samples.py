"""Samples made before the scenario and listener columns report exactly as they did before them.

The expected files in data/report_before_scenarios/ were written by `write_expected` below running on the
report code as it was before `--by` and the scenario sections existed (the same frame, the same metadata):
summary.json (without its generation time and directory), report.html (without its stylesheet) and the
terminal's stage table. Rewrite them only for an intended change of an older run's report:
`SPEECHLOAD_WRITE_EXPECTED=1 .venv/bin/pytest tests/unit/test_report_old_samples.py`.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from loadtest.report.build import print_stage_table
from loadtest.report.groups import ByColumnError
from loadtest.report.model import RunMetadata
from loadtest.report.report import build_report
from loadtest.report.synthetic import SyntheticSpec, make_samples, write_journal, write_run

pytestmark = pytest.mark.unit

EXPECTED = Path(__file__).parent / "data" / "report_before_scenarios"
META = RunMetadata(
    run_id="before-scenarios", target="https://gw.example.test", config_path="run.toml", scenario="steps",
    callers=8, workers=2, started_at="2025-01-01T00:00:00+00:00", finished_at="2025-01-01T00:02:00+00:00",
    duration_s=120.0, insecure_tls=False, python_version="3.11", aiortc_version="1", locust_version="2",
    pymediasoup_version="1", tester_version="0.1", git_commit="0" * 40, git_dirty=False, hostname="host",
    command="loadtest run",
)


def old_frame() -> pd.DataFrame:
    """A run of the one-way kind with every column an older run had: nodes, impairment, SNR, failures."""
    frame = make_samples(SyntheticSpec(rows=240, steps=(4, 8), workers=2, seed=5, duration_s=120.0,
                                       timeout_rate=0.05, error_rate=0.03))
    n = len(frame)
    frame["speaker_node"] = np.where(np.arange(n) % 3 == 0, "gw-2", "gw-1")
    frame["listener_node"] = "gw-1"
    frame["impairment"] = np.where(np.arange(n) % 2 == 0, "lossy-5", None)
    frame["snr_db"] = np.where(np.arange(n) % 4 == 0, 10.0, np.nan)
    return frame


def render(run_dir: Path) -> tuple[dict[str, Any], str, str]:
    """summary.json without generated_at/run_dir, report.html without <style>, the terminal's table."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        result = build_report(run_dir, metadata=META, charts=False)
        print_stage_table(result.summary)
    summary = json.loads((run_dir / "summary.json").read_text())
    summary.pop("generated_at")
    summary.pop("run_dir")
    html = re.sub(r"<style>.*?</style>", "<style></style>", (run_dir / "report.html").read_text(), flags=re.S)
    return summary, html, err.getvalue()


def write_expected(tmp: Path) -> None:
    write_run(tmp / "run", old_frame())
    summary, html, terminal = render(tmp / "run")
    EXPECTED.mkdir(parents=True, exist_ok=True)
    (EXPECTED / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    (EXPECTED / "report.html").write_text(html)
    (EXPECTED / "terminal.txt").write_text(terminal)


@pytest.fixture(scope="module")
def expected(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str, str]:
    if os.environ.get("SPEECHLOAD_WRITE_EXPECTED"):
        write_expected(tmp_path_factory.mktemp("expected"))
    return (json.loads((EXPECTED / "summary.json").read_text()), (EXPECTED / "report.html").read_text(),
            (EXPECTED / "terminal.txt").read_text())


def test_an_older_parquet_run_reports_exactly_as_before(tmp_path: Path, expected) -> None:
    write_run(tmp_path, old_frame())
    summary, html, terminal = render(tmp_path)
    assert summary == expected[0]
    assert html == expected[1]
    assert terminal == expected[2]
    assert not {"by", "listening", "scenarios"} & set(summary)


def test_an_older_journal_reports_exactly_as_before(tmp_path: Path, expected) -> None:
    write_journal(tmp_path, old_frame(), shards=2)
    summary, html, terminal = render(tmp_path)
    assert summary == {**expected[0], "source": "journal"}
    assert html.replace("<td class=\"l\">journal</td>", "<td class=\"l\">samples.parquet</td>") == expected[1]
    assert terminal == expected[2]


def test_an_older_run_names_the_columns_it_can_be_grouped_by(tmp_path: Path) -> None:
    """--by on an older run: what it had (nodes, languages, fixtures) works; the new columns are absent."""
    write_run(tmp_path, old_frame())
    result = build_report(tmp_path, charts=False, by=("speaker_node",))
    assert result.summary.by is not None
    assert [g.key for g in result.summary.by.groups] == ["gw-1", "gw-2"]
    with pytest.raises(ByColumnError) as info:
        build_report(tmp_path, charts=False, by=("direction",))
    message = str(info.value)
    assert "--by direction" in message and "does not exist" in message
    assert "speaker_node" in message and "fixture_id" in message and "scenario" not in message
