"""The foreign SFU (sut/foreign) for integration tests: a free port in a test's own range, prerequisites."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

from sut.foreign import launcher
from sut.foreign.launcher import ForeignGateway, ForeignGatewayError, foreign_gateway
from tests.prereq import missing


def free_port(first: int, last: int) -> int:
    for port in range(first, last + 1):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {first}-{last}")


@contextlib.contextmanager
def running_foreign(ports: tuple[int, int], rtc_ports: tuple[int, int], *, jwt_secret: str,
                    allowed_origin: str, stats_key: str = "") -> Iterator[ForeignGateway]:
    """The foreign SFU on a free port of `ports`; a missing build is a missing prerequisite."""
    if not (launcher.GATEWAY_MODULES / "mediasoup").is_dir():
        missing("sut/gateway/node_modules missing: run make setup")
    try:
        launcher.worker_bin()
    except ForeignGatewayError as exc:
        missing(str(exc))
    with foreign_gateway(free_port(*ports), jwt_secret=jwt_secret, allowed_origin=allowed_origin,
                         stats_key=stats_key, rtc_ports=rtc_ports) as gw:
        yield gw
