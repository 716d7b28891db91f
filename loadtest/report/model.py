"""Typed records that cross module lines inside `loadtest.report` (JSON only at the edge: serialize.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

# The exit codes live with the errors; the report modules read them from here.
from loadtest.errors import EXIT_OK as EXIT_OK
from loadtest.errors import EXIT_REGRESSION as EXIT_REGRESSION
from loadtest.errors import EXIT_RUN_FAILED as EXIT_RUN_FAILED
from loadtest.errors import EXIT_THRESHOLD_FAILED as EXIT_THRESHOLD_FAILED
from loadtest.report.conditions_model import ConditionsSummary
from loadtest.report.records import STAT_NAMES as STAT_NAMES
from loadtest.report.records import Interval as Interval
from loadtest.report.records import Rates as Rates
from loadtest.report.records import StageStats as StageStats
from loadtest.report.records import UtteranceCounts as UtteranceCounts
from loadtest.report.scenarios_model import GroupBy, ScenarioSections

SCHEMA_VERSION = 1

# Stage columns in the raw samples (`<stage>_ms`), in pipeline order.
STAGES: tuple[str, ...] = ("connect", "stt", "translation", "tts", "e2e")
# The stages that add up to e2e (stt + translation + tts = e2e by construction of the timeline).
PIPELINE_STAGES: tuple[str, ...] = ("stt", "translation", "tts")
# Other per-utterance numeric columns worth a distribution when present (RTC stats, quality, tester health).
EXTRA_METRICS: tuple[str, ...] = (
    "sfu_ms",  # SFU transit (profiles in mode "sfu": plain SFUs with no pipeline)
    "jitter_ms",
    "packets_lost",
    "rtt_ms",
    "send_lateness_p99_ms",
    "tts_audio_ms",
    "wer",
    "chrf",
)
# Measured by newer runs only: figures (and threshold series) when the samples have them; never invented
# as empty columns, so an older run's frame, summary and samples.csv stay as they were.
OPTIONAL_METRICS: tuple[str, ...] = (
    "start_offset_ms",  # listener experience: first translated audio − start of the source speech
    "end_offset_ms",  # end of the translated audio − end of the source speech
)
# Production per-stage budget ranges (ms): drawn as reference bands, never used as verdicts by themselves.
BUDGET_BANDS: dict[str, tuple[float, float]] = {
    "connect": (50.0, 100.0),
    "stt": (200.0, 500.0),
    "translation": (50.0, 150.0),
    "tts": (300.0, 800.0),
}
DEFAULT_TARGET_MS = 1500.0
# A regression: p95 worse by more than both of these (and significantly so).
DEFAULT_TOLERANCE_PCT = 5.0
DEFAULT_TOLERANCE_MS = 20.0


@dataclass(frozen=True)
class LevelSummary:
    """The same figures restricted to one active-caller level (step load shapes)."""

    callers: int
    counts: UtteranceCounts
    rates: Rates
    stages: dict[str, StageStats]


@dataclass(frozen=True)
class NamedCount:
    name: str
    count: int


@dataclass(frozen=True)
class Threshold:
    """A parsed budget expression such as `e2e.p95 < 1500`."""

    expression: str
    metric: str
    op: str
    limit: float


@dataclass(frozen=True)
class ThresholdVerdict:
    threshold: Threshold
    observed: float
    verdict: str  # "pass" | "fail" | "no-data"


@dataclass
class RunMetadata:
    """Where and how the run was made; every field optional so a bare `report` on old data still works."""

    run_id: str | None = None
    target: str | None = None
    config_path: str | None = None
    scenario: str | None = None
    callers: int | None = None
    workers: int | None = None
    started_at: str | None = None
    finished_at: str | None = None
    duration_s: float | None = None
    insecure_tls: bool | None = None
    python_version: str | None = None
    aiortc_version: str | None = None
    locust_version: str | None = None
    pymediasoup_version: str | None = None
    tester_version: str | None = None
    git_commit: str | None = None
    git_dirty: bool | None = None
    hostname: str | None = None
    command: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class StageComparison:
    """Baseline vs candidate for one stage: quantile deltas with bootstrap CIs and a rank test."""

    stage: str
    baseline_count: int
    candidate_count: int
    quantiles: tuple[QuantileDelta, ...]
    mannwhitney_p: float  # one-sided: candidate stochastically larger (slower) than baseline
    significant: bool  # the p95 difference is significantly above zero (permutation test or bootstrap CI)
    regression: bool  # significant AND beyond both tolerances
    improvement: bool  # mirror image, for the report only
    enough_samples: bool = True  # both sides have MIN_COMPARE_SAMPLES
    inconclusive: bool = False  # not enough samples and no significant change: neither pass nor regression
    method: str = "bootstrap"  # "permutation" | "bootstrap" | "none" (a side without samples)
    p_value: float = float("nan")  # one-sided permutation p (candidate slower); NaN for the bootstrap


@dataclass(frozen=True)
class QuantileDelta:
    q: str  # "p50" | "p95" | "p99"
    baseline: float
    candidate: float
    delta_ms: float
    delta_pct: float
    delta_ci: Interval


@dataclass(frozen=True)
class Comparison:
    baseline_dir: str
    candidate_dir: str
    tolerance_pct: float
    tolerance_ms: float
    stages: tuple[StageComparison, ...]
    baseline_rates: Rates | None
    candidate_rates: Rates | None

    @property
    def regressions(self) -> list[str]:
        return [s.stage for s in self.stages if s.regression]

    @property
    def inconclusive(self) -> list[str]:
        """Stages too small to judge (and not a significant change): the comparison cannot pass."""
        return [s.stage for s in self.stages if s.inconclusive]

    @property
    def verdict(self) -> str:
        """regression > inconclusive > pass."""
        return "regression" if self.regressions else "inconclusive" if self.inconclusive else "pass"


@dataclass(frozen=True)
class PlacementGroup:
    placement: str  # "same-node" | "cross-node"
    sent: int
    ok: int
    timeout: int
    error: int
    stage: str  # the headline stage of these rows: e2e, or sfu for a plain SFU
    p50_ms: float | None
    p95_ms: float | None
    top_failed_stage: str | None  # where most of the group's failed utterances stopped


@dataclass
class RunSummary:
    """Everything summary.json says about one run."""

    target_ms: float
    partial: bool
    source: str
    counts: UtteranceCounts
    rates: Rates
    stages: dict[str, StageStats]
    metrics: dict[str, StageStats]
    levels: list[LevelSummary]
    capacity_callers: int | None
    timeouts_by_stage: list[NamedCount]
    errors_by_stage: list[NamedCount]
    top_errors: list[NamedCount]
    thresholds: list[ThresholdVerdict]
    metadata: RunMetadata
    warnings: list[str]
    run_failed: str | None
    bootstrap_resamples: int
    bootstrap_seed: int
    comparison: Comparison | None = None
    verdict: str = "pass"  # run-failed > regression > fail > inconclusive > pass
    exit_code: int = EXIT_OK
    strict: bool = False  # an inconclusive comparison exits 2 instead of 0

    @property
    def budget_verdict(self) -> str:
        """The thresholds alone: pass | fail (a no-data threshold fails)."""
        return "fail" if any(v.verdict != "pass" for v in self.thresholds) else "pass"

    @property
    def regression_verdict(self) -> str | None:
        """The baseline comparison alone: pass | regression | inconclusive; None without a baseline."""
        return self.comparison.verdict if self.comparison else None
    placement: list[PlacementGroup] = field(default_factory=list)  # same- vs cross-replica conversations
    conditions: ConditionsSummary = field(default_factory=ConditionsSummary)  # impairment profiles, SNRs
    proxy: dict[str, object] | None = None  # the proxy's counters over the run (report/proxy.py)
    reconnects: int = 0  # callers' successful reconnects after the server dropped them (scenario.reconnect)
    by: GroupBy | None = None  # `report --by COLUMN[,COLUMN…]`: the figures per group
    scenarios: ScenarioSections = field(default_factory=ScenarioSections)  # only what the samples carry


@dataclass(frozen=True)
class ChartFile:
    """One chart, written as PNG and SVG; `svg` is kept in memory for inlining into the HTML."""

    name: str
    title: str
    caption: str
    png: Path
    svg_path: Path
    svg: str


@dataclass(frozen=True)
class ReportResult:
    summary: RunSummary
    exit_code: int
    summary_path: Path
    html_path: Path
    charts: tuple[ChartFile, ...]
    csv_path: Path | None = None

    @property
    def verdicts(self) -> list[ThresholdVerdict]:
        return self.summary.thresholds

    @property
    def partial(self) -> bool:
        return self.summary.partial


@dataclass
class HistoryEntry:
    """One nightly run as index.json records it."""

    id: str
    dir: str  # relative to the history directory
    started_at: str
    finished_at: str
    exit_code: int  # the nightly's final exit code: 0 marks a good run (a future baseline)
    run_exit_code: int  # what run_fn returned
    verdict: str
    partial: bool
    baseline: str | None
    regressions: list[str]
    sent: int
    error_rate: float | None
    timeout_rate: float | None
    e2e_under_target: float | None
    p50: dict[str, float | None] = field(default_factory=dict)
    p95: dict[str, float | None] = field(default_factory=dict)
    # Added later (older index entries lack them): the two verdicts apart, and what the baseline rests on.
    budget_verdict: str | None = None  # pass | fail | None (run failed)
    regression_verdict: str | None = None  # pass | regression | inconclusive | None (no baseline)
    inconclusive: list[str] = field(default_factory=list)
    baseline_rule: str | None = None  # "last-completed" | "pinned" | "given"
    counts: dict[str, int] = field(default_factory=dict)  # samples per stage (connect: conversations)
    p99: dict[str, float | None] = field(default_factory=dict)

    @property
    def good(self) -> bool:
        return self.exit_code == EXIT_OK

    @property
    def completed(self) -> bool:
        """The run finished and measured something (its budget verdict does not matter)."""
        return self.run_exit_code in (0, 1, 2) and self.verdict != "run-failed" and not self.partial

    def samples(self, stage: str = "e2e") -> int:
        """Samples of a stage; entries written before `counts` existed know only `sent`."""
        return int(self.counts.get(stage, self.sent if not self.counts else 0))
