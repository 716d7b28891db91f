"""`loadtest profile check` against the real foreign SFU (sut/foreign): the right profile walks to the end
(exit 0); deliberately wrong copies stop at the step that fails, naming the profile key and the hint
(exit 1); a bad profile file is a usage error naming the key (exit 4). The JWT secret and the tokens
minted from it never appear in the output.

The gateway listens on a port in 7650-7654 with its RTC ports in 7655-7669 (this module's share).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sut.foreign.launcher import ForeignGateway
from tests.integration.foreign import running_foreign

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PROFILE = REPO / "sut" / "foreign" / "profile.toml"
SECRET = "profile-check-secret-0123456789abcdef"  # long enough for HS256 without PyJWT's warning
ORIGIN = "http://app.test"  # what the profile's Origin header says
JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]+\.")


@pytest.fixture(scope="module")
def gateway() -> Iterator[ForeignGateway]:
    with running_foreign((7650, 7654), (7655, 7669), jwt_secret=SECRET, allowed_origin=ORIGIN) as gw:
        yield gw


def check(gw: ForeignGateway, profile: Path, *extra: str) -> tuple[subprocess.CompletedProcess[str], float]:
    env = dict(os.environ, FOREIGN_SFU_JWT_SECRET=SECRET)
    argv = [sys.executable, "-m", "loadtest.cli", "profile", "check", "--target", gw.url,
            "--profile", str(profile), "--timeout", "5", *extra]
    t0 = time.monotonic()
    done = subprocess.run(argv, cwd=REPO, env=env, text=True, capture_output=True, timeout=120, check=False)
    elapsed = time.monotonic() - t0
    print(f"\n$ loadtest profile check … {profile.name}: exit {done.returncode} in {elapsed:.1f} s\n"
          f"{done.stdout}")
    return done, elapsed


def assert_no_secret(text: str) -> None:
    assert SECRET not in text
    assert not JWT.search(text), "a minted token was printed"


def test_the_right_profile_walks_to_the_end(gateway: ForeignGateway) -> None:
    done, elapsed = check(gateway, PROFILE)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    lines = out.splitlines()
    assert lines[-1].startswith("PASS walk complete")
    assert not [line for line in lines if line.startswith("❌")]
    for step in ("credentials", "handshake (listener)", "handshake (speaker)",
                 "requests.open_room (listener)", "requests.enter (speaker)",
                 "requests.ask_to_speak (speaker)", "rtp_capabilities (speaker)",
                 "requests.create_transport (listener)", "requests.connect_transport (speaker)",
                 "requests.produce (speaker)", "connect (speaker, send)", "announcements (listener)",
                 "requests.consume (listener)", "connect (listener, recv)", "media (listener)"):
        assert any(line.startswith(f"✅ {step}") for line in lines), step
    assert "access_token=***" in out and '"Origin": "http://app.test"' in out  # the handshake, redacted
    assert '→ "granted"' in out  # a plain-string answer, shown as it came
    assert re.search(r"ICE \d+ ms, DTLS \d+ ms", out)
    assert "matched producers.consume" in out and '"kind": "audio"' in out
    assert "⏭️ requests.resume_consumer" in out and "skipped: no [requests.resume_consumer]" in out
    assert_no_secret(out + done.stderr)
    assert elapsed < 30


def _ok_path(text: str) -> str:
    return text.replace('error_path = "error"', 'ok_path = "ok"\nerror_path = "error"')


def _no_origin(text: str) -> str:
    return text.replace('headers = { Origin = "http://app.test" }\n', "")


def _wrong_caps_key(text: str) -> str:
    return text.replace('rtp_capabilities = "router_caps"', 'rtp_capabilities = "router_capabilities"')


WRONG: list[tuple[str, Callable[[str], str], str, tuple[str, ...]]] = [
    ("ack-ok-path", _ok_path, "requests.open_room",
     ("ack.ok_path", 'set ack.ok_path = ""', "no 'ok' key (its keys: room_ref)")),
    ("no-origin", _no_origin, "socketio.headers.Origin",
     ("refused the connection: Origin not allowed", "add socketio.headers = { Origin = ")),
    ("wrong-caps-key", _wrong_caps_key, "requests.enter.response.rtp_capabilities",
     ("the answer lacks 'router_capabilities'", 'requests.enter.response.rtp_capabilities = "router_caps"')),
]


@pytest.mark.parametrize(("name", "edit", "key", "phrases"), WRONG, ids=[w[0] for w in WRONG])
def test_a_wrong_copy_stops_at_its_key_with_a_hint(gateway: ForeignGateway, tmp_path: Path, name: str,
                                                   edit: Callable[[str], str], key: str,
                                                   phrases: tuple[str, ...]) -> None:
    text = PROFILE.read_text()
    wrong = edit(text)
    assert wrong != text, "the edit did not apply: the profile changed"
    path = tmp_path / f"{name}.toml"
    path.write_text(wrong)
    done, elapsed = check(gateway, path)
    out = done.stdout
    assert done.returncode == 1, out + done.stderr
    assert f"   failed: {key}" in out and out.count("❌") == 1
    for phrase in phrases:
        assert phrase in out, phrase
    assert out.splitlines()[-1].startswith(f"FAIL at {key}")
    assert_no_secret(out + done.stderr)
    assert elapsed < 30


def test_a_bad_profile_file_is_a_usage_error_naming_the_key(gateway: ForeignGateway, tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(PROFILE.read_text().replace('event = "enter"', 'event = "enter"\nbogus = 1'))
    done, _ = check(gateway, path)
    assert done.returncode == 4, done.stdout + done.stderr
    assert "unknown key 'requests.enter.bogus'" in done.stderr
