"""A gateway on another host: the reference stack runs inside a network namespace of its own, reached over
a veth pair (198.18.77.1 here, 198.18.77.2 there; RFC 2544 benchmarking addresses), and the tester runs
in the root namespace with default options. "auto" must pick this host's real interfaces (a loopback
socket cannot reach the gateway) and every utterance must come back; relay-only runs go through the
stack's coturn and never write its credential anywhere.

The namespace, the veth pair and the stack are removed even when a test fails. Port offset 700.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from loadtest.ice import TURN_CREDENTIAL_ENV
from sut.config import CONFIG_DIR
from tests.integration.stackrun import short_fixture_ids
from tests.prereq import missing

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
PORT_OFFSET = 700
ROOT_ADDR, NS_ADDR, PREFIX = "198.18.77.1", "198.18.77.2", 30
TURN_USER, TURN_SECRET = "speechload", "remote-turn-s3cret"


@dataclass(frozen=True)
class RemoteStack:
    url: str
    ca_cert: Path
    state_dir: Path
    turn_url: str


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


def _in_ns(ns: str, argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, cwd=REPO,
                          timeout=timeout, check=False)


def _require_netns() -> None:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        missing("needs root and iproute2 to create a network namespace (CI runs as root)")
    taken = _ip("-o", "addr", "show", "to", f"{ROOT_ADDR}/{PREFIX}").stdout.strip()
    if taken:
        pytest.fail(f"{ROOT_ADDR} is already assigned (a leftover of an earlier run?): {taken}")


def _stack_config(path: Path) -> Path:
    """fixed-delays with every listener on the namespace's address, and coturn for the relay-only run."""
    doc = tomllib.loads((CONFIG_DIR / "fixed-delays.toml").read_text())
    doc["stack"]["host"] = NS_ADDR
    doc["gateway"]["announced_ip"] = NS_ADDR
    doc["proxy"]["server_name"] = NS_ADDR  # the certificate names the address (TLS stays verified)
    doc["proxy"]["kind"] = "nginx"  # the target is an address: nginx takes any host (Traefik routes by name)
    doc["turn"] = {"enabled": True, "username": TURN_USER, "credential": TURN_SECRET}
    path.write_text(json.dumps(doc))  # load_stack_config reads the TOML's layout from .json as well
    return path


def _cleanup(ns: str, veth: str, state_dir: Path) -> None:
    _in_ns(ns, [sys.executable, "-m", "sut.stack_cli", "down", "--state-dir", str(state_dir)], 60)
    # Anything of ours still in the namespace (the stack's own stop failed): end it by pid.
    for pid in _ip("netns", "pids", ns, check=False).stdout.split():
        try:
            os.kill(int(pid), 9)
        except (ProcessLookupError, ValueError):
            pass
    _ip("netns", "del", ns, check=False)  # takes the namespace's end of the veth pair with it
    _ip("link", "del", veth, check=False)  # gone already with its peer; in case the move failed


@pytest.fixture(scope="module")
def remote_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RemoteStack]:
    _require_netns()
    base = tmp_path_factory.mktemp("remote")
    state_dir = base / "stack"
    ns, veth, peer = f"slremote{os.getpid()}", f"slr{os.getpid()}a", f"slr{os.getpid()}b"
    try:
        _ip("netns", "add", ns)
        _ip("link", "add", veth, "type", "veth", "peer", "name", peer)
        _ip("link", "set", peer, "netns", ns)
        _ip("addr", "add", f"{ROOT_ADDR}/{PREFIX}", "dev", veth)
        _ip("link", "set", veth, "up")
        for args in (["addr", "add", f"{NS_ADDR}/{PREFIX}", "dev", peer], ["link", "set", peer, "up"],
                     ["link", "set", "lo", "up"]):  # the stack's internal hops use 127.0.0.1 in there
            _ip("-n", ns, *args)
        config = _stack_config(base / "remote.json")
        up = _in_ns(ns, [sys.executable, "-m", "sut.stack_cli", "up", "--config", str(config),
                         "--state-dir", str(state_dir), "--port-offset", str(PORT_OFFSET)], 150)
        assert up.returncode == 0, f"stack up in {ns} failed:\n{up.stdout}\n{up.stderr}"
        yield RemoteStack(f"https://{NS_ADDR}:{8443 + PORT_OFFSET}", state_dir / "ca.pem", state_dir,
                          f"turn:{NS_ADDR}:{3478 + PORT_OFFSET}?transport=udp")
    finally:
        _cleanup(ns, veth, state_dir)


