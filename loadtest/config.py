"""The run config (TOML), validated; command-line flags override it. Errors name the bad key."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from loadtest.cast import Cast, CastError, cast_for
from loadtest.conditions import ImpairmentConfig, NoiseConfig, impairment_from_table, noise_from_table
from loadtest.errors import UsageError
from loadtest.ice import AUTO, TurnRelay, validate_ice_addresses, validate_turn_url
from loadtest.tomlconfig import build, check_sections, read_toml

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_FIXTURES = REPO_ROOT / "fixtures" / "audio" / "manifest.json"
MONOLOGUE_MIN_S = 60.0


class ConfigError(UsageError):
    """A run config value is wrong; the message names the key."""


@dataclass(frozen=True)
class TargetConfig:
    url: str = ""  # empty: start the embedded reference stack
    ca_cert: str = ""
    insecure: bool = False
    profile: str = "reference"
    # "auto": loopback for a loopback target, else aioice's own interface enumeration (loadtest/ice.py).
    ice_addresses: tuple[str, ...] = (AUTO,)
    auth_token: str = ""
    relay_only: bool = False  # every caller transport relays through turn_url (iceTransportPolicy relay)
    turn_url: str = ""  # turn:host:port?transport=udp
    turn_username: str = ""
    turn_credential: str = field(default="", repr=False)  # never printed, never written to run.json
    # Host-name overrides, curl's --resolve: "host:ip" each ([target] resolve may be a {host = ip} table).
    resolve: tuple[str, ...] = ()
    traefik_api: str = ""  # the target's Traefik API (preflight reads its routes; the run its metrics)
    traefik_metrics: str = ""  # Traefik's Prometheus endpoint ("" = <traefik_api>/metrics)

    def relay(self) -> TurnRelay | None:
        """The TURN server every caller transport relays through, on a relay-only run."""
        return TurnRelay(self.turn_url, self.turn_username, self.turn_credential) if self.relay_only else None


@dataclass(frozen=True)
class ScenarioConfig:
    # one-way | two-way | group | barge-in | monologue (loadtest/cast.py, loadtest/scenarios.py)
    kind: str = "one-way"
    callers: int = 1
    duration_s: float = 30.0
    # Longer than the longest fixture (6.8 s) plus its translation's start: no self-inflicted queueing.
    utterance_interval_s: float = 9.0
    fixtures: str = str(DEFAULT_FIXTURES)
    fixture_ids: tuple[str, ...] = ()
    source_language: str = "en"
    target_language: str = "es"
    response_timeout_s: float = 10.0
    connect_timeout_s: float = 15.0
    # A caller the server drops (gateway or proxy restart) connects again and speaks on (loadtest/
    # conversation.py); false: it stays down.
    reconnect: bool = False
    opus_bitrate: int = 32000
    listeners: int = 4  # group: listeners per call
    # group: the listeners' languages, in turn (default: target_language)
    target_languages: tuple[str, ...] = ()
    listen_sample: float = 0.0  # share of utterances whose translated audio is decoded and checked

    def cast(self) -> Cast:
        return cast_for(self.kind, self.source_language, self.target_language, self.listeners,
                        self.target_languages)


@dataclass(frozen=True)
class StackRef:
    config: str = "default"
    state_dir: str = ".stack/run"
    port_offset: int = 0


@dataclass(frozen=True)
class RunConfig:
    target: TargetConfig = field(default_factory=TargetConfig)
    scenario: ScenarioConfig = field(default_factory=ScenarioConfig)
    stack: StackRef = field(default_factory=StackRef)
    thresholds: tuple[str, ...] = ()
    impairment: ImpairmentConfig = field(default_factory=ImpairmentConfig)  # [impairment] (conditions.py)
    noise: NoiseConfig = field(default_factory=NoiseConfig)  # [noise]

    def with_overrides(self, **sections: dict[str, Any]) -> RunConfig:
        """Apply non-None overrides per section, e.g. ``scenario={"callers": 4}``."""
        updated = self
        for section, values in sections.items():
            current = getattr(updated, section)
            clean = {k: v for k, v in values.items() if v is not None}
            updated = replace(updated, **{section: build(type(current), clean, section, ConfigError,
                                                         base=current)})
        validate(updated)
        return updated


def validate(cfg: RunConfig) -> None:
    t, s = cfg.target, cfg.scenario
    if t.url:
        parsed = urlparse(t.url)
        if parsed.scheme not in ("https", "http") or not parsed.hostname:
            raise ConfigError(f"'target.url' must be an http(s) URL, got {t.url!r}")
    if t.ca_cert and not Path(t.ca_cert).is_file():
        raise ConfigError(f"'target.ca_cert': file not found: {t.ca_cert}")
    problem = validate_ice_addresses(t.ice_addresses)
    if problem:
        raise ConfigError(f"'target.ice_addresses': {problem}")
    if t.turn_url and (problem := validate_turn_url(t.turn_url)):
        raise ConfigError(f"'target.turn_url': {problem}")
    if t.resolve:
        from loadtest.resolve import ResolveError, parse

        try:
            parse(t.resolve)
        except ResolveError as exc:
            raise ConfigError(f"'target.resolve': {exc}") from None
    for key in ("traefik_api", "traefik_metrics"):
        url = getattr(t, key)
        if url and (urlparse(url).scheme not in ("http", "https") or not urlparse(url).hostname):
            raise ConfigError(f"'target.{key}' must be an http(s) URL, got {url!r}")
    if t.relay_only and not t.turn_url:
        raise ConfigError("'target.relay_only' needs 'target.turn_url' (the TURN server to relay through)")
    if s.callers < 1:
        raise ConfigError(f"'scenario.callers' must be >= 1, got {s.callers}")
    if s.duration_s <= 0:
        raise ConfigError(f"'scenario.duration_s' must be > 0, got {s.duration_s}")
    if s.utterance_interval_s <= 0:
        raise ConfigError(f"'scenario.utterance_interval_s' must be > 0, got {s.utterance_interval_s}")
    try:
        s.cast()
    except CastError as exc:
        raise ConfigError(f"'scenario.kind': {exc}") from None
    if s.kind == "monologue" and s.duration_s < MONOLOGUE_MIN_S:
        raise ConfigError("'scenario.duration_s': a monologue is one take of at least "
                          f"{MONOLOGUE_MIN_S:.0f} s "
                          f"(the gateway's segmentation is judged over it), got {s.duration_s:g}")
    if not 0.0 <= s.listen_sample <= 1.0:
        raise ConfigError(f"'scenario.listen_sample' must be a share between 0 and 1, got {s.listen_sample}")
    if s.response_timeout_s <= 0 or s.connect_timeout_s <= 0:
        raise ConfigError("'scenario.response_timeout_s' and 'scenario.connect_timeout_s' must be > 0")
    if cfg.impairment.enabled:
        from loadtest.impairments.profiles import ImpairmentError, resolve

        try:
            resolve(cfg.impairment)
        except ImpairmentError as exc:
            raise ConfigError(f"'impairment': {exc}") from None


def _resolve_table(target: Any) -> Any:
    """[target] resolve = {"webrtc.example.test" = "127.0.0.1"} as the field's "host:ip" strings."""
    if isinstance(target, dict) and isinstance(target.get("resolve"), dict):
        return {**target, "resolve": [f"{host}:{ip}" for host, ip in target["resolve"].items()]}
    return target


def load_run_config(path: str | Path | None = None) -> RunConfig:
    if path is None:
        cfg = RunConfig()
        validate(cfg)
        return cfg
    file = Path(path)
    doc = read_toml(file, ConfigError, "run config")
    try:
        check_sections(doc, ("target", "scenario", "stack", "thresholds", "impairment", "noise"), ConfigError)
        section = doc.get("thresholds", {})
        rules = section.get("rules", []) if isinstance(section, dict) else None
        if rules is None or not all(isinstance(r, str) for r in rules):
            raise ConfigError("'thresholds.rules' must be a list of strings like \"e2e.p95 < 1500\"")
        cfg = RunConfig(
            target=build(TargetConfig, _resolve_table(doc.get("target", {})), "target", ConfigError),
            scenario=build(ScenarioConfig, doc.get("scenario", {}), "scenario", ConfigError),
            stack=build(StackRef, doc.get("stack", {}), "stack", ConfigError),
            thresholds=tuple(rules),
            impairment=impairment_from_table(doc.get("impairment", {}), ConfigError),
            noise=noise_from_table(doc.get("noise", {}), ConfigError),
        )
        validate(cfg)
    except ConfigError as exc:
        raise ConfigError(f"{file}: {exc}") from None
    return cfg
