"""JUnit XML for CI: one test case per threshold and per compared stage (`--junit FILE`).

The layout follows the common JUnit schema CI servers read (Jenkins' junit-10.xsd, which GitLab, GitHub
reporters and Ant's report task accept): ``<testsuites>`` → ``<testsuite>`` (name, tests, failures, errors,
skipped, time, timestamp) → ``<testcase>`` (name, classname, time) with at most one ``<skipped>``, then
``<error>``, ``<failure>``, ``<system-out>`` in that order.

* suite ``thresholds``: a case per threshold, named by its expression; a failed or no-data threshold is a
  ``<failure>`` whose message carries the observed value; a passing one prints it in ``<system-out>``.
* suite ``regression``: a case per compared stage (``<stage> p95 vs baseline``); a regression is a
  ``<failure>``, an inconclusive stage (too few samples) is ``<skipped>``.
* suite ``run``: a failed run (or a comparison whose side has no samples) is one case with an ``<error>``.
"""

from __future__ import annotations

import math
import socket
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path

from loadtest.report.model import Comparison, RunSummary, StageComparison, ThresholdVerdict

CLASS_PREFIX = "speechload"


def _num(x: float) -> str:
    return "—" if x is None or not math.isfinite(x) else f"{x:.6g}"


def _case(suite: ET.Element, classname: str, name: str) -> ET.Element:
    return ET.SubElement(suite, "testcase", {"name": name, "classname": classname, "time": "0"})


def _threshold_case(suite: ET.Element, v: ThresholdVerdict) -> None:
    case = _case(suite, f"{CLASS_PREFIX}.thresholds", v.threshold.expression)
    observed = _num(v.observed)
    if v.verdict == "pass":
        ET.SubElement(case, "system-out").text = f"observed {observed} (pass)"
        return
    why = "no data: the metric could not be computed" if v.verdict == "no-data" else "threshold not met"
    message = f"{v.threshold.expression}: observed {observed} ({why})"
    failure = ET.SubElement(case, "failure", {"message": message, "type": v.verdict})
    failure.text = message


def _stage_line(st: StageComparison) -> str:
    p95 = next(q for q in st.quantiles if q.q == "p95")
    test = f"permutation p={st.p_value:.4g}" if st.method == "permutation" else f"{st.method} CI"
    ci = f"[{_num(p95.delta_ci.low)}, {_num(p95.delta_ci.high)}]"
    return (
        f"{st.stage} p95 {_num(p95.baseline)} -> {_num(p95.candidate)} ms "
        f"({_num(p95.delta_pct)} %, CI {ci} ms; {test}; n {st.baseline_count} vs {st.candidate_count})"
    )


def _stage_case(suite: ET.Element, st: StageComparison, minimum: int) -> None:
    case = _case(suite, f"{CLASS_PREFIX}.regression", f"{st.stage} p95 vs baseline")
    line = _stage_line(st)
    if st.inconclusive:
        message = f"inconclusive: {line}; needs >= {minimum} samples a side unless significant"
        ET.SubElement(case, "skipped", {"message": message})
    elif st.regression:
        failure = ET.SubElement(case, "failure", {"message": f"regression: {line}", "type": "regression"})
        failure.text = f"regression: {line}"
    ET.SubElement(case, "system-out").text = line


def _suite(root: ET.Element, name: str, stamp: str, host: str) -> ET.Element:
    return ET.SubElement(root, "testsuite", {"name": name, "timestamp": stamp, "hostname": host})


def _count(el: ET.Element) -> dict[str, int]:
    cases = el.iter("testcase")
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for case in cases:
        counts["tests"] += 1
        counts["failures"] += len(case.findall("failure"))
        counts["errors"] += len(case.findall("error"))
        counts["skipped"] += len(case.findall("skipped"))
    return counts


def junit_document(
    summary: RunSummary | None = None,
    comparison: Comparison | None = None,
    error: str | None = None,
    name: str = "speechload",
) -> ET.Element:
    """The <testsuites> element for a report (summary), a comparison, or an error."""
    from loadtest.report.compare import MIN_COMPARE_SAMPLES

    stamp = datetime.now(UTC).replace(tzinfo=None).isoformat(timespec="seconds")
    host = socket.gethostname()
    root = ET.Element("testsuites", {"name": name})
    if summary is not None and summary.run_failed:
        error = error or summary.run_failed
    if error is not None:
        case = _case(_suite(root, "run", stamp, host), f"{CLASS_PREFIX}.run", "run")
        ET.SubElement(case, "error", {"message": error, "type": "run-failed"}).text = error
    if summary is not None and summary.thresholds:
        suite = _suite(root, "thresholds", stamp, host)
        for v in summary.thresholds:
            _threshold_case(suite, v)
    cmp = comparison if comparison is not None else (summary.comparison if summary is not None else None)
    if cmp is not None:
        suite = _suite(root, "regression", stamp, host)
        for st in cmp.stages:
            if st.baseline_count or st.candidate_count:
                _stage_case(suite, st, MIN_COMPARE_SAMPLES)
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for suite in root.findall("testsuite"):
        counts = _count(suite)
        suite.attrib.update({k: str(v) for k, v in counts.items()} | {"time": "0"})
        for k, v in counts.items():
            totals[k] += v
    root.attrib.update({k: str(v) for k, v in totals.items() if k != "skipped"} | {"time": "0"})
    return root


def write_junit(
    path: Path,
    summary: RunSummary | None = None,
    comparison: Comparison | None = None,
    error: str | None = None,
    name: str = "speechload",
) -> Path:
    root = junit_document(summary, comparison, error, name)
    ET.indent(root)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
    return path