def _run(stack: RemoteStack, out: Path, *extra: str, env: dict[str, str] | None = None
         ) -> tuple[subprocess.CompletedProcess[str], float]:
    ids = short_fixture_ids(max_duration_s=3.5, count=2)
    argv = [sys.executable, "-m", "loadtest.cli", "run", "--target", stack.url,
            "--ca-cert", str(stack.ca_cert), "--engine", "direct", "--skip-preflight",
            "--callers", "1", "--duration", "10", "--interval", "5", "--out", str(out), *extra]
    config = out.parent / f"{out.name}.toml"
    # Reachability is under test here, not fixed-delays' latencies against the production budget.
    config.write_text(f"[scenario]\nfixture_ids = {json.dumps(list(ids))}\nconnect_timeout_s = 8\n"
                      '[thresholds]\nrules = ["e2e.p95 < 5000"]\n')
    argv += ["--config", str(config)]
    t0 = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=180, check=False,
                          env={**os.environ, **(env or {})})
    return done, time.monotonic() - t0


def _finished(done: subprocess.CompletedProcess[str], out: Path) -> tuple[dict[str, object], pd.DataFrame]:
    assert done.returncode == 0, f"loadtest run failed ({done.returncode}):\n{done.stderr[-3000:]}"
    return json.loads((out / "run.json").read_text()), pd.read_parquet(out / "samples.parquet")


def test_default_options_reach_a_gateway_on_another_host(remote_stack: RemoteStack, tmp_path: Path) -> None:
    done, took = _run(remote_stack, tmp_path / "run")
    run, samples = _finished(done, tmp_path / "run")
    assert len(samples) >= 2 and (samples["status"] == "ok").all(), samples[["status", "error"]]
    chosen = run["ice_addresses"]
    assert run["ice_mode"] == "auto" and chosen, run
    assert not any(ipaddress.ip_address(a).is_loopback for a in chosen), chosen
    assert ROOT_ADDR in chosen, chosen  # the interface that faces the gateway was offered
    assert done.stderr.count("ICE host addresses:") == 1 and "(auto: remote target)" in done.stderr
    print(f"\nremote target: {len(samples)} utterances ok, ICE host addresses {chosen}, run {took:.1f} s")


def _leaks(done: subprocess.CompletedProcess[str], out: Path) -> list[str]:
    secret = TURN_SECRET.encode()
    files = [str(p) for p in out.rglob("*") if p.is_file() and secret in p.read_bytes()]
    return files + (["stdout/stderr"] if TURN_SECRET in done.stdout + done.stderr else [])


def test_relay_only_goes_through_turn_and_keeps_the_secret(remote_stack: RemoteStack, tmp_path: Path) -> None:
    relay = ("--relay-only", "--turn-url", remote_stack.turn_url, "--turn-username", TURN_USER)
    out = tmp_path / "relay"
    done, took = _run(remote_stack, out, *relay, env={TURN_CREDENTIAL_ENV: TURN_SECRET})
    run, samples = _finished(done, out)
    assert len(samples) >= 2 and (samples["status"] == "ok").all(), samples[["status", "error"]]
    assert run["relay_only"] is True and run["ice_mode"] == "auto"
    assert not _leaks(done, out), _leaks(done, out)
    # The proof that media took the relay: with a wrong secret there is no allocation, and the host
    # path (which the first test showed working) must not be used instead, so nothing connects.
    refused = tmp_path / "refused"
    wrong = "wrong-" + TURN_SECRET[::-1]
    bad, _ = _run(remote_stack, refused, *relay, "--turn-credential", wrong)
    assert bad.returncode == 3, bad.stderr[-3000:]
    assert wrong not in bad.stdout + bad.stderr + (refused / "run-failed.json").read_text()
    assert "did not complete through the TURN relay" in bad.stderr, bad.stderr[-3000:]
    print(f"\nrelay-only: {len(samples)} utterances ok in {took:.1f} s; wrong secret: no connection")
