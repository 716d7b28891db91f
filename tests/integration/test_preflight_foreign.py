"""`loadtest preflight` on a gateway it was not written for: the foreign SFU (sut/foreign) with its profile.

Its health and header-protected stats are checked where the preflight config says; checks that do not
apply (Redis, backends, TURN, proxy, Prometheus) are skipped, not failed; media and the smoke (mode
"sfu": our own voice back through the SFU) pass. With a wrong Origin header the Socket.IO, media and
smoke checks all report the server's own words, "Origin not allowed", not a timeout.

The gateway listens on a port in 7670-7674 with its RTC ports in 7675-7689 (this module's share).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from loadtest.preflight.audit import run_preflight_sync
from loadtest.preflight.config import config_for_target, load_config
from loadtest.preflight.model import PreflightReport
from sut.foreign.launcher import ForeignGateway
from tests.integration.foreign import running_foreign

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PROFILE = REPO / "sut" / "foreign" / "profile.toml"
SECRET = "preflight-foreign-secret-0123456789abcdef"
STATS_KEY = "preflight-stats-key"
ORIGIN = "http://app.test"
SKIPPED = {"gateway.coordination", "turn", "backends", "backends.redis", "metrics.proxy",
           "metrics.prometheus", "traefik"}


@pytest.fixture(scope="module")
def gateway() -> Iterator[ForeignGateway]:
    with running_foreign((7670, 7674), (7675, 7689), jwt_secret=SECRET, allowed_origin=ORIGIN,
                         stats_key=STATS_KEY) as gw:
        yield gw


@pytest.fixture(autouse=True)
def secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FOREIGN_SFU_JWT_SECRET", SECRET)
    monkeypatch.setenv("SPEECHLOAD_TEST_STATS_KEY", STATS_KEY)


def table(report: PreflightReport) -> str:
    return "\n".join(f"{c.icon} {c.key}: {c.evidence} ({c.hint})" for c in report.checks)


def test_the_foreign_gateway_audits_green_with_its_own_paths(gateway: ForeignGateway, tmp_path: Path) -> None:
    config = tmp_path / "preflight.toml"
    config.write_text(f"""
[target]
url = "{gateway.url}"
profile = "{PROFILE}"
health_path = "/healthz"

[metrics]
gateway = "/stats"
gateway_required = ["rooms", "peers", "producers"]
headers = {{ "X-Stats-Key" = "${{SPEECHLOAD_TEST_STATS_KEY}}" }}
""")
    report = run_preflight_sync(load_config(config))
    print(f"\nforeign gateway, configured: {report.summary_line()}\n{table(report)}")
    statuses = {c.key: c.status for c in report.checks}
    assert {k for k, s in statuses.items() if s == "skip"} == SKIPPED, table(report)
    assert {k for k, s in statuses.items() if s != "skip"} == {
        "gateway.health", "gateway.socketio-polling", "gateway.socketio-websocket", "media.webrtc",
        "metrics.gateway", "pipeline.smoke"}
    assert set(statuses.values()) == {"ok", "skip"}, table(report)
    assert "status up" in report.check("gateway.health").evidence
    assert "JSON stats: rooms" in report.check("metrics.gateway").evidence
    assert "50/50 probe packets" in report.check("media.webrtc").evidence
    smoke = report.check("pipeline.smoke").details
    assert smoke["mode"] == "sfu" and smoke["status"] == "ok" and smoke["stages_ms"]["sfu"] is not None
    assert report.exit_code(strict=True) == 0


def test_a_bare_target_skips_what_this_gateway_does_not_serve(gateway: ForeignGateway) -> None:
    report = run_preflight_sync(config_for_target(gateway.url, profile=str(PROFILE), media=False,
                                                  smoke=False))
    print(f"\nforeign gateway, bare --target: {report.summary_line()}\n{table(report)}")
    assert report.exit_code() == 0, table(report)
    health, metrics = report.check("gateway.health"), report.check("metrics.gateway")
    assert health.status == "skip" and "serves no /health" in health.evidence
    assert "[target] health_path" in health.evidence
    assert metrics.status == "skip" and "[metrics] gateway" in metrics.evidence


def test_a_wrong_origin_is_reported_in_the_servers_words(gateway: ForeignGateway, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong-origin.toml"
    wrong.write_text(PROFILE.read_text().replace(f'Origin = "{ORIGIN}"', 'Origin = "http://elsewhere.test"'))
    report = run_preflight_sync(config_for_target(gateway.url, profile=str(wrong)))
    print(f"\nforeign gateway, wrong Origin: {report.summary_line()}\n{table(report)}")
    failed = {c.key for c in report.failed}
    assert failed == {"gateway.socketio-websocket", "media.webrtc", "pipeline.smoke"}, table(report)
    for key in failed:
        check = report.check(key)
        assert "Origin not allowed" in check.evidence, check.evidence
        assert "no result within" not in check.evidence
        assert check.hint.startswith("socketio.headers.Origin:") and '"http://elsewhere.test"' in check.hint
        assert check.elapsed_ms < 3000  # the refusal, not a timeout
    assert report.check("gateway.socketio-polling").status == "ok"  # Engine.IO itself does not check it
    assert report.exit_code() == 1
