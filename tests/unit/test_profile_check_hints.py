"""`loadtest profile check`'s hints (pure): from the error text and the answer as the gateway sent it,
the profile key that would fix a failed step, and what to write there; and the printer's redaction."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import pytest

from loadtest.profile import AckSpec, SignalingProfile
from loadtest.profile_file import load_profile
from loadtest.profile_hints import (
    announcement_hint,
    caps_path,
    handshake_hint,
    join_hint,
    placeholder_hint,
    request_hint,
)
from loadtest.profile_steps import Printer, StepFailure

pytestmark = pytest.mark.unit

FOREIGN = Path(__file__).resolve().parents[2] / "sut" / "foreign" / "profile.toml"
CAPS = {"codecs": [{"kind": "audio", "mimeType": "audio/opus"}], "headerExtensions": []}


@pytest.fixture(scope="module")
def foreign() -> SignalingProfile:
    return load_profile(FOREIGN)


def test_handshake_refusals_point_at_the_handshake_keys(foreign: SignalingProfile) -> None:
    refused = "gateway http://gw:7601 refused the connection: "
    origin = handshake_hint(refused + "Origin not allowed", foreign)
    assert origin.key == "socketio.headers.Origin" and '"http://app.test"' in origin.text
    no_header = replace(foreign, socketio=replace(foreign.socketio, headers={}))
    assert "add socketio.headers" in handshake_hint(refused + "Origin not allowed", no_header).text
    token = handshake_hint(refused + "invalid token: bad signature", foreign)
    assert token.key == "[credentials]" and "socketio.query" in token.text  # where {token} travels
    assert handshake_hint(refused + "invalid token: missing room claim", foreign).key == "credentials.claims"
    path = handshake_hint(refused + "HTTP 404 from http://gw/socket.io/: {\"error\":\"not found\"}", foreign)
    assert path.key == "socketio.path"
    assert handshake_hint(refused + "Invalid namespace", foreign).key == "socketio.namespace"
    assert handshake_hint("cannot reach target http://gw:1: refused", foreign).key == "--target"
    assert handshake_hint("TLS certificate of https://gw is not trusted: x", foreign).key == "--ca-cert"
    # Only the server's words count: "auth" in the host name is not a token problem.
    other = handshake_hint("gateway https://auth.example refused the connection: nope", foreign)
    assert other.key == "socketio"


def test_bare_answers_with_ok_path_set(foreign: SignalingProfile) -> None:
    wrapped = replace(foreign, ack=AckSpec(ok_path="ok", error_path=""))
    msg = "request 'open_room' (event 'open_room') refused by the gateway: no reason given"
    hint = request_hint("open_room", "listener", msg, {"room_ref": "r1"}, True, wrapped)
    assert hint.key == "ack.ok_path" and 'ack.ok_path = ""' in hint.text and "room_ref" in hint.text
    refusal = request_hint("open_room", "listener", msg, {"error": "room_id required"}, True, wrapped)
    assert 'ack.ok_path = ""' in refusal.text and 'ack.error_path = "error"' in refusal.text
    plain = request_hint("ask_to_speak", "speaker", "answered 'granted', expected an object", "granted",
                         True, wrapped)
    assert plain.key == "ack.ok_path"


def test_plain_string_where_an_object_is_expected(foreign: SignalingProfile) -> None:
    spec = foreign.requests["ask_to_speak"]
    profile = replace(foreign, requests={**foreign.requests,
                                         "ask_to_speak": replace(spec, response={"ok": "granted"},
                                                                 expect=None)})
    msg = ("request 'ask_to_speak' (event 'ask_to_speak') answered the plain string 'granted', expected an "
           "object with ['granted'] (requests.ask_to_speak.response)")
    hint = request_hint("ask_to_speak", "speaker", msg, "granted", True, profile)
    assert hint.key == "requests.ask_to_speak.response"
    assert 'requests.ask_to_speak.expect = "granted"' in hint.text and "remove" in hint.text
    mismatch = request_hint("ask_to_speak", "speaker", "answered 'denied', expected 'granted' "
                            "(requests.ask_to_speak.expect)", "denied", True, foreign)
    assert mismatch.key == "requests.ask_to_speak.expect"


def test_missing_response_path_suggests_the_closest_key(foreign: SignalingProfile) -> None:
    spec = foreign.requests["open_room"]
    profile = replace(foreign, requests={**foreign.requests,
                                         "open_room": replace(spec, response={"room_ref": "roomRef"})})
    msg = "request 'open_room' (event 'open_room'): the answer lacks 'roomRef' (requests.open_room.response)"
    hint = request_hint("open_room", "listener", msg, {"room_ref": "r1", "other": 1}, True, profile)
    assert hint.key == "requests.open_room.response.room_ref"
    assert "other, room_ref" in hint.text and 'requests.open_room.response.room_ref = "room_ref"' in hint.text
    # Router capabilities are found by their shape, wherever the answer keeps them.
    enter = replace(foreign.requests["enter"], response={"rtp_capabilities": "router_capabilities"})
    wrong = replace(foreign, requests={**foreign.requests, "enter": enter})
    lacks = ("request 'enter' (event 'enter'): the answer lacks 'router_capabilities' "
             "(requests.enter.response)")
    caps = request_hint("enter", "listener", lacks, {"router_caps": CAPS, "present": []}, True, wrong)
    assert caps.key == "requests.enter.response.rtp_capabilities"
    assert 'rtp_capabilities = "router_caps"' in caps.text and "present, router_caps" in caps.text
    # A bare refusal with no ack.error_path reads as data: say so.
    bare = replace(foreign, ack=AckSpec())
    refusal = request_hint("open_room", "listener", msg.replace("roomRef", "room_ref"),
                           {"error": "room_id required"}, True, bare)
    assert refusal.key == "ack.error_path" and 'ack.error_path = "error"' in refusal.text


def test_refusals_no_answer_and_placeholders(foreign: SignalingProfile) -> None:
    first = request_hint("produce", "speaker", "request 'produce' (event 'publish') refused by the gateway: "
                         "not allowed to publish: ask_to_speak first", {"error": "x"}, True, foreign)
    assert first.key == "sequence.speaker"
    field = request_hint("open_room", "listener", "request 'open_room' (event 'open_room') refused by the "
                         "gateway: room_id does not match token", {"error": "x"}, True, foreign)
    assert field.key == "requests.open_room.payload.room_id"
    silent = request_hint("connect_transport", "speaker", "request 'connect_transport' (event 'link') got no "
                          "answer within 3 s", None, False, foreign)
    assert silent.key == "requests.connect_transport.event"
    assert "requests.connect_transport.timeout_s" in silent.text
    dropped = request_hint("enter", "speaker", "request 'enter' failed: disconnected by server after 0.1 s",
                           None, False, foreign)
    assert dropped.key == "requests.enter" and "dropped" in dropped.text
    msg = ("requests.enter.payload.room_ref: unknown placeholder '{room_reference}' (known: ['peer', 'room', "
           "'room_ref'])")
    hint = placeholder_hint(msg)
    assert hint is not None and hint.key == "requests.enter.payload.room_ref"
    assert "{room_ref}" in hint.text and "did you mean {room_ref}" in hint.text
    assert request_hint("enter", "listener", msg, None, False, foreign) == hint


def test_join_without_capabilities_names_where_they_are(foreign: SignalingProfile) -> None:
    found = join_hint("listener", [("open_room", {"room_ref": "r"}), ("enter", {"router": {"caps": CAPS}})],
                      foreign)
    assert found.key == "requests.enter.response.rtp_capabilities" and '"router.caps"' in found.text
    missing = join_hint("listener", [("open_room", {"room_ref": "r"}), ("enter", {"present": []})], foreign)
    assert missing.key == "requests.enter.response" and "open_room: room_ref; enter: present" in missing.text
    assert caps_path({"a": {"b": CAPS}}) == "a.b" and caps_path(CAPS) is None


def test_announcement_hints(foreign: SignalingProfile) -> None:
    spec = foreign.producers
    variables = {"speaker_peer": "c-speaker", "mic_producer": "p1"}
    nothing = announcement_hint(spec, [], variables, ["newProducer", "newProducer"])
    assert nothing.key == "producers.announce_event" and "newProducer" in nothing.text
    assert announcement_hint(spec, [], variables, [], malformed=2).key == "producers.id"
    camel = [{"producerId": "p1", "peerId": "c-speaker", "kind": "audio"}]
    absent = announcement_hint(spec, camel, variables, [])
    assert absent.key == "producers.consume[0].field" and 'did you mean "peerId"' in absent.text
    other = [{"producer_id": "p1", "peer_id": "someone-else", "kind": "audio"}]
    mismatch = announcement_hint(spec, other, variables, [])
    assert mismatch.key == "producers.consume[0].equals"
    assert "someone-else" in mismatch.text and '"c-speaker"' in mismatch.text
    # Version 1 names its two rules as [producers] keys.
    reference = load_profile("reference")
    mic = [{"id": "p2", "appData": {"type": "mic"}}]
    v1 = announcement_hint(reference.producers, mic, variables, [], version=reference.version)
    assert v1.key == "producers.translated_type" and "mic" in v1.text


def test_printer_redacts_and_names_the_first_failure() -> None:
    out = io.StringIO()
    printer = Printer(out=out)
    printer.add_secret("eyJhbGciOi.payload.sig")
    printer.ok("handshake (listener)", "http://gw?access_token=eyJhbGciOi.payload.sig · auth "
               + printer.show({"token": "t0ps3cret", "room": "r"}))
    printer.fail("requests.enter (listener)", "'enter' {} → {}",
                 StepFailure("requests.enter.response.rtp_capabilities", "the answer lacks 'x'", None))
    printer.summary(0.5)
    text = out.getvalue()
    assert "eyJhbGciOi" not in text and "t0ps3cret" not in text and "access_token=***" in text
    assert '"token": "***"' in text and "failed: requests.enter.response.rtp_capabilities" in text
    assert text.rstrip().endswith("fix: requests.enter.response.rtp_capabilities")
    assert printer.failure is not None and printer.steps == 2
