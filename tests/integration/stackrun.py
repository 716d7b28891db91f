"""Helpers to run the real reference stack and real callers against it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd

from loadtest.config import RunConfig
from loadtest.fixtures import FixtureLibrary
from loadtest.rundir import prepare_run_dir
from loadtest.runner import execute_run
from loadtest.target import stack_target
from sut.config import load_stack_config
from sut.stack import ReferenceStack, StackInfo

REPO = Path(__file__).resolve().parents[2]
MANIFEST = REPO / "fixtures" / "audio" / "manifest.json"


@contextmanager
def running_stack(config: str, state_dir: Path, port_offset: int, proxy: str = "",
                  **gateway: Any) -> Iterator[StackInfo]:
    """The stack `config` on shifted ports; `proxy`: "nginx" or "traefik" instead of the config's edge;
    `gateway`: gateway settings to change (e.g. vad_hangover_ms=900)."""
    stack_cfg = load_stack_config(config).with_port_offset(port_offset)
    if proxy:
        stack_cfg = replace(stack_cfg, proxy=replace(stack_cfg.proxy, kind=proxy))
    if gateway:
        stack_cfg = replace(stack_cfg, gateway=replace(stack_cfg.gateway, **gateway))
    stack = ReferenceStack(stack_cfg, state_dir)
    try:
        yield stack.start()
    finally:
        stack.stop()


def short_fixture_ids(max_duration_s: float, count: int) -> tuple[str, ...]:
    library = FixtureLibrary(MANIFEST)
    fixtures = [library.fixture(i) for i in library.ids]
    short = [f.id for f in sorted(fixtures, key=lambda f: f.duration_s) if f.duration_s <= max_duration_s]
    assert len(short) >= min(count, 3), "the corpus needs short clips for this test"
    return tuple(short[:count])


def run_callers(
    info: StackInfo,
    out: Path,
    *,
    callers: int,
    duration_s: float,
    interval_s: float,
    fixture_ids: tuple[str, ...],
    response_timeout_s: float = 10.0,
) -> pd.DataFrame:
    cfg = RunConfig().with_overrides(
        target={"url": info.target_url, "ca_cert": str(info.ca_cert)},
        scenario={
            "callers": callers,
            "duration_s": duration_s,
            "utterance_interval_s": interval_s,
            "fixture_ids": fixture_ids,
            "response_timeout_s": response_timeout_s,
            "fixtures": str(MANIFEST),
        },
    )
    run_dir = prepare_run_dir(out)
    library = FixtureLibrary(MANIFEST)
    execute_run(cfg, stack_target(info), run_dir, library)  # Traefik's host names → the stack's address
    return pd.read_parquet(run_dir / "samples.parquet")


def ground_truth(path: Path, language: str | None = None) -> pd.DataFrame:
    """The stack's own log: one row per utterance id, one column per kind, seconds (CLOCK_MONOTONIC).

    translation, tts_first_packet and error are logged per target language (`targetLanguage`); with
    several languages in a run, `language` keeps that one's (else each kind's first fact is taken).
    """
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    frame = pd.DataFrame(rows)
    if language is not None and "targetLanguage" in frame:
        frame = frame[frame["targetLanguage"].isna() | (frame["targetLanguage"] == language)]
    return frame.pivot_table(index="utteranceId", columns="kind", values="t", aggfunc="first")


def stage_truth_ms(gt: pd.DataFrame) -> dict[str, pd.Series]:
    """The stages as the stack's ground-truth log times them (one row per server utterance id)."""
    out = {
        "stt_ms": (gt["transcription"] - gt["speech_end"]) * 1000,
        "translation_ms": (gt["translation"] - gt["transcription"]) * 1000,
    }
    if "tts_first_packet" in gt:
        out["tts_ms"] = (gt["tts_first_packet"] - gt["translation"]) * 1000
        out["e2e_ms"] = (gt["tts_first_packet"] - gt["speech_end"]) * 1000
    return out
