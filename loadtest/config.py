"""The run config (TOML), validated; command-line flags override it. Errors name the bad key."""

from __future__ import annotations

import ipaddress
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_FIXTURES = REPO_ROOT / "fixtures" / "audio" / "manifest.json"


class ConfigError(ValueError):
    """A run config value is wrong; the message names the key."""


@dataclass(frozen=True)
class TargetConfig:
    url: str = ""  # empty: start the embedded reference stack
    ca_cert: str = ""
    insecure: bool = False
    profile: str = "reference"
    ice_addresses: tuple[str, ...] = ("127.0.0.1",)
    auth_token: str = ""


@dataclass(frozen=True)
class ScenarioConfig:
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
    opus_bitrate: int = 32000


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

    def with_overrides(self, **sections: dict[str, Any]) -> RunConfig:
        """Apply non-None overrides per section, e.g. ``scenario={"callers": 4}``."""
        updated = self
        for section, values in sections.items():
            current = getattr(updated, section)
            clean = {k: v for k, v in values.items() if v is not None}
            updated = replace(updated, **{section: _build(type(current), clean, section, base=current)})
        validate(updated)
        return updated


def _coerce(value: Any, kind: str, where: str) -> Any:
    if kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"'{where}' must be true or false, got {value!r}")
        return value
    if kind in ("int", "float"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"'{where}' must be a number, got {value!r}")
        if kind == "int" and int(value) != value:
            raise ConfigError(f"'{where}' must be a whole number, got {value!r}")
        return int(value) if kind == "int" else float(value)
    if kind == "str":
        if not isinstance(value, str):
            raise ConfigError(f"'{where}' must be a string, got {value!r}")
        return value
    if kind.startswith("tuple"):
        if isinstance(value, str) or not isinstance(value, list | tuple):
            raise ConfigError(f"'{where}' must be a list, got {value!r}")
        if not all(isinstance(v, str) for v in value):
            raise ConfigError(f"'{where}' must be a list of strings")
        return tuple(value)
    raise ConfigError(f"'{where}': unsupported type {kind}")


def _build(cls: type, table: dict[str, Any], where: str, base: Any = None) -> Any:
    known = {f.name: str(f.type) for f in fields(cls)}
    for key in table:
        if key not in known:
            raise ConfigError(f"unknown config key '{where}.{key}' (known: {', '.join(sorted(known))})")
    values = {k: _coerce(v, known[k], f"{where}.{k}") for k, v in table.items()}
    return replace(base, **values) if base is not None else cls(**values)


def validate(cfg: RunConfig) -> None:
    t, s = cfg.target, cfg.scenario
    if t.url:
        parsed = urlparse(t.url)
        if parsed.scheme not in ("https", "http") or not parsed.hostname:
            raise ConfigError(f"'target.url' must be an http(s) URL, got {t.url!r}")
    if t.ca_cert and not Path(t.ca_cert).is_file():
        raise ConfigError(f"'target.ca_cert': file not found: {t.ca_cert}")
    for address in t.ice_addresses:
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise ConfigError(f"'target.ice_addresses': not an IP address: {address!r}") from None
    if s.callers < 1:
        raise ConfigError(f"'scenario.callers' must be >= 1, got {s.callers}")
    if s.duration_s <= 0:
        raise ConfigError(f"'scenario.duration_s' must be > 0, got {s.duration_s}")
    if s.utterance_interval_s <= 0:
        raise ConfigError(f"'scenario.utterance_interval_s' must be > 0, got {s.utterance_interval_s}")
    if s.response_timeout_s <= 0 or s.connect_timeout_s <= 0:
        raise ConfigError("'scenario.response_timeout_s' and 'scenario.connect_timeout_s' must be > 0")


def load_run_config(path: str | Path | None = None) -> RunConfig:
    if path is None:
        cfg = RunConfig()
        validate(cfg)
        return cfg
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"run config not found: {file}")
    try:
        doc = tomllib.loads(file.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: not valid TOML: {exc}") from None
    allowed = {"target", "scenario", "stack", "thresholds"}
    for key in doc:
        if key not in allowed:
            raise ConfigError(f"{file}: unknown section '[{key}]' (known: {', '.join(sorted(allowed))})")
    section = doc.get("thresholds", {})
    rules = section.get("rules", []) if isinstance(section, dict) else None
    if rules is None or not all(isinstance(r, str) for r in rules):
        raise ConfigError(f"{file}: 'thresholds.rules' must be a list of strings like \"e2e.p95 < 1500\"")
    try:
        cfg = RunConfig(
            target=_build(TargetConfig, doc.get("target", {}), "target"),
            scenario=_build(ScenarioConfig, doc.get("scenario", {}), "scenario"),
            stack=_build(StackRef, doc.get("stack", {}), "stack"),
            thresholds=tuple(rules),
        )
        validate(cfg)
    except ConfigError as exc:
        raise ConfigError(f"{file}: {exc}") from None
    return cfg
