"""Which profile key would fix a failed step, from what the gateway actually said (pure: unit-tested).

`loadtest profile check` and the preflight's Socket.IO checks call these with the error text, the
answer as the gateway sent it and the profile; each returns the key to change and what to write there.
The suggestions come from the answer itself: the keys it has, the one closest to the path the profile
names, where an object that looks like router RTP capabilities sits.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass
from typing import Any

from loadtest.profile import MissingField, ProducerSpec, ProfileError, SignalingProfile, fill, lookup

TOKEN_WORDS = ("token", "jwt", "signature", "expired", "unauthorized", "unauthorised", "forbidden",
               "credential", "claim", "auth")
ERROR_KEYS = ("error", "err", "errorMessage", "reason")
PLACEHOLDER = re.compile(
    r"(?P<key>[\w.\[\]-]+): unknown placeholder '?\{(?P<name>[^}']*)\}'? \(known: (?P<known>.*)\)")
LACKS = re.compile(r"the answer lacks '(?P<path>[^']+)'")


@dataclass(frozen=True)
class Hint:
    key: str  # the profile key (or command-line option) that would fix it
    text: str  # what to write there, and why


def _short(value: Any, limit: int = 120) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _closest(word: str, options: list[str]) -> str | None:
    found = difflib.get_close_matches(word, options, n=1, cutoff=0.4)
    return found[0] if found else None


def paths_of(obj: Any, depth: int = 2, prefix: str = "") -> list[str]:
    """The dotted paths in an object, to `depth` levels (what a profile may name)."""
    if not isinstance(obj, dict) or depth == 0:
        return []
    out: list[str] = []
    for key, value in obj.items():
        path = f"{prefix}{key}"
        out.append(path)
        out += paths_of(value, depth - 1, f"{path}.")
    return out


def caps_path(obj: Any, depth: int = 3, prefix: str = "") -> str | None:
    """The path of an object that looks like router RTP capabilities (a `codecs` list), if any."""
    if not isinstance(obj, dict) or depth == 0:
        return None
    if isinstance(obj.get("codecs"), list) and prefix:
        return prefix.rstrip(".")
    for key, value in obj.items():
        found = caps_path(value, depth - 1, f"{prefix}{key}.")
        if found:
            return found
    return None


# --------------------------------------------------------------------------- handshake

def handshake_hint(message: str, profile: SignalingProfile) -> Hint:
    """The key behind a refused or failed Socket.IO connection (the server's text in `message`)."""
    # Only the server's words count: a URL in the message may well contain "auth" or "origin".
    said = message.split("refused the connection:", 1)[-1]
    lowered = said.lower()
    sio = profile.socketio
    if "origin" in lowered:
        origin = next((v for k, v in sio.headers.items() if k.lower() == "origin"), None)
        if origin is None:
            return Hint("socketio.headers.Origin", "the gateway checks the Origin header: add "
                        "socketio.headers = { Origin = \"https://<the origin its web app is served from>\" }")
        return Hint("socketio.headers.Origin", f"the gateway does not accept Origin \"{origin}\": set "
                    "socketio.headers.Origin to the origin its web app is served from")
    if "invalid namespace" in lowered:
        return Hint("socketio.namespace", f"the gateway has no namespace \"{sio.namespace}\": set "
                    "socketio.namespace to the one its client connects to")
    if "http 404" in lowered or ("http 400" in lowered and "transport" not in lowered):
        return Hint("socketio.path", f"no Socket.IO server at path \"{sio.path}\": set socketio.path to the "
                    "path its client uses (the `path` option of io())")
    if "transport unknown" in lowered or "bad request" in lowered:
        return Hint("socketio.transports", "the gateway refuses this transport: try socketio.transports = "
                    "[\"polling\", \"websocket\"]")
    if "certificate" in lowered or "tls" in lowered:
        return Hint("--ca-cert", "pass the CA bundle that signs the gateway's certificate (--ca-cert PEM), "
                    "or --insecure to skip verification")
    if "cannot reach" in lowered:
        return Hint("--target", "is the gateway up, and is --target its URL (scheme, host and port)?")
    if any(word in lowered for word in TOKEN_WORDS):
        where = [f"socketio.{part}" for part in ("query", "headers", "auth")
                 if any("{token}" in str(v) for v in getattr(sio, part).values())]
        placed = ", ".join(where) or "socketio.auth.token (the default)"
        key = "credentials.claims" if "claim" in lowered else "[credentials]"
        return Hint(key, f"the gateway refused the credentials: check [credentials] (kind, the secret it "
                    f"signs with via secret_env, claims) and where {{token}} travels ({placed})")
    return Hint("socketio", "the gateway refused the handshake: compare socketio.auth, socketio.headers and "
                "socketio.query with what its client sends")


# --------------------------------------------------------------------------- requests

def placeholder_hint(message: str) -> Hint | None:
    """An unknown `{name}` in a template: the names that exist at that step, the closest first."""
    match = PLACEHOLDER.search(message)
    if match is None:
        return None
    name = match.group("name")
    known = re.findall(r"'([^']+)'", match.group("known"))
    close = _closest(name, known)
    text = f"no variable {{{name}}} at this step; known: {', '.join('{' + k + '}' for k in known)}"
    if close:
        text += f" — did you mean {{{close}}}?"
    text += f" (an earlier join step's response can provide it: response = {{ {name} = \"<path>\" }})"
    return Hint(match.group("key"), text)


def _data(answer: Any, profile: SignalingProfile) -> Any:
    if profile.ack.data_path and isinstance(answer, dict):
        try:
            return lookup(answer, profile.ack.data_path)
        except MissingField:
            return answer
    return answer


def _keys(data: Any) -> str:
    return ", ".join(sorted(str(k) for k in data)) if isinstance(data, dict) else _short(data, 40)


def _error_key(answer: Any) -> str | None:
    if isinstance(answer, dict):
        return next((k for k in ERROR_KEYS if answer.get(k)), None)
    return None


def _refusal(name: str, role: str, reason: str, profile: SignalingProfile) -> Hint:
    spec = profile.requests[name]
    lowered = reason.lower()
    if "first" in lowered or "before" in lowered:
        where = f"sequence.{role}" if role else "sequence.join"
        return Hint(where, f"the gateway wants another request before '{name}' ({reason}): add that "
                    f"request to sequence.join (every peer) or {where} (this role)")
    for key in spec.payload:
        if re.search(rf"\b{re.escape(key)}\b", reason):
            return Hint(f"requests.{name}.payload.{key}", f"the gateway refused the value of '{key}': "
                        f"{reason}")
    return Hint(f"requests.{name}.payload", f"the gateway refused the request ({reason}): compare "
                f"requests.{name}.payload (and .event \"{spec.event}\") with what it expects")


def _missing(name: str, path: str, answer: Any, profile: SignalingProfile) -> Hint:
    spec = profile.requests[name]
    data = _data(answer, profile)
    error = _error_key(data)
    if error and not profile.ack.error_path:
        refusal = f"{{{error}: {_short(data[error], 80)}}}"
        return Hint("ack.error_path", f"the answer is a refusal ({refusal}): set ack.error_path = "
                    f"\"{error}\" so refusals are reported as such")
    var = next((v for v, p in spec.response.items() if p == path), path)
    key = f"requests.{name}.response.{var}"
    if not isinstance(data, dict):
        return Hint(key, f"the answer is {_short(data, 80)}, not an object with '{path}'")
    # The deepest part of the path that exists, and the keys there.
    parts = path.split(".")
    base, here = "", data
    for part in parts[:-1]:
        if isinstance(here, dict) and part in here:
            here, base = here[part], f"{base}{part}."
        else:
            break
    keys = sorted(here) if isinstance(here, dict) else []
    missing = path[len(base):].split(".")[0]
    guess = caps_path(data) if var == "rtp_capabilities" else None
    if guess is None:
        close = _closest(missing, [str(k) for k in keys])
        guess = f"{base}{close}" if close else None
    shown = ", ".join(str(k) for k in keys) or "none"
    text = f"the answer has no '{path}' (keys{' under ' + base.rstrip('.') if base else ''}: {shown})"
    if guess:
        text += f": set {key} = \"{guess}\""
    return Hint(key, text)


def request_hint(name: str, role: str, message: str, answer: Any, answered: bool,
                 profile: SignalingProfile) -> Hint:
    """The key behind a failed request, from its error text and its raw answer (`answered` False: none)."""
    spec = profile.requests[name]
    ack = profile.ack
    placeholder = placeholder_hint(message)
    if placeholder is not None:
        return placeholder
    if not answered:
        if "disconnected" in message.lower():
            return Hint(f"requests.{name}", f"the gateway dropped the connection on '{name}' (event "
                        f"\"{spec.event}\"): it may reject this event or payload by disconnecting")
        if "no answer" in message:
            return Hint(f"requests.{name}.event", f"the gateway never answered event \"{spec.event}\": "
                        f"requests.{name}.event may be wrong (no handler for it, or not in namespace "
                        f"\"{profile.socketio.namespace}\"), or the gateway does not acknowledge it; if it "
                        f"is only slow, raise requests.{name}.timeout_s")
        return Hint(f"requests.{name}", message)
    if ack.ok_path and (not isinstance(answer, dict) or ack.ok_path not in answer):
        error = _error_key(answer)
        keys = f" (its keys: {', '.join(sorted(answer))})" if isinstance(answer, dict) else ""
        text = (f"the answers are bare, with no '{ack.ok_path}' key{keys}: set ack.ok_path = \"\""
                + (" and ack.data_path = \"\"" if ack.data_path else ""))
        if error:
            text += f", and ack.error_path = \"{error}\" (refusals come as {{{error}: …}})"
        return Hint("ack.ok_path", text)
    if isinstance(answer, str) and spec.response:
        return Hint(f"requests.{name}.response", f"the gateway answers the plain string "
                    f"\"{_short(answer, 60)}\": set requests.{name}.expect = \"{answer}\" and remove "
                    f"requests.{name}.response")
    if f"(requests.{name}.expect)" in message:
        return Hint(f"requests.{name}.expect", f"the gateway answered {_short(answer, 60)}: if that is "
                    f"success, set requests.{name}.expect = \"{answer}\"")
    missing = LACKS.search(message)
    if missing is not None:
        return _missing(name, missing.group("path"), answer, profile)
    if "refused by the gateway" in message:
        reason = message.split("refused by the gateway:", 1)[-1].strip()
        return _refusal(name, role, reason, profile)
    if "transport fields are unusable" in message:
        return Hint("requests.create_transport.response", "map id, ice_parameters, ice_candidates and "
                    f"dtls_parameters to where the answer keeps them (answer: {_short(answer)})")
    return Hint(f"requests.{name}", message)


def join_hint(role: str, answers: list[tuple[str, Any]], profile: SignalingProfile) -> Hint:
    """No join step named the router capabilities: where they are in the raw answers, or what there was."""
    for step, answer in answers:
        found = caps_path(_data(answer, profile))
        if found:
            return Hint(f"requests.{step}.response.rtp_capabilities", f"'{step}' answers them at "
                        f"'{found}': set requests.{step}.response.rtp_capabilities = \"{found}\"")
    steps = ", ".join(profile.steps(role)) or "none"
    present = "; ".join(f"{step}: {_keys(_data(a, profile))}" for step, a in answers) or "no answers"
    last = profile.steps(role)[-1] if profile.steps(role) else "join"
    return Hint(f"requests.{last}.response", f"no join step ({steps}) gave router RTP capabilities; the "
                f"answers have: {present}. Name them rtp_capabilities in one step's response table")


# --------------------------------------------------------------------------- announcements

# Version 1 profiles write the consume rules as keys of [producers] (profile_file.py); the third, from
# the optional `language`, compares that field with the listener's target language.
V1_RULE_KEYS = {(0, "field"): "producers.type", (0, "equals"): "producers.translated_type",
                (1, "field"): "producers.source", (1, "equals"): "producers.source",
                (2, "field"): "producers.language", (2, "equals"): "producers.language"}


def _rule_key(i: int, part: str, version: int) -> str:
    if version == 1 and (i, part) in V1_RULE_KEYS:
        return V1_RULE_KEYS[(i, part)]
    return f"producers.consume[{i}].{part}"


def announcement_hint(spec: ProducerSpec, announced: list[Any], variables: dict[str, Any],
                      other_events: list[str], malformed: int = 0, version: int = 2) -> Hint:
    """Why no announced producer matched `producers.consume`, with the fields the announcements have."""
    if not announced:
        heard = f"; the listener did receive: {', '.join(sorted(set(other_events)))}" if other_events else ""
        if malformed:
            at = f" (or nothing at producers.list_path '{spec.list_path}')" if spec.list_path else ""
            return Hint("producers.id", f"{malformed} announcement(s) had no '{spec.id}'{at}{heard}")
        return Hint("producers.announce_event", f"nothing was announced as \"{spec.announce_event}\"{heard}: "
                    "set producers.announce_event to the gateway's event (producers.list_path if the list "
                    "sits under a key)")
    fields = sorted({p for info in announced for p in paths_of(info)})
    rules = "; ".join(f"{r.field} {'!=' if r.negate else '=='} \"{r.value}\"" for r in spec.consume)
    for i, rule in enumerate(spec.consume):
        if any(rule.holds(info, variables) for info in announced):
            continue
        where = f"producers.consume[{i}]"
        values = []
        for info in announced:
            try:
                values.append(str(lookup(info, rule.field)))
            except MissingField:
                pass
        if not values:
            close = _closest(rule.field, fields)
            guess = f": did you mean \"{close}\"?" if close else ""
            return Hint(_rule_key(i, "field", version), f"no announcement has '{rule.field}' (they have: "
                        f"{', '.join(fields) or 'no fields'}){guess} — rules: {rules}")
        try:
            wanted = str(fill(rule.value, variables, f"{where}.value"))
        except ProfileError as exc:
            return Hint(f"{where}", str(exc))
        op = "not_equals" if rule.negate else "equals"
        seen = ", ".join(sorted(set(values)))
        wants = f"{'not ' if rule.negate else ''}\"{wanted}\" (from \"{rule.value}\")"
        return Hint(_rule_key(i, op, version), f"announced {rule.field}: {seen}; the rule wants {wants} — "
                    f"rules: {rules}")
    return Hint("producers.consume", "each rule holds for some announcement but none meets them all "
                f"(rules: {rules}): announced {_short(announced, 200)}")
