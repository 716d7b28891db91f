"""Signaling profile version 2: parsing (errors name the key), templates, value maps, consume rules."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from loadtest.announcements import Announcements
from loadtest.profile import MatchRule, ProducerSpec, ProfileError, fill
from loadtest.profile_file import load_profile, parse_profile

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
FOREIGN = REPO / "sut" / "foreign" / "profile.toml"


def foreign_doc() -> dict[str, Any]:
    return tomllib.loads(FOREIGN.read_text())


def test_version_1_reference_profile_still_loads_as_pipeline_with_equivalent_rules() -> None:
    profile = load_profile("reference")
    assert (profile.version, profile.mode) == (1, "pipeline")
    assert profile.steps("speaker") == ("join",) and profile.steps("listener") == ("join",)
    assert profile.has_request("resume_consumer")
    tts = {"id": "t1", "appData": {"type": "tts", "sourceProducerId": "mic-1", "language": "es"}}
    other_speaker = {"id": "t2", "appData": {"type": "tts", "sourceProducerId": "mic-2", "language": "es"}}
    other_language = {"id": "t3", "appData": {"type": "tts", "sourceProducerId": "mic-1", "language": "fr"}}
    mic = {"id": "m1", "appData": {"type": "mic"}}
    found = Announcements(profile.producers)
    assert found.add([tts, other_speaker, other_language, mic]) == ["t1", "t2", "t3", "m1"]
    # One TTS producer per language in the room: the listener takes its own language's.
    assert found.wanted({"mic_producer": "mic-1", "target_language": "es"}) == ["t1"]
    assert found.wanted({"mic_producer": "mic-1", "target_language": "fr"}) == ["t3"]
    assert found.wanted({"mic_producer": "mic-1", "target_language": "de"}) == []


def test_version_1_language_key_is_optional() -> None:
    """A version 1 profile without [producers] language (a gateway with one TTS producer per mic) keeps
    its two rules; a bad language key is named."""
    doc = tomllib.loads((REPO / "loadtest" / "profiles" / "reference.toml").read_text())
    assert doc["producers"].pop("language") == "appData.language"
    rules = parse_profile(doc, "old").producers.consume
    assert [r.field for r in rules] == ["appData.type", "appData.sourceProducerId"]
    found = Announcements(parse_profile(doc, "old").producers)
    found.add({"id": "t1", "appData": {"type": "tts", "sourceProducerId": "mic-1"}})
    assert found.wanted({"mic_producer": "mic-1"}) == ["t1"]
    doc["producers"]["language"] = 3
    with pytest.raises(ProfileError, match="'producers.language' must be a string"):
        parse_profile(doc, "bad")


def test_reference_profile_maps_the_language_and_speech_start_fields() -> None:
    events = load_profile("reference").events
    assert events["translation"].fields["target_language"] == "targetLanguage"
    assert events["error"].fields["target_language"] == "targetLanguage"
    assert events["tts"].fields["target_language"] == "language"
    assert events["transcription"].fields["speech_start_ts"] == "speechStartTs"
    # Optional: a gateway that leaves them out (one language, no speech start) still parses.
    assert events["tts"].parse({"utteranceId": "u1"})["target_language"] is None
    assert events["tts"].parse({"utteranceId": "u1", "language": "fr"})["target_language"] == "fr"


def test_foreign_profile_is_version_2_sfu_with_every_new_key() -> None:
    profile = load_profile(FOREIGN)
    assert (profile.version, profile.mode) == (2, "sfu")
    assert profile.steps("speaker") == ("open_room", "enter", "ask_to_speak")
    assert profile.steps("listener") == ("open_room", "enter")
    assert not profile.has_request("resume_consumer")
    assert profile.events == {}
    assert profile.requests["ask_to_speak"].expect == "granted"
    assert profile.socketio.query == {"access_token": "{token}"} and profile.uses_placeholder("token")
    assert profile.credentials.kind == "jwt" and profile.credentials.secret_env == "FOREIGN_SFU_JWT_SECRET"
    assert profile.base_dir == str(FOREIGN.parent)
    variables = profile.mapped({"direction": "send", "room": "r"})
    payload = profile.requests["create_transport"].build(variables)
    assert payload == {"room_id": "r", "role": "producer"}
    assert profile.requests["create_transport"].build(profile.mapped({"direction": "recv", "room": "r"}))[
        "role"] == "consumer"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(bogus=1), "unknown key 'profile.bogus'"),
        (lambda d: d.update(mode="mesh"), "'mode' must be one of pipeline, sfu"),
        (lambda d: d.update(version=3), "'version' must be 1 or 2"),
        (lambda d: d["sequence"].update(speaker=["nope"]), "'sequence.speaker' names request 'nope'"),
        (lambda d: d["requests"]["enter"].update(timeout_s=0), "'requests.enter.timeout_s' must be > 0"),
        (lambda d: d["requests"]["enter"].update(expect=3), "'requests.enter.expect' must be a string"),
        (lambda d: d["requests"].pop("consume"), "missing table [requests.consume]"),
        (lambda d: d["producers"]["consume"].append({"field": "kind", "equals": "a", "not_equals": "b"}),
         "'producers.consume[2]' needs exactly one of 'equals' or 'not_equals'"),
        (lambda d: d["producers"].pop("consume"), "missing profile key 'producers.consume'"),
        (lambda d: d["values"].update(direction={"send": 1}),
         "'values.direction' must be a table of strings"),
        (lambda d: d["credentials"].update(kind="oauth"), "'credentials.kind' must be one of"),
        (lambda d: d["credentials"].pop("secret_env"), "'credentials.secret_env' (or 'secret') is required"),
        (lambda d: d["socketio"].update(transports=["udp"]), "'socketio.transports' entries are"),
        (lambda d: d.update(mode="pipeline"), "missing table [events]"),
    ],
)
def test_profile_errors_name_the_key(edit: Any, message: str) -> None:
    doc = foreign_doc()
    edit(doc)
    with pytest.raises(ProfileError) as err:
        parse_profile(doc, "broken")
    assert message in str(err.value)


def test_version_1_refuses_version_2_keys() -> None:
    doc = tomllib.loads((REPO / "loadtest" / "profiles" / "reference.toml").read_text())
    doc["mode"] = "sfu"
    with pytest.raises(ProfileError, match="'mode' needs 'version = 2'"):
        parse_profile(doc, "reference")


def test_a_missing_profile_lists_the_bundled_ones() -> None:
    with pytest.raises(ProfileError, match="bundled: .*reference"):
        load_profile("no-such-profile")


def test_fill_keeps_objects_formats_strings_and_names_unknown_placeholders() -> None:
    variables = {"room": "r1", "caps": {"codecs": [1]}}
    assert fill({"a": "{caps}", "b": "room-{room}", "c": ["{room}", 3]}, variables, "x") == {
        "a": {"codecs": [1]}, "b": "room-r1", "c": ["r1", 3]}
    unknown = (r"requests\.enter\.payload\.peer_id: unknown placeholder '\{peer\}' "
               r"\(known: \['caps', 'room'\]\)")
    with pytest.raises(ProfileError, match=unknown):
        fill({"peer_id": "{peer}"}, variables, "requests.enter.payload")
    with pytest.raises(ProfileError, match=r"unknown placeholder \{peer\}"):
        fill("p-{peer}", variables, "x")


def test_match_rules_equals_not_equals_and_absent_fields() -> None:
    info = {"peer_id": "conv-speaker", "kind": "audio", "appData": {"type": "mic"}}
    variables = {"speaker_peer": "conv-speaker", "mic_producer": "m1"}
    assert MatchRule("peer_id", "{speaker_peer}").holds(info, variables)
    assert MatchRule("appData.type", "mic").holds(info, variables)
    assert not MatchRule("kind", "video").holds(info, variables)
    assert MatchRule("kind", "video", negate=True).holds(info, variables)
    assert not MatchRule("missing.path", "x").holds(info, variables)
    assert MatchRule("missing.path", "x", negate=True).holds(info, variables)


def test_announcements_accept_lists_single_objects_and_a_list_under_a_key() -> None:
    rules = (MatchRule("peer_id", "{speaker_peer}"), MatchRule("producer_id", "{mic_producer}", negate=True))
    found = Announcements(ProducerSpec("producers_changed", "producer_id", rules))
    both = [{"producer_id": "a", "peer_id": "sp"}, {"producer_id": "b", "peer_id": "other"}]
    assert found.add(both) == ["a", "b"]
    assert found.add({"producer_id": "a", "peer_id": "sp"}) == []  # seen already
    assert found.add([{"no_id": 1}, "junk"]) == [] and found.malformed == 2
    assert found.wanted({"speaker_peer": "sp", "mic_producer": "zzz"}) == ["a"]
    assert found.wanted({"speaker_peer": "sp", "mic_producer": "a"}) == []  # never our own producer
    found.consumed.add("a")
    assert found.wanted({"speaker_peer": "sp", "mic_producer": "zzz"}) == []
    nested = Announcements(ProducerSpec("list", "id", (), list_path="data.items"))
    assert nested.add({"data": {"items": [{"id": 1}, {"id": 2}]}}) == ["1", "2"]
    assert nested.add({"data": {}}) == [] and nested.malformed == 1
    assert "announced:" in nested.describe() and Announcements(nested.spec).describe() == (
        "no producer was announced")


def test_version_1_language_mismatch_is_named_as_its_key() -> None:
    from loadtest.profile_hints import announcement_hint

    reference = load_profile("reference")
    french = [{"id": "t3", "appData": {"type": "tts", "sourceProducerId": "mic-1", "language": "fr"}}]
    variables = {"mic_producer": "mic-1", "target_language": "es"}
    hint = announcement_hint(reference.producers, french, variables, [], version=reference.version)
    assert hint.key == "producers.language" and "fr" in hint.text and '"es"' in hint.text
