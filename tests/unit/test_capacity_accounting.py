"""The capacity bench's accounting on crafted inputs: stage error against ground truth, what stopped a
ramp (bench/capacity_accounting.py; the bench itself is timing and lives in bench/capacity.py)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from capacity_accounting import (  # noqa: E402 -- bench/ is not a package
    GroundTruth,
    RunVerdict,
    StepLoad,
    disturbed_by_host,
    judge_runs,
    limited_by,
    per_core_measured,
    quantile,
    speed_deviations,
    stage_errors,
    stop_deviation,
)

from loadtest.timeline import UtteranceTimeline  # noqa: E402

pytestmark = pytest.mark.unit


def timeline(server_id: str | None, speech_end: float, transcript: float | None, translation: float | None,
             onset: float | None) -> UtteranceTimeline:
    tl = UtteranceTimeline(utterance_id=f"u-{server_id}", conversation="c", seq=1, fixture_id="f",
                           source_language="en", target_language="es", t_planned=0.0, wall_start=0.0)
    tl.server_utterance_id = server_id
    tl.t_speech_end, tl.t_transcript = speech_end, transcript
    tl.t_translation, tl.t_audio_onset = translation, onset
    return tl


def truth_lines(server_id: str, speech_end: float, transcription: float, translation: float | None,
                first_packet: float | None) -> str:
    facts = [("speech_end", speech_end), ("transcription", transcription), ("translation", translation),
             ("tts_first_packet", first_packet)]
    return "".join(json.dumps({"kind": k, "t": t, "utteranceId": server_id, "seq": 1, "producerId": "p"})
                   + "\n" for k, t in facts if t is not None)


def test_stage_error_is_the_absolute_difference_of_the_same_stage_on_both_sides() -> None:
    truth = GroundTruth()
    # The gateway heard the end of speech 2 ms after the tester sent it, emitted the transcript at
    # 100.300 (seen at 100.303), the translation at 100.400 (seen 100.402), sent TTS at 100.800
    # (heard 100.801).
    truth.feed(truth_lines("s1", 100.002, 100.300, 100.400, 100.800))
    tl = timeline("s1", 100.000, 100.303, 100.402, 100.801)
    errors = stage_errors([tl], truth.marks)
    got = {stage: v[0] for stage, v in errors.errors_ms.items()}
    # stt: tester 303 ms, truth 298 ms; translation 99 vs 100; tts 399 vs 400; e2e 801 vs 798
    assert got == pytest.approx({"stt": 5.0, "translation": 1.0, "tts": 1.0, "e2e": 3.0}, abs=1e-6)
    assert errors.unmatched == 0
    # Where they come from: 2 ms on the way in, 3/2/1 ms on the way out (stt error = 3 + 2: out + in).
    transit = {name: v[0] for name, v in errors.transit_ms.items()}
    assert transit == pytest.approx({"in": 2.0, "transcript": 3.0, "translation": 2.0, "audio": 1.0},
                                    abs=1e-6)
    assert errors.transit_summary() == "in 2.0/2.0, transcript 3.0/3.0, translation 2.0/2.0, audio 1.0/1.0"


def test_stage_error_uses_the_listeners_language_when_the_log_has_several() -> None:
    """One utterance translated into es and fr: each listener's stages are judged against its own."""
    truth = GroundTruth()
    truth.feed(truth_lines("s1", 100.002, 100.300, None, None))
    for language, translation, first_packet in (("es", 100.400, 100.800), ("fr", 100.500, 101.000)):
        truth.feed(json.dumps({"kind": "translation", "t": translation, "utteranceId": "s1",
                               "targetLanguage": language}) + "\n")
        truth.feed(json.dumps({"kind": "tts_first_packet", "t": first_packet, "utteranceId": "s1",
                               "targetLanguage": language}) + "\n")
    spanish = timeline("s1", 100.000, 100.303, 100.402, 100.801)
    french = timeline("s1", 100.000, 100.303, 100.502, 101.001)
    french.target_language = "fr"
    errors = stage_errors([spanish, french], truth.marks)
    assert errors.errors_ms["translation"] == pytest.approx([1.0, 1.0], abs=1e-6)
    assert errors.errors_ms["tts"] == pytest.approx([1.0, 1.0], abs=1e-6)
    assert errors.errors_ms["e2e"] == pytest.approx([3.0, 3.0], abs=1e-6)


