"""What the engines need of a run's adverse conditions: each caller's network and clips, run.json's record.

Both engines (runner.py, swarm.py) call these, so a caller gets the same conditions whichever runs it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from loadtest.conditions import ImpairmentConfig, NoiseConfig

if TYPE_CHECKING:
    from loadtest.fixtures import EncodedClip, FixtureLibrary
    from loadtest.impairments.observe import NetworkPlan


def network_plan(config: ImpairmentConfig, scope: str = "") -> NetworkPlan | None:
    """Each caller's link (None: the run is not impaired and no datagram is touched)."""
    if not config.enabled:
        return None
    from loadtest.impairments.observe import NetworkPlan

    return NetworkPlan(config, scope)


def clip_for(library: FixtureLibrary, fixture_id: str, noise: NoiseConfig, caller: int) -> EncodedClip:
    """The clip as this caller speaks it: clean, or with noise at the caller's SNR (encoded once)."""
    return library.get(fixture_id, noise.snr_for(caller), noise.kind, noise.seed)


def pre_encode(library: FixtureLibrary, fixture_ids: Iterable[str], noise: NoiseConfig) -> None:
    """Encode every clip at every configured SNR before any clock starts (never on the media loop)."""
    snrs = set(noise.snr_db) or {None}
    for fixture_id in fixture_ids:
        for snr in snrs:
            library.get(fixture_id, snr, noise.kind, noise.seed)


def stamp(impairment: ImpairmentConfig, noise: NoiseConfig) -> dict[str, Any]:
    """run.json's record of the conditions: the profiles as configured (the report's "configured")."""
    from loadtest.impairments.profiles import describe_run

    return {"impairment": describe_run(impairment),
            "noise": {"snr_db": list(noise.snr_db), "kind": noise.kind, "seed": noise.seed,
                      "split": "callers: caller i takes snr_db[i mod n]"} if noise.snr_db else None}


# --------------------------------------------------------------------------- the locust engine's flags

def locust_argv(impairment: ImpairmentConfig, noise: NoiseConfig) -> list[str]:
    """The conditions as locustfile options (every tester process resolves them for its own callers)."""
    argv: list[str] = []
    if impairment.enabled:
        argv += ["--impairment", impairment.spec(), "--impairment-seed", str(impairment.seed)]
        if impairment.file:
            argv += ["--impairment-file", impairment.file]
    if noise.snr_db:
        argv += ["--snr-db", noise.spec(), "--noise-kind", noise.kind, "--noise-seed", str(noise.seed)]
    return argv


def add_locust_options(group: Any) -> None:
    group.add_argument("--impairment", default="", help="impairment profile(s): lossy-5 or lossy-5:1,none:1")
    group.add_argument("--impairment-file", default="", help="TOML file of more impairment profiles")
    group.add_argument("--impairment-seed", type=int, default=0, help="seed of the impairment models")
    group.add_argument("--snr-db", default="", help="noise SNRs callers are split across: 20,10,5 (clean)")
    group.add_argument("--noise-kind", default="pink", choices=["pink", "babble"], help="noise kind")
    group.add_argument("--noise-seed", type=int, default=0, help="seed of the noise")


def conditions_from_options(opts: Any) -> tuple[ImpairmentConfig, NoiseConfig]:
    """The locustfile options back into configs; profiles are checked now (SystemExit naming the bad one)."""
    from loadtest.conditions import parse_impairment_spec, parse_snr_list

    try:
        groups = parse_impairment_spec(opts.impairment) if opts.impairment else ()
        snrs = parse_snr_list(opts.snr_db) if opts.snr_db else ()
    except ValueError as exc:
        raise SystemExit(f"speechload: {exc}") from None
    impairment = ImpairmentConfig(groups, opts.impairment_file, opts.impairment_seed)
    if impairment.enabled:
        from loadtest.impairments.profiles import ImpairmentError, resolve

        try:
            resolve(impairment)
        except ImpairmentError as exc:
            raise SystemExit(f"speechload: {exc}") from None
    return impairment, NoiseConfig(snrs, opts.noise_kind, opts.noise_seed)
