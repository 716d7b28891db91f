"""Answers and handshakes as the profile reads them; credentials per caller; SFU transit correlation.

No network: SignalingChannel's answer rules and handshake are pure functions of the profile.
"""

from __future__ import annotations

from pathlib import Path

import jwt
import pytest

from loadtest.credentials import Credentials, credentials_for, load_credentials, redact
from loadtest.profile import CredentialSpec, ProfileError
from loadtest.profile_file import load_profile
from loadtest.session import Party, session_variables
from loadtest.signaling import SignalingChannel, SignalingError, server_text
from loadtest.timeline import UtteranceTimeline, outcome, stage_latencies
from loadtest.transit import VOICED_LEVEL, TransitCorrelator, VoicedArrivalMonitor

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
FOREIGN = REPO / "sut" / "foreign" / "profile.toml"
SECRET = "unit-test-secret-that-is-long-enough-for-hs256"


def channel(profile: str | Path, variables: dict | None = None) -> SignalingChannel:
    return SignalingChannel("http://127.0.0.1:9", load_profile(profile), False, 5.0, variables)


def test_wrapped_answers_give_their_data_or_the_servers_reason() -> None:
    ch = channel("reference")
    assert ch.unwrap("join", {"ok": True, "data": {"rtpCapabilities": 1}}) == {"rtpCapabilities": 1}
    assert ch.unwrap("resume_consumer", {"ok": True}) == {}
    with pytest.raises(SignalingError, match=r"request 'join' \(event 'joinRoom'\) refused by the gateway: "
                                             r"room is full"):
        ch.unwrap("join", {"ok": False, "error": "room is full"})
    bare = r"answered granted, expected an object with 'ok' \(ack.ok_path\)"
    with pytest.raises(SignalingError, match=bare):
        ch.unwrap("join", "granted")


def test_bare_answers_error_objects_plain_strings_and_node_style_acks() -> None:
    ch = channel(FOREIGN)
    assert ch.unwrap("enter", {"router_caps": {}, "present": []}) == {"router_caps": {}, "present": []}
    refusal = "refused by the gateway: not allowed to publish: ask_to_speak first"
    with pytest.raises(SignalingError, match=refusal):
        ch.unwrap("produce", {"error": "not allowed to publish: ask_to_speak first"})
    assert ch.unwrap("ask_to_speak", "granted") == "granted"
    expect = r"answered 'denied', expected 'granted' \(requests.ask_to_speak.expect\)"
    with pytest.raises(SignalingError, match=expect):
        ch.unwrap("ask_to_speak", "denied")
    plain = (r"answered the plain string 'ok', expected an object with \['room_ref'\] "
             r"\(requests.open_room.response\)")
    with pytest.raises(SignalingError, match=plain):
        ch.unwrap("open_room", "ok")
    assert ch.unwrap("open_room", (None, {"room_ref": "x"})) == {"room_ref": "x"}
    with pytest.raises(SignalingError, match="refused by the gateway: boom"):
        ch.unwrap("open_room", ({"message": "boom"}, None))


def test_server_text_prefers_the_message_and_keeps_other_fields() -> None:
    assert server_text({"message": "Origin not allowed"}) == "Origin not allowed"
    assert server_text({"message": "invalid token", "data": {"why": "exp"}}) == (
        'invalid token {"data": {"why": "exp"}}')
    assert server_text(["a", 1]) == '["a", 1]'
    assert len(server_text("x" * 1000)) == 240


def test_handshake_places_headers_query_and_token_where_the_profile_says() -> None:
    ch = channel(FOREIGN, {"token": "T.K.N", "room": "r"})
    url, headers, auth = ch.handshake()
    assert url == "http://127.0.0.1:9?access_token=T.K.N" and headers == {"Origin": "http://app.test"}
    assert auth == {}
    url, headers, auth = channel("reference", {"token": "abc"}).handshake()
    assert (url, headers, auth) == ("http://127.0.0.1:9", {}, {"token": "abc"})  # the original convention


