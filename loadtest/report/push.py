"""`loadtest nightly --pushgateway URL`: the night's summary as gauges on a Prometheus Pushgateway.

One push per night replaces the group ``job="speechload_nightly", history="<history dir name>"`` (so a
dashboard shows the latest night of each history; Prometheus keeps the nights as a time series):

* ``speechload_nightly_stage_seconds{stage, quantile="0.5|0.95|0.99"}`` exact percentiles of the night
* ``speechload_nightly_stage_samples{stage}`` samples per stage (connect: conversations)
* ``speechload_nightly_utterances{status="sent|ok|timeout|error"}``
* ``speechload_nightly_pass_rate`` share of sent utterances ok and under the e2e target
* ``speechload_nightly_thresholds_passed_ratio`` thresholds met / thresholds
* ``speechload_nightly_verdict{kind="overall|budget|regression", verdict}`` 1 for the night's verdicts
* ``speechload_nightly_exit_code``, ``speechload_nightly_timestamp_seconds``
"""

from __future__ import annotations

import math
import time
from typing import Any

from loadtest.report.model import HistoryEntry, RunSummary

JOB = "speechload_nightly"
QUANTILES = (("0.5", "p50"), ("0.95", "p95"), ("0.99", "p99"))


class PushError(RuntimeError):
    """The Pushgateway did not take the push; the message names it and why."""


def nightly_registry(entry: HistoryEntry, summary: RunSummary) -> Any:
    from prometheus_client import CollectorRegistry, Gauge

    reg = CollectorRegistry()
    stage = Gauge("speechload_nightly_stage_seconds", "Night's exact stage percentiles (s)",
                  ["stage", "quantile"], registry=reg)
    samples = Gauge("speechload_nightly_stage_samples", "Samples per stage (connect: conversations)",
                    ["stage"], registry=reg)
    for name, st in summary.stages.items():
        samples.labels(name).set(st.count)
        for q, attr in QUANTILES:
            value = getattr(st, attr)
            if math.isfinite(value):
                stage.labels(name, q).set(value / 1000.0)
    utterances = Gauge("speechload_nightly_utterances", "Utterances by outcome", ["status"], registry=reg)
    c = summary.counts
    for status, n in (("sent", c.sent), ("ok", c.ok), ("timeout", c.timeout), ("error", c.error)):
        utterances.labels(status).set(n)
    rate = summary.rates.e2e_under_target
    Gauge("speechload_nightly_pass_rate", "Share of sent utterances ok and under the e2e target",
          registry=reg).set(rate if math.isfinite(rate) else 0.0)
    met = sum(1 for v in summary.thresholds if v.verdict == "pass")
    Gauge("speechload_nightly_thresholds_passed_ratio", "Thresholds met / thresholds",
          registry=reg).set(met / len(summary.thresholds) if summary.thresholds else 1.0)
    verdict = Gauge("speechload_nightly_verdict", "1 for each of the night's verdicts",
                    ["kind", "verdict"], registry=reg)
    verdict.labels("overall", entry.verdict).set(1)
    verdict.labels("budget", entry.budget_verdict or "none").set(1)
    verdict.labels("regression", entry.regression_verdict or "no-baseline").set(1)
    Gauge("speechload_nightly_exit_code", "The nightly's exit code", registry=reg).set(entry.exit_code)
    Gauge("speechload_nightly_timestamp_seconds", "When the night was pushed (Unix time)",
          registry=reg).set(time.time())
    return reg


def push_nightly(
    url: str, entry: HistoryEntry, summary: RunSummary, history: str, timeout_s: float = 10.0
) -> None:
    from prometheus_client import push_to_gateway

    try:
        push_to_gateway(url, job=JOB, registry=nightly_registry(entry, summary),
                        grouping_key={"history": history}, timeout=timeout_s)
    except OSError as exc:  # urllib's URLError/HTTPError are OSErrors
        raise PushError(f"push to the Pushgateway at {url} failed: {exc}") from None
