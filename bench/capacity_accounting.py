"""The capacity bench's accounting, as pure functions (tests/unit/test_capacity_accounting.py).

* Stage error against the stack's ground truth: the stack logs, per utterance, when the gateway heard
  its last voiced packet, emitted its transcript and translation and sent the first translated packet
  (``groundtruth.jsonl``, CLOCK_MONOTONIC, docs/protocol.md "Ground truth"); the tester times the same
  stages on the same clock from its side. Stage error = |tester's stage − ground truth's same stage|
  per utterance: what transport and the tester's own lateness add to a measurement.
* ``limited_by``: what stopped a capacity ramp.
* ``judge_runs``: which ramps count towards the figure (the host neither took the cores nor changed
  their speed).
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# stage: (tester end, tester start, ground-truth end, ground-truth start)
STAGE_MARKS = {
    "stt": ("t_transcript", "t_speech_end", "transcription", "speech_end"),
    "translation": ("t_translation", "t_transcript", "translation", "transcription"),
    "tts": ("t_audio_onset", "t_translation", "tts_first_packet", "translation"),
    "e2e": ("t_audio_onset", "t_speech_end", "tts_first_packet", "speech_end"),
}

BUSY_PERCENT = 85.0  # a core this busy (of 100 % = the whole core) over a window counts as saturated
OWN_FRACTION = 0.5  # the tester's own share of its busy core below this fraction: other work contended
# The host (hypervisor) took the tester's vCPU for at least this share of the window: it stops in slices of
# ~10 ms, as long as the lateness limit, so 1 % of the window can hold 1 % of the packets late by itself.
STEAL_PERCENT = 1.0
LIMITS = ("tester", "stack", "ports", "time")
# A run whose CPU per packet, at a step every run passed, differs from the runs' median by more than this
# ran on a host of another speed: a virtual machine's host moves it by 20-40 % with no steal at all.
SPEED_TOLERANCE = 0.10


def quantile(ordered: list[float], q: float) -> float:
    """Nearest-rank quantile of a sorted list (nan when empty)."""
    if not ordered:
        return float("nan")
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


class GroundTruth:
    """The stack's ground-truth log, read incrementally: utterance id → {kind: t (s)}, first of each kind.

    A gateway translating one utterance into several languages logs translation, tts_first_packet and
    error once per target language (``targetLanguage``): those are also kept as ``kind@language``, and
    stage_errors uses the listener's language's. With one language both keys hold the same fact.
    """

    def __init__(self) -> None:
        self.marks: dict[str, dict[str, float]] = {}
        self._partial = ""

    def feed(self, text: str) -> None:
        """More of the file; a last line without its newline waits for the rest."""
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for line in lines:
            if not line.strip():
                continue
            record = json.loads(line)
            marks = self.marks.setdefault(str(record["utteranceId"]), {})
            marks.setdefault(record["kind"], float(record["t"]))
            if record.get("targetLanguage"):
                marks.setdefault(f"{record['kind']}@{record['targetLanguage']}", float(record["t"]))


# Where a stage error comes from: each mark's transit between the two clocks' events, as
# (name, tester mark, ground-truth mark, sign): ``in`` is tester → gateway (our last voiced packet
# leaving, the gateway hearing it), the others gateway → tester (an event emitted, our receiving it).
TRANSITS = (
    ("in", "t_speech_end", "speech_end", -1.0),
    ("transcript", "t_transcript", "transcription", 1.0),
    ("translation", "t_translation", "translation", 1.0),
    ("audio", "t_audio_onset", "tts_first_packet", 1.0),
)


@dataclass
class StageErrors:
    errors_ms: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in STAGE_MARKS})
    unmatched: int = 0  # utterances the tester timed whose server id the ground truth does not know
    # Per transit (TRANSITS), ms: what the path between tester and gateway took, both clocks the host's.
    transit_ms: dict[str, list[float]] = field(default_factory=lambda: {t[0]: [] for t in TRANSITS})

    def p99_ms(self) -> dict[str, float | None]:
        return {stage: (round(quantile(sorted(v), 0.99), 2) if v else None)
                for stage, v in self.errors_ms.items()}

    def transit_summary(self) -> str:
        """``in 1.2/4.0, transcript ...``: p50/p99 ms of each transit. An utterance's stt (and e2e)
        error is its ``in`` plus its transcript (audio) transit; translation and tts errors are the
        difference of two outward transits."""
        parts = []
        for name, values in self.transit_ms.items():
            ordered = sorted(values)
            if ordered:
                parts.append(f"{name} {quantile(ordered, 0.5):.1f}/{quantile(ordered, 0.99):.1f}")
        return ", ".join(parts)


def stage_errors(measured: Iterable[Any], truth: Mapping[str, Mapping[str, float]]) -> StageErrors:
    """|tester stage − ground-truth stage| (ms) per utterance and stage, where both sides timed it.

    ``measured``: objects with ``server_utterance_id`` and the tester's ``t_*`` marks (seconds), as
    ``UtteranceTimeline``. An utterance without a server id (nothing came back) is skipped; one whose
    id the ground truth lacks is counted in ``unmatched``.
    """
    out = StageErrors()
    for tl in measured:
        server_id = getattr(tl, "server_utterance_id", None)
        if server_id is None:
            continue
        marks = truth.get(str(server_id))
        if marks is None:
            out.unmatched += 1
            continue
        language = getattr(tl, "target_language", None)
        # The listener's language's fact where the log has one per language, else the utterance's.
        mine = {kind: marks.get(f"{kind}@{language}", t) for kind, t in marks.items() if "@" not in kind}
        for name, t_mark, g_mark, sign in TRANSITS:
            t = getattr(tl, t_mark, None)
            if t is not None and g_mark in mine:
                out.transit_ms[name].append(sign * (t - mine[g_mark]) * 1000.0)
        for stage, (t_end, t_start, g_end, g_start) in STAGE_MARKS.items():
            end, start = getattr(tl, t_end, None), getattr(tl, t_start, None)
            if end is None or start is None or g_end not in mine or g_start not in mine:
                continue
            tester_s = end - start
            truth_s = mine[g_end] - mine[g_start]
            out.errors_ms[stage].append(abs(tester_s - truth_s) * 1000.0)
    return out


@dataclass(frozen=True)
class StepLoad:
    """What the limit decision needs to know of a failed step."""

    late: bool  # the tester's send lateness p99 was over the limit
    stack_failed: bool  # utterances not ok, onsets missed, callers that did not connect or dropped out
    tester_core_percent: float  # busy share of the tester's pinned core over the window
    stack_core_percent: float  # busy share of the stack's pinned core
    ports_exhausted: bool = False  # a connect failed for want of an RTC port
    tester_own_percent: float = 0.0  # the tester process's own CPU share (the rest of its core: other work)
    tester_steal_percent: float = 0.0  # the hypervisor's share of the tester's core (steal time)
    stack_steal_percent: float = 0.0  # the same for the stack's core


def limited_by(failed: StepLoad | None, *, next_step_over_ports: bool,
               busy_percent: float = BUSY_PERCENT) -> str:
    """What stopped the ramp: ``tester`` | ``stack`` | ``ports`` | ``time``.

    ``failed``: the first failing step (None: no step failed; the ramp ended on its budget or step list,
    or because the next step needs more RTC ports than the stack has: ``next_step_over_ports``).

    * ports: the RTC port range ran out (a connect failed for want of a port, or the next step would not fit);
    * tester: the tester was late (lateness p99 over the limit) while its core was busy and the stack's
      was not — or late while neither core was busy (lateness on the tester's core: its own work, or
      unpinned work sharing the core; ``per_core_measured`` tells them apart);
    * stack: the stack's core was saturated, or the stack failed utterances or calls, before the tester
      was saturated;
    * time: nothing failed before the budget (or the step list) ran out.
    """
    if failed is None:
        return "ports" if next_step_over_ports else "time"
    if failed.ports_exhausted:
        return "ports"
    tester_busy = failed.tester_core_percent >= busy_percent
    stack_busy = failed.stack_core_percent >= busy_percent
    if failed.late and tester_busy and not stack_busy:
        return "tester"
    if stack_busy or failed.stack_failed:
        return "stack"
    return "tester" if failed.late else "stack"


def disturbed_by_host(failed: StepLoad | None) -> bool:
    """Whether a ramp's stop measured the host rather than the tester and the stack: at its failing step
    the hypervisor took either pinned core for ``STEAL_PERCENT`` of the window or more."""
    if failed is None:
        return False
    return max(failed.tester_steal_percent, failed.stack_steal_percent) >= STEAL_PERCENT


def per_core_measured(limit: str, failed: StepLoad | None) -> bool:
    """Whether the largest passing step is what one tester core carries, measured, not a lower bound.

    Only when the tester's core stopped the ramp, busy (``BUSY_PERCENT``: late with CPU to spare is
    stalls, not a core's worth of callers), and mostly with the tester's own work: when other
    processes (unpinned work elsewhere on the machine) took most of that core's busy time, or the host
    took the virtual CPU itself for ``STEAL_PERCENT`` of the window (steal time), the tester got late
    sooner than it would alone, and the figure is a lower bound.
    """
    if limit != "tester" or failed is None:
        return False
    if failed.tester_steal_percent >= STEAL_PERCENT:
        return False
    if failed.tester_core_percent < BUSY_PERCENT:
        return False  # late with CPU to spare: stalls, not a full core
    return failed.tester_own_percent >= OWN_FRACTION * failed.tester_core_percent


@dataclass(frozen=True)
class RunVerdict:
    """Whether a ramp counts towards the capacity figure, and why not."""

    counted: bool
    why: str = ""  # "steal" | "speed" when left out
    speed_deviation: float | None = None  # its limiting side's CPU per packet / the runs' median − 1
    stop_deviation: float | None = None  # the same at the step that stopped it, against the other runs'


def speed_deviations(costs: Sequence[float | None]) -> list[float | None]:
    """Each cost relative to the median of the known ones (cost / median − 1); None where unknown or when
    fewer than two are known (nothing to compare with)."""
    known = [c for c in costs if c is not None and c > 0]
    if len(known) < 2:
        return [None] * len(costs)
    mid = statistics.median(known)
    return [None if c is None or c <= 0 else c / mid - 1.0 for c in costs]


def stop_deviation(own: float | None, others: Sequence[float | None]) -> float | None:
    """A run's CPU per packet at the step that stopped it against the median of the other runs' at that
    same step (own / median − 1); None without a figure on either side."""
    known = [c for c in others if c is not None and c > 0]
    if own is None or own <= 0 or not known:
        return None
    return own / statistics.median(known) - 1.0


def judge_runs(disturbed: Sequence[bool], sides: Sequence[str], costs: Mapping[str, Sequence[float | None]],
               stops: Sequence[float | None] | None = None,
               tolerance: float = SPEED_TOLERANCE) -> list[RunVerdict]:
    """Which ramps count.

    ``disturbed``: the host took a pinned core at the run's failing step (``disturbed_by_host``);
    ``sides``: which core's speed decided each run (``tester`` or ``stack``: the side that stopped it);
    ``costs``: per side, each run's CPU per packet sent at the same step (the largest every run passed);
    ``stops``: each run's ``stop_deviation`` on its side (None where no other run measured that step).
    A run the host disturbed is left out (``steal``), and so is one whose deciding side cost more or less
    than the other runs' median by over ``tolerance`` at the common step, or more at the step that
    stopped it (``speed``): the same work took another amount of CPU, so the host ran that core at
    another speed and the ramp measured that (a core faster at the stop did not stop the run early).
    Disturbed runs are not part of the median.
    """
    deviations = {side: speed_deviations([None if d else c for d, c in zip(disturbed, values, strict=True)])
                  for side, values in costs.items()}
    stops = list(stops) if stops is not None else [None] * len(sides)
    verdicts = []
    for index, (hit, side, at_stop) in enumerate(zip(disturbed, sides, stops, strict=True)):
        deviation = deviations[side][index] if side in deviations else None
        if hit:
            verdicts.append(RunVerdict(False, "steal", deviation, at_stop))
        elif abs(deviation or 0.0) > tolerance or (at_stop or 0.0) > tolerance:
            verdicts.append(RunVerdict(False, "speed", deviation, at_stop))
        else:
            verdicts.append(RunVerdict(True, "", deviation, at_stop))
    return verdicts
