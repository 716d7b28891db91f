"""Which capacity ramps count (bench/capacity_runs.py): runs compared by their CPU per packet at the
largest step every run passed, each on the side that stopped it, and the summary built from the rest."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from capacity_accounting import StepLoad  # noqa: E402 -- bench/ is not a package
from capacity_runs import RunResult, assess, summarize  # noqa: E402
from capacity_swarm import StepResult  # noqa: E402
from gateway_metrics import LOOP_DELAY, sample  # noqa: E402

pytestmark = pytest.mark.unit


def step(callers: int, *, tester_us: float, stack_us: float, fails: str | None = None) -> StepResult:
    """A step that passed, or failed for ``late`` (tester's core busy) or ``stack`` (stack's core busy)."""
    tester_core = 90.0 if fails == "late" else 60.0
    stack_core = 95.0 if fails == "stack" else 60.0
    load = StepLoad(late=fails == "late", stack_failed=fails == "stack", tester_core_percent=tester_core,
                    stack_core_percent=stack_core, tester_own_percent=tester_core)
    return StepResult(
        callers=callers, connect_failures=0, cpu_percent=tester_core, tester_core_percent=tester_core,
        stack_core_percent=stack_core, rss_mb=300.0, lateness_p50_ms=1.0,
        lateness_p99_ms=12.0 if fails == "late" else 3.0, packets=1000, planned=10, ok=10, timeout=0,
        error=0, unfinished=0, onset_misses=0,
        stack_percent={"gateway": 30.0, "mediasoup": 20.0, "other": 10.0}, machine_percent=120.0,
        loop_wait_percent=0.5, preemptions_per_s=1.0, not_ok={}, gateway_decode_failures=0,
        stage_error_p99_ms={"stt": 5.0, "translation": 1.0, "tts": 2.0, "e2e": float(callers) / 10},
        truth_unmatched=0, transit_ms="", stack_wait_percent={}, tester_steal_percent=0.0,
        stack_steal_percent=0.0, tester_us_per_packet=tester_us, stack_us_per_packet=stack_us, load=load,
        passed=fails is None, why=fails or "", gateway_loop_delay_p99_ms=callers / 20)


def test_a_run_whose_tester_cost_more_per_packet_is_left_out_and_the_rest_are_summarized() -> None:
    stack_stopped = RunResult([step(100, tester_us=70, stack_us=80), step(150, tester_us=69, stack_us=80),
                               step(180, tester_us=69, stack_us=82, fails="stack")])
    tester_stopped = RunResult([step(100, tester_us=71, stack_us=81), step(150, tester_us=70, stack_us=81),
                                step(180, tester_us=70, stack_us=81), step(200, tester_us=71, stack_us=80,
                                                                           fails="late")])
    slow_host = RunResult([step(100, tester_us=85, stack_us=79), step(150, tester_us=84, stack_us=79),
                           step(165, tester_us=85, stack_us=79, fails="late")])
    runs = [stack_stopped, tester_stopped, slow_host]
    assert [r.side for r in runs] == ["stack", "tester", "tester"]

    reference, verdicts = assess(runs)
    assert reference == 150  # the largest step all three passed
    assert [v.why for v in verdicts] == ["", "", "speed"]
    # Each run is judged on its own side: run 1 on the stack's 80 µs (median 80), run 3 on the
    # tester's 84 µs against the median 70.
    assert verdicts[0].speed_deviation == pytest.approx(0.0)
    assert verdicts[2].speed_deviation == pytest.approx(84 / 70 - 1)

    summary = summarize(runs, (0, 1), (0.1, 0.1, 0.1))
    assert [r["callers"] for r in summary["runs"]] == [150, 180]
    assert summary["callers"] == 150 and summary["callers_min"] == 150 and summary["callers_max"] == 180
    assert [r["left_out"] for r in summary["disturbed_runs"]] == ["speed"]
    assert summary["speed_reference_callers"] == 150
    assert summary["runs"][0]["us_per_packet"] == {"callers": 150, "tester": 69.0, "stack": 80.0}
    assert summary["runs"][1]["stage_error_p99_ms_by_step"][100]["e2e"] == 10.0
    # The gateway's loop delay is kept for every step, the one that stopped the run too.
    loop_delay = summary["runs"][1]["gateway_loop_delay_p99_ms_by_step"]
    assert loop_delay == {100: 5.0, 150: 7.5, 180: 9.0, 200: 10.0}
    # The median run was stopped by the stack: a lower bound, whatever the tester's core did.
    assert summary["limited_by"] == "stack" and summary["callers_per_core_is_lower_bound"]


def test_a_run_that_passed_nothing_leaves_nothing_to_compare() -> None:
    nothing = RunResult([step(10, tester_us=70, stack_us=80, fails="stack")])
    some = RunResult([step(10, tester_us=99, stack_us=80), step(50, tester_us=99, stack_us=80, fails="late")])
    reference, verdicts = assess([nothing, some])
    assert reference is None
    assert all(v.counted for v in verdicts)



def test_a_run_whose_stack_cost_more_at_the_step_that_stopped_it_is_left_out() -> None:
    """The shape of a bench seen here: 180 / 125 / 180, every run stopped by the stack, costs within 5 %
    at 125; run 2 stopped at 150, where its stack cost 13 % more than the other runs' at 150."""
    def passed(callers: int, stack_us: float = 120.0) -> StepResult:
        return step(callers, tester_us=60, stack_us=stack_us)

    first = RunResult([passed(125, 116), passed(150, 121), passed(180),
                       step(200, tester_us=60, stack_us=125, fails="stack")])
    slowed = RunResult([passed(125, 118), step(150, tester_us=60, stack_us=137, fails="stack")])
    third = RunResult([passed(125, 119), passed(150, 122), passed(180),
                       step(200, tester_us=60, stack_us=125, fails="stack")])
    reference, verdicts = assess([first, slowed, third])
    assert reference == 125
    assert [v.why for v in verdicts] == ["", "speed", ""]
    assert verdicts[1].speed_deviation == pytest.approx(0.0)  # alike at the common step
    assert verdicts[1].stop_deviation == pytest.approx(137 / 121.5 - 1)
    assert verdicts[0].stop_deviation == pytest.approx(0.0)  # run 3 stopped at 200 at the same cost


def test_gateway_samples_are_read_by_name_and_labels() -> None:
    text = (f"# TYPE {LOOP_DELAY} gauge\n{LOOP_DELAY}{{quantile=\"0.5\"}} 0.0101\n"
            f"{LOOP_DELAY}{{quantile=\"0.99\"}} 0.0213\n"
            "gateway_pipelines 12\ngateway_pipelines_total 99\n")
    assert sample(text, LOOP_DELAY, {"quantile": "0.99"}) == 0.0213
    assert sample(text, "gateway_pipelines") == 12.0  # not the _total series that shares the prefix
    assert sample(text, LOOP_DELAY) is None  # the family has labelled series only
    assert sample(text, LOOP_DELAY, {"quantile": "0.9"}) is None
    with pytest.raises(ValueError):
        sample("gateway_pipelines twelve\n", "gateway_pipelines")
