"""No secret of a run reaches anything it writes or prints, and --insecure is stamped on every output.

A real run (locust engine, preflight on, relay-only through the stack's coturn) with known secrets: the
target URL's userinfo and query value, an auth token the profile puts in the handshake, and the TURN
credential. Every byte of the run directory, stdout and stderr, and the command lines of the run's
children, are searched for each secret (raw and percent-encoded).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from urllib.parse import quote, quote_plus, urlsplit, urlunsplit

import pytest

from sut.config import CONFIG_DIR
from sut.stack import StackInfo
from tests.integration.proctree import descendants, loadtest, run_toml, wait_until
from tests.integration.stackrun import running_stack, short_fixture_ids
from tests.prereq import require_worker

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
USER, PASSWORD = "user-Kx81", "pw-Secret-7731"
QUERY_SECRET = "Query-Secret-42/+="
TOKEN = "Token-Secret-3141"
TURN_CREDENTIAL = "turn-Cred-9f3a"
SECRETS = (PASSWORD, QUERY_SECRET, TOKEN, TURN_CREDENTIAL, USER)


@pytest.fixture(autouse=True)
def _prerequisites() -> None:
    require_worker()


def forms(secret: str) -> set[bytes]:
    return {s.encode() for s in (secret, quote(secret, safe=""), quote_plus(secret))}


def leaks(data: bytes) -> list[str]:
    return [s for s in SECRETS if any(f in data for f in forms(s))]


def secret_url(info: StackInfo) -> str:
    parts = urlsplit(info.target_url)
    netloc = f"{USER}:{quote(PASSWORD, safe='')}@{parts.netloc}"
    return urlunsplit((parts.scheme, netloc, "/", f"key={quote(QUERY_SECRET, safe='')}&lang=en", ""))


def resolve_args(info: StackInfo) -> list[str]:
    return list(getattr(info, "resolve_args", []))  # the proxy may route by host name (--resolve)


def test_no_secret_in_any_output_and_insecure_is_stamped(tmp_path: Path) -> None:
    stack_toml = tmp_path / "stack.toml"
    stack_toml.write_text((CONFIG_DIR / "default.toml").read_text()
                          .replace('credential = "speechload-turn"', f'credential = "{TURN_CREDENTIAL}"'))
    profile = tmp_path / "profile.toml"
    profile.write_text((REPO / "loadtest" / "profiles" / "reference.toml").read_text()
                       .replace("auth = {}", 'auth = { token = "{token}" }'))
    out = tmp_path / "out"
    config = run_toml(tmp_path / "run.toml", tmp_path / "unused", short_fixture_ids(2.0, 3),
                      utterance_interval_s=4.0, response_timeout_s=6.0)
    with running_stack(str(stack_toml), tmp_path / "state", 1465) as info:
        turn = f"turn:{info.config.host}:{info.config.turn.port}"
        stdout, stderr = tmp_path / "stdout", tmp_path / "stderr"
        with stdout.open("wb") as o, stderr.open("wb") as e:
            proc = loadtest(
                "run", "--target", secret_url(info), "--insecure", "--auth-token", TOKEN,
                "--profile", str(profile), "--relay-only", "--turn-url", turn,
                "--turn-username", "speechload",
                "--config", str(config), "--engine", "locust", "--callers", "1", "--duration", "12",
                "--out", str(out), *resolve_args(info),
                env={"SPEECHLOAD_TURN_CREDENTIAL": TURN_CREDENTIAL}, stdout=o, stderr=e)
            argv_seen: set[str] = set()

            def finished() -> bool:
                argv_seen.update(p.cmd for p in descendants(proc.pid))
                return proc.poll() is not None

            t0 = time.monotonic()
            wait_until(finished, 240, "the run to finish")
        log = stderr.read_text()
        assert proc.returncode in (0, 1), log[-3000:]
    children_argv = "\n".join(argv_seen).encode()
    assert any("locust" in cmd for cmd in argv_seen)
    assert not leaks(children_argv), f"secret on a child's command line: {leaks(children_argv)}"
    files = [p for p in out.rglob("*") if p.is_file()]
    assert {"run.json", "summary.json", "report.html", "preflight.json", "preflight.md",
            "locust_stats.csv", "samples.parquet"} <= {p.name for p in files}
    leaked = {str(p.relative_to(out)): leaks(p.read_bytes()) for p in [*files, stdout, stderr]
              if p.exists() and leaks(p.read_bytes())}
    assert not leaked, leaked
    summary = json.loads((out / "summary.json").read_text())
    assert summary["utterances"]["sent"] >= 1
    run = json.loads((out / "run.json").read_text())
    assert run["target"].startswith("https://***@") and "key=***" in run["target"]
    # --insecure on every output the run writes, and on stderr
    assert run["insecure_tls"] is True and summary["metadata"]["insecure_tls"] is True
    assert "INSECURE TLS" in (out / "report.html").read_text()
    assert any("INSECURE" in n for n in json.loads((out / "preflight.json").read_text())["notes"])
    assert "INSECURE" in (out / "preflight.md").read_text()
    assert "NOT verified" in log
    print(f"{len(files)} files + stdout/stderr + {len(argv_seen)} child command lines searched for "
          f"{len(SECRETS)} secrets in {time.monotonic() - t0:.0f} s: none found")


def test_tls_is_verified_by_default(tmp_path: Path) -> None:
    """Without --ca-cert (or --insecure) the stack's local CA is not trusted: the run refuses (exit 3)."""
    with running_stack("fixed-delays", tmp_path / "state", 1470) as info:
        proc = loadtest("run", "--target", info.target_url, "--skip-preflight", "--callers", "1",
                        "--duration", "3", "--out", str(tmp_path / "out"), *resolve_args(info))
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 3
    assert "certificate" in err.decode().lower()

