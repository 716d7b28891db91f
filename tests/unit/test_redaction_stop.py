"""Secrets masked (URLs, registered secrets, log records), the stop switch's phases, the locust web UI's
default address, and a missing --stack-config as a usage error."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from loadtest import redaction
from loadtest.cli import main
from loadtest.errors import EXIT_USAGE
from loadtest.redaction import redact_url, register, register_url, scrub, scrub_tree, url_secrets
from loadtest.stopping import ENGINE, TEARDOWN, StopRequest

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _no_secrets() -> Iterator[None]:
    redaction.forget_all()
    yield
    redaction.forget_all()


def test_urls_lose_userinfo_and_query_values_only() -> None:
    assert redact_url("https://gw.example:8443/a/b?key=S3CRET&x=1") == "https://gw.example:8443/a/b?key=***&x=***"
    assert redact_url("https://user:pw@gw/") == "https://***@gw/"
    assert redact_url("https://gw/?S3CRET") == "https://gw/?***"
    assert redact_url("https://gw:1/path#frag") == "https://gw:1/path"
    assert redact_url("https://localhost:8443") == "https://localhost:8443"
    assert sorted(url_secrets("https://u:p%40ss@gw/?key=a%20b&k2=c#f")) == ["a b", "c", "f", "p@ss", "u"]


def test_scrub_masks_urls_in_text_and_registered_secrets_raw_and_encoded() -> None:
    register("tok-123456", "ab")  # too short to register: would mangle text
    register_url("https://gw/?key=query-secret")
    text = ("connect to https://gw/?key=query-secret failed; token tok-123456 / tok%2D123456? "
            "query-secret again, ab stays")
    clean = scrub(text)
    assert "query-secret" not in clean and "tok-123456" not in clean
    assert "https://gw/?key=***" in clean and "ab stays" in clean


@dataclass(frozen=True)
class Inner:
    note: str


def test_scrub_tree_copies_containers_and_dataclasses() -> None:
    register("s3cret-value")
    tree = {"a": ["x s3cret-value", ("s3cret-value",)], "b": Inner("has s3cret-value"), "n": 3}
    clean = scrub_tree(tree)
    assert clean == {"a": ["x ***", ("***",)], "b": Inner("has ***"), "n": 3}
    assert tree["b"] == Inner("has s3cret-value")


def test_log_records_are_scrubbed_message_arguments_and_traceback(caplog: pytest.LogCaptureFixture) -> None:
    register("log-secret-42")
    redaction.install_log_scrubbing()
    log = logging.getLogger("test.redaction")
    with caplog.at_level(logging.INFO):
        log.info("url %s token %s", "https://gw/?token=zz-top-9&lang=en", "log-secret-42")
        try:
            raise RuntimeError("boom log-secret-42")
        except RuntimeError:
            log.exception("failed")
    text = caplog.text
    assert "log-secret-42" not in text and "zz-top-9" not in text
    assert "https://gw/?token=***&lang=en" in text  # a URL in text keeps what is no secret


def test_stop_request_phases() -> None:
    stop = StopRequest()
    with pytest.raises(KeyboardInterrupt):
        stop.handle(signal.SIGTERM)  # setting up: abort
    stop = StopRequest()
    calls: list[str] = []
    with stop.engine_running():
        assert stop.phase == ENGINE
        stop.on_stop(lambda: calls.append("stop"))
        stop.handle(signal.SIGINT)
        assert stop.requested and stop.signal_name == "SIGINT" and calls == ["stop"]
        stop.on_stop(lambda: calls.append("late"))  # registered after the request: called at once
        assert calls == ["stop", "late"]
        with pytest.raises(KeyboardInterrupt):
            stop.handle(signal.SIGTERM)  # a second signal aborts
    assert stop.phase == TEARDOWN
    finishing = StopRequest()
    finishing.phase = TEARDOWN
    finishing.handle(signal.SIGTERM)  # noted, not raised
    assert finishing.requested


def test_locust_web_ui_defaults_to_loopback() -> None:
    code = (
        "import importlib.util\n"
        "from locust.argument_parser import parse_options\n"
        "spec = importlib.util.spec_from_file_location('lf', 'loadtest/locustfile.py')\n"
        "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
        "print('web_host', parse_options(['-f', 'loadtest/locustfile.py']).web_host)\n"
        "print('web_host', parse_options(['-f', 'loadtest/locustfile.py',"
        " '--web-host', '0.0.0.0']).web_host)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    hosts = [line.split()[1] for line in out.stdout.splitlines() if line.startswith("web_host ")]
    assert hosts == ["127.0.0.1", "0.0.0.0"]


def test_a_missing_stack_config_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", "--stack-config", str(tmp_path / "nope.toml"), "--out", str(tmp_path / "out")])
    assert code == EXIT_USAGE
    assert "stack config not found" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # refused before anything was started or written


def test_locust_gets_the_url_and_the_token_by_environment_only(tmp_path: Path) -> None:
    from loadtest.config import RunConfig
    from loadtest.credentials import AUTH_TOKEN_ENV
    from loadtest.locust_run import SwarmOptions, child_env, locust_command
    from loadtest.target import Target

    url = "https://u:pw-1234@gw.example:8443/?key=q-secret-99"
    cfg = RunConfig().with_overrides(target={"url": url, "auth_token": "tok-secret-77", "insecure": True})
    cmd = " ".join(locust_command(cfg, Target(url, "", True), tmp_path, SwarmOptions(), "r1"))
    assert "pw-1234" not in cmd and "q-secret-99" not in cmd and "tok-secret-77" not in cmd
    env = child_env(cfg, url)
    assert env["LOCUST_HOST"] == url and env[AUTH_TOKEN_ENV] == "tok-secret-77"
