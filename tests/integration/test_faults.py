"""The fault matrix, short: four representative faults on the real stack, the restart on both engines
(bench/faults.py runs all).

Each fault is real (a stack config [faults] key, or the gateway SIGKILLed mid-utterance and restarted)
and each run must leave the tester alive, the report built, `sent == ok + timeout + error`, every
failed utterance naming its stage and why, and the outcome the fault implies (sut/faultcases.py).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from sut.faultcases import by_name
from sut.faultkit import run_fault
from tests.prereq import require_worker

pytestmark = [pytest.mark.integration, pytest.mark.slow]
PORT_OFFSET = 1475


@pytest.fixture(autouse=True)
def _prerequisites() -> None:
    require_worker()


@pytest.mark.parametrize(("name", "duration_s", "engine"), [
    ("stt-500", 12.0, "direct"),  # a service answering 500: errors at stt, with the server's reason
    ("tts-garbage", 12.0, "direct"),  # a service answering nonsense: errors at tts, naming the bad audio
    ("gateway-restart", 24.0, "direct"),  # killed mid-utterance and restarted: errors, reconnects, ok again
    ("gateway-restart-stay-down", 20.0, "direct"),  # the same without reconnect: callers stay down
    ("gateway-restart", 24.0, "locust"),  # the locust engine's callers reconnect too
])
def test_fault(tmp_path: Path, name: str, duration_s: float, engine: str) -> None:
    fault = replace(by_name([name])[0], engine=engine)
    observed = run_fault(fault, tmp_path, PORT_OFFSET, duration_s=duration_s)
    problems = observed.problems + fault.check(observed)
    print(f"{name}: {observed.describe()}")
    assert not problems, f"{problems}\n{observed.tester_log[-3000:]}"