def test_stage_error_skips_what_either_side_lacks_and_counts_unknown_ids() -> None:
    truth = GroundTruth()
    truth.feed(truth_lines("s1", 10.0, 10.2, None, None))  # failed at translation on the server
    truth.feed(truth_lines("s2", 20.0, 20.2, 20.3, 20.7))
    measured = [
        timeline("s1", 9.999, 10.201, None, None),  # only stt on both sides
        timeline("s2", 19.999, 20.202, 20.303, None),  # no onset heard: no tts, no e2e
        timeline(None, 30.0, None, None, None),  # nothing came back: no server id, skipped
        timeline("s-unknown", 40.0, 40.2, 40.3, 40.7),
    ]
    errors = stage_errors(measured, truth.marks)
    assert errors.unmatched == 1
    assert len(errors.errors_ms["stt"]) == 2 and len(errors.errors_ms["translation"]) == 1
    assert errors.errors_ms["tts"] == [] and errors.errors_ms["e2e"] == []
    p99 = errors.p99_ms()
    assert p99["stt"] == pytest.approx(3.0, abs=0.01) and p99["tts"] is None


def test_p99_is_nearest_rank_over_the_steps_utterances() -> None:
    truth = GroundTruth()
    measured = []
    for i in range(200):  # stt errors of i / 10 ms: 0.0 … 19.9 ms
        sid = f"s{i}"
        truth.feed(truth_lines(sid, 0.0, 1.0, 2.0, 3.0))
        measured.append(timeline(sid, 0.0, 1.0 + i / 10_000, 2.0 + i / 10_000, 3.0 + i / 10_000))
    errors = stage_errors(measured, truth.marks)
    assert errors.p99_ms()["stt"] == pytest.approx(19.7, abs=0.01)  # rank ceil(0.99·200) = 198 → i = 197
    assert errors.p99_ms()["translation"] == pytest.approx(0.0, abs=1e-6)  # both ends shifted alike
    assert quantile([], 0.99) != quantile([], 0.99)  # nan on nothing


def test_ground_truth_reads_incrementally_and_keeps_the_first_fact_of_a_kind() -> None:
    text = truth_lines("a", 1.0, 2.0, 3.0, 4.0)
    truth = GroundTruth()
    truth.feed(text[:37])  # a line cut in two by a concurrent append
    truth.feed(text[37:])
    truth.feed(json.dumps({"kind": "transcription", "t": 9.0, "utteranceId": "a"}) + "\n")
    assert truth.marks == {"a": {"speech_end": 1.0, "transcription": 2.0, "translation": 3.0,
                                 "tts_first_packet": 4.0}}


def load(late: bool = False, failed: bool = False, tester: float = 50.0, stack: float = 50.0,
         ports: bool = False) -> StepLoad:
    return StepLoad(late=late, stack_failed=failed, tester_core_percent=tester, stack_core_percent=stack,
                    ports_exhausted=ports)


@pytest.mark.parametrize(("step", "over_ports", "expected"), [
    (load(late=True, tester=97.0, stack=40.0), False, "tester"),  # the tester's core saturated first
    (load(late=True, failed=True, tester=95.0, stack=60.0), False, "tester"),  # late first, then failures
    (load(late=True, tester=97.0, stack=96.0), False, "stack"),  # both saturated: the stack's counts
    (load(failed=True, tester=40.0, stack=70.0), False, "stack"),  # the stack failed utterances
    (load(stack=99.0), False, "stack"),
    (load(late=True, failed=True, tester=50.0, stack=95.0), False, "stack"),
    (load(late=True, tester=30.0, stack=20.0), False, "tester"),  # late with idle cores: the loop stalled
    (load(failed=True, ports=True, stack=30.0), False, "ports"),
    (None, True, "ports"),  # every step passed; the next would not fit the RTC ports
    (None, False, "time"),  # every step passed before the budget or the step list ran out
])
def test_limited_by(step: StepLoad | None, over_ports: bool, expected: str) -> None:
    assert limited_by(step, next_step_over_ports=over_ports) == expected


def test_callers_per_core_is_measured_only_when_the_testers_own_work_filled_its_core() -> None:
    own = StepLoad(late=True, stack_failed=False, tester_core_percent=95.0, stack_core_percent=40.0,
                   tester_own_percent=80.0)
    crowded = StepLoad(late=True, stack_failed=False, tester_core_percent=95.0, stack_core_percent=40.0,
                       tester_own_percent=20.0)  # other processes took most of the tester's core
    assert limited_by(own, next_step_over_ports=False) == "tester" and per_core_measured("tester", own)
    assert limited_by(crowded, next_step_over_ports=False) == "tester"
    assert not per_core_measured("tester", crowded)  # a lower bound
    assert not per_core_measured("stack", own) and not per_core_measured("time", None)
    # Late with a third of the core to spare: the loop stalled, the core was not full. A lower bound.
    stalled = StepLoad(late=True, stack_failed=False, tester_core_percent=67.0, stack_core_percent=80.0,
                       tester_own_percent=67.0)
    assert limited_by(stalled, next_step_over_ports=False) == "tester"
    assert not per_core_measured("tester", stalled)
    # The host took the tester's virtual CPU for 2 % of the window: lateness it caused, a lower bound.
    stolen = StepLoad(late=True, stack_failed=False, tester_core_percent=95.0, stack_core_percent=40.0,
                      tester_own_percent=80.0, tester_steal_percent=2.0)
    assert limited_by(stolen, next_step_over_ports=False) == "tester"
    assert not per_core_measured("tester", stolen)
    assert disturbed_by_host(stolen) and not disturbed_by_host(own) and not disturbed_by_host(None)
    stack_stolen = StepLoad(late=True, stack_failed=True, tester_core_percent=60.0, stack_core_percent=90.0,
                            stack_steal_percent=5.0)
    assert disturbed_by_host(stack_stolen)


