"""Exit codes and the two kinds of error every verb maps onto them.

0 thresholds pass, 1 a threshold failed, 2 regression against a baseline, 3 the run failed (nothing
measured: target unreachable, stack did not start), 4 bad usage or configuration. 4 is kept apart from
0–3 so that CI never reads a typo as a regression.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_THRESHOLD_FAILED = 1
EXIT_REGRESSION = 2
EXIT_RUN_FAILED = 3
EXIT_USAGE = 4


class UsageError(ValueError):
    """Bad input (a flag, a config or profile key, a fixture id): exit 4; the message names what."""


class RunError(RuntimeError):
    """The run could not measure anything: exit 3; the message says why."""


class RunFailed(RunError):
    """The run as a whole failed (no utterance measured, stack or preflight failed)."""
