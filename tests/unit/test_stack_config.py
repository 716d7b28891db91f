"""The stack config (sut/config.py) and the files sut/stack.py derives from it: no processes started."""

from __future__ import annotations

import json
import socket
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from sut import infra, proxy
from sut.config import StackConfigError, load_stack_config, stack_config_to_doc
from sut.pki import ensure_pki
from sut.procs import port_in_use, tail
from sut.stack import ReferenceStack, StackError
from sut.stack_files import enabled_services, gateway_json, target_url

pytestmark = pytest.mark.unit

MINIMAL = '[stack]\nhost = "127.0.0.1"\n'


def write(tmp_path: Path, text: str, name: str = "stack.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (MINIMAL + "[gateway]\nbogus = 1\n", "gateway.bogus"),
        (MINIMAL + '[stt]\nworkers = "four"\n', "stt.workers"),
        (MINIMAL + "[stt]\nworkers = 0\n", "stt.workers"),
        (MINIMAL + '[translation]\nengine = "gpu"\n', "translation.engine"),
        (MINIMAL + '[tts.latency]\ndistribution = "pareto"\n', "tts.latency.distribution"),
        (MINIMAL + "[tts.latency]\nmedian = 3\n", "tts.latency.median"),
        (MINIMAL + '[proxy]\nhttps_port = "8443"\n', "proxy.https_port"),
        (MINIMAL + "[faults]\ntts_down = 1\n", "faults.tts_down"),
        (MINIMAL + "[faults]\nnetwork_down = true\n", "faults.network_down"),
        ('[stack]\nhost = "0.0.0.0"\n', "stack.host"),
        ("[stack]\nport = 1\n", "stack.port"),
        (MINIMAL + "[kafka]\nurl = 1\n", "[kafka]"),
        (MINIMAL + "[redis]\nurl = 1\n", "redis.url"),
        (MINIMAL + '[redis]\nport = "6379"\n', "redis.port"),
        (MINIMAL + "[turn]\nrelay_min_port = 50100\nrelay_max_port = 50000\n", "turn.relay_min_port"),
        (MINIMAL + '[turn]\nenabled = true\ncredential = ""\n', "turn.credential"),
        ("turn = 3\n" + MINIMAL, "[turn]"),
        (MINIMAL + "[gateway]\nredis_host = 1\n", "gateway.redis_host"),
        (MINIMAL + "[faults]\ncertificate_host = true\n", "faults.certificate_host"),
    ],
)
def test_config_errors_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(StackConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        load_stack_config(write(tmp_path, text))


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[stack\n")
    with pytest.raises(StackConfigError, match="not valid TOML"):
        load_stack_config(path)


def test_missing_config_is_named() -> None:
    with pytest.raises(StackConfigError, match="no-such-config"):
        load_stack_config("no-such-config")


def test_json_round_trip_keeps_offset_ports(tmp_path: Path) -> None:
    text = MINIMAL + '[stt.latency]\ndistribution = "normal"\nmean_ms = 300\nsd_ms = 40\n'
    config = load_stack_config(write(tmp_path, text)).with_port_offset(100)
    path = write(tmp_path, json.dumps(stack_config_to_doc(config)), "stack.json")
    assert load_stack_config(path) == config
    assert config.proxy.https_port == 8543 and config.stt.port == 8102


def test_bad_json_is_named(tmp_path: Path) -> None:
    with pytest.raises(StackConfigError, match="not valid JSON"):
        load_stack_config(write(tmp_path, "{", "stack.json"))


def test_gateway_json_carries_the_resolved_values(tmp_path: Path) -> None:
    config = load_stack_config(write(tmp_path, MINIMAL + "[gateway]\nvad_hangover_ms = 250\n"))
    config = config.with_port_offset(10)
    doc = gateway_json(config, tmp_path / "groundtruth.jsonl")
    assert doc["port"] == 3010
    assert doc["vad"] == {"source": "audio-level", "thresholdDbfs": -50.0, "levelThresholdDbov": -45.0,
                          "hangoverMs": 250, "maxUtteranceMs": 15000}
    assert doc["services"] == {
        "stt": "http://127.0.0.1:8012",
        "translation": "http://127.0.0.1:8015",
        "tts": "http://127.0.0.1:8013",
    }
    assert doc["groundTruthPath"] == str(tmp_path / "groundtruth.jsonl")
    assert gateway_json(config, None)["groundTruthPath"] is None
    assert target_url(config) == "https://webrtc.speechload.test:8453"  # Traefik: routed by host name
    nginx = replace(config, proxy=replace(config.proxy, kind="nginx"))
    assert target_url(nginx) == "https://localhost:8453"


def test_faults_leave_services_out(tmp_path: Path) -> None:
    config = load_stack_config(write(tmp_path, MINIMAL + "[faults]\ntts_down = true\nstt_down = true\n"))
    assert enabled_services(config) == ["translation"]


def test_pki_issues_a_server_cert_the_ca_signed(tmp_path: Path) -> None:
    certs = ensure_pki(tmp_path, "localhost", ["127.0.0.1"])
    ca = x509.load_pem_x509_certificate(certs.ca_cert.read_bytes())
    server = x509.load_pem_x509_certificate(certs.server_cert.read_bytes())
    server.verify_directly_issued_by(ca)
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert isinstance(server.public_key(), ec.EllipticCurvePublicKey)
    assert certs.ca_key.stat().st_mode & 0o077 == 0, "the CA key must not be readable by others"
    # The CA survives a restart (testers keep their CA file); the server cert is re-issued.
    again = ensure_pki(tmp_path, "localhost", ["127.0.0.1"])
    assert again.ca_cert.read_bytes() == certs.ca_cert.read_bytes()


def test_nginx_config_stays_in_the_state_dir(tmp_path: Path) -> None:
    certs = ensure_pki(tmp_path, "localhost", [])
    text = proxy.render_config(tmp_path, certs, "127.0.0.1", 8443, "localhost", 3000)
    assert "listen 127.0.0.1:8443 ssl;" in text
    assert "server 127.0.0.1:3000;" in text
    assert "proxy_set_header Upgrade $http_upgrade;" in text
    assert f"error_log {tmp_path}/nginx-error.log" in text
    for directive in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        assert f"{directive}_temp_path {tmp_path}/nginx-temp/" in text
    assert "/var/log" not in text and "$$" not in text


def test_port_in_use_sees_a_listener() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert port_in_use("127.0.0.1", port)
    assert not port_in_use("127.0.0.1", port)


def test_tail_of_a_missing_log() -> None:
    assert tail(Path("/nonexistent/speechload.log")) == "(no log)"


def test_start_refuses_a_taken_port_naming_it(tmp_path: Path) -> None:
    config = load_stack_config(write(tmp_path, MINIMAL)).with_port_offset(180)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", config.gateway.port))
        sock.listen()
        with pytest.raises(StackError, match=r"port 3180 \(gateway.port\) on 127.0.0.1 is already in use"):
            ReferenceStack(config, tmp_path / "state").start()
    assert not (tmp_path / "state").exists(), "nothing may be written before the checks pass"


def test_turn_redis_and_http_ports_shift_with_the_offset(tmp_path: Path) -> None:
    text = MINIMAL + "[proxy]\nhttp_port = 8080\n[turn]\nenabled = true\n[redis]\nenabled = true\n"
    config = load_stack_config(write(tmp_path, text)).with_port_offset(20)
    assert config.proxy.http_port == 8100
    assert (config.turn.port, config.turn.relay_min_port, config.turn.relay_max_port) == (3498, 50200, 50299)
    assert config.redis.port == 6399
    none = load_stack_config(write(tmp_path, MINIMAL)).with_port_offset(20)
    assert none.proxy.http_port == 0  # no redirect listener stays none
    path = write(tmp_path, json.dumps(stack_config_to_doc(config)), "stack.json")
    assert load_stack_config(path) == config


def test_defaults_keep_turn_redis_and_redirect_off(tmp_path: Path) -> None:
    config = load_stack_config(write(tmp_path, MINIMAL))
    assert not config.turn.enabled and not config.redis.enabled and config.proxy.http_port == 0
    assert config.gateway.redis_host == "" and gateway_json(config, None)["redis"] is None


def test_gateway_is_told_the_configured_redis_name(tmp_path: Path) -> None:
    config = load_stack_config("broken-redis-host").with_port_offset(3)
    assert gateway_json(config, None)["redis"] == {"host": "redis_gateway", "port": 6402}
    assert gateway_json(load_stack_config("default"), None)["redis"] == {"host": "localhost", "port": 6399}


def test_turn_config_is_loopback_only_and_private(tmp_path: Path) -> None:
    config = load_stack_config("broken-turn-auth")
    text = infra.turn_config_text(config, tmp_path)
    for line in ("listening-ip=127.0.0.1", "relay-ip=127.0.0.1", "listening-port=3478", "min-port=50000",
                 "max-port=50099", "lt-cred-mech", "allow-loopback-peers", "no-cli", "realm=speechload",
                 "user=speechload:rotated-secret"):  # the server accepts the rotated secret only
        assert line in text.splitlines(), line
    assert "external-ip" not in text and "/var/" not in text
    path = infra.write_turn_config(config, tmp_path)
    assert path.stat().st_mode & 0o077 == 0, "the TURN password must not be readable by others"
    argv = infra.redis_argv(load_stack_config("default"), tmp_path)
    assert argv[1:5] == ["--bind", "127.0.0.1", "--port", "6399"] and "--save" in argv


def test_misissued_certificate_names_only_the_wrong_host(tmp_path: Path) -> None:
    certs = ensure_pki(tmp_path, "localhost", ["127.0.0.1"], only_name="gateway.other.example")
    server = x509.load_pem_x509_certificate(certs.server_cert.read_bytes())
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["gateway.other.example"]
    assert san.get_values_for_type(x509.IPAddress) == []
    server.verify_directly_issued_by(x509.load_pem_x509_certificate(certs.ca_cert.read_bytes()))


def test_nginx_redirects_http_and_serves_frontend_and_status(tmp_path: Path) -> None:
    certs = ensure_pki(tmp_path, "localhost", [])
    text = proxy.render_config(tmp_path, certs, "127.0.0.1", 8443, "localhost", 3000, http_port=8080)
    assert "listen 127.0.0.1:8080;" in text
    assert "return 301 https://$host:8443$request_uri;" in text
    assert "location = /nginx_status" in text and "stub_status;" in text and "deny all;" in text
    assert "location = / {" in text
    assert "listen 127.0.0.1:8080" not in proxy.render_config(tmp_path, certs, "127.0.0.1", 8443, "localhost",
                                                               3000)
