"""Smoke tests of the reference gateway (sut/gateway) against a real mediasoup worker.

Everything is real and stays on 127.0.0.1: the Node gateway and its mediasoup worker, the Python
STT/translation/TTS services, aiortc clients through pymediasoup. aioice's host-candidate gathering
is pinned to 127.0.0.1 and no STUN server is configured (aiortc would otherwise ask a public one).

Run: ``.venv/bin/pytest tests/integration/test_gateway_smoke.py -m integration -s``
(``-s`` prints the measurements; they are also written to the test's tmp dir as measurements.json).
Needs the mediasoup worker (MEDIASOUP_WORKER_BIN or /tmp/speechload-worker-path.txt) and
sut/gateway/node_modules; skips with the reason otherwise.
"""


from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from tests.integration.gateway_clients import ClipTrack, Peer, RtpArrivals, speak
from tests.integration.gateway_harness import (
    FRAME,
    GATEWAY_DIR,
    RATE,
    VAD,
    Proc,
    frame_dbfs,
    gt_lines,
    lateness_summary,
    opus_roundtrip,
    pct,
    pin_ice_to_loopback,
    scrape_metrics,
    services_available,
    start_stack,
    worker_bin,
)
from tests.prereq import missing

pytestmark = pytest.mark.integration


@pytest.fixture
async def stack_factory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Callable[..., Any]]:
    if not (GATEWAY_DIR / "node_modules" / "mediasoup").is_dir():
        missing("sut/gateway/node_modules missing: run npm install in sut/gateway")
    if worker_bin() is None:
        missing("no mediasoup worker: set MEDIASOUP_WORKER_BIN or build it (/tmp/speechload-worker-path.txt)")
    pin_ice_to_loopback(monkeypatch)
    started: list[Proc] = []

    async def factory(with_services: bool, vad: dict[str, Any] | None = None) -> dict[str, Any]:
        info, procs = await start_stack(tmp_path, with_services, vad)
        started.extend(procs)
        return info

    yield factory
    for proc in reversed(started):
        await proc.stop()


