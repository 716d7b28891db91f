"""Adverse conditions of a run, as configured: which network impairment each caller gets, at which SNR
its speech is noisy. Plain records and parsers (the profiles themselves: loadtest/impairments/).

Callers are split across the configured values, never cycled per utterance: caller ``i`` takes group
``i mod n`` of the weighted list (a caller is a person in one room on one network), so a run of N
callers with SNRs ``20,10,5`` has N/3 callers at each; every caller still speaks every fixture in turn,
so no SNR is tied to a clip.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

NO_IMPAIRMENT = "none"
# The per-utterance network columns (docs/samples.md), cumulative over the conversation when the row was
# made: RTP packets through the caller's link (hook), and the far ends' counts (SFU, listener).
NETWORK_COLUMNS = (
    "net_up_packets", "net_up_dropped", "net_up_delayed", "net_up_delay_ms",
    "net_down_packets", "net_down_dropped", "net_down_delayed", "net_down_delay_ms",
    "sfu_up_lost", "sfu_up_expected", "rx_down_lost", "rx_down_expected", "net_ice_ms",
)
CLEAN = "clean"
NOISE_KINDS = ("pink", "babble")
MAX_WEIGHT = 1000


@dataclass(frozen=True)
class ImpairmentConfig:
    """``groups``: (profile, weight) in order; empty = the run is not impaired (no hook installed)."""

    groups: tuple[tuple[str, int], ...] = ()
    file: str = ""  # extra profiles (TOML), beside the shipped loadtest/impairments/profiles.toml
    seed: int = 0

    @property
    def enabled(self) -> bool:
        return bool(self.groups)

    def spec(self) -> str:
        """The groups as ``--impairment`` takes them: ``lossy-5`` or ``lossy-5:1,none:3``."""
        if len(self.groups) == 1 and self.groups[0][1] == 1:
            return self.groups[0][0]
        return ",".join(f"{name}:{weight}" for name, weight in self.groups)

    def profile_for(self, caller: int) -> str | None:
        return pick(self.groups, caller) if self.groups else None


@dataclass(frozen=True)
class NoiseConfig:
    """``snr_db``: the SNRs callers are split across (None = clean speech); empty = no noise at all."""

    snr_db: tuple[float | None, ...] = ()
    kind: str = "pink"
    seed: int = 0

    @property
    def enabled(self) -> bool:
        return any(v is not None for v in self.snr_db)

    def spec(self) -> str:
        return ",".join(CLEAN if v is None else f"{v:g}" for v in self.snr_db)

    def snr_for(self, caller: int) -> float | None:
        return self.snr_db[caller % len(self.snr_db)] if self.snr_db else None


def pick(groups: tuple[tuple[str, int], ...], caller: int) -> str:
    """Caller i's group: the weighted list laid out in order (a:1,b:3 → a b b b a b b b …)."""
    total = sum(w for _, w in groups)
    slot = caller % total
    for name, weight in groups:
        if slot < weight:
            return name
        slot -= weight
    raise AssertionError("unreachable: slot < total")


def parse_impairment_spec(text: str) -> tuple[tuple[str, int], ...]:
    """``lossy-5`` or ``lossy-5:1,4g-busy:3`` → ((name, weight), …); ValueError naming the bad part."""
    groups: list[tuple[str, int]] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, _, weight = part.partition(":")
        name = name.strip()
        if not name:
            raise ValueError(f"empty profile name in {text!r}")
        try:
            w = int(weight) if weight.strip() else 1
        except ValueError:
            raise ValueError(f"weight of {name!r} must be a whole number, got {weight!r}") from None
        if not 1 <= w <= MAX_WEIGHT:
            raise ValueError(f"weight of {name!r} must lie in 1..{MAX_WEIGHT}, got {w}")
        groups.append((name, w))
    if not groups:
        raise ValueError(f"no profile named in {text!r}")
    return tuple(groups)


def parse_snr(value: Any) -> float | None:
    """One SNR: a number of dB, or "clean" (no noise)."""
    if isinstance(value, str) and value.strip().lower() in (CLEAN, "none", "inf"):
        return None
    if isinstance(value, bool):
        raise ValueError(f"an SNR must be a number of dB or \"clean\", got {value!r}")
    try:
        snr = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"an SNR must be a number of dB or \"clean\", got {value!r}") from None
    if not math.isfinite(snr) or not -20.0 <= snr <= 60.0:
        raise ValueError(f"an SNR must lie in -20..60 dB, got {value!r}")
    return snr


def parse_snr_list(values: str | list[Any] | tuple[Any, ...]) -> tuple[float | None, ...]:
    """``20,10,5`` (or a TOML list; ``clean`` for no noise) → (20.0, 10.0, 5.0)."""
    items = [v for v in values.split(",") if v.strip()] if isinstance(values, str) else list(values)
    if not items:
        raise ValueError("no SNR given")
    return tuple(parse_snr(v) for v in items)


def impairment_from_table(table: Any, error: type[Exception]) -> ImpairmentConfig:
    """``[impairment]``: ``profile = "lossy-5"`` (every caller) or ``groups = ["lossy-5:1", "none:1"]``,
    ``file``, ``seed``."""
    if not isinstance(table, dict):
        raise error(f"'[impairment]' must be a table, got {table!r}")
    unknown = set(table) - {"profile", "groups", "file", "seed"}
    if unknown:
        raise error(f"unknown key 'impairment.{sorted(unknown)[0]}' (known: file, groups, profile, seed)")
    if "profile" in table and "groups" in table:
        raise error("'impairment.profile' and 'impairment.groups' exclude each other")
    raw = table.get("profile", table.get("groups", ""))
    key = "impairment.groups" if "groups" in table else "impairment.profile"
    if isinstance(raw, list) and all(isinstance(x, str) for x in raw):
        raw = ",".join(raw)
    if not isinstance(raw, str):
        raise error(f"'{key}' must be a profile name (or a list of \"name:weight\"), got {raw!r}")
    file, seed = table.get("file", ""), table.get("seed", 0)
    if not isinstance(file, str):
        raise error(f"'impairment.file' must be a string, got {file!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise error(f"'impairment.seed' must be a whole number, got {seed!r}")
    try:
        groups = parse_impairment_spec(raw) if raw.strip() else ()
    except ValueError as exc:
        raise error(f"'{key}': {exc}") from None
    return ImpairmentConfig(groups, file, seed)


def noise_from_table(table: Any, error: type[Exception]) -> NoiseConfig:
    """``[noise]``: ``snr_db = [20, 10, 5]`` (``"clean"`` allowed), ``kind = "pink"|"babble"``, ``seed``."""
    if not isinstance(table, dict):
        raise error(f"'[noise]' must be a table, got {table!r}")
    unknown = set(table) - {"snr_db", "kind", "seed"}
    if unknown:
        raise error(f"unknown key 'noise.{sorted(unknown)[0]}' (known: kind, seed, snr_db)")
    raw = table.get("snr_db", [])
    kind, seed = table.get("kind", "pink"), table.get("seed", 0)
    if kind not in NOISE_KINDS:
        raise error(f"'noise.kind' must be one of {', '.join(NOISE_KINDS)}, got {kind!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise error(f"'noise.seed' must be a whole number, got {seed!r}")
    if not isinstance(raw, list | str):
        raise error(f"'noise.snr_db' must be a list of dB values, got {raw!r}")
    try:
        snrs = parse_snr_list(raw) if raw else ()
    except ValueError as exc:
        raise error(f"'noise.snr_db': {exc}") from None
    return NoiseConfig(snrs, kind, seed)
