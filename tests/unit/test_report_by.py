"""`loadtest report --by COLUMN[,COLUMN…]`: per-group outcomes and stages that add up to the run."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

from loadtest.errors import EXIT_USAGE
from loadtest.report.build import print_stage_table
from loadtest.report.commands import add_report_commands
from loadtest.report.groups import MAX_GROUPS, ByColumnError, parse_by
from loadtest.report.report import build_report
from tests.unit.scenario_rows import row, write

pytestmark = pytest.mark.unit


def mixed_rows() -> list[dict]:
    """Two directions, three listeners, every outcome, and rows that name no direction."""
    rows = []
    for i in range(36):
        direction = ("en-es", "es-en", None)[i % 3]
        status = "timeout" if i % 7 == 0 else "error" if i % 11 == 0 else "ok"
        rows.append(row(conversation=f"c{i % 4}", seq=i + 1, direction=direction, listener=f"l{i % 3 + 1}",
                        party="a" if direction != "es-en" else "b", status=status,
                        e2e_ms=600.0 + 25.0 * i, tts_ms=200.0 + 25.0 * i, connect_ms=70.0 + i % 4,
                        status_stage="stt" if i == 22 else None))
    return rows


def counts_of(groups: list) -> tuple[int, int, int, int]:
    return (sum(g.counts.sent for g in groups), sum(g.counts.ok for g in groups),
            sum(g.counts.timeout for g in groups), sum(g.counts.error for g in groups))


@pytest.mark.parametrize("by", [("direction",), ("direction", "listener"), ("listener",)])
def test_the_groups_add_up_to_the_run(tmp_path: Path, by: tuple[str, ...]) -> None:
    rows = mixed_rows()
    result = build_report(write(tmp_path, rows), charts=False, by=by)
    s = result.summary
    assert s.by is not None and s.by.columns == by
    whole = s.counts
    assert counts_of(list(s.by.groups)) == (whole.sent, whole.ok, whole.timeout, whole.error)
    for g in s.by.groups:
        assert g.counts.sent == g.counts.ok + g.counts.timeout + g.counts.error
        # Each group's figures are its own rows' (exact percentiles, as for the whole run).
        mine = [r for r in rows if tuple(str(r[c]) if r[c] is not None else "(none)" for c in by)
                == tuple(v for _, v in g.values)]
        assert g.counts.sent == len(mine)
        e2e = [r["e2e_ms"] for r in mine if r["e2e_ms"] is not None]
        assert g.stages["e2e"].count == len(e2e)
        assert g.stages["e2e"].p95 == pytest.approx(np.percentile(e2e, 95))
        conversations = {r["conversation"] for r in mine}
        assert g.stages["connect"].count == len(conversations)  # once per conversation, within the group


def test_rows_without_a_value_are_a_group_of_their_own_and_keys_join_the_values(tmp_path: Path) -> None:
    result = build_report(write(tmp_path, mixed_rows()), charts=False, by=("direction", "listener"))
    keys = [g.key for g in result.summary.by.groups]
    assert keys[0] == "en-es / l1" and "(none) / l3" in keys
    assert keys == sorted(keys, key=lambda k: (k.startswith("(none)"), k))  # "(none)" last
    data = json.loads((tmp_path / "summary.json").read_text())["by"]
    assert data["columns"] == ["direction", "listener"]
    assert list(data["groups"]) == keys
    group = data["groups"]["en-es / l1"]
    assert group["values"] == {"direction": "en-es", "listener": "l1"}
    assert set(group["utterances"]) == {"sent", "ok", "timeout", "error"}
    assert set(group["stages"]) == {"connect", "stt", "translation", "tts", "e2e"}
    assert sum(g["utterances"]["sent"] for g in data["groups"].values()) == 36


def test_numeric_groups_sort_as_numbers(tmp_path: Path) -> None:
    rows = [row(seq=i + 1, snr_db=(10.0, 5.0, None, 20.0)[i % 4]) for i in range(8)]
    result = build_report(write(tmp_path, rows), charts=False, by=("snr_db",))
    assert [g.key for g in result.summary.by.groups] == ["5", "10", "20", "(none)"]


def test_an_unknown_column_names_itself_and_the_usable_ones(tmp_path: Path) -> None:
    write(tmp_path, mixed_rows())
    with pytest.raises(ByColumnError) as info:
        build_report(tmp_path, charts=False, by=("listener", "speaker_nod"))
    message = str(info.value)
    assert message.startswith("--by speaker_nod: the column does not exist in these samples")
    usable = message.split("columns that can be used: ", 1)[1].split(", ")
    assert {"scenario", "direction", "party", "listener", "fixture_id", "worker"} <= set(usable)
    assert "speaker_node" not in usable  # these rows do not name replicas
    with pytest.raises(ByColumnError, match="e2e_ms: the column is not a column to group by"):
        build_report(tmp_path, charts=False, by=("e2e_ms",))
    assert not (tmp_path / "summary.json").exists()  # a usage error writes nothing


def test_the_report_verb_exits_4_on_an_unknown_column(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    write(tmp_path, mixed_rows())
    parser = argparse.ArgumentParser()
    add_report_commands(parser.add_subparsers())
    args = parser.parse_args(["report", str(tmp_path), "--no-charts", "--by", "direction", "--by", "colour"])
    assert args.func(args) == EXIT_USAGE
    assert "--by colour: the column does not exist in these samples" in capsys.readouterr().err
    args = parser.parse_args(["report", str(tmp_path), "--no-charts", "-t", "e2e.p95 < 5000", "--by",
                              "direction,listener"])
    assert args.func(args) == 0
    assert json.loads((tmp_path / "summary.json").read_text())["by"]["columns"] == ["direction", "listener"]


def test_parse_by_splits_commas_and_repeats() -> None:
    assert parse_by(["direction, listener", "direction", "scenario"]) == ("direction", "listener", "scenario")
    assert parse_by("party") == ("party",)
    with pytest.raises(ByColumnError, match="empty column name"):
        parse_by("direction,,listener")


def test_an_identifier_is_not_a_grouping(tmp_path: Path) -> None:
    rows = [row(seq=i + 1, fixture_id=f"clip-{i}") for i in range(MAX_GROUPS + 1)]
    with pytest.raises(ByColumnError, match=f"{MAX_GROUPS + 1} groups"):
        build_report(write(tmp_path, rows), charts=False, by=("fixture_id",))


def test_terminal_and_html_show_each_group_and_escape_its_name(tmp_path: Path) -> None:
    rows = [row(seq=i + 1, listener=("<b>l1</b>", "l2")[i % 2], e2e_ms=700.0 + i) for i in range(6)]
    result = build_report(write(tmp_path, rows), charts=False, by=("listener",))
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        print_stage_table(result.summary)
    lines = err.getvalue().splitlines()
    at = lines.index("by listener:")
    assert lines[at + 1] == "  <b>l1</b>: sent 3  ok 3  timeout 0  error 0"
    assert lines[at + 2].split() == ["stage", "count", "p50", "p95", "p99", "max", "(ms)"]
    assert lines[at + 7].split()[:3] == ["e2e", "3", "702.0"]
    html = (tmp_path / "report.html").read_text()
    assert "<b>l1</b>" not in html
    assert "<h3>&lt;b&gt;l1&lt;/b&gt;</h3>" in html and "<h3>l2</h3>" in html
    assert '<h2 id="by">Per listener</h2>' in html