async def test_gateway_pipeline_end_to_end(stack_factory: Callable[..., Any], tmp_path: Path) -> None:
    """Speaker says clip A, pauses 0.6 s, says clip B; a listener hears both translations.

    Checks the result events (content, order per stage), the TTS audio at the listener at RTP level
    (marker bit, announced RTP timestamp, no overlap, >= 100 ms apart) and the ground-truth log, and
    measures signaling, VAD segmentation, stage latencies and injection pacing.
    """
    if not services_available():
        missing("sut/services/{stt,translation,tts}.py not all present yet")
    info = await stack_factory(with_services=True)
    room = "smoke-room"
    pause = np.zeros(int(0.6 * RATE), np.int16)

    listener = Peer(info["url"], "listener-1")
    await listener.join(room, "listener", [])
    recv, recv_connected, recv_timings = await listener.transport("recv")

    script = np.concatenate([info["samples"], pause, info["second"]["samples"]])
    speaker, track, send_timings = await speak(info, room, script)
    try:
        _, tts_info = await listener.wait_event("newProducer", 5, lambda d: d["appData"]["type"] == "tts")
        assert tts_info["appData"]["sourceProducerId"] and tts_info["peerId"] == "speaker-1"
        recv_timings["t_consume"] = time.monotonic()
        consumer, consumed = await listener.consume(recv, tts_info["id"])
        assert consumed["appData"]["type"] == "tts"
        # pymediasoup does not hand out the consumer's RTCRtpReceiver: find it by its track.
        receiver = next(r for r in recv.handler.pc.getReceivers() if r.track is consumer.track)
        arrivals = RtpArrivals(receiver)
        recv_timings["t_connected"] = await asyncio.wait_for(recv_connected, 10)
        await listener.request("resumeConsumer", {"consumerId": consumer.id})

        # Utterance 1: results on the speaker's socket and the listener's.
        t_tr, tr = await speaker.wait_event("transcription", 30)
        assert tr["text"].strip(), tr
        assert tr["final"] is True and tr["seq"] == 1 and tr["peerId"] == "speaker-1"
        t_tl, tl = await speaker.wait_event("translation", 30, lambda d: d["seq"] == 1)
        assert tl["text"].strip() and tl["targetLanguage"] == "es" and tl["utteranceId"] == tr["utteranceId"]
        t_tts, tts = await speaker.wait_event("tts", 30, lambda d: d["seq"] == 1)
        assert tts["ttsProducerId"] == tts_info["id"] and tts["durationMs"] > 0
        await listener.wait_event("tts", 5, lambda d: d["utteranceId"] == tr["utteranceId"])
        assert tr["speechEndTs"] < tr["serverTs"] < tl["serverTs"] < tts["serverTs"]

        # Utterance 2, and every stage's events in utterance order.
        _, tts2 = await speaker.wait_event("tts", 30, lambda d: d["seq"] == 2)
        for stage in ("transcription", "translation", "tts"):
            assert [d["seq"] for _, n, d in speaker.events if n == stage] == [1, 2], speaker.events
        assert not [d for _, n, d in speaker.events if n == "pipelineError"]
        # Injection is scheduled on absolute time: utterance 2 starts >= 100 ms after utterance 1's
        # audio ends. Exact on RTP time; send times also carry each first packet's lateness.
        assert (tts2["rtpTimestamp"] - tts["rtpTimestamp"]) % 2**32 >= (tts["durationMs"] + 100) * 48
        assert tts2["serverTs"] >= tts["serverTs"] + tts["durationMs"]

        # The listener hears both: the announced first packets carry the marker bit, and the packets
        # cover the audio's duration.
        def heard() -> bool:
            n2 = sum(1 for p in arrivals.packets if (p[2] - tts2["rtpTimestamp"]) % 2**32 < 2**31)
            return n2 >= int(tts2["durationMs"] / 20) - 1

        await arrivals.wait_for(heard, (tts2["durationMs"]) / 1000 + 5, "TTS audio at the listener")
        first = next(p for p in arrivals.packets if p[2] == tts["rtpTimestamp"])
        first2 = next(p for p in arrivals.packets if p[2] == tts2["rtpTimestamp"])
        assert first[3] and first2[3], "a first TTS packet lacks the marker bit"
        assert sum(1 for p in arrivals.packets if p[3]) == 2, (
            "marker bit on a packet that starts no utterance"
        )
        assert await consumer.getStats(), "consumer has no stats"

        # Ground truth: one line per fact, all on the shared monotonic clock.
        metrics = await scrape_metrics(info["url"])
        await asyncio.wait_for(speaker.sio.disconnect(), 10)
        await info["gateway"].stop()  # flushes the ground-truth stream
        lines = gt_lines(info["groundtruth"])
        for d in (tr, tts2):
            kinds = [ln["kind"] for ln in lines if ln["utteranceId"] == d["utteranceId"]]
            assert kinds == ["speech_end", "transcription", "translation", "tts_first_packet"], kinds

        obs = {"send": send_timings, "recv": recv_timings, "tr": tr, "tts": tts, "t_tr": t_tr, "t_tl": t_tl}
        obs.update({"t_tts": t_tts, "first": first, "lines": lines, "metrics": metrics, "tts2": tts2})
        measurements = measure(info, track, arrivals, obs)
    finally:
        await speaker.close()
        await listener.close()
    (tmp_path / "measurements.json").write_text(json.dumps(measurements, indent=2))
    print(json.dumps(measurements, indent=2))
    vad = measurements["vad"]
    assert vad["utterances"] == 2, vad
    # The gateway's segmentation matches the decoded clip to a frame or two (transit is ~1 ms).
    assert abs(vad["gateway_speech_start_s"] - vad["opus_first_voiced_s"]) <= 0.045, vad
    assert abs(vad["gateway_speech_end_s"] - vad["opus_last_voiced_end_s"]) <= 0.045, vad
    assert_tts_pacing(measurements)


