"""loadtest/ice.py: which local addresses ICE gathers on, per target; the config keys that choose them."""

from __future__ import annotations

import argparse
import socket
from pathlib import Path
from typing import Any

import aioice.ice
import pytest

from loadtest import ice
from loadtest.config import ConfigError, RunConfig, TargetConfig, load_run_config
from loadtest.ice import IceChoice, choose_ice, resolve_ice_addresses
from loadtest.locust_run import SwarmOptions, child_env, locust_command
from loadtest.preflight.config import PreflightConfigError, config_for_target
from loadtest.run_command import add_run_command, build_config
from loadtest.target import Target

pytestmark = pytest.mark.unit
FAKE_INTERFACES = ["198.18.77.1", "10.1.2.3"]


@pytest.fixture
def interfaces(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """aioice's enumeration as seen by ice.py (this machine's interfaces would make the test flaky)."""
    monkeypatch.setattr(ice, "_original", lambda use_ipv4, use_ipv6: list(FAKE_INTERFACES))
    return FAKE_INTERFACES


@pytest.fixture(autouse=True)
def _restore_aioice(monkeypatch: pytest.MonkeyPatch) -> None:
    # apply() patches aioice's module global: put it back after each test.
    monkeypatch.setattr(aioice.ice, "get_host_addresses", aioice.ice.get_host_addresses)


@pytest.mark.parametrize(("url", "expected"), [
    ("https://127.0.0.1:8443", ("127.0.0.1",)),
    ("https://127.3.4.5", ("127.0.0.1",)),
    ("https://localhost:8443", ("127.0.0.1",)),
    ("https://[::1]:8443", ("::1",)),
])
def test_auto_for_a_loopback_target_is_loopback(url: str, expected: tuple[str, ...],
                                                interfaces: list[str]) -> None:
    choice = choose_ice(("auto",), url)
    assert choice.addresses == expected and choice.restrict and choice.mode == "auto"
    assert resolve_ice_addresses(("auto",), url) == expected
    assert "auto: loopback target" in choice.describe()


def test_a_name_resolving_only_to_loopback_is_loopback(monkeypatch: pytest.MonkeyPatch,
                                                       interfaces: list[str]) -> None:
    answers = {"gw.test": ["127.0.1.1"], "gw6.test": ["::1"], "mixed.test": ["127.0.0.1", "198.18.77.2"]}

    def fake_getaddrinfo(host: str, *_args: Any, **_kwargs: Any) -> list[Any]:
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, 0, 0, "", (a, 0)) for a in answers[host]]

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    assert resolve_ice_addresses(("auto",), "https://gw.test") == ("127.0.0.1",)
    assert resolve_ice_addresses(("auto",), "https://gw6.test") == ("::1",)
    assert resolve_ice_addresses(("auto",), "https://mixed.test") == tuple(interfaces)


def test_auto_for_a_remote_target_is_every_interface_unrestricted(interfaces: list[str]) -> None:
    ice.restrict_ice_host_addresses(["127.0.0.1"])  # as a previous loopback run in this process left it
    choice = choose_ice(("auto",), "https://198.18.77.2:8443")
    assert choice == IceChoice(tuple(interfaces), "auto", "auto: remote target", False)
    choice.apply()
    assert aioice.ice.get_host_addresses is ice._original  # aioice enumerates by itself again
    assert choice.stamp() == {"ice_addresses": interfaces, "ice_mode": "auto"}
    assert choice.describe() == "ICE host addresses: 198.18.77.1, 10.1.2.3 (auto: remote target)"


def test_explicit_addresses_are_used_as_given(interfaces: list[str]) -> None:
    for url in ("https://127.0.0.1:8443", "https://198.18.77.2"):
        choice = choose_ice(("198.18.77.1", "::1"), url)
        assert choice.addresses == ("198.18.77.1", "::1") and choice.mode == "explicit" and choice.restrict
    choice.apply()
    assert aioice.ice.get_host_addresses(True, False) == ["198.18.77.1"]
    assert aioice.ice.get_host_addresses(True, True) == ["198.18.77.1", "::1"]