def test_jwt_credentials_mint_one_verifiable_token_per_peer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FOREIGN_SFU_JWT_SECRET", SECRET)
    profile = load_profile(FOREIGN)
    creds = credentials_for(profile)
    speaker = session_variables(Party("conv-7", "speaker", 7), creds)
    listener = session_variables(Party("conv-7", "listener", 7), creds)
    claims = jwt.decode(speaker["token"], SECRET, algorithms=["HS256"])
    assert claims["sub"] == "conv-7-speaker" and claims["room"] == "conv-7" and claims["exp"] > claims["iat"]
    assert jwt.decode(listener["token"], options={"verify_signature": False})["sub"] == "conv-7-listener"
    assert "secret" not in repr(creds) and creds.secrets() == (SECRET,)
    monkeypatch.delenv("FOREIGN_SFU_JWT_SECRET")
    with pytest.raises(ProfileError, match="'credentials.secret_env': environment variable FOREIGN_SFU_JWT"):
        credentials_for(profile)


def test_static_and_file_credentials(tmp_path: Path) -> None:
    assert load_credentials(CredentialSpec("static", token="abc")).token(3, {}) == "abc"
    run_wins = load_credentials(CredentialSpec("jwt", secret="s"), auth_token="run-wins")
    assert run_wins.token(0, {}) == "run-wins"
    (tmp_path / "tokens.txt").write_text("# one per caller\nt0\n\nt1\nt2\n")
    creds = load_credentials(CredentialSpec("file", path="tokens.txt"), base_dir=tmp_path)
    assert [creds.token(k, {}) for k in range(5)] == ["t0", "t1", "t2", "t0", "t1"]
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(ProfileError, match="holds no token"):
        load_credentials(CredentialSpec("file", path="empty.txt"), base_dir=tmp_path)
    with pytest.raises(ProfileError, match="cannot read"):
        load_credentials(CredentialSpec("file", path="missing.txt"), base_dir=tmp_path)
    assert Credentials().token(0, {}) == ""


def test_redact_hides_secret_keys_and_known_secret_values() -> None:
    doc = {"auth": {"token": "abc"}, "url": "http://gw/?access_token=T.K.N", "headers": {"X-Api-Key": "k1"},
           "room_id": "r", "list": ["T.K.N", 3]}
    assert redact(doc, ("T.K.N",)) == {"auth": {"token": "***"}, "url": "http://gw/?access_token=***",
                                       "headers": {"X-Api-Key": "***"}, "room_id": "r", "list": ["***", 3]}


def sfu_timeline(seq: int) -> UtteranceTimeline:
    return UtteranceTimeline(utterance_id=f"c-{seq}", conversation="c", seq=seq, fixture_id="f",
                             source_language="en", target_language="es", t_planned=float(seq), wall_start=0.0,
                             mode="sfu")


def test_transit_is_first_voiced_arrival_after_the_send_start_and_completes_at_speech_end() -> None:
    done: list[UtteranceTimeline] = []
    transit = TransitCorrelator(done.append)
    first, second = sfu_timeline(1), sfu_timeline(2)
    transit.expect(first)
    transit.expect(second)
    transit.on_voiced(0.5)  # before anything was sent: nobody's
    first.t_send_start = 1.000
    transit.on_voiced(1.0021)
    transit.on_voiced(1.0225)  # later packets of the same utterance change nothing
    assert first.t_sfu_arrival == 1.0021 and done == []
    first.t_speech_end = 2.0
    transit.on_speech_end(first)
    assert done == [first] and stage_latencies(first).sfu_ms == pytest.approx(2.1)
    assert outcome(first).status == "ok"
    second.t_send_start, second.t_speech_end = 3.0, 4.0  # its voice never arrived
    transit.on_voiced(2.9)  # a straggler of the first utterance, before the second began
    assert second.t_sfu_arrival is None
    transit.expire(second)
    result = outcome(second)
    assert (result.status, result.status_stage) == ("timeout", "sfu")
    assert "no voiced packet" in (result.error or "")


def test_voiced_monitor_uses_the_rfc6464_level_boundary_of_the_fixtures() -> None:
    arrivals: list[float] = []
    clock = iter([1.0, 2.0, 3.0, 4.0]).__next__
    monitor = VoicedArrivalMonitor(arrivals.append, clock)
    monitor.observe((False, 127))  # silence
    monitor.observe((True, VOICED_LEVEL - 1))  # speech
    monitor.observe((True, VOICED_LEVEL))  # exactly at the boundary: not voiced (level below it is)
    monitor.observe(None)  # no header extension
    assert arrivals == [2.0] and (monitor.packets, monitor.voiced, monitor.without_level) == (4, 1, 1)
