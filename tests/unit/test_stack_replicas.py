"""`[gateway] replicas`: each replica's ports and config, and the proxy spreading clients over them."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from sut import proxy
from sut.config import StackConfigError, load_stack_config
from sut.pki import ensure_pki
from sut.stack_files import gateway_json, gateway_names, gateway_urls

pytestmark = pytest.mark.unit


def test_one_replica_is_the_gateway_of_old() -> None:
    config = load_stack_config("default")
    assert config.gateway.replicas == 1
    assert gateway_names(config) == ["gateway"]
    doc = gateway_json(config, None)
    assert (doc["port"], doc["rtcMinPort"], doc["rtcMaxPort"]) == (3000, 40000, 40999)
    assert "sessionIdPrefix" not in doc


def test_replicas_get_their_own_ports_and_rtc_slices() -> None:
    config = load_stack_config("replicas").with_port_offset(1000)
    assert gateway_names(config) == ["gateway-0", "gateway-1"]
    assert gateway_urls(config) == ("http://127.0.0.1:4000", "http://127.0.0.1:4001")
    docs = [gateway_json(config, None, i) for i in range(2)]
    assert [(d["port"], d["rtcMinPort"], d["rtcMaxPort"]) for d in docs] == [
        (4000, 50000, 50499), (4001, 50500, 50999)]
    assert [d["sessionIdPrefix"] for d in docs] == ["r0.", "r1."]
    assert docs[0]["redis"] == docs[1]["redis"] == {"host": "localhost", "port": 7399}
    trap = load_stack_config("broken-redis-replicas")
    assert trap.gateway.replicas == 2 and trap.gateway.redis_host == "redis_gateway"


@pytest.mark.parametrize(("replicas", "rtc_max", "message"), [
    (0, 40999, r"'gateway.replicas' must be in \[1, 16\], got 0"),
    (17, 40999, r"'gateway.replicas' must be in \[1, 16\], got 17"),
    (4, 40050, r"leaves 12 ports per replica \(4 replicas\)"),
])
def test_replica_counts_that_cannot_work_are_refused(tmp_path: Path, replicas: int, rtc_max: int,
                                                     message: str) -> None:
    path = tmp_path / "stack.toml"
    gateway = f"[gateway]\nreplicas = {replicas}\nrtc_max_port = {rtc_max}\n"
    path.write_text('[stack]\nhost = "127.0.0.1"\n' + gateway)
    with pytest.raises(StackConfigError, match=message):
        load_stack_config(path)


def test_proxy_round_robins_new_connections_and_pins_sessions(tmp_path: Path) -> None:
    certs = ensure_pki(tmp_path, "localhost", [])
    text = proxy.render_config(tmp_path, certs, "127.0.0.1", 8443, "localhost", [3000, 3001])
    every = text[text.index("upstream gateway {"):]
    assert every.index("server 127.0.0.1:3000;") < every.index("server 127.0.0.1:3001;") < every.index("}")
    assert "upstream gateway_r1 {\n        server 127.0.0.1:3001;" in text
    assert "map $arg_sid $gateway_route {" in text and "~^r1\\. gateway_r1;" in text
    assert "proxy_pass http://$gateway_route;" in text
    single = proxy.render_config(tmp_path, certs, "127.0.0.1", 8443, "localhost", [3000])
    assert "proxy_pass http://gateway;" in single and "$gateway_route" not in single
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if Path(nginx).exists():  # nginx itself accepts it (a syntax check, nothing started)
        conf = proxy.write_config(tmp_path, certs, "127.0.0.1", 8443, "localhost", [3000, 3001])
        check = subprocess.run([*proxy.nginx_argv(tmp_path, conf), "-t"], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
