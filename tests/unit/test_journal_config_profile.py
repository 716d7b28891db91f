"""Journal durability and merge, run config and signaling profile validation."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from loadtest.config import ConfigError, load_run_config
from loadtest.journal import JournalShard, merge_to_parquet
from loadtest.profile import ProfileError
from loadtest.profile_file import load_profile
from loadtest.timeline import RowContext, UtteranceTimeline, to_row

pytestmark = pytest.mark.unit


def row(uid: str, e2e_end: float | None = 3.0):
    tl = UtteranceTimeline(uid, "c", 1, "fx", "en", "es", t_planned=1.0, wall_start=1e9)
    tl.t_send_start, tl.t_speech_end, tl.t_transcript, tl.t_translation = 1.0, 2.0, 2.3, 2.4
    tl.t_audio_onset = e2e_end
    return to_row(tl, RowContext("run", "w", 0, 60.0, None, None, None, None, None, None, None, 1))


def test_shards_merge_exactly_once_and_survive_a_truncated_line(tmp_path: Path) -> None:
    with JournalShard(tmp_path, "a") as a, JournalShard(tmp_path, "b") as b:
        a.append(row("u1"))
        a.append(row("u2", None))
        b.append(row("u3"))
        b.append(row("u1"))  # the same utterance twice must count once
    with (tmp_path / "journal" / "b.jsonl").open("ab") as handle:
        handle.write(b'{"run_id": "run", "utterance_id": "u4", "stt_')  # killed mid-write
    result = merge_to_parquet(tmp_path)
    assert (result.rows, result.shards, result.truncated_lines, result.duplicates) == (3, 2, 1, 1)
    assert result.partial
    frame = pd.read_parquet(tmp_path / "samples.parquet")
    assert sorted(frame["utterance_id"]) == ["u1", "u2", "u3"]
    assert frame["e2e_ms"].dtype == "float64"
    assert frame.set_index("utterance_id").loc["u2", "status"] == "timeout"
    assert frame.set_index("utterance_id").loc["u1", "e2e_ms"] == pytest.approx(1000.0)


def test_run_config_errors_name_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "run.toml"
    bad.write_text('[scenario]\ncallers = "many"\n')
    with pytest.raises(ConfigError, match="scenario.callers"):
        load_run_config(bad)
    bad.write_text("[scenario]\ncallerz = 3\n")
    with pytest.raises(ConfigError, match="scenario.callerz"):
        load_run_config(bad)
    bad.write_text('[target]\nca_cert = "/nonexistent.pem"\n')
    with pytest.raises(ConfigError, match="target.ca_cert"):
        load_run_config(bad)
    with pytest.raises(ConfigError, match="run config not found"):
        load_run_config(tmp_path / "missing.toml")
    good = tmp_path / "good.toml"
    good.write_text('[scenario]\ncallers = 3\n[thresholds]\nrules = ["e2e.p95 < 1500"]\n')
    cfg = load_run_config(good)
    assert cfg.scenario.callers == 3 and cfg.thresholds == ("e2e.p95 < 1500",)


def test_unknown_profile_key_is_named(tmp_path: Path) -> None:
    source = load_profile().name
    assert source == "reference"
    text = (Path(__file__).resolve().parents[2] / "loadtest" / "profiles" / "reference.toml").read_text()
    broken = tmp_path / "mine.toml"
    broken.write_text(text.replace("[producers]\n", "[producers]\nannounce_evnt = \"x\"\n"))
    with pytest.raises(ProfileError, match="producers.announce_evnt"):
        load_profile(broken)
    broken.write_text(text.replace('event = "joinRoom"', 'event = "joinRoom"\nbogus = 1'))
    with pytest.raises(ProfileError, match="requests.join.bogus"):
        load_profile(broken)
    with pytest.raises(ProfileError, match="not found"):
        load_profile("no-such-profile")


def test_profile_fills_objects_and_strings() -> None:
    spec = load_profile().requests["connect_transport"]
    payload = spec.build({"transport_id": "t1", "dtls_parameters": {"role": "client"}})
    assert payload == {"transportId": "t1", "dtlsParameters": {"role": "client"}}
    with pytest.raises(ProfileError, match="transport_id"):
        spec.build({"dtls_parameters": {}})
