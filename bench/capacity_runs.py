"""The capacity bench's runs: one ramp's steps (``RunResult``), which runs count (``assess``), and the
summary of those that do (``summarize``). bench/capacity.py runs the ramps."""

from __future__ import annotations

import itertools
import os
import statistics
from dataclasses import dataclass, field
from typing import Any

from capacity_accounting import (
    BUSY_PERCENT,
    SPEED_TOLERANCE,
    STEAL_PERCENT,
    RunVerdict,
    disturbed_by_host,
    judge_runs,
    limited_by,
    per_core_measured,
    stop_deviation,
)
from capacity_swarm import StepResult

STAGE_ERROR_AT = (100,)  # loads whose stage error the summary prints run by run (the goal's load)


@dataclass
class RunResult:
    steps: list[StepResult] = field(default_factory=list)
    next_step_over_ports: bool = False  # the ramp passed every step the RTC ports hold

    @property
    def passing(self) -> list[StepResult]:
        # Only an unbroken run of passing steps counts: with --keep-going a later step may pass by luck.
        return list(itertools.takewhile(lambda r: r.passed, self.steps))

    @property
    def best(self) -> StepResult | None:
        return self.passing[-1] if self.passing else None

    @property
    def failed(self) -> StepResult | None:
        return self.steps[len(self.passing)] if len(self.steps) > len(self.passing) else None

    @property
    def disturbed(self) -> bool:
        failed = self.failed
        return disturbed_by_host(failed.load if failed else None)

    @property
    def limited_by(self) -> str:
        failed = self.failed
        return limited_by(failed.load if failed else None, next_step_over_ports=self.next_step_over_ports)

    @property
    def side(self) -> str:
        """Whose speed decided this run: the stack's core when it stopped the ramp, else the tester's."""
        return "stack" if self.limited_by == "stack" else "tester"

    def step(self, callers: int | None) -> StepResult | None:
        return next((s for s in self.steps if s.callers == callers), None)

    def figures(self, verdict: RunVerdict, reference: int | None) -> dict[str, Any]:
        best, failed, ref = self.best, self.failed, self.step(reference)
        return {
            "callers": best.callers if best else 0,
            "limited_by": self.limited_by,
            "disturbed": self.disturbed,
            "left_out": verdict.why or None,
            "speed_deviation": None if verdict.speed_deviation is None else round(verdict.speed_deviation, 3),
            "stop_deviation": None if verdict.stop_deviation is None else round(verdict.stop_deviation, 3),
            "us_per_packet": None if ref is None else {
                "callers": ref.callers, "tester": _round(ref.tester_us_per_packet),
                "stack": _round(ref.stack_us_per_packet)},
            "per_core_measured": per_core_measured(self.limited_by, failed.load if failed else None),
            "lateness_p99_ms": round(best.lateness_p99_ms, 2) if best else None,
            "stage_error_p99_ms": best.stage_error_p99_ms if best else None,
            "stage_error_p99_ms_by_step": {s.callers: s.stage_error_p99_ms for s in self.passing},
            "gateway_loop_delay_p99_ms_by_step": {s.callers: _round(s.gateway_loop_delay_p99_ms)
                                                  for s in self.steps},
            "cpu_percent": round(best.cpu_percent, 1) if best else None,
            "tester_core_percent": round(best.tester_core_percent, 1) if best else None,
            "stack_core_percent": round(best.stack_core_percent, 1) if best else None,
            "stopped_at": None if failed is None else {
                "callers": failed.callers, "why": failed.why,
                "tester_core_percent": round(failed.tester_core_percent, 1),
                "tester_own_percent": round(failed.cpu_percent, 1),
                "tester_steal_percent": round(failed.tester_steal_percent, 1),
                "stack_steal_percent": round(failed.stack_steal_percent, 1),
                "stack_core_percent": round(failed.stack_core_percent, 1),
                "stack_own_percent": round(sum(failed.stack_percent.values()), 1)},
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def assess(runs: list[RunResult]) -> tuple[int | None, list[RunVerdict]]:
    """Which runs count (capacity_accounting.judge_runs), comparing their CPU per packet at the reference
    step: the largest step every run the host did not disturb passed (None when one passed none)."""
    bests = [r.best.callers if r.best else 0 for r in runs if not r.disturbed]
    reference = min(bests) if bests and min(bests) > 0 else None
    costs: dict[str, list[float | None]] = {"tester": [], "stack": []}
    for run in runs:
        step = run.step(reference)
        costs["tester"].append(step.tester_us_per_packet if step else None)
        costs["stack"].append(step.stack_us_per_packet if step else None)
    stops = [_stop_deviation(run, [o for o in runs if o is not run and not o.disturbed]) for run in runs]
    return reference, judge_runs([r.disturbed for r in runs], [r.side for r in runs], costs, stops)


def _stop_deviation(run: RunResult, others: list[RunResult]) -> float | None:
    """The run's CPU per packet (its side) at its failing step against the other runs' at that step."""
    failed = run.failed
    if failed is None:
        return None
    attribute = f"{run.side}_us_per_packet"
    theirs = [getattr(step, attribute) for step in (o.step(failed.callers) for o in others) if step]
    return stop_deviation(getattr(failed, attribute), theirs)


def print_speeds(runs: list[RunResult], reference: int | None, verdicts: list[RunVerdict]) -> None:
    if reference is None:
        return
    parts = []
    for index, (run, verdict) in enumerate(zip(runs, verdicts, strict=True), start=1):
        step = run.step(reference)
        cost = None if step is None else getattr(step, f"{run.side}_us_per_packet")
        deviation = "" if verdict.speed_deviation is None else f" ({100 * verdict.speed_deviation:+.0f} %)"
        failed = run.failed
        at_stop = ("" if verdict.stop_deviation is None or failed is None else
                   f", at its stop ({failed.callers}) {100 * verdict.stop_deviation:+.0f} % vs the others")
        parts.append(f"run {index} {run.side} {_round(cost)} µs{deviation}{at_stop}"
                     + (f" left out: {verdict.why}" if verdict.why else ""))
    print(f"CPU per packet sent at {reference} callers: " + "; ".join(parts), flush=True)


def summarize(runs: list[RunResult], cores: tuple[int, int], load_start: tuple[float, ...]) -> dict[str, Any]:
    reference, verdicts = assess(runs)
    print_speeds(runs, reference, verdicts)
    all_runs = [r.figures(v, reference) for r, v in zip(runs, verdicts, strict=True)]
    # Runs that measured the host (steal, another speed) are left out while others remain.
    per_run = [f for f in all_runs if not f["left_out"]] or all_runs
    counts = [f["callers"] for f in per_run]
    median = statistics.median_low(counts)  # a value some run reached: its figures stand for all
    mid = per_run[counts.index(median)]
    print()
    left_out = len(all_runs) - len(per_run)
    print(f"largest passing step over {len(per_run)} runs: min {min(counts)}, median {median}, "
          f"max {max(counts)} callers (tester pinned to CPU {cores[0]}, stack to CPU {cores[1]})"
          + (f"; {left_out} run(s) that measured the host left out" if left_out else ""))
    print(f"limited by: {', '.join(f['limited_by'] for f in per_run)} (median run: {mid['limited_by']})")
    lower = not mid["per_core_measured"]
    if mid["limited_by"] != "tester":
        print(f"callers per core: >= {median} (a lower bound: the ramp stopped for {mid['limited_by']}, "
              "not for the tester's core)")
    elif lower:
        stop = mid["stopped_at"]
        if stop["tester_steal_percent"] >= STEAL_PERCENT:
            print(f"callers per core: >= {median} (a lower bound: the host took the tester's virtual CPU for "
                  f"{stop['tester_steal_percent']} % of the failing step's window, steal time)")
        elif stop["tester_core_percent"] < BUSY_PERCENT:
            print(f"callers per core: >= {median} (a lower bound: the tester was late with its core only "
                  f"{stop['tester_core_percent']} % busy: its loop stalled, the core was not full)")
        else:
            print(f"callers per core: >= {median} (a lower bound: the tester's core was "
                  f"{stop['tester_core_percent']} % busy, only {stop['tester_own_percent']} % of it the "
                  "tester's own work)")
    else:
        print(f"callers per core: {median} (the tester's core stopped the ramp: {mid['stopped_at']['why']})")
    if mid["stage_error_p99_ms"]:
        errors = ", ".join(f"{k} {v}" for k, v in mid["stage_error_p99_ms"].items())
        print(f"stage error p99 vs ground truth at {median} callers (ms): {errors}")
    for callers in STAGE_ERROR_AT:
        at = [f["stage_error_p99_ms_by_step"].get(callers) for f in per_run]
        if not any(at):
            continue
        print(f"stage error p99 at {callers} callers, run by run (ms): "
              + "; ".join("—" if e is None else f"stt {e['stt']}, e2e {e['e2e']}" for e in at))
    return {"callers": median, "callers_min": min(counts), "callers_max": max(counts),
            "callers_per_core": median, "callers_per_core_is_lower_bound": lower,
            "limited_by": mid["limited_by"], "lateness_p99_ms": mid["lateness_p99_ms"],
            "stage_error_p99_ms": mid["stage_error_p99_ms"], "cores": {"tester": cores[0], "stack": cores[1]},
            "loadavg": {"start": list(load_start), "end": [round(x, 2) for x in os.getloadavg()]},
            "speed_reference_callers": reference, "speed_tolerance": SPEED_TOLERANCE,
            "runs": per_run, "disturbed_runs": [f for f in all_runs if f not in per_run]}
