"""The gateway's signaling dialect, as data (see profiles/*.toml and docs/protocol.md).

Public mediasoup apps disagree on event names, payload shapes, where answers keep their fields, how a
caller joins and which producer carries what; users adapt a profile file, not code. The file is read by
profile_file.py; this module holds the records and the two operations every request and event needs:
filling a payload template from the session's variables, and following a dotted path into an answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from loadtest.errors import UsageError

MODES = ("pipeline", "sfu")
# Requests every profile names; resume_consumer is optional (consumers that start unpaused need none).
REQUIRED_REQUESTS = ("create_transport", "connect_transport", "produce", "consume")
OPTIONAL_REQUESTS = ("resume_consumer",)
EVENTS = {
    "transcription": ("utterance_id", "producer_id", "text"),
    "translation": ("utterance_id", "text"),
    "tts": ("utterance_id",),
    "error": ("utterance_id", "stage", "error"),
}
PIPELINE_EVENTS = ("transcription", "translation", "tts")  # required in mode "pipeline"
OPTIONAL_EVENT_FIELDS = {"server_ts", "speech_end_ts", "speech_start_ts", "tts_producer_id", "rtp_timestamp",
                         "duration_ms", "target_language"}
ROLES = ("speaker", "listener")


class ProfileError(UsageError):
    """The profile file is wrong, or a request cannot be built from it; the message names the key."""


class MissingField(LookupError):
    """A gateway message lacks a field the profile says it has."""


def lookup(obj: Any, path: str) -> Any:
    """Follow a dotted path (`a.b`, `items.0.id`); MissingField names the path when a step is absent."""
    if path == "":
        return obj
    current = obj
    for part in path.split("."):
        if isinstance(current, dict) and part in current:
            current = current[part]
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            raise MissingField(path)
    return current


def fill(template: Any, variables: dict[str, Any], where: str) -> Any:
    """A payload from its template: a string that is exactly "{name}" becomes the variable itself (a dict
    stays a dict); other strings are formatted; tables and arrays are filled element by element."""
    if isinstance(template, dict):
        return {k: fill(v, variables, f"{where}.{k}") for k, v in template.items()}
    if isinstance(template, list):
        return [fill(v, variables, f"{where}[{i}]") for i, v in enumerate(template)]
    if isinstance(template, str):
        if template.startswith("{") and template.endswith("}") and template.count("{") == 1:
            name = template[1:-1]
            if name not in variables:
                raise ProfileError(f"{where}: unknown placeholder '{{{name}}}' (known: {sorted(variables)})")
            return variables[name]
        try:
            return template.format(**variables)
        except KeyError as exc:
            raise ProfileError(f"{where}: unknown placeholder {{{exc.args[0]}}} "
                               f"(known: {sorted(variables)})") from None
        except (IndexError, ValueError) as exc:
            raise ProfileError(f"{where}: bad template {template!r}: {exc}") from None
    return template


@dataclass(frozen=True)
class RequestSpec:
    name: str
    event: str
    payload: dict[str, Any]
    response: dict[str, str]  # session variable ← dotted path into the answer's data
    timeout_s: float | None = None  # None: the client's default request timeout
    expect: str | None = None  # a plain-string answer must equal this
    optional: tuple[str, ...] = ()  # response keys the answer may lack (then None)

    def build(self, variables: dict[str, Any]) -> dict[str, Any]:
        return fill(self.payload, variables, f"requests.{self.name}.payload")

    def parse(self, data: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, path in self.response.items():
            try:
                out[key] = lookup(data, path)
            except MissingField:
                if key not in self.optional:
                    raise
                out[key] = None
        return out


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
                # An error's producer id is optional: with it, an error before any transcript (an STT
                # failure) is matched to the speaker's oldest utterance, as a transcript would be.
                if key in OPTIONAL_EVENT_FIELDS or (self.name == "error" and key == "producer_id"):
                    out[key] = None
                else:
                    raise
        return out


@dataclass(frozen=True)
class AckSpec:
    """Where an answer keeps its verdict. With `ok_path` the answer is wrapped ({ok, data, error});
    without it the answer is bare: the data itself, or a failure when `error_path` is present in it."""

    ok_path: str = ""
    data_path: str = ""
    error_path: str = ""


@dataclass(frozen=True)
class MatchRule:
    """One condition on an announced producer: the value at `field` equals (or, negated, differs from) the
    filled template `value`. A rule whose field is absent does not hold (a negated one does)."""

    field: str
    value: str
    negate: bool = False

    def holds(self, info: Any, variables: dict[str, Any]) -> bool:
        expected = str(fill(self.value, variables, f"producers.consume.{self.field}"))
        try:
            actual = lookup(info, self.field)
        except MissingField:
            return self.negate
        return (str(actual) == expected) != self.negate


@dataclass(frozen=True)
class ProducerSpec:
    announce_event: str
    id: str  # dotted path of the producer id in one announcement
    consume: tuple[MatchRule, ...]  # every rule must hold for the listener to consume the producer
    list_path: str = ""  # where a list of announcements sits in the event's payload ("" = the payload)


@dataclass(frozen=True)
class CredentialSpec:
    """How each caller authenticates; secrets are read when a run starts and never written anywhere."""

    kind: str = "none"  # none | static | file | jwt
    token: str = ""  # static (overridden by the run's auth_token)
    path: str = ""  # file: one token per line; caller k uses line k (mod lines)
    secret: str = field(default="", repr=False)  # jwt: the signing secret, or …
    secret_env: str = ""  # … the environment variable that holds it
    algorithm: str = "HS256"
    claims: dict[str, Any] = field(default_factory=dict)  # templates, e.g. {sub = "{peer}"}
    ttl_s: float = 3600.0


@dataclass(frozen=True)
class SocketIoSpec:
    path: str = "socket.io"
    namespace: str = "/"
    transports: tuple[str, ...] = ("websocket",)
    auth: dict[str, Any] = field(default_factory=dict)  # handshake auth payload (templates)
    headers: dict[str, str] = field(default_factory=dict)  # handshake HTTP headers (templates)
    query: dict[str, str] = field(default_factory=dict)  # handshake query parameters (templates)


@dataclass(frozen=True)
class SignalingProfile:
    name: str
    version: int
    mode: str
    socketio: SocketIoSpec
    ack: AckSpec
    join_sequence: tuple[str, ...]
    role_sequences: dict[str, tuple[str, ...]]  # extra steps per role, after the join
    requests: dict[str, RequestSpec]
    producers: ProducerSpec
    events: dict[str, EventSpec]
    values: dict[str, dict[str, str]]  # variable → {our value: the gateway's word}
    credentials: CredentialSpec
    server_ts_scale: float
    base_dir: str = ""  # the profile file's folder: relative paths in it (a token file) start here

    def steps(self, role: str) -> tuple[str, ...]:
        """The requests a caller of this role sends after connecting, before any transport."""
        return self.join_sequence + self.role_sequences.get(role, ())

    def has_request(self, name: str) -> bool:
        return name in self.requests

    def mapped(self, variables: dict[str, Any]) -> dict[str, Any]:
        """The variables with the gateway's words for our values (e.g. direction send → "producer")."""
        out = dict(variables)
        for name, table in self.values.items():
            if name in out and str(out[name]) in table:
                out[name] = table[str(out[name])]
        return out

    def uses_placeholder(self, name: str) -> bool:
        """Whether any handshake template names `{name}` (then the token is placed where the file says)."""
        needle = "{" + name + "}"
        return any(needle in str(v) for table in (self.socketio.auth, self.socketio.headers,
                                                   self.socketio.query) for v in table.values())