def assert_tts_pacing(m: dict[str, Any]) -> None:
    """The injected TTS stream as RTP should carry it, at the listener and at the sender.

    Exact: every packet of utterance 1 arrives (loopback loses none), sequence numbers contiguous and
    timestamps 960 apart (20 ms at 48 kHz) -- the injector counts both and mediasoup only offsets them.
    Drift: the injector schedules each packet at start + 20 ms x index, so no lateness accumulates; the
    rate fitted through all arrivals is 20 ms per packet within 0.1 ms (0.5 %; fit noise is ~0.01 ms
    even at 5 ms jitter, and a clock off by 0.5 % would already drift a frame in 4 s). No single packet
    strays from the grid by more than 40 ms (two frames: what a jitter buffer absorbs; measured <= 4 ms).
    Lateness, sender side (send time minus due time, the gateway's histogram of every packet sent): the
    timers fire on the millisecond, measured mean 0.4 ms, 99.5 % <= 5 ms; allowed: 95 % within 10 ms and
    99 % within one frame (20 ms -- later, a packet leaves after its successor was due).
    Transit on the shared monotonic clock: each event and the first TTS packet reach the client after
    the gateway's ground-truth time of it, within 20 ms (measured 1-4 ms).
    """
    pacing = m["tts_pacing_at_listener_ms"]
    assert pacing["packets"] == pacing["packets_expected"], pacing
    assert pacing["seq_contiguous"] is True and pacing["ts_step_960"] is True, pacing
    assert pacing["rate_ms_per_packet"] == pytest.approx(20.0, abs=0.1), pacing
    assert pacing["drift_vs_20ms_grid_max_abs"] <= 40.0, pacing
    late = m["tts_send_lateness_server_ms"]
    # Scraped while utterance 2 may still be playing: all of utterance 1 counted, at most all of both.
    assert pacing["packets_expected"] < late["packets"] <= (
        pacing["packets_expected"] + pacing["packets_expected_utterance2"]), late
    assert late["le_10"] >= 0.95 and late["le_20"] >= 0.99, late
    pipeline = m["pipeline_ms"]
    for transit in ("transcription_event_delivery", "first_tts_packet_at_listener_after_send"):
        assert 0.0 <= pipeline[transit] <= 20.0, (transit, pipeline)