def test_core_ticks_split_each_usable_cpu_and_derive_busy_and_steal() -> None:
    from procstat import CLK_TCK, CORE_FIELDS, core_ticks, cores_busy_s, cores_steal_s

    ticks = core_ticks()
    assert set(os.sched_getaffinity(0)) <= set(ticks)
    for cpu, split in ticks.items():
        assert tuple(split) == CORE_FIELDS and all(v >= 0 for v in split.values())
        busy, steal = cores_busy_s(ticks)[cpu], cores_steal_s(ticks)[cpu]
        assert 0.0 <= steal <= busy  # steal counts as busy (it is not idle)
    crafted = {0: dict(zip(CORE_FIELDS, (100, 0, 50, 800, 50, 0, 0, 30), strict=True))}
    # busy: all but idle and iowait (user + system + steal here)
    assert cores_busy_s(crafted)[0] == pytest.approx(180 / CLK_TCK)
    assert cores_steal_s(crafted)[0] == pytest.approx(30 / CLK_TCK)


def test_speed_deviation_is_relative_to_the_median_of_the_known_costs() -> None:
    assert speed_deviations([40.0, 48.0, 40.0, None]) == pytest.approx([0.0, 0.2, 0.0, None])
    assert speed_deviations([40.0, 50.0]) == pytest.approx([-1 / 9, 1 / 9])  # median of two: their mean
    assert speed_deviations([40.0, None]) == [None, None]  # one run: nothing to compare with


def test_a_run_on_a_slower_or_faster_host_is_left_out_and_steal_first() -> None:
    """Three ramps: run 2's tester needed 20 % more CPU for the same packets (the host slowed its core),
    run 3 was stopped by the stack, whose cost matches the others'. Run 4 had steal at its failing step:
    left out for that, and its cost (off by 50 %) does not move the median."""
    costs = {"tester": [40.0, 48.0, 41.0, 60.0], "stack": [30.0, 30.0, 31.0, 45.0]}
    verdicts = judge_runs([False, False, False, True], ["tester", "tester", "stack", "tester"], costs)
    assert [v.counted for v in verdicts] == [True, False, True, False]
    assert [v.why for v in verdicts] == ["", "speed", "", "steal"]
    # The median of the undisturbed testers' costs is 41: run 2 is +17 %, run 1 -2.4 %.
    assert verdicts[1].speed_deviation == pytest.approx(48 / 41 - 1)
    assert verdicts[0].speed_deviation == pytest.approx(40 / 41 - 1)
    # A faster core is as foreign as a slower one.
    fast = judge_runs([False] * 3, ["tester"] * 3, {"tester": [40.0, 40.0, 34.0], "stack": [None] * 3})
    assert [v.why for v in fast] == ["", "", "speed"]


def test_runs_without_a_common_step_all_count() -> None:
    unknown: list[float | None] = [None, None]
    verdicts = judge_runs([False, False], ["tester", "stack"], {"tester": unknown, "stack": unknown})
    assert verdicts == [RunVerdict(True), RunVerdict(True)]


def test_a_run_slower_only_at_the_step_that_stopped_it_is_left_out_a_faster_one_is_not() -> None:
    """At the common step all three cost the same; run 2 then stopped at a step where its stack cost 13 %
    more than the other runs' at that step (they passed it): the host slowed that core then."""
    assert stop_deviation(91.0, [80.5, 80.0, None]) == pytest.approx(91.0 / 80.25 - 1)
    assert stop_deviation(91.0, []) is None and stop_deviation(None, [80.0]) is None
    costs = {"tester": [50.0, 50.0, 50.0], "stack": [80.0, 81.0, 82.0]}
    verdicts = judge_runs([False] * 3, ["stack"] * 3, costs, stops=[None, 0.13, -0.2])
    assert [v.why for v in verdicts] == ["", "speed", ""]  # faster at its stop: that did not stop it early
    assert verdicts[1].stop_deviation == pytest.approx(0.13)
