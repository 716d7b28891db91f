"""Every call shape against the real reference stack: two-way, group, barge-in, monologue.

Each run goes through the direct engine (real WebRTC, real gateway, real proxy); the rows are checked
for their accounting per listener and against what the stack's own ground-truth log says happened.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from loadtest.config import RunConfig
from loadtest.fixtures import FixtureLibrary
from loadtest.report.report import build_report
from loadtest.rundir import prepare_run_dir
from loadtest.runner import execute_run
from loadtest.target import stack_target
from sut.stack import StackInfo
from tests.integration.stackrun import MANIFEST, running_stack
from tests.prereq import require_worker

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STATUSES = {"ok", "timeout", "error"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackInfo]:
    require_worker()
    with running_stack("default", tmp_path_factory.mktemp("scenarios-stack"), 530) as info:
        yield info


def run(info: StackInfo, out: Path, **scenario: object) -> tuple[pd.DataFrame, Path]:
    cfg = RunConfig().with_overrides(
        target={"url": info.target_url, "ca_cert": str(info.ca_cert)},
        scenario={"fixtures": str(MANIFEST), "response_timeout_s": 10.0, **scenario})
    run_dir = prepare_run_dir(out)
    execute_run(cfg, stack_target(info), run_dir, FixtureLibrary(MANIFEST))
    return pd.read_parquet(run_dir / "samples.parquet"), run_dir


def planned_per_listener(rows: pd.DataFrame) -> pd.Series:
    """Utterances each listener was owed: every (conversation, party, seq) its party spoke."""
    return rows.groupby(["conversation", "listener"]).size()


def test_two_way_times_both_directions_each_at_the_other_party(stack: StackInfo, tmp_path: Path) -> None:
    rows, run_dir = run(stack, tmp_path / "two-way", kind="two-way", callers=2, duration_s=30.0,
                  utterance_interval_s=7.0)
    assert set(rows["status"]) <= STATUSES
    # Turns alternate a, b, a, b, a: each party's utterances are timed at the other party only.
    assert set(zip(rows["party"], rows["listener"], rows["direction"], strict=True)) == {
        ("a", "b", "en-es"), ("b", "a", "es-en")}
    for conv, group in rows.groupby("conversation"):
        assert sorted(group["seq"]) == [1, 2, 3, 4, 5], conv  # one row per utterance, nothing lost
        assert set(group[group["seq"] % 2 == 1]["party"]) == {"a"}
        assert set(group[group["seq"] % 2 == 0]["party"]) == {"b"}
    ok = rows[rows["status"] == "ok"]
    assert len(ok) == len(rows), rows[rows["status"] != "ok"][["party", "status", "error"]]
    by_direction = ok.groupby("direction")
    assert by_direction["e2e_ms"].count().to_dict() == {"en-es": 6, "es-en": 4}
    spanish = ok[ok["direction"] == "es-en"]
    assert spanish["fixture_id"].str.startswith("es-").all()  # Spanish speech from the Spanish fixtures
    assert (spanish["reference_translation"].str.len() > 0).all()  # scored against English references
    # `loadtest report --by direction`: each direction's accounting, adding up to the run's.
    build_report(run_dir, charts=False, by=("direction",))
    summary = json.loads((run_dir / "summary.json").read_text())
    groups = summary["by"]["groups"]
    assert {k: g["utterances"]["sent"] for k, g in groups.items()} == {"en-es": 6, "es-en": 4}
    for key in ("sent", "ok", "timeout", "error"):
        assert sum(g["utterances"][key] for g in groups.values()) == summary["utterances"][key]


def test_group_times_every_listener_in_its_language(stack: StackInfo, tmp_path: Path) -> None:
    rows, run_dir = run(stack, tmp_path / "group", kind="group", callers=1, listeners=4,
                        target_languages=("es", "fr"), duration_s=20.0, utterance_interval_s=9.0,
                        listen_sample=1.0)
    # 3 utterances (0, 9, 18 s), each timed at 4 listeners: 12 rows, 3 per listener.
    conversation = rows["conversation"][0]
    assert planned_per_listener(rows).to_dict() == {(conversation, f"l{k}"): 3 for k in (1, 2, 3, 4)}
    assert (rows["status"] == "ok").all(), rows[["listener", "status", "error"]]
    assert rows.groupby("listener")["target_language"].first().to_dict() == {
        "l1": "es", "l2": "fr", "l3": "es", "l4": "fr"}
    assert rows["t_audio_onset"].notna().all()
    # Same language, same TTS producer: the two Spanish listeners hear the same packets; the spread
    # between languages is the other language's own synthesis and queue.
    spread = rows.groupby("seq")["t_audio_onset"].agg(lambda s: (s.max() - s.min()) * 1000)
    assert (spread >= 0).all() and spread.max() < 2000
    # What the listener hears: offsets in order, the whole announced audio received, decoded audibly.
    assert (rows["start_offset_ms"] > rows["e2e_ms"]).all()
    assert (rows["end_offset_ms"] > rows["e2e_ms"]).all()
    assert (rows["audio_received_ms"] >= rows["tts_audio_ms"] - 20).all()
    assert (rows["audio_gaps"] == 0).all()
    assert rows["listen_checked"].all()
    assert not rows["listen_silent"].any() and not rows["listen_clipped"].any()
    html = build_report(run_dir, charts=False).html_path.read_text()
    assert "spread" in html.lower()


def test_barge_in_starts_over_the_translation_and_the_report_names_the_queue(stack: StackInfo,
                                                                              tmp_path: Path) -> None:
    rows, run_dir = run(stack, tmp_path / "barge", kind="barge-in", callers=2, duration_s=40.0,
                        utterance_interval_s=9.0)
    assert (rows["status"] == "ok").all(), rows[["seq", "status", "error"]]
    for _conv, calls in rows.groupby("conversation"):
        calls = calls.set_index("seq").sort_index()
        for seq in calls.index[calls.index % 2 == 0]:
            lead, barge = calls.loc[seq - 1], calls.loc[seq]
            # The barge-in started 0.5 s after the lead's translated speech began, while it played.
            assert barge["t_planned"] == pytest.approx(lead["t_audio_onset"] + 0.5, abs=0.05)
            assert barge["t_planned"] < lead["t_audio_end"]
    barges = rows[rows["seq"] % 2 == 0]
    queued = barges[barges["overlap_ms"] > 0]
    assert len(queued) >= len(barges) // 2  # long leads: most barges are ready while the lead still plays
    # Their audio waited for the lead's: it began right after the lead's ended, and the wait is in tts.
    assert (queued["after_previous_ms"] < 300).all()
    leads = rows[rows["seq"] % 2 == 1]
    assert queued["tts_ms"].median() > leads["tts_ms"].median() + 200
    html = build_report(run_dir, charts=False).html_path.read_text().lower()
    assert "queued behind the previous" in html


Span = tuple[float, float]


def classify(span: Span, spans: list[Span], segments: list[Span]) -> str:
    """An utterance against the gateway's segments: none overlaps it (lost), several do (split), the
    one that does also holds another utterance (merged), or it is its own segment (single)."""
    hits = [seg for seg in segments if seg[0] < span[1] and seg[1] > span[0]]
    if not hits:
        return "lost"
    if len(hits) > 1:
        return "split"
    held = [s for s in spans if hits[0][0] < s[1] and hits[0][1] > s[0]]
    return "merged" if len(held) > 1 else "single"


@pytest.fixture(scope="module")
def long_hangover_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackInfo]:
    """A gateway whose VAD waits 900 ms of silence: pauses shorter than that merge sentences."""
    require_worker()
    state = tmp_path_factory.mktemp("monologue-stack")
    with running_stack("default", state, 550, vad_hangover_ms=900) as info:
        yield info


def test_monologue_segmentation_agrees_with_the_gateways_own_segments(long_hangover_stack: StackInfo,
                                                                    tmp_path: Path) -> None:
    info = long_hangover_stack
    rows, _ = run(info, tmp_path / "mono", kind="monologue", callers=1, duration_s=60.0)
    assert len(rows) >= 15 and set(rows["status"]) <= STATUSES
    counts = rows["segmentation"].value_counts().to_dict()
    assert set(counts) <= {"single", "merged", "split", "lost"}
    assert sum(counts.values()) == len(rows)
    # The gateway's own segments (its ground truth: speech start/end, CLOCK_MONOTONIC like ours).
    assert info.ground_truth_path is not None
    facts = [json.loads(line) for line in info.ground_truth_path.read_text().splitlines() if line.strip()]
    segments = [(f["speechStart"], f["t"]) for f in facts if f["kind"] == "speech_end"]
    spoken = rows.sort_values("seq")
    spans = list(zip(spoken["t_send_start"], spoken["t_speech_end"], strict=True))
    expected = [classify(span, spans, segments) for span in spans]
    assert list(spoken["segmentation"]) == expected
    assert counts.get("merged", 0) >= 2  # 0.45-0.8 s pauses under a 900 ms hangover do merge
    assert counts.get("single", 0) + counts.get("merged", 0) >= len(rows) - 2
