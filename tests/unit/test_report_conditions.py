"""The report's adverse conditions: configured vs injected vs observed loss from cumulative row counters,
latency and quality per profile and per SNR with the e2e target's verdict, the charts and summary.json."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from loadtest.report.conditions import condition_rows, impairment_checks, summarise_conditions
from loadtest.report.conditions_model import conditions_json, impairment_json
from loadtest.report.frame import normalise
from loadtest.report.report import build_report
from loadtest.report.synthetic import SyntheticSpec, make_samples, write_run

pytestmark = pytest.mark.unit

RUN_JSON = {"impairment": {"profiles": {
    "lossy-5": {"uplink": {"configured_loss": 0.05, "configured_delay_ms": 0.0},
                "downlink": {"configured_loss": 0.05, "configured_delay_ms": 0.0}},
    "none": {"uplink": {"configured_loss": 0.0}, "downlink": {"configured_loss": 0.0}}}}}


def conversation(name: str, profile: str | None, rows: int, per_row: int, drop_every: int) -> pd.DataFrame:
    """Rows of one conversation whose counters grow per row, as the journal writes them."""
    k = np.arange(1, rows + 1)
    packets = k * per_row
    frame = pd.DataFrame({
        "worker": "w:1", "conversation": name, "status": "ok", "e2e_ms": 1200.0 + 10 * k,
        "connect_ms": 100.0, "wer": 0.1, "chrf": 80.0, "impairment": profile, "snr_db": np.nan,
        "net_up_packets": packets, "net_up_dropped": packets // drop_every, "net_up_delayed": 0,
        "net_up_delay_ms": 0.0, "net_down_packets": packets // 2,
        "net_down_dropped": packets // 2 // drop_every, "net_down_delayed": 0, "net_down_delay_ms": 0.0,
        # The SFU reports lag: expected is behind what was sent, lost in proportion.
        "sfu_up_expected": packets - per_row // 2, "sfu_up_lost": (packets - per_row // 2) // drop_every,
        "rx_down_expected": packets // 2, "rx_down_lost": packets // 2 // drop_every,
    })
    return frame.sample(frac=1.0, random_state=1)  # the journal's order is completion order, not growth


def test_each_conversation_counts_once_with_its_latest_reading() -> None:
    frame = normalise(pd.concat([
        conversation("c1", "lossy-5", rows=5, per_row=400, drop_every=20),
        conversation("c2", "lossy-5", rows=3, per_row=400, drop_every=20),
        conversation("c3", "none", rows=4, per_row=400, drop_every=10**9),
    ], ignore_index=True))
    checks = {c.profile: c for c in impairment_checks(frame, RUN_JSON)}
    lossy = checks["lossy-5"]
    assert lossy.conversations == 2
    assert lossy.uplink.packets == 2000 + 1200 and lossy.uplink.dropped == 100 + 60
    assert lossy.uplink.injected_loss == pytest.approx(0.05)
    assert lossy.uplink.observed_expected == 1800 + 1000
    assert lossy.uplink.observed_loss == pytest.approx((90 + 50) / 2800)
    assert lossy.uplink.configured_loss == 0.05 and lossy.downlink.observed_loss == pytest.approx(0.05)
    assert checks["none"].uplink.injected_loss == 0.0
    doc = impairment_json(summarise_conditions(frame, RUN_JSON, 1500.0))
    assert doc is not None and doc["profile"] == "mixed" and doc["uplink"] is None
    assert [p["profile"] for p in doc["profiles"]] == ["lossy-5", "none"]
    single = impairment_json(summarise_conditions(frame[frame["impairment"] == "lossy-5"], RUN_JSON, 1500.0))
    assert single is not None and single["profile"] == "lossy-5"
    assert single["uplink"]["injected_loss"] == pytest.approx(0.05)
    json.dumps(single, allow_nan=False)  # summary.json refuses NaN


def test_conditions_per_profile_and_snr_with_the_target_verdict() -> None:
    rows = []
    for snr, e2e, wer in ((np.nan, 1200.0, 0.0), (20.0, 1300.0, 0.2), (5.0, 1700.0, 0.8)):
        rows.append(pd.DataFrame({
            "worker": "w", "conversation": f"c{snr}", "status": ["ok"] * 9 + ["timeout"],
            "e2e_ms": [e2e] * 9 + [np.nan], "connect_ms": 90.0, "wer": wer, "chrf": 50.0, "snr_db": snr,
            "impairment": None}))
    frame = normalise(pd.concat(rows, ignore_index=True))
    by_impairment, by_snr = condition_rows(frame, 1500.0)
    assert by_impairment == []  # no caller impaired: no per-profile rows
    assert [r.condition for r in by_snr] == ["clean", "20 dB", "5 dB"]
    assert [r.verdict for r in by_snr] == ["pass", "pass", "fail"]
    assert [r.wer_mean for r in by_snr] == pytest.approx([0.0, 0.2, 0.8])
    assert by_snr[0].sent == 10 and by_snr[0].timeout == 1
    assert by_snr[0].e2e_under_target == pytest.approx(0.9)
    doc = conditions_json(summarise_conditions(frame, None, 1500.0))
    assert doc["impairment"] == [] and doc["snr_db"][2]["condition"] == "5 dB"


def test_report_of_a_run_with_conditions(tmp_path: Path) -> None:
    frame = make_samples(SyntheticSpec(rows=400, steps=(4,), workers=1))
    conversations = frame["conversation"].astype(str)
    ids = sorted(conversations.unique())
    profile = {c: ("lossy-5" if i % 2 == 0 else "none") for i, c in enumerate(ids)}
    frame["impairment"] = conversations.map(profile)
    frame["snr_db"] = conversations.map({c: (5.0 if i % 2 else np.nan) for i, c in enumerate(ids)})
    order = frame.groupby("conversation").cumcount() + 1
    frame["net_up_packets"] = order * 100.0
    frame["net_up_dropped"] = np.where(frame["impairment"] == "lossy-5", order * 5.0, 0.0)
    frame["sfu_up_expected"] = order * 100.0 - 50
    frame["sfu_up_lost"] = np.where(frame["impairment"] == "lossy-5", order * 5.0 - 2, 0.0)
    write_run(tmp_path, frame)
    (tmp_path / "run.json").write_text(json.dumps(RUN_JSON))
    result = build_report(tmp_path)
    summary = json.loads(result.summary_path.read_text())
    assert summary["impairment"]["profile"] == "mixed"
    lossy = next(p for p in summary["impairment"]["profiles"] if p["profile"] == "lossy-5")
    assert lossy["uplink"]["injected_loss"] == pytest.approx(0.05)
    assert lossy["uplink"]["configured_loss"] == 0.05
    assert {r["condition"] for r in summary["conditions"]["impairment"]} == {"lossy-5", "none"}
    assert [r["condition"] for r in summary["conditions"]["snr_db"]] == ["clean", "5 dB"]
    names = {c.name for c in result.charts}
    assert {"impairment_conditions", "snr_conditions", "impairment_loss"} <= names
    for name in ("impairment_conditions", "snr_conditions", "impairment_loss"):
        assert (tmp_path / "charts" / f"{name}.png").stat().st_size > 5000
    html = result.html_path.read_text()
    assert "Adverse conditions" in html and "configured loss" in html and "5 dB" in html
