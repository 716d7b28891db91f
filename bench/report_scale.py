"""Scale check of the report: 1,000,000 synthetic utterance rows -> full report (aggregates, charts, HTML).

Budget: <= 20 s and <= 2 GB peak RSS for build_report on a 2-core machine. The samples are generated in a
child process so the measured process holds only what the report itself loads.

    python bench/report_scale.py [--rows 1000000] [--dir DIR] [--keep]

Prints the figures, then one JSON line: {"rows": ..., "seconds": ..., "peak_rss_mb": ...}.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

BUDGET_S = 20.0
BUDGET_RSS_MB = 2048.0


def generate(run_dir: Path, rows: int) -> None:
    from loadtest.report.synthetic import SyntheticSpec, make_samples, write_run

    # A one-hour step run: 4 levels, 8 tester processes, RTC stats and texts like a real run.
    spec = SyntheticSpec(
        rows=rows, seed=7, steps=(50, 100, 200, 400), workers=8, duration_s=3600.0, knee_callers=250
    )
    write_run(run_dir, make_samples(spec))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--dir", type=Path, help="run directory to use (default: a temporary one)")
    ap.add_argument("--keep", action="store_true", help="keep the run directory")
    ap.add_argument("--generate-only", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.generate_only:
        generate(args.generate_only, args.rows)
        return 0

    run_dir = args.dir or Path(tempfile.mkdtemp(prefix="report-scale-"))
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, __file__, "--rows", str(args.rows), "--generate-only", str(run_dir)], check=True
    )
    gen_s = time.perf_counter() - t0
    size_mb = (run_dir / "samples.parquet").stat().st_size / 1e6
    print(
        f"generated {args.rows:,} rows in {gen_s:.1f} s (samples.parquet {size_mb:.0f} MB, not timed below)"
    )

    t_import = time.perf_counter()
    from loadtest.report.report import build_report

    import_s = time.perf_counter() - t_import
    t1 = time.perf_counter()
    result = build_report(run_dir)
    seconds = time.perf_counter() - t1
    rss = peak_rss_mb()
    s = result.summary
    e2e = s.stages["e2e"]
    print(f"imports {import_s:.1f} s; build_report {seconds:.1f} s; peak RSS {rss:.0f} MB")
    print(
        f"sent {s.counts.sent:,}  e2e p50 {e2e.p50:.0f}  p95 {e2e.p95:.0f}  p99 {e2e.p99:.0f} ms  "
        f"under target {s.rates.e2e_under_target:.1%}  levels {[lv.callers for lv in s.levels]}"
    )
    print(f"charts: {', '.join(c.name for c in result.charts)}")
    print(f"report.html {result.html_path.stat().st_size / 1e6:.1f} MB -> {result.html_path}")
    ok = seconds <= BUDGET_S and rss <= BUDGET_RSS_MB
    print(f"budget ({BUDGET_S:.0f} s, {BUDGET_RSS_MB:.0f} MB): {'OK' if ok else 'EXCEEDED'}")
    if not (args.keep or args.dir):
        shutil.rmtree(run_dir, ignore_errors=True)
    print(json.dumps({"rows": s.counts.sent, "seconds": round(seconds, 2), "peak_rss_mb": round(rss, 1)}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
