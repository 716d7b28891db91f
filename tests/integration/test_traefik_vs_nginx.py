"""Traefik in front of the stack measures the same pipeline as nginx did: the same run (fixed-delays, 3
callers) through each edge in turn, every utterance ok, and each stage's error against the stack's own
ground truth (tester − stack, per utterance; median of its absolute value) within 5 ms of nginx's.

Port offsets 1340 (nginx) and 1350 (Traefik), one stack at a time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.integration.edge_http import get
from tests.integration.stackrun import (
    ground_truth,
    run_callers,
    running_stack,
    short_fixture_ids,
    stage_truth_ms,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SAME_WITHIN_MS = 5.0
CALLERS, UTTERANCES, INTERVAL_S = 3, 4, 4.5


def measure(proxy: str, offset: int, tmp_path: Path) -> tuple[pd.DataFrame, dict[str, float]]:
    """The run's rows and, per stage, the median |tester − ground truth| in ms."""
    ids = short_fixture_ids(max_duration_s=3.5, count=UTTERANCES)
    with running_stack("fixed-delays", tmp_path / proxy, offset, proxy=proxy) as info:
        if proxy == "nginx":  # the nginx edge, as it always was: localhost, its own counters
            assert info.target_url.startswith("https://localhost:") and not info.resolve
            assert get(info, f"{info.target_url}/nginx_status").text.startswith("Active connections:")
        else:
            assert info.target_url.startswith("https://webrtc.speechload.test:") and info.traefik_api
        frame = run_callers(info, tmp_path / f"run-{proxy}", callers=CALLERS,
                            duration_s=UTTERANCES * INTERVAL_S, interval_s=INTERVAL_S, fixture_ids=ids)
        assert info.ground_truth_path is not None
        truth = ground_truth(info.ground_truth_path)
    ok = frame.set_index("server_utterance_id")
    gt = truth.loc[ok.index]
    errors = {stage: float(np.median(np.abs(ok[stage] - truth_ms)))
              for stage, truth_ms in stage_truth_ms(gt).items()}
    return frame, errors


def test_stage_errors_through_traefik_match_nginx(tmp_path: Path) -> None:
    nginx_rows, nginx = measure("nginx", 1340, tmp_path)
    traefik_rows, traefik = measure("traefik", 1350, tmp_path)
    for rows in (nginx_rows, traefik_rows):
        assert len(rows) == CALLERS * UTTERANCES
        assert list(rows["status"]) == ["ok"] * len(rows), rows[["status", "status_stage", "error"]]
    print("\nper-stage p50 |tester − ground truth| (ms), nginx vs Traefik, "
          f"{CALLERS} callers × {UTTERANCES} utterances:")
    for stage in nginx:
        print(f"  {stage:<15} nginx {nginx[stage]:6.2f}   traefik {traefik[stage]:6.2f}   "
              f"Δ {traefik[stage] - nginx[stage]:+6.2f}")
    assert nginx.keys() == traefik.keys() == {"stt_ms", "translation_ms", "tts_ms", "e2e_ms"}
    for stage in nginx:
        assert abs(traefik[stage] - nginx[stage]) <= SAME_WITHIN_MS, (stage, nginx, traefik)
