"""The per-scenario report sections (two-way, group, barge-in, monologue) on hand-made rows."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from loadtest.report.build import print_stage_table
from loadtest.report.frame import normalise
from loadtest.report.report import build_report
from loadtest.report.scenarios import barge_in, monologue
from tests.html_elements import Elements
from tests.unit.scenario_rows import row, write

pytestmark = pytest.mark.unit


def terminal(summary: Any) -> list[str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        print_stage_table(summary)
    return err.getvalue().splitlines()


def two_way_rows() -> list[dict]:
    rows = []
    for seq in range(1, 7):
        rows.append(row(scenario="two-way", seq=seq, party="a", listener="b", direction="en-es",
                        e2e_ms=800.0 + seq))
        rows.append(row(scenario="two-way", seq=seq, party="b", listener="a", direction="es-en",
                        source_language="es", target_language="en", e2e_ms=900.0 + seq,
                        status="timeout" if seq == 6 else "ok"))
    return rows


def test_two_way_gets_a_table_per_direction_by_default(tmp_path: Path) -> None:
    result = build_report(write(tmp_path, two_way_rows()), charts=False)
    s = result.summary
    assert s.by is None
    tw = s.scenarios.two_way
    assert tw is not None and tw.columns == ("direction",)
    en_es, es_en = tw.groups
    assert (en_es.key, en_es.counts.sent, en_es.counts.ok) == ("en-es", 6, 6)
    assert en_es.stages["e2e"].p50 == 803.5
    assert (es_en.key, es_en.counts.sent, es_en.counts.timeout) == ("es-en", 6, 1)
    assert es_en.stages["e2e"].max == 905
    data = json.loads((tmp_path / "summary.json").read_text())
    assert list(data["scenarios"]["two_way"]["groups"]) == ["en-es", "es-en"]
    html = (tmp_path / "report.html").read_text()
    assert html.count('<h2 id="two-way">Per direction</h2>') == 1 and 'id="by"' not in html
    lines = terminal(s)
    assert "per direction:" in lines and "  es-en: sent 6  ok 5  timeout 1  error 0" in lines


def test_asked_by_direction_the_two_way_table_is_shown_once(tmp_path: Path) -> None:
    result = build_report(write(tmp_path, two_way_rows()), charts=False, by=("direction",))
    html = (tmp_path / "report.html").read_text()
    assert 'id="by"' in html and 'id="two-way"' not in html
    assert "per direction:" not in terminal(result.summary)
    data = json.loads((tmp_path / "summary.json").read_text())
    assert data["by"]["groups"] == data["scenarios"]["two_way"]["groups"]  # the same figures, both keys


def test_one_direction_has_no_per_direction_section(tmp_path: Path) -> None:
    rows = [row(seq=i) for i in range(1, 4)] + [row(seq=0, direction="", status="error")]  # "": not known
    result = build_report(write(tmp_path, rows), charts=False)
    assert result.summary.scenarios.two_way is None
    assert "scenarios" not in json.loads((tmp_path / "summary.json").read_text())


LANG = {"l1": "es", "l2": "fr", "l3": "de"}


def group_rows() -> list[dict]:
    """(worker, conversation, seq) -> each listener's first translated audio (s); None: never heard."""
    onsets = {
        ("host:1", "g0", 1): {"l1": 10.000, "l2": 10.120, "l3": 10.050},
        ("host:1", "g0", 2): {"l1": 20.000, "l2": 20.300, "l3": None},
        ("host:1", "g0", 3): {"l1": 30.000, "l2": 30.010, "l3": 30.020},
        # Another process, same conversation name and seq: its own utterance, on its own clock.
        ("host:2", "g0", 1): {"l1": 500.000, "l2": 500.040},
    }
    rows = []
    for (worker, conv, seq), heard in onsets.items():
        for listener, onset in heard.items():
            rows.append(row(scenario="group", worker=worker, conversation=conv, seq=seq, listener=listener,
                            target_language=LANG[listener], direction=f"en-{LANG[listener]}",
                            t_audio_onset=onset, e2e_ms=700.0 + 100.0 * int(listener[1]),
                            status="ok" if onset is not None else "timeout"))
    rows.append(row(scenario="one-way", conversation="solo", t_audio_onset=99.0))  # not a group row
    return rows


