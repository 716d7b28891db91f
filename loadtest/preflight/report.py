"""The audit as a terminal table (rich), JSON (PreflightReport.to_json) and Markdown for tickets."""

from __future__ import annotations

import datetime as dt
import sys
from itertools import groupby
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from loadtest.preflight.model import ICONS, PreflightReport

STYLES = {"ok": "green", "warn": "yellow", "fail": "bold red", "skip": "dim"}


def _when(report: PreflightReport) -> str:
    return dt.datetime.fromtimestamp(report.started_unix, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def render_table(report: PreflightReport) -> Table:
    table = Table(title=f"Preflight audit — {report.target}", title_justify="left", show_lines=False,
                  expand=False)
    table.add_column("", no_wrap=True)
    table.add_column("check", style="bold", overflow="fold", max_width=38)
    table.add_column("evidence", overflow="fold")
    table.add_column("ms", justify="right", no_wrap=True)
    for group, checks in groupby(report.checks, key=lambda c: c.group):
        table.add_section()
        table.add_row("", f"[underline]{escape(group)}[/]", "", "")
        for c in checks:
            evidence = f"[{STYLES[c.status]}]{escape(c.evidence)}[/]"
            if c.hint and c.status in ("fail", "warn"):
                evidence += f"\n[dim]hint: {escape(c.hint)}[/]"
            ms = f"{c.elapsed_ms:.0f}" if c.status != "skip" else ""
            table.add_row(c.icon, escape(c.name), evidence, ms)
    return table


def make_console(stderr: bool = False) -> Console:
    # Not a terminal (CI logs, pipes): rich would assume 80 columns and fold every evidence line.
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else 160)


def print_report(report: PreflightReport, console: Console | None = None, strict: bool = False) -> None:
    console = console or make_console()
    console.print(render_table(report))
    for note in report.notes:
        console.print(f"[dim]note: {escape(note)}[/]")
    verdict = "PASS" if report.exit_code(strict) == 0 else "FAIL"
    style = "bold green" if verdict == "PASS" else "bold red"
    console.print(f"[{style}]{verdict}[/] {escape(report.summary_line())}")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(report: PreflightReport, strict: bool = False) -> str:
    """The audit for pasting into a ticket: header, one table row per check, then hints and notes."""
    verdict = "PASS" if report.exit_code(strict) == 0 else "FAIL"
    lines = [
        f"### Preflight audit: {report.target}",
        "",
        f"**{verdict}** — {report.summary_line()} — {_when(report)}",
        "",
        "| | group | check | evidence | ms |",
        "|---|---|---|---|---:|",
    ]
    for c in report.checks:
        ms = f"{c.elapsed_ms:.0f}" if c.status != "skip" else ""
        lines.append(f"| {c.icon} | {_cell(c.group)} | {_cell(c.name)} | {_cell(c.evidence)} | {ms} |")
    hinted = [c for c in report.checks if c.hint and c.status in ("fail", "warn")]
    if hinted:
        lines += ["", "**What to fix**", ""]
        lines += [f"- {ICONS[c.status]} **{c.group} / {c.name}**: {c.hint}" for c in hinted]
    if report.notes:
        lines += ["", *(f"_{n}_  " for n in report.notes)]
    return "\n".join(lines) + "\n"


def write_outputs(report: PreflightReport, json_path: str | Path | None = None,
                  markdown_path: str | Path | None = None, strict: bool = False) -> None:
    for path, text in ((json_path, report.to_json(strict)), (markdown_path, to_markdown(report, strict))):
        if path:
            target = Path(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
