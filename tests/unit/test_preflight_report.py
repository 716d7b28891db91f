"""Preflight output: exit codes, JSON, Markdown for tickets, the rich table, run_check's bounds."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from rich.console import Console

from loadtest.preflight.model import CheckFailed, CheckResult, PreflightReport, Verdict, run_check
from loadtest.preflight.report import print_report, to_markdown, write_outputs

pytestmark = pytest.mark.unit


def report(*statuses: str) -> PreflightReport:
    groups = ["Routes", "Gateway", "Backends", "Metrics"]
    checks = [
        CheckResult(f"k{i}", groups[i % len(groups)], f"check {i}", s,  # type: ignore[arg-type]
                    f"evidence {i} | with a pipe", 12.34 * i, hint="fix it" if s in ("fail", "warn") else "",
                    details={"packets": i})
        for i, s in enumerate(statuses)
    ]
    return PreflightReport("https://gw.example:443", 1_700_000_000.0, 2.5, checks, ["config: test"])


def test_exit_codes() -> None:
    assert report("ok", "ok", "skip").exit_code() == 0
    assert report("ok", "warn").exit_code() == 0
    assert report("ok", "warn").exit_code(strict=True) == 1
    assert report("ok", "fail", "warn").exit_code() == 1
    assert report().exit_code() == 0


def test_json_is_machine_readable() -> None:
    doc = json.loads(report("ok", "fail", "skip").to_json())
    assert doc["target"] == "https://gw.example:443"
    assert doc["summary"] == {"ok": 1, "warn": 0, "fail": 1, "skip": 1}
    assert doc["exit_code"] == 1 and doc["elapsed_s"] == 2.5
    assert doc["checks"][1] == {"key": "k1", "group": "Gateway", "name": "check 1", "status": "fail",
                                "evidence": "evidence 1 | with a pipe", "elapsed_ms": 12.34,
                                "hint": "fix it", "details": {"packets": 1}}


def test_markdown_for_tickets() -> None:
    text = to_markdown(report("ok", "fail", "warn", "skip"))
    lines = text.splitlines()
    assert lines[0] == "### Preflight audit: https://gw.example:443"
    assert lines[2].startswith("**FAIL** — 1 ✅  1 ⚠️  1 ❌  1 skipped — 4 checks in 2.5 s — 2023-11-14")
    assert "| | group | check | evidence | ms |" in lines
    assert "| ❌ | Gateway | check 1 | evidence 1 \\| with a pipe | 12 |" in lines
    assert "| ⏭️ | Metrics | check 3 | evidence 3 \\| with a pipe |  |" in lines
    assert "- ❌ **Gateway / check 1**: fix it" in lines
    assert "- ⚠️ **Backends / check 2**: fix it" in lines
    assert "_config: test_  " in lines
    assert to_markdown(report("ok")).splitlines()[2].startswith("**PASS**")


def test_table_groups_checks_and_shows_hints() -> None:
    console = Console(record=True, width=160)
    print_report(report("ok", "fail", "ok", "skip"), console)
    text = console.export_text()
    for expected in ("Preflight audit — https://gw.example:443", "Routes", "Gateway", "✅", "❌", "⏭",
                     "evidence 1 | with a pipe", "hint: fix it", "note: config: test", "FAIL 2 ✅"):
        assert expected in text, expected


def test_write_outputs(tmp_path: Path) -> None:
    r = report("ok", "warn")
    write_outputs(r, tmp_path / "out" / "p.json", tmp_path / "p.md", strict=True)
    assert json.loads((tmp_path / "out" / "p.json").read_text())["exit_code"] == 1
    assert (tmp_path / "p.md").read_text().splitlines()[2].startswith("**FAIL**")


async def test_run_check_bounds_and_explains() -> None:
    async def slow() -> Verdict:
        await asyncio.Event().wait()  # never set: only the timeout ends it
        raise AssertionError

    async def failing() -> Verdict:
        raise CheckFailed("the cause", "the fix", {"n": 1})

    async def crashing() -> Verdict:
        raise ConnectionRefusedError(111, "Connection refused")

    timed_out = await run_check("a", "Gateway", "slow", slow, 0.05)
    assert timed_out.status == "fail" and "no result within 0.05 s" in timed_out.evidence
    assert 40 <= timed_out.elapsed_ms < 1000
    failed = await run_check("b", "Gateway", "failing", failing, 1)
    assert (failed.status, failed.evidence, failed.hint) == ("fail", "the cause", "the fix")
    assert failed.details == {"n": 1}
    crashed = await run_check("c", "Gateway", "crashing", crashing, 1)
    assert crashed.status == "fail" and crashed.evidence == "connection refused"
    with pytest.raises(KeyError, match="no check 'zz'"):
        report("ok").check("zz")
