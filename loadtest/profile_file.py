"""Reading a signaling profile file (TOML) into a SignalingProfile; every error names the key.

Version 1 (no `version` key) is the reference gateway's original format: `[producers] type/source/
translated_type` become the consume rules "appData.type == tts" and "source == my microphone", and the
optional `language` (a gateway translating into several languages) the rule "that field == the
listener's target language". Version 2 adds the keys documented in docs/protocol.md ("Profile keys").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from loadtest.profile import (
    EVENTS,
    MODES,
    OPTIONAL_EVENT_FIELDS,
    PIPELINE_EVENTS,
    REQUIRED_REQUESTS,
    ROLES,
    AckSpec,
    CredentialSpec,
    EventSpec,
    MatchRule,
    ProducerSpec,
    ProfileError,
    RequestSpec,
    SignalingProfile,
    SocketIoSpec,
)
from loadtest.tomlconfig import check_keys, coerce, read_toml

PROFILE_DIR = Path(__file__).resolve().parent / "profiles"
TOP_KEYS = {"version", "mode", "socketio", "ack", "sequence", "requests", "producers", "events", "timestamps",
            "values", "credentials"}
REQUEST_KEYS = {"event", "payload", "response", "timeout_s", "expect", "optional"}
CREDENTIAL_KINDS = ("none", "static", "file", "jwt")
JWT_ALGORITHMS = ("HS256", "HS384", "HS512")


def resolve_profile_path(name_or_path: str | Path) -> Path:
    path = Path(name_or_path)
    if path.suffix == ".toml" and path.exists():
        return path
    bundled = PROFILE_DIR / f"{name_or_path}.toml"
    if bundled.exists():
        return bundled
    known = ", ".join(sorted(p.stem for p in PROFILE_DIR.glob("*.toml")))
    raise ProfileError(f"signaling profile not found: {name_or_path} (bundled: {known}; or a .toml path)")


def load_profile(name_or_path: str | Path = "reference") -> SignalingProfile:
    path = resolve_profile_path(name_or_path)
    doc = read_toml(path, ProfileError, "signaling profile")
    try:
        return parse_profile(doc, path.stem, str(path.resolve().parent))
    except ProfileError as exc:
        raise ProfileError(f"{path.name}: {exc}") from None


def _table(doc: dict[str, Any], key: str, where: str, required: bool = True) -> dict[str, Any]:
    value = doc.get(key)
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        raise ProfileError(f"missing table [{where}]" if value is None else f"'{where}' must be a table")
    return value


def _str(table: dict[str, Any], key: str, where: str, default: str | None = None) -> str:
    if key not in table and default is not None:
        return default
    value = table.get(key)
    if not isinstance(value, str):
        raise ProfileError(f"profile key '{where}.{key}' must be a string" if key in table
                           else f"missing profile key '{where}.{key}'")
    return value


def _str_map(value: Any, where: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ProfileError(f"'{where}' must be a table of strings, got {value!r}")
    return dict(value)


def _names(value: Any, where: str) -> tuple[str, ...]:
    return coerce(value, "tuple[str, ...]", where, ProfileError)


def parse_profile(doc: dict[str, Any], name: str, base_dir: str = "") -> SignalingProfile:
    check_keys(doc, TOP_KEYS, "profile", ProfileError)
    version = doc.get("version", 1)
    if version not in (1, 2):
        raise ProfileError(f"'version' must be 1 or 2, got {version!r}")
    if version == 1:
        for key in ("mode", "values", "credentials"):
            if key in doc:
                raise ProfileError(f"'{key}' needs 'version = 2' at the top of the profile")
    mode = doc.get("mode", "pipeline")
    if mode not in MODES:
        raise ProfileError(f"'mode' must be one of {', '.join(MODES)}, got {mode!r}")
    requests = _requests(_table(doc, "requests", "requests"))
    join, roles = _sequences(_table(doc, "sequence", "sequence"), requests)
    stamps = _table(doc, "timestamps", "timestamps", required=False)
    check_keys(stamps, {"server_ts_scale"}, "timestamps", ProfileError)
    return SignalingProfile(
        name=name, version=version, mode=mode,
        socketio=_socketio(_table(doc, "socketio", "socketio")),
        ack=_ack(_table(doc, "ack", "ack")),
        join_sequence=join, role_sequences=roles, requests=requests,
        producers=_producers(_table(doc, "producers", "producers"), version),
        events=_events(_table(doc, "events", "events", required=mode == "pipeline"), mode),
        values={k: _str_map(v, f"values.{k}") for k, v in _table(doc, "values", "values", False).items()},
        credentials=_credentials(_table(doc, "credentials", "credentials", required=False)),
        server_ts_scale=coerce(stamps.get("server_ts_scale", 0.001), "float", "timestamps.server_ts_scale",
                               ProfileError),
        base_dir=base_dir,
    )


def _socketio(sio: dict[str, Any]) -> SocketIoSpec:
    check_keys(sio, {"path", "namespace", "transports", "auth", "headers", "query"}, "socketio", ProfileError)
    transports = _names(sio.get("transports", ["websocket"]), "socketio.transports")
    for transport in transports:
        if transport not in ("websocket", "polling"):
            raise ProfileError(f"'socketio.transports' entries are websocket or polling, got {transport!r}")
    auth = sio.get("auth", {})
    if not isinstance(auth, dict):
        raise ProfileError("'socketio.auth' must be a table")
    return SocketIoSpec(
        path=_str(sio, "path", "socketio"), namespace=_str(sio, "namespace", "socketio"),
        transports=transports,
        auth=dict(auth), headers=_str_map(sio.get("headers", {}), "socketio.headers"),
        query=_str_map(sio.get("query", {}), "socketio.query"))


def _ack(ack: dict[str, Any]) -> AckSpec:
    check_keys(ack, {"ok_path", "data_path", "error_path"}, "ack", ProfileError)
    return AckSpec(*(_str(ack, k, "ack", "") for k in ("ok_path", "data_path", "error_path")))


def _sequences(seq: dict[str, Any], requests: dict[str, RequestSpec]
               ) -> tuple[tuple[str, ...], dict[str, tuple[str, ...]]]:
    check_keys(seq, {"join", *ROLES}, "sequence", ProfileError)
    join = _names(seq.get("join", []), "sequence.join")
    roles = {role: _names(seq[role], f"sequence.{role}") for role in ROLES if role in seq}
    for where, steps in (("join", join), *roles.items()):
        for step in steps:
            if step not in requests:
                raise ProfileError(f"'sequence.{where}' names request '{step}' that has no [requests.{step}]")
    return join, roles


def _requests(table: dict[str, Any]) -> dict[str, RequestSpec]:
    specs: dict[str, RequestSpec] = {}
    for name, spec in table.items():
        where = f"requests.{name}"
        if not isinstance(spec, dict):
            raise ProfileError(f"'{where}' must be a table")
        check_keys(spec, REQUEST_KEYS, where, ProfileError)
        payload = spec.get("payload", {})
        if not isinstance(payload, dict):
            raise ProfileError(f"'{where}.payload' must be a table")
        timeout = spec.get("timeout_s")
        if timeout is not None and coerce(timeout, "float", f"{where}.timeout_s", ProfileError) <= 0:
            raise ProfileError(f"'{where}.timeout_s' must be > 0")
        expect = spec.get("expect")
        if expect is not None and not isinstance(expect, str):
            raise ProfileError(f"'{where}.expect' must be a string (the plain-string answer expected)")
        response = _str_map(spec.get("response", {}), f"{where}.response")
        optional = _names(spec.get("optional", []), f"{where}.optional")
        for key in optional:
            if key not in response:
                raise ProfileError(f"'{where}.optional' names '{key}', which is not a key of "
                                   f"'{where}.response'")
        specs[name] = RequestSpec(name, _str(spec, "event", where), dict(payload), response,
                                  None if timeout is None else float(timeout), expect, optional)
    for required in REQUIRED_REQUESTS:
        if required not in specs:
            raise ProfileError(f"missing table [requests.{required}]")
    return specs


def _rules(value: Any, where: str) -> tuple[MatchRule, ...]:
    if not isinstance(value, list) or not all(isinstance(r, dict) for r in value):
        raise ProfileError(f"'{where}' must be an array of tables like "
                           "{ field = \"kind\", equals = \"audio\" }")
    rules = []
    for i, rule in enumerate(value):
        here = f"{where}[{i}]"
        check_keys(rule, {"field", "equals", "not_equals"}, here, ProfileError)
        if ("equals" in rule) == ("not_equals" in rule):
            raise ProfileError(f"'{here}' needs exactly one of 'equals' or 'not_equals'")
        negate = "not_equals" in rule
        expected = _str(rule, "not_equals" if negate else "equals", here)
        rules.append(MatchRule(_str(rule, "field", here), expected, negate))
    return tuple(rules)


def _producers(prod: dict[str, Any], version: int) -> ProducerSpec:
    if version == 1:
        check_keys(prod, {"announce_event", "id", "type", "source", "translated_type", "language"},
                   "producers", ProfileError)
        rules = (MatchRule(_str(prod, "type", "producers"), _str(prod, "translated_type", "producers")),
                 MatchRule(_str(prod, "source", "producers"), "{mic_producer}"))
        if "language" in prod:  # one translated producer per language: the listener's own
            rules += (MatchRule(_str(prod, "language", "producers"), "{target_language}"),)
        return ProducerSpec(_str(prod, "announce_event", "producers"), _str(prod, "id", "producers"), rules)
    check_keys(prod, {"announce_event", "id", "consume", "list_path"}, "producers", ProfileError)
    if "consume" not in prod:
        raise ProfileError("missing profile key 'producers.consume' (which announced producer the listener "
                           "consumes, e.g. [{ field = \"peer_id\", equals = \"{speaker_peer}\" }])")
    return ProducerSpec(_str(prod, "announce_event", "producers"), _str(prod, "id", "producers"),
                        _rules(prod["consume"], "producers.consume"),
                        _str(prod, "list_path", "producers", ""))


def _events(table: dict[str, Any], mode: str) -> dict[str, EventSpec]:
    check_keys(table, set(EVENTS), "events", ProfileError)
    specs: dict[str, EventSpec] = {}
    for name, required in EVENTS.items():
        where = f"events.{name}"
        spec = table.get(name)
        if spec is None:
            if mode == "pipeline" and name in PIPELINE_EVENTS:
                raise ProfileError(f"missing table [{where}] (mode \"pipeline\" times it; "
                                   "mode \"sfu\" does not)")
            continue
        if not isinstance(spec, dict):
            raise ProfileError(f"'{where}' must be a table")
        check_keys(spec, {"event", "fields"}, where, ProfileError)
        fields = _str_map(spec.get("fields", {}), f"{where}.fields")
        optional = OPTIONAL_EVENT_FIELDS | ({"producer_id"} if name == "error" else set())
        check_keys(fields, set(required) | optional, f"{where}.fields", ProfileError)
        for key in required:
            if key not in fields:
                raise ProfileError(f"'{where}.fields' lacks required field '{key}'")
        specs[name] = EventSpec(name, _str(spec, "event", where), fields)
    return specs


def _credentials(table: dict[str, Any]) -> CredentialSpec:
    keys = {"kind", "token", "path", "secret", "secret_env", "algorithm", "claims", "ttl_s"}
    check_keys(table, keys, "credentials", ProfileError)
    kind = _str(table, "kind", "credentials", "none")
    if kind not in CREDENTIAL_KINDS:
        raise ProfileError(f"'credentials.kind' must be one of {', '.join(CREDENTIAL_KINDS)}, got {kind!r}")
    text = {k: _str(table, k, "credentials", "") for k in ("token", "path", "secret", "secret_env")}
    spec = CredentialSpec(
        kind=kind, **text,
        algorithm=_str(table, "algorithm", "credentials", "HS256"),
        claims=dict(_table(table, "claims", "credentials.claims", required=False)),
        ttl_s=coerce(table.get("ttl_s", 3600.0), "float", "credentials.ttl_s", ProfileError))
    if kind == "file" and not spec.path:
        raise ProfileError("'credentials.path' is required with kind = \"file\" (one token per line)")
    if kind == "jwt":
        if not (spec.secret or spec.secret_env):
            raise ProfileError("'credentials.secret_env' (or 'secret') is required with kind = \"jwt\"")
        if spec.algorithm not in JWT_ALGORITHMS:
            raise ProfileError(f"'credentials.algorithm' must be one of {', '.join(JWT_ALGORITHMS)}")
    return spec