def test_group_spread_is_max_minus_min_over_an_utterances_listeners(tmp_path: Path) -> None:
    result = build_report(write(tmp_path, group_rows()), charts=False)
    g = result.summary.scenarios.group
    assert g is not None
    spreads = [120.0, 300.0, 20.0, 40.0]
    assert (g.utterances, g.measured, g.incomplete) == (4, 4, 1)
    assert g.spread_p50_ms == pytest.approx(np.median(spreads))
    assert g.spread_p95_ms == pytest.approx(np.percentile(spreads, 95))
    assert g.spread_max_ms == pytest.approx(300.0)
    by_name = {r.listener: r for r in g.listeners}
    assert [(r.listener, r.language) for r in g.listeners] == [("l1", "es"), ("l2", "fr"), ("l3", "de")]
    assert (by_name["l1"].sent, by_name["l1"].behind_first_max_ms) == (4, 0.0)
    assert by_name["l2"].behind_first_p50_ms == pytest.approx(np.median([120.0, 300.0, 10.0, 40.0]))
    l3 = by_name["l3"]
    assert (l3.sent, l3.ok, l3.timeout) == (3, 2, 1)
    assert (l3.behind_first_p50_ms, l3.behind_first_max_ms) == (pytest.approx(35.0), pytest.approx(50.0))
    assert l3.e2e_p50_ms == 1000.0
    data = json.loads((tmp_path / "summary.json").read_text())["scenarios"]["group"]
    assert data["incomplete"] == 1 and data["spread_max_ms"] == pytest.approx(300.0)
    assert [x["listener"] for x in data["listeners"]] == ["l1", "l2", "l3"]
    html = (tmp_path / "report.html").read_text()
    assert '<h2 id="group">' in html and "<td class=\"l\">l3</td><td class=\"l\">de</td>" in html
    assert any(line.startswith("group: 4 spoken utterances, 4 heard by >= 2 listeners, 1 missed")
               for line in terminal(result.summary))


def barge_rows(overlap: list[float | None], tts: list[float], after: list[float | None],
               cut: list[bool | None]) -> pd.DataFrame:
    return normalise(pd.DataFrame([
        row(scenario="barge-in", seq=i + 1, overlap_ms=o, tts_ms=t, after_previous_ms=a, previous_cut=c)
        for i, (o, t, a, c) in enumerate(zip(overlap, tts, after, cut, strict=True))]))


def test_barge_in_names_queueing_and_its_wait() -> None:
    b = barge_in(barge_rows(
        overlap=[None, 300.0, -100.0, 500.0, 0.0, 400.0, None, 600.0],
        tts=[400.0, 900.0, 420.0, 1100.0, 380.0, 1000.0, 410.0, 1200.0],
        after=[None, 20.0, None, 30.0, None, 25.0, None, 35.0],
        cut=[None, False, None, False, None, False, None, False]))
    assert b is not None
    assert (b.utterances, b.overlapped, b.previous_cut, b.behaviour) == (8, 4, 0, "queued")
    assert (b.tts_p50_overlapped_ms, b.tts_p50_others_ms) == (1050.0, 405.0)
    assert (b.overlap_p50_ms, b.after_previous_p50_ms) == (450.0, 27.5)
    assert b.sentence == "translated audio queued behind the previous one: +645 ms median wait"


def test_barge_in_names_cuts_when_most_previous_translations_stopped_short() -> None:
    b = barge_in(barge_rows(overlap=[200.0, 300.0, 250.0, 100.0, None], tts=[400.0] * 5,
                            after=[10.0, 5.0, 8.0, 12.0, None], cut=[True, True, False, True, None]))
    assert (b.behaviour, b.previous_cut) == ("cut", 3)
    assert b.sentence == "cut the previous translation in 3 of 4 cases"


def test_barge_in_names_audio_played_over_the_previous_one() -> None:
    b = barge_in(barge_rows(overlap=[300.0, 300.0, None], tts=[400.0] * 3, after=[-200.0, -180.0, None],
                            cut=[False, None, None]))
    assert b.behaviour == "overlaid"
    assert b.sentence == ("played the next translation over the previous one: it started a median 190 ms "
                          "before the previous one ended (2 cases)")


def test_barge_in_without_overlap_says_so_and_other_runs_have_no_section() -> None:
    b = barge_in(barge_rows(overlap=[None, -5.0], tts=[400.0, 410.0], after=[None, 300.0], cut=[None, None]))
    assert (b.behaviour, b.overlapped) == ("none", 0)
    assert b.sentence.startswith("no translation was ready while the previous one still played (2 utt")
    assert barge_in(normalise(pd.DataFrame([row(seq=1)]))) is None