def test_the_original_enumeration_is_kept_before_any_patch() -> None:
    ice.restrict_ice_host_addresses(["127.0.0.1"])
    ice.restrict_ice_host_addresses(["198.18.77.1"])
    original = ice.aioice_host_addresses()
    assert original.__module__ == "aioice.ice" and original.__name__ == "get_host_addresses"


@pytest.mark.parametrize(("value", "message"), [
    (["auto", "127.0.0.1"], "cannot be combined"),
    (["127.0.0.1", "eth0"], "not an IP address"),
    ([], "must not be empty"),
])
def test_run_config_rejects_bad_ice_addresses(tmp_path: Path, value: list[str], message: str) -> None:
    listed = ", ".join(f'"{v}"' for v in value)
    path = tmp_path / "run.toml"
    path.write_text(f"[target]\nice_addresses = [{listed}]\n")
    with pytest.raises(ConfigError, match=rf"target\.ice_addresses.*{message}"):
        load_run_config(path)
    with pytest.raises(PreflightConfigError, match=rf"target\.ice_addresses.*{message}"):
        config_for_target("https://127.0.0.1:8443", ice_addresses=tuple(value))


def test_run_config_ice_defaults_and_overrides() -> None:
    assert RunConfig().target.ice_addresses == ("auto",)
    cfg = RunConfig().with_overrides(target={"ice_addresses": ice.parse_ice_flag("198.18.77.1, ::1")})
    assert cfg.target.ice_addresses == ("198.18.77.1", "::1")
    assert ice.parse_ice_flag(None) is None and ice.parse_ice_flag("auto") == ("auto",)


def test_relay_only_needs_a_turn_url_and_hides_the_credential() -> None:
    with pytest.raises(ConfigError, match="target.relay_only"):
        RunConfig().with_overrides(target={"relay_only": True})
    with pytest.raises(ConfigError, match="target.turn_url"):
        RunConfig().with_overrides(target={"turn_url": "http://turn.test"})
    cfg = RunConfig().with_overrides(target={"relay_only": True, "turn_url": "turn:198.18.77.2:3478",
                                             "turn_username": "u", "turn_credential": "s3cret"})
    relay = cfg.target.relay()
    assert relay is not None and relay.credential == "s3cret"
    assert "s3cret" not in repr(cfg) and "s3cret" not in repr(relay)
    assert TargetConfig().relay() is None


def test_locust_gets_ice_and_relay_but_the_credential_only_by_environment(tmp_path: Path) -> None:
    cfg = RunConfig().with_overrides(target={"relay_only": True, "turn_url": "turn:198.18.77.2:3478",
                                             "turn_username": "u", "turn_credential": "s3cret"})
    cmd = locust_command(cfg, Target("https://198.18.77.2:8443", "", False), tmp_path, SwarmOptions(), "r1")
    assert cmd[cmd.index("--ice-address") + 1] == "auto"
    assert cmd[cmd.index("--turn-url") + 1] == "turn:198.18.77.2:3478" and "--relay-only" in cmd
    assert "s3cret" not in " ".join(cmd)
    assert child_env(cfg)[ice.TURN_CREDENTIAL_ENV] == "s3cret"
    assert ice.TURN_CREDENTIAL_ENV not in child_env(RunConfig())


def test_run_flags_reach_the_config() -> None:
    parser = argparse.ArgumentParser()
    add_run_command(parser.add_subparsers())
    args = parser.parse_args(["run", "--ice-address", "198.18.77.1", "--relay-only",
                              "--turn-url", "turn:198.18.77.2:3478", "--turn-username", "u",
                              "--turn-credential", "s3cret"])
    target = build_config(args).target
    assert target.ice_addresses == ("198.18.77.1",) and target.relay_only
    assert (target.turn_url, target.turn_username, target.turn_credential) == (
        "turn:198.18.77.2:3478", "u", "s3cret")