def measure(
    info: dict[str, Any], track: ClipTrack, arrivals: RtpArrivals, o: dict[str, Any]
) -> dict[str, Any]:
    """The numbers the gateway's author reports: signaling, segmentation, pipeline, injection pacing."""
    voiced = np.flatnonzero(frame_dbfs(info["samples"]) >= VAD["thresholdDbfs"])
    last_voiced = int(voiced[-1])
    heard = np.flatnonzero(frame_dbfs(opus_roundtrip(info["samples"])) >= VAD["thresholdDbfs"])
    speech_ends = [ln for ln in o["lines"] if ln["kind"] == "speech_end"]
    tts_pkts = [p for p in arrivals.packets if (p[2] - o["tts"]["rtpTimestamp"]) % 2**32 < 2**31]
    n_tts = int(np.ceil(o["tts"]["durationMs"] / 20))
    # Utterance 1's packets: those before utterance 2's first timestamp (at most n_tts of them).
    tts_pkts = [p for p in tts_pkts if (p[2] - o["tts2"]["rtpTimestamp"]) % 2**32 >= 2**31][:n_tts]
    gaps = np.diff([p[0] for p in tts_pkts]) * 1000
    rate = float(np.polyfit(np.arange(len(tts_pkts)), [p[0] for p in tts_pkts], 1)[0] * 1000)
    offsets = [(p[0] - tts_pkts[0][0]) * 1000 - i * 20 for i, p in enumerate(tts_pkts)]
    gt = {ln["kind"]: ln for ln in o["lines"] if ln["utteranceId"] == o["tr"]["utteranceId"]}
    return {
        "engine": info["engine"],
        "clip": info["clip"]["id"],
        "clip_manifest_speech_end_s": info["clip"].get("speech_end_s"),
        "signaling_ms": {
            "send_create_ack": (o["send"]["t_created"] - o["send"]["t_create"]) * 1000,
            "send_create_to_connected": (o["send"]["t_connected"] - o["send"]["t_create"]) * 1000,
            "send_produce_ack": o["send"].get("produce_ms"),
            "recv_create_ack": (o["recv"]["t_created"] - o["recv"]["t_create"]) * 1000,
            # a recv transport connects on its first consume
            "recv_consume_to_connected": (o["recv"]["t_connected"] - o["recv"]["t_consume"]) * 1000,
        },
        "vad": {
            "utterances": len(speech_ends),
            "reasons": [ln["reason"] for ln in speech_ends],
            # the clip analysed at the gateway's threshold, before Opus coding (clip seconds)
            "clip_first_voiced_s": int(voiced[0]) * FRAME / RATE,
            "clip_last_voiced_end_s": (last_voiced + 1) * FRAME / RATE,
            # the same after an Opus round trip: what the gateway's VAD should find
            "opus_first_voiced_s": int(heard[0]) * FRAME / RATE,
            "opus_last_voiced_end_s": (int(heard[-1]) + 1) * FRAME / RATE,
            # the gateway's segmentation mapped to clip time via our frame send times (includes the
            # ~1 ms transit)
            "gateway_speech_start_s": speech_ends[0]["speechStart"] - track.clip_frame_send_time(0),
            "gateway_speech_end_s": speech_ends[0]["t"] - track.clip_frame_send_time(0) + FRAME / RATE,
            "gateway_voiced_ms": speech_ends[0]["voicedMs"],
            "speech_end_minus_last_voiced_send_ms": (
                speech_ends[0]["t"] - track.clip_frame_send_time(last_voiced)
            )
            * 1000,
        },
        "pipeline_ms": {
            "stt_server": gt["transcription"]["t"] * 1000 - o["tr"]["speechEndTs"],
            "transcription_event_delivery": (o["t_tr"] - gt["transcription"]["t"]) * 1000,
            "translation_server": (gt["translation"]["t"] - gt["transcription"]["t"]) * 1000,
            "tts_server": (gt["tts_first_packet"]["t"] - gt["translation"]["t"]) * 1000,
            "first_tts_packet_at_listener_after_send": (o["first"][0] - gt["tts_first_packet"]["t"]) * 1000,
            "e2e_listener": (o["first"][0] - track.clip_frame_send_time(last_voiced)) * 1000,
            "tts_duration": o["tts"]["durationMs"],
            "utterance2_tts_queued": next(
                ln["queuedMs"]
                for ln in o["lines"]
                if ln["kind"] == "tts_first_packet" and ln["utteranceId"] == o["tts2"]["utteranceId"]
            ),
            "tts_gap_between_utterances": o["tts2"]["serverTs"]
            - o["tts"]["serverTs"]
            - o["tts"]["durationMs"],
            "event_gaps_client": {
                "translation": (o["t_tl"] - o["t_tr"]) * 1000,
                "tts": (o["t_tts"] - o["t_tl"]) * 1000,
            },
        },
        "tts_send_lateness_server_ms": lateness_summary(o["metrics"]),
        "tts_pacing_at_listener_ms": {
            "packets": len(tts_pkts),
            "packets_expected": n_tts,
            "packets_expected_utterance2": int(np.ceil(o["tts2"]["durationMs"] / 20)),
            "rate_ms_per_packet": rate,
            "interarrival_mean": float(np.mean(gaps)),
            "interarrival_p99": pct(list(gaps), 99),
            "interarrival_max": float(np.max(gaps)),
            "drift_vs_20ms_grid_max_abs": float(np.max(np.abs(offsets))),
            "seq_contiguous": all(
                (b[1] - a[1]) % 65536 == 1 for a, b in zip(tts_pkts, tts_pkts[1:], strict=False)
            ),
            "ts_step_960": all(
                (b[2] - a[2]) % 2**32 == 960 for a, b in zip(tts_pkts, tts_pkts[1:], strict=False)
            ),
        },
    }


