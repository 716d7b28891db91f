"""The gateway's signaling dialect, as data (see profiles/reference.toml and docs/protocol.md).

Public mediasoup apps disagree on event names, payload shapes and where answers keep their fields;
users adapt a profile file, not code.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtest.errors import UsageError

PROFILE_DIR = Path(__file__).resolve().parent / "profiles"
REQUESTS = ("join", "create_transport", "connect_transport", "produce", "consume", "resume_consumer")
EVENTS = {
    "transcription": ("utterance_id", "producer_id", "text"),
    "translation": ("utterance_id", "text"),
    "tts": ("utterance_id",),
    "error": ("utterance_id", "stage", "error"),
}
OPTIONAL_EVENT_FIELDS = {"server_ts", "speech_end_ts", "tts_producer_id", "rtp_timestamp", "duration_ms"}


class ProfileError(UsageError):
    """The profile file is wrong; the message names the key."""


class MissingField(LookupError):
    """A gateway message lacks a field the profile says it has."""


def lookup(obj: Any, path: str) -> Any:
    """Follow a dotted path; raise MissingField naming the path when a step is absent."""
    if path == "":
        return obj
    current = obj
    for part in path.split("."):
        if isinstance(current, dict) and part in current:
            current = current[part]
        else:
            raise MissingField(path)
    return current


@dataclass(frozen=True)
class RequestSpec:
    name: str
    event: str
    payload: dict[str, Any]
    response: dict[str, str]

    def build(self, variables: dict[str, Any]) -> dict[str, Any]:
        return _fill(self.payload, variables, f"requests.{self.name}.payload")

    def parse(self, data: Any) -> dict[str, Any]:
        return {key: lookup(data, path) for key, path in self.response.items()}


def _fill(template: Any, variables: dict[str, Any], where: str) -> Any:
    if isinstance(template, dict):
        return {k: _fill(v, variables, f"{where}.{k}") for k, v in template.items()}
    if isinstance(template, list):
        return [_fill(v, variables, where) for v in template]
    if isinstance(template, str):
        if template.startswith("{") and template.endswith("}") and template.count("{") == 1:
            name = template[1:-1]
            if name not in variables:
                raise ProfileError(f"{where}: unknown placeholder '{{{name}}}' (known: {sorted(variables)})")
            return variables[name]
        try:
            return template.format(**variables)
        except KeyError as exc:
            raise ProfileError(f"{where}: unknown placeholder {exc}") from None
    return template


@dataclass(frozen=True)
class EventSpec:
    name: str
    event: str
    fields: dict[str, str]

    def parse(self, payload: Any) -> dict[str, Any]:
        """Required fields raise MissingField; optional ones become None."""
        out: dict[str, Any] = {}
        for key, path in self.fields.items():
            try:
                out[key] = lookup(payload, path)
            except MissingField:
                if key in OPTIONAL_EVENT_FIELDS:
                    out[key] = None
                else:
                    raise
        return out


@dataclass(frozen=True)
class AckSpec:
    ok_path: str
    data_path: str
    error_path: str


@dataclass(frozen=True)
class ProducerSpec:
    announce_event: str
    id: str
    type: str
    source: str
    translated_type: str


@dataclass(frozen=True)
class SignalingProfile:
    name: str
    socketio_path: str
    namespace: str
    transports: tuple[str, ...]
    auth: dict[str, Any]
    ack: AckSpec
    join_sequence: tuple[str, ...]
    requests: dict[str, RequestSpec]
    producers: ProducerSpec
    events: dict[str, EventSpec]
    server_ts_scale: float


def _table(doc: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = doc.get(key)
    if not isinstance(value, dict):
        raise ProfileError(f"{where}: missing table [{key}]")
    return value


def _only(table: dict[str, Any], allowed: set[str], where: str) -> None:
    for key in table:
        if key not in allowed:
            raise ProfileError(f"unknown profile key '{where}.{key}' (known: {', '.join(sorted(allowed))})")


def _str(table: dict[str, Any], key: str, where: str) -> str:
    value = table.get(key)
    if not isinstance(value, str):
        raise ProfileError(f"profile key '{where}.{key}' must be a string")
    return value


def resolve_profile_path(name_or_path: str | Path) -> Path:
    path = Path(name_or_path)
    if path.suffix == ".toml" and path.exists():
        return path
    bundled = PROFILE_DIR / f"{name_or_path}.toml"
    if bundled.exists():
        return bundled
    raise ProfileError(f"signaling profile not found: {name_or_path}")


def load_profile(name_or_path: str | Path = "reference") -> SignalingProfile:
    path = resolve_profile_path(name_or_path)
    try:
        doc = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{path}: not valid TOML: {exc}") from None
    try:
        return _parse(doc, path.stem)
    except ProfileError as exc:
        raise ProfileError(f"{path.name}: {exc}") from None


def _parse(doc: dict[str, Any], name: str) -> SignalingProfile:
    _only(doc, {"socketio", "ack", "sequence", "requests", "producers", "events", "timestamps"}, "profile")
    sio = _table(doc, "socketio", "profile")
    _only(sio, {"path", "namespace", "transports", "auth"}, "socketio")
    ack = _table(doc, "ack", "profile")
    _only(ack, {"ok_path", "data_path", "error_path"}, "ack")
    seq = _table(doc, "sequence", "profile")
    _only(seq, {"join"}, "sequence")
    requests = _parse_requests(_table(doc, "requests", "profile"))
    join = tuple(seq.get("join", []))
    for step in join:
        if step not in requests:
            raise ProfileError(f"'sequence.join' names request '{step}' that has no [requests.{step}]")
    prod = _table(doc, "producers", "profile")
    _only(prod, {"announce_event", "id", "type", "source", "translated_type"}, "producers")
    stamps = doc.get("timestamps", {})
    _only(stamps, {"server_ts_scale"}, "timestamps")
    return SignalingProfile(
        name=name,
        socketio_path=_str(sio, "path", "socketio"),
        namespace=_str(sio, "namespace", "socketio"),
        transports=tuple(sio.get("transports", ["websocket"])),
        auth=dict(sio.get("auth", {})),
        ack=AckSpec(ack.get("ok_path", ""), ack.get("data_path", ""), ack.get("error_path", "")),
        join_sequence=join,
        requests=requests,
        producers=ProducerSpec(**{k: _str(prod, k, "producers") for k in ProducerSpec.__dataclass_fields__}),
        events=_parse_events(_table(doc, "events", "profile")),
        server_ts_scale=float(stamps.get("server_ts_scale", 0.001)),
    )


def _parse_requests(table: dict[str, Any]) -> dict[str, RequestSpec]:
    specs: dict[str, RequestSpec] = {}
    for name, spec in table.items():
        where = f"requests.{name}"
        if not isinstance(spec, dict):
            raise ProfileError(f"'{where}' must be a table")
        _only(spec, {"event", "payload", "response"}, where)
        specs[name] = RequestSpec(name, _str(spec, "event", where), dict(spec.get("payload", {})),
                                  dict(spec.get("response", {})))
    for required in REQUESTS:
        if required not in specs:
            raise ProfileError(f"missing table [requests.{required}]")
    return specs


def _parse_events(table: dict[str, Any]) -> dict[str, EventSpec]:
    _only(table, set(EVENTS), "events")
    specs: dict[str, EventSpec] = {}
    for name, required in EVENTS.items():
        where = f"events.{name}"
        spec = table.get(name)
        if not isinstance(spec, dict):
            raise ProfileError(f"missing table [{where}]")
        _only(spec, {"event", "fields"}, where)
        fields = dict(spec.get("fields", {}))
        _only(fields, set(required) | OPTIONAL_EVENT_FIELDS, f"{where}.fields")
        for key in required:
            if key not in fields:
                raise ProfileError(f"'{where}.fields' lacks required field '{key}'")
        specs[name] = EventSpec(name, _str(spec, "event", where), fields)
    return specs
