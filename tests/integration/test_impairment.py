"""Adverse conditions on the real reference stack: a lossy uplink as the SFU counts it, a 200 ms path as
connect and e2e feel it, noisy speech as the real recogniser hears it (docs/impairment.md)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from loadtest.conditions import ImpairmentConfig, NoiseConfig, parse_impairment_spec
from loadtest.config import RunConfig
from loadtest.fixtures import FixtureLibrary
from loadtest.report.report import build_report
from loadtest.rundir import prepare_run_dir
from loadtest.runner import execute_run
from loadtest.target import stack_target
from sut.stack import StackInfo
from tests.integration.stackrun import MANIFEST, running_stack

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ICE_PACING_MS = 20.0  # aioice's Connection.connect() sleeps this long between its checks (RFC 8445 Ta)
SHORT = ("cards-001", "cards-003", "goforward", "something")  # 1.1-2.0 s, recognised without error


def run(info: StackInfo, out: Path, *, callers: int, duration_s: float, interval_s: float,
        fixture_ids: tuple[str, ...] = SHORT, impairment: str | None = None,
        snr_db: tuple[float | None, ...] = (), response_timeout_s: float = 10.0) -> pd.DataFrame:
    cfg = RunConfig().with_overrides(
        target={"url": info.target_url, "ca_cert": str(info.ca_cert)},
        scenario={"callers": callers, "duration_s": duration_s, "utterance_interval_s": interval_s,
                  "fixture_ids": fixture_ids, "response_timeout_s": response_timeout_s,
                  "fixtures": str(MANIFEST)})
    cfg = replace(cfg, impairment=ImpairmentConfig(parse_impairment_spec(impairment) if impairment else ()),
                  noise=NoiseConfig(snr_db))
    run_dir = prepare_run_dir(out)
    execute_run(cfg, stack_target(info), run_dir, FixtureLibrary(MANIFEST))
    return pd.read_parquet(run_dir / "samples.parquet")


def planned(callers: int, duration_s: float, interval_s: float) -> int:
    return callers * math.ceil(duration_s / interval_s)


@pytest.fixture(scope="module")
def model_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackInfo]:
    with running_stack("fixed-delays", tmp_path_factory.mktemp("stack"), port_offset=1210) as info:
        yield info


def test_lossy_uplink_as_the_sfu_counts_it(model_stack: StackInfo, tmp_path: Path) -> None:
    """lossy-5: 5 % of the speaker's packets dropped on the way, and mediasoup's receiver reports say so."""
    callers, duration, interval = 3, 36.0, 4.0
    frame = run(model_stack, tmp_path / "run", callers=callers, duration_s=duration, interval_s=interval,
                impairment="lossy-5")
    # Every planned utterance is accounted for, exactly once, in one of the three outcomes.
    assert len(frame) == planned(callers, duration, interval) == frame["utterance_id"].nunique()
    counts = frame["status"].value_counts()
    assert counts.sum() == counts.get("ok", 0) + counts.get("timeout", 0) + counts.get("error", 0)
    assert counts.get("ok", 0) >= 0.8 * len(frame), frame[["status", "status_stage", "error"]]
    assert (frame["impairment"] == "lossy-5").all()

    result = build_report(tmp_path / "run", charts=False)
    summary = json.loads(result.summary_path.read_text())
    imp = summary["impairment"]
    up, down = imp["uplink"], imp["downlink"]
    print("uplink", up, "\ndownlink", down)  # the figures, for the record (pytest -s)
    assert imp["profile"] == "lossy-5" and imp["conversations"] == callers
    assert up["configured_loss"] == pytest.approx(0.05)
    assert up["observed_expected"] >= 2000  # the SFU reported on at least 2000 of our packets
    assert abs(up["observed_loss"] - 0.05) <= 0.015  # what mediasoup counted lost
    assert abs(up["injected_loss"] - 0.05) <= 0.015  # what the tester dropped
    # The downlink (translated speech): the listener counts what our link dropped on its way in.
    assert down["packets"] >= 500
    assert abs(down["observed_loss"] - down["injected_loss"]) <= 0.01
    assert abs(down["injected_loss"] - 0.05) <= 0.025


def test_a_200_ms_path_adds_its_round_trips(model_stack: StackInfo, tmp_path: Path) -> None:
    """delay-200 (200 ms each way) against unimpaired runs (profile `none`: the hook counts, changes
    nothing), alternated, 4 of each.

    e2e grows by one trip each way (the speech up, the translated speech down): +400 ms. Connect grows by
    two round trips, the ICE check and the nomination aioice sends an ICE-lite server after it, less the
    20 ms aioice's ICE loop sleeps between checks, which an unimpaired connect waits out anyway: +780 ms.
    (Connect ends at pymediasoup's "connected", which is ICE's; DTLS completes a round trip later.)
    Connect = signaling (Socket.IO, not impaired) + the ICE handshake (`net_ice_ms`) + the end of the DTLS
    handshake (one more round trip); the growth is read
    on the handshake, each conversation's own signaling time set aside: on a shared 2-core machine the
    signaling alone varies by ±100 ms from run to run. Figures compared by their floors (least values):
    the machine only ever adds time."""
    callers, duration, interval = 2, 4.0, 4.0
    seen: dict[str, dict[str, list[float]]] = {
        n: {"connect": [], "ice": [], "signaling": [], "e2e": []} for n in ("none", "delay-200")}
    for i, name in enumerate(["none", "delay-200"] * 4):
        frame = run(model_stack, tmp_path / f"run{i}", callers=callers, duration_s=duration,
                    interval_s=interval, impairment=name)
        assert len(frame) == planned(callers, duration, interval)
        assert (frame["status"] == "ok").all(), frame[["status", "status_stage", "error"]]
        conversations = frame.drop_duplicates("conversation")
        assert conversations["net_ice_ms"].notna().all()
        seen[name]["connect"] += list(conversations["connect_ms"])
        seen[name]["ice"] += list(conversations["net_ice_ms"])
        seen[name]["signaling"] += list(conversations["connect_ms"] - conversations["net_ice_ms"])
        seen[name]["e2e"] += list(frame["e2e_ms"])
        delays = frame[["net_up_delay_ms", "net_down_delay_ms"]].dropna()
        assert np.allclose(delays, 200.0 if name == "delay-200" else 0.0)
    grew = {m: min(seen["delay-200"][m]) - min(seen["none"][m]) for m in seen["none"]}
    print(f"grew by (floors) {grew}; samples {seen}")
    assert abs(grew["e2e"] - 400.0) <= 30.0
    assert abs(grew["ice"] - (2 * 400.0 - ICE_PACING_MS)) <= 30.0  # connect's network part
    # Connect ends when DTLS is up: the handshake's flights after ICE's end cross the impaired path too.
    # mediasoup (the DTLS client of a send transport) starts it while ICE nominates, so one round trip
    # of it lies after the ICE handshake (measured: +404 ms); the Socket.IO part is not impaired.
    assert abs(grew["signaling"] - 400.0) <= 60.0


def test_noisy_speech_raises_the_real_recogniser_s_word_error_rate(tmp_path: Path) -> None:
    """Real engines (pocketsphinx, Apertium, espeak-ng); caller 0 speaks clean, caller 1 at 5 dB SNR (pink
    noise), the same clips: the SNR is on every row, and the noisy caller's WER is far higher."""
    with running_stack("real", tmp_path / "stack", port_offset=1220) as info:
        frame = run(info, tmp_path / "run", callers=2, duration_s=4 * 7.0, interval_s=7.0,
                    snr_db=(None, 5.0), response_timeout_s=15.0)
    assert len(frame) == planned(2, 28.0, 7.0)
    clean = frame[frame["user"] == 0]
    noisy = frame[frame["user"] == 1]
    assert clean["snr_db"].isna().all() and (noisy["snr_db"] == 5.0).all()
    assert set(clean["fixture_id"]) == set(noisy["fixture_id"]) == set(SHORT)
    transcribed = frame[frame["transcript"].notna()]
    assert transcribed["wer"].notna().all()  # recorded per utterance
    wer_clean = clean["wer"].mean()
    wer_noisy = noisy["wer"].fillna(1.0).mean()  # no transcript at all: every word missed
    print(f"WER clean {wer_clean:.2f}, 5 dB {wer_noisy:.2f}")
    print(frame[["user", "fixture_id", "snr_db", "status", "transcript", "wer"]].to_string())
    assert wer_clean <= 0.2
    assert wer_noisy >= wer_clean + 0.3
    result = build_report(tmp_path / "run", charts=False)
    by_snr = json.loads(result.summary_path.read_text())["conditions"]["snr_db"]
    assert [r["condition"] for r in by_snr] == ["clean", "5 dB"]
    assert by_snr[1]["wer_mean"] > by_snr[0]["wer_mean"]