async def test_gateway_reports_stage_down(stack_factory: Callable[..., Any], tmp_path: Path) -> None:
    """No services running: the media path, tap and VAD (here on the sender's RFC 6464 audio level,
    the stack's default source) still work, and the STT failure is reported as a pipelineError
    naming the stage. Also checks signaling errors and cleanup, and measures the tap's packet rate."""
    info = await stack_factory(with_services=False, vad={"source": "audio-level", "levelThresholdDbov": -45})
    speaker, track, timings = await speak(info, "down-room", info["samples"])
    try:
        t_err, err = await speaker.wait_event("pipelineError", 15)
        assert err["stage"] == "stt" and err["seq"] == 1, err
        assert "ECONNREFUSED" in err["error"] or "refused" in err["error"], err
        m0 = await scrape_metrics(info["url"])
        t0 = time.monotonic()
        await asyncio.wait_for(asyncio.sleep(1.0), 2)  # a measured interval, not a synchronisation
        m1 = await scrape_metrics(info["url"])
        rate = (m1["gateway_tap_packets_total"] - m0["gateway_tap_packets_total"]) / (time.monotonic() - t0)
        assert 45 <= rate <= 55, f"tap packet rate {rate:.1f}/s, expected ~50"
        assert m1["gateway_rooms"] == 1 and m1["gateway_peers"] == 1 and m1["gateway_utterances_total"] == 1
        async with aiohttp.ClientSession() as s, s.get(f"{info['url']}/health") as r:
            health = await r.json()
        assert health["status"] == "degraded" and health["backends"]["stt"] == "down"
        assert health["workers"] and all(w["alive"] for w in health["workers"])

        # Signaling edge cases: clear errors, the caller's own mic excluded from getProducers.
        producers = (await speaker.request("getProducers", {}))["producers"]
        assert [p["appData"]["type"] for p in producers] == ["tts"], producers
        bad = await speaker.sio.call(
            "consume", {"transportId": "nope", "producerId": "x", "rtpCapabilities": {}}
        )
        assert bad["ok"] is False and "transportId" in bad["error"], bad
        bad = await speaker.sio.call("createWebRtcTransport", {"direction": "sideways"})
        assert bad["ok"] is False and "direction" in bad["error"], bad
        stranger = Peer(info["url"], "stranger")
        await stranger.sio.connect(info["url"], transports=["websocket"], wait_timeout=10)
        bad = await stranger.sio.call("getProducers", {}, timeout=10)
        assert bad["ok"] is False and "joinRoom" in bad["error"], bad
        bad = await stranger.sio.call(
            "joinRoom", {"roomId": "down-room", "peerId": "speaker-1", "role": "speaker"}
        )
        assert bad["ok"] is False and "already in room" in bad["error"], bad
        await stranger.close()
        await speaker.request("leaveRoom", {})
        _, closed = await speaker.wait_event("producerClosed", 5)
        assert closed["id"], closed
        m2 = await scrape_metrics(info["url"])
        assert m2["gateway_rooms"] == 0 and m2["gateway_peers"] == 0 and m2["gateway_pipelines"] == 0, m2
    finally:
        await speaker.close()
    out = {
        "tap_packets_per_s": rate,
        "send_create_to_connected_ms": (timings["t_connected"] - timings["t_create"]) * 1000,
        "error": err["error"],
    }
    print(json.dumps(out, indent=2))

