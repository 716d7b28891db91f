"""es→en, end to end: a caller speaks the synthesized Spanish fixtures into the real reference stack
(speaker source es, target en; listener target en) and hears English. Model engines (default config)
and real engines (pocketsphinx has no Spanish model: the corpus-match fallback; Apertium spa-eng;
espeak-ng in English)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from loadtest.config import RunConfig
from loadtest.fixtures import FixtureLibrary
from loadtest.rundir import prepare_run_dir
from loadtest.runner import execute_run
from loadtest.target import stack_target
from sut.stack import StackInfo
from tests.integration.stackrun import MANIFEST, ground_truth, running_stack, stage_truth_ms

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TRANSPORT_TOLERANCE_MS = 20.0  # tester vs ground truth on one clock: transport only (test_pipeline.py)


def spanish_ids(count: int) -> tuple[str, ...]:
    library = FixtureLibrary(MANIFEST)
    ids = sorted(library.ids_for("es"), key=lambda i: library.fixture(i).duration_s)
    return tuple(ids[:count])


def run_es_en(info: StackInfo, out: Path, fixture_ids: tuple[str, ...], interval_s: float) -> pd.DataFrame:
    cfg = RunConfig().with_overrides(
        target={"url": info.target_url, "ca_cert": str(info.ca_cert)},
        scenario={
            "callers": 1, "duration_s": len(fixture_ids) * interval_s, "utterance_interval_s": interval_s,
            "fixture_ids": fixture_ids, "response_timeout_s": 15.0, "fixtures": str(MANIFEST),
            "source_language": "es", "target_language": "en",
        },
    )
    run_dir = prepare_run_dir(out)
    execute_run(cfg, stack_target(info), run_dir, FixtureLibrary(MANIFEST))
    return pd.read_parquet(run_dir / "samples.parquet")


def check_call(frame: pd.DataFrame, info: StackInfo) -> None:
    """Every utterance ok, recognised in Spanish, translated into English, heard in English; the
    gateway made English TTS only, and the tester's stages agree with its log."""
    assert len(frame) >= 3
    assert list(frame["status"]) == ["ok"] * len(frame), frame[["status", "status_stage", "error"]]
    assert (frame["source_language"] == "es").all() and (frame["target_language"] == "en").all()
    assert (frame["wer"] == 0).all(), frame[["transcript", "reference_transcript"]]
    assert frame["t_audio_onset"].notna().all()
    assert info.ground_truth_path is not None
    log = pd.read_json(info.ground_truth_path, lines=True)
    per_language = log[log["kind"].isin(["translation", "tts_first_packet"])]
    assert set(per_language["targetLanguage"]) == {"en"}, per_language
    truth = ground_truth(info.ground_truth_path, language="en").loc[frame["server_utterance_id"]]
    for stage, truth_ms in stage_truth_ms(truth).items():
        diff = frame[stage].to_numpy() - truth_ms.to_numpy()
        assert np.abs(diff).max() <= TRANSPORT_TOLERANCE_MS, (stage, diff)


def test_model_engines_es_to_en(tmp_path: Path, state_dir: Path) -> None:
    ids = spanish_ids(4)
    with running_stack("default", state_dir, port_offset=420) as info:
        frame = run_es_en(info, tmp_path / "run", ids, interval_s=6.0)
        check_call(frame, info)
    # The model translation answers the English reference itself.
    assert (frame["translation"] == frame["reference_translation"]).all(), frame[["translation"]]


def test_real_engines_es_to_en(tmp_path: Path, state_dir: Path) -> None:
    ids = spanish_ids(4)
    with running_stack("real", state_dir, port_offset=440) as info:
        frame = run_es_en(info, tmp_path / "run", ids, interval_s=7.0)
        check_call(frame, info)
    print("\n" + frame[["fixture_id", "translation", "reference_translation", "chrf", "e2e_ms"]].to_string())
    # Apertium's English, not the Spanish echoed (test_services_es_en.py measures its chrF per clip).
    assert (frame["translation"] != frame["transcript"]).all()
    assert frame["chrf"].mean() >= 30.0, frame[["translation", "reference_translation", "chrf"]]
