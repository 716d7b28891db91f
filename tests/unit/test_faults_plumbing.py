"""Fault plumbing without processes: the stack config's [faults] keys, the services' injected errors,
slowness and garbage, an STT failure matched to its utterance, and a reconnecting caller's plan."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from loadtest.conversation import resume
from loadtest.events import Correlator, PipelineError, Transcription
from loadtest.timeline import Status, UtteranceTimeline, outcome
from loadtest.webrtc_client import ScheduledUtterance
from sut.config import FaultsConfig, StackConfigError, load_stack_config
from sut.services.common import install_faults, with_latency_factor

pytestmark = pytest.mark.unit


def test_fault_keys_are_validated(tmp_path: Path) -> None:
    base = Path("sut/configs/fixed-delays.toml").read_text()
    assert "\n[faults]\n" in base

    def with_faults(keys: str) -> Path:
        path = tmp_path / "stack.toml"
        path.write_text(base.replace("\n[faults]\n", f"\n[faults]\n{keys}\n"))
        return path

    cfg = load_stack_config(with_faults("stt_latency_factor = 5.0\ntts_error_rate = 0.5\ntap_loss = 0.05"))
    assert cfg.faults.latency_factor("stt") == 5.0 and cfg.faults.error_rate("tts") == 0.5
    for bad in ("stt_latency_factor = 0", "tts_error_rate = 1.5", "tap_loss = 1.0"):
        path = with_faults(bad)
        with pytest.raises(StackConfigError, match=bad.split(" ")[0]):
            load_stack_config(path)


def test_latency_factor_scales_every_parameter_of_the_model() -> None:
    svc = load_stack_config("fixed-delays").stt
    slow = with_latency_factor(replace(svc, latency=replace(svc.latency, ms=300.0, max_ms=10.0)), 5.0)
    assert slow.latency.ms == 1500.0 and slow.latency.max_ms == 50.0
    assert with_latency_factor(svc, 1.0) is svc


async def _client(faults: FaultsConfig, name: str) -> TestClient:
    async def synth(_request: web.Request) -> web.Response:
        return web.Response(body=b"RIFF" + bytes(100), content_type="audio/wav")

    app = web.Application()
    app.add_routes([web.post("/synthesize", synth), web.get("/health", synth)])
    install_faults(app, name, faults, seed=1)
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


async def test_error_rate_answers_500_but_health_stays_up() -> None:
    client = await _client(FaultsConfig(tts_error_rate=1.0), "tts")
    try:
        response = await client.post("/synthesize", json={})
        assert response.status == 500 and "injected fault" in (await response.json())["error"]
        assert (await client.get("/health")).status == 200
    finally:
        await client.close()


async def test_garbage_audio_keeps_the_status_and_type_but_not_the_bytes() -> None:
    client = await _client(FaultsConfig(tts_garbage_audio=True), "tts")
    try:
        response = await client.post("/synthesize", json={})
        body = await response.read()
        assert response.status == 200 and response.content_type == "audio/wav"
        assert not body.startswith(b"RIFF") and len(body) >= 64
    finally:
        await client.close()


def _timeline(seq: int) -> UtteranceTimeline:
    tl = UtteranceTimeline(f"c-{seq}", "c", seq, "fx", "en", "es", t_planned=float(seq), wall_start=1e9)
    tl.t_send_start, tl.t_speech_end = float(seq), seq + 1.0
    return tl


def test_an_stt_failure_names_its_utterance_stage_and_reason() -> None:
    done: list[UtteranceTimeline] = []
    corr = Correlator("mic-1", done.append, lambda: 0.0)
    first, second = _timeline(1), _timeline(2)
    corr.expect(first)
    corr.expect(second)
    assert not corr.on_event(PipelineError("u-9", "stt", "HTTP 500", producer_id="other"), 3.0)
    assert corr.on_event(PipelineError("u-1", "stt", "POST …/transcribe: HTTP 500", producer_id="mic-1"), 3.0)
    assert done == [first]
    out = outcome(first)
    assert out.status is Status.ERROR and out.status_stage == "stt" and "HTTP 500" in (out.error or "")
    assert corr.on_event(Transcription("u-2", "mic-1", "hello", None, None), 4.0)  # the next one matches
    assert second.transcript == "hello"


def test_resume_keeps_the_timetable_and_skips_slots_that_passed() -> None:
    items = [ScheduledUtterance(f"f{k}", None, 4.0 * k) for k in range(5)]  # type: ignore[arg-type]
    rest = list(resume(items, 9.0))
    assert [i.fixture_id for i in rest] == ["f3", "f4"]
    assert [i.offset_s for i in rest] == [3.0, 7.0]
    assert list(resume(items, 100.0)) == []
