"""Named impairment profiles: the shipped `profiles.toml` plus a user's file (docs/impairment.md)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from loadtest.conditions import ImpairmentConfig
from loadtest.errors import UsageError
from loadtest.impairments.models import PathSpec

SHIPPED = Path(__file__).resolve().parent / "profiles.toml"
DIRECTIONS = ("uplink", "downlink")
_SPEC_KEYS = {f.name: str(f.type) for f in fields(PathSpec)}


class ImpairmentError(UsageError):
    """A profile file, a profile or a key in it is wrong; the message names it."""


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    uplink: PathSpec  # caller → SFU (what the speaker sends; the listener's RTCP too)
    downlink: PathSpec  # SFU → caller

    def path(self, direction: str) -> PathSpec:
        return self.uplink if direction == "uplink" else self.downlink

    def describe(self) -> dict[str, Any]:
        """The configuration as run.json records it, with each direction's long-run loss."""
        out: dict[str, Any] = {"description": self.description}
        for direction in DIRECTIONS:
            spec = self.path(direction)
            out[direction] = {**{f: getattr(spec, f) for f in _SPEC_KEYS},
                              "configured_loss": spec.configured_loss,
                              "configured_delay_ms": spec.mean_delay_ms}
        return out


def _spec(values: dict[str, Any], where: str, base: PathSpec | None = None) -> PathSpec:
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        kind = _SPEC_KEYS.get(key)
        if kind is None:
            raise ImpairmentError(f"unknown key '{where}.{key}' (known: {', '.join(sorted(_SPEC_KEYS))})")
        if kind == "bool":
            if not isinstance(value, bool):
                raise ImpairmentError(f"'{where}.{key}' must be true or false, got {value!r}")
        elif isinstance(value, bool) or not isinstance(value, int | float):
            raise ImpairmentError(f"'{where}.{key}' must be a number, got {value!r}")
        kwargs[key] = value if kind == "bool" else float(value)
    spec = PathSpec(**{**(vars(base) if base is not None else {}), **kwargs})
    problems = spec.problems()
    if problems:
        raise ImpairmentError(f"'{where}': {problems[0]}")
    return spec


def parse_profile(name: str, table: Any, source: str) -> Profile:
    where = f"{source}: [{name}]"
    if not isinstance(table, dict):
        raise ImpairmentError(f"{where} must be a table")
    description = table.get("description", "")
    if not isinstance(description, str):
        raise ImpairmentError(f"{where}.description must be a string")
    shared = {k: v for k, v in table.items() if k not in ("description", *DIRECTIONS)}
    both = _spec(shared, f"{source}: {name}")
    paths = {}
    for direction in DIRECTIONS:
        override = table.get(direction, {})
        if not isinstance(override, dict):
            raise ImpairmentError(f"{where}.{direction} must be a table")
        paths[direction] = _spec(override, f"{source}: {name}.{direction}", base=both)
    return Profile(name, description, paths["uplink"], paths["downlink"])


def read_profiles(path: Path) -> dict[str, Profile]:
    if not path.is_file():
        raise ImpairmentError(f"impairment profile file not found: {path}")
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ImpairmentError(f"{path}: not valid TOML: {exc}") from None
    return {name: parse_profile(name, table, path.name) for name, table in doc.items()}


def load_profiles(extra: str | Path | None = None) -> dict[str, Profile]:
    """The shipped profiles, then the extra file's (a same-named one replaces the shipped one)."""
    profiles = read_profiles(SHIPPED)
    if extra:
        profiles.update(read_profiles(Path(extra)))
    return profiles


def resolve(config: ImpairmentConfig) -> dict[str, Profile]:
    """The profiles a run's groups name, checked to exist (ImpairmentError naming the unknown one)."""
    if not config.enabled:
        return {}
    known = load_profiles(config.file or None)
    out = {}
    for name, _weight in config.groups:
        if name not in known:
            raise ImpairmentError(f"unknown impairment profile {name!r} (known: {', '.join(sorted(known))}"
                                  + (f"; from {config.file} and the shipped ones)" if config.file else ")"))
        out[name] = known[name]
    return out


def describe_run(config: ImpairmentConfig) -> dict[str, Any] | None:
    """What run.json records: the groups, the seed and every named profile's configuration."""
    if not config.enabled:
        return None
    profiles = resolve(config)
    return {"groups": [{"profile": n, "weight": w} for n, w in config.groups], "seed": config.seed,
            "file": config.file or None, "profiles": {n: p.describe() for n, p in profiles.items()}}