def monologue_rows() -> list[dict]:
    take = [("zeta", "single"), ("alpha", "merged"), ("mid", "merged"), ("<i>f4</i>", "split"),
            ("omega", "lost")]
    rows = []
    for conv, changed in (("m0", {}), ("m1", {"<i>f4</i>": "single"})):
        for seq, (fixture, seg) in enumerate(take, start=1):
            rows.append(row(scenario="monologue", conversation=conv, seq=seq, fixture_id=fixture,
                            segmentation=changed.get(fixture, seg)))
    return rows[::-1]  # the order of the rows does not matter: the take's does


def test_monologue_counts_segmentation_per_fixture_in_spoken_order(tmp_path: Path) -> None:
    result = build_report(write(tmp_path, monologue_rows()), charts=False)
    m = result.summary.scenarios.monologue
    assert m is not None
    table = [(r.fixture_id, r.single, r.merged, r.split, r.lost) for r in m.fixtures]
    assert table == [("zeta", 2, 0, 0, 0), ("alpha", 0, 2, 0, 0), ("mid", 0, 2, 0, 0),
                     ("<i>f4</i>", 1, 0, 1, 0), ("omega", 0, 0, 0, 2)]
    assert (m.total.single, m.total.merged, m.total.split, m.total.lost, m.total.total) == (3, 4, 1, 2, 10)
    assert m.sentence == ("3 of 10 fixtures came back as one utterance, as the manifest marks them; "
                          "4 merged with a neighbour, 1 split into several, 2 lost")
    data = json.loads((tmp_path / "summary.json").read_text())["scenarios"]["monologue"]
    assert data["fixtures"][3] == {"fixture_id": "<i>f4</i>", "single": 1, "merged": 0, "split": 1, "lost": 0,
                                   "total": 2}
    html = (tmp_path / "report.html").read_text()
    assert "<i>f4</i>" not in html and "&lt;i&gt;f4&lt;/i&gt;" in html
    lines = terminal(result.summary)
    assert f"monologue: {m.sentence}" in lines


def test_a_monologue_cut_as_the_manifest_says_gets_one_sentence() -> None:
    frame = normalise(pd.DataFrame([row(scenario="monologue", seq=i, fixture_id=f"f{i}",
                                        segmentation="single") for i in range(1, 4)]))
    m = monologue(frame)
    assert m.sentence == ("the gateway's segmentation matched the manifest: each of the 3 fixtures came back "
                          "as one utterance")


def test_the_journal_gives_the_same_sections_as_the_parquet(tmp_path: Path) -> None:
    rows = group_rows() + monologue_rows() + [
        row(scenario="barge-in", conversation="b0", seq=i, overlap_ms=(None, 300.0)[i % 2], tts_ms=400.0,
            after_previous_ms=(None, 10.0)[i % 2], previous_cut=(None, True)[i % 2]) for i in range(1, 5)]
    parquet = json.loads((build_report(write(tmp_path / "p", rows), charts=False).summary_path).read_text())
    journal = json.loads((build_report(write(tmp_path / "j", rows, journal=True), charts=False)
                          .summary_path).read_text())
    assert parquet["scenarios"] == journal["scenarios"]
    assert journal["scenarios"]["barge_in"]["previous_cut"] == 2


PAYLOADS = ("<script>document.title='x'</script>", "<img src=x onerror=\"alert(1)\">",
            "\"><svg onload=\"alert(2)\">", "</td></tr></table><iframe srcdoc=\"x\"></iframe>")


def test_every_label_from_the_samples_renders_as_text(tmp_path: Path) -> None:
    rows = []
    for i, payload in enumerate(PAYLOADS):
        common = dict(conversation=f"g{i}", direction=payload, party=payload, fixture_id=payload)
        rows.append(row(scenario="group", seq=1, listener=payload, target_language=payload,
                        t_audio_onset=1.0, **common))
        rows.append(row(scenario="group", seq=1, listener="l9", t_audio_onset=1.1, **common))
        rows.append(row(scenario="monologue", seq=i + 1, segmentation="single", **common))
        rows.append(row(scenario="barge-in", seq=i + 1, overlap_ms=100.0, previous_cut=True, **common))
    build_report(write(tmp_path, rows), charts=False, by=("direction", "party", "fixture_id"))
    dom = Elements()
    dom.feed((tmp_path / "report.html").read_text())
    assert not {t for t, _ in dom.tags} & {"script", "img", "svg", "iframe"}
    assert not any("onerror" in attrs or "onload" in attrs for _, attrs in dom.tags)
    text = "".join(dom.text)
    for payload in PAYLOADS:  # shown, as text: in the group keys, listeners, languages, fixtures
        assert text.count(payload) >= 4
