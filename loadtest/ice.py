"""Which local addresses ICE gathers host candidates on, and which ICE servers a caller's transports use.

aioice enumerates every interface but skips 127.0.0.1, so a tester talking to a gateway on loopback
would offer only its external addresses, and the media would leave the host. For a loopback target we
therefore restrict gathering to the loopback address; for any other target a loopback socket cannot
reach the gateway, so we leave aioice's own enumeration alone ("auto"). Explicit addresses (a load
generator choosing its source interfaces) are used as given.

aioice and aiortc are imported inside the functions that need them: the run config validates with this
module, and `loadtest --help` must not load the media stack.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

AUTO = "auto"
LOCALHOST_NAMES = ("localhost", "localhost.")

HostAddresses = Callable[[bool, bool], list[str]]
_original: HostAddresses | None = None


def aioice_host_addresses() -> HostAddresses:
    """aioice's own interface enumeration, kept before we first patch it ("auto" restores it)."""
    global _original
    if _original is None:
        import aioice.ice

        _original = aioice.ice.get_host_addresses
    return _original


def validate_ice_addresses(addresses: Sequence[str]) -> str | None:
    """Why `addresses` is not a valid ICE address setting (None: valid): "auto" alone, or IP addresses."""
    if not addresses:
        return "must not be empty (use \"auto\" or IP addresses)"
    if AUTO in addresses:
        return None if len(addresses) == 1 else "\"auto\" cannot be combined with addresses"
    for address in addresses:
        try:
            ipaddress.ip_address(address)
        except ValueError:
            return f"not an IP address or \"auto\": {address!r}"
    return None


def parse_ice_flag(value: str | None) -> tuple[str, ...] | None:
    """``--ice-address a,b`` or ``auto`` → the config value (None: flag not given)."""
    if value is None:
        return None
    return tuple(a.strip() for a in value.split(",") if a.strip())


def restrict_ice_host_addresses(addresses: Sequence[str]) -> None:
    """Gather ICE host candidates only on these local addresses (process-wide: aioice reads a global)."""
    import aioice.ice

    aioice_host_addresses()  # keep the original before replacing it
    chosen = list(addresses)

    def host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [a for a in chosen if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]

    aioice.ice.get_host_addresses = host_addresses


def unrestrict_ice_host_addresses() -> None:
    """Let aioice enumerate the interfaces itself again."""
    import aioice.ice

    aioice.ice.get_host_addresses = aioice_host_addresses()


def _loopback_family(host: str) -> int | None:
    """AF_INET/AF_INET6 when `host` is (or resolves only to) loopback addresses of that family."""
    if host.lower() in LOCALHOST_NAMES or host.lower().endswith(".localhost"):
        return socket.AF_INET
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return (socket.AF_INET6 if ip.version == 6 else socket.AF_INET) if ip.is_loopback else None
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_UDP)
    except (OSError, UnicodeError):
        return None  # unresolvable here: not ours to decide, treat it as remote
    ips = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    if not ips or not all(ip.is_loopback for ip in ips):
        return None
    return socket.AF_INET if any(ip.version == 4 for ip in ips) else socket.AF_INET6


@dataclass(frozen=True)
class IceChoice:
    addresses: tuple[str, ...]
    mode: str  # "auto" | "explicit"
    reason: str  # why these addresses, for the run's log line
    restrict: bool  # False: aioice enumerates the interfaces itself

    def apply(self) -> None:
        if self.restrict:
            restrict_ice_host_addresses(self.addresses)
        else:
            unrestrict_ice_host_addresses()

    def describe(self) -> str:
        shown = ", ".join(self.addresses) or "none (no non-loopback interface)"
        return f"ICE host addresses: {shown} ({self.reason})"

    def stamp(self) -> dict[str, Any]:
        """The run.json fields."""
        return {"ice_addresses": list(self.addresses), "ice_mode": self.mode}


def choose_ice(configured: Sequence[str], target_url: str) -> IceChoice:
    """The ICE host addresses for a run against `target_url` (see the module docstring)."""
    if tuple(configured) != (AUTO,):
        return IceChoice(tuple(configured), "explicit", "explicit", True)
    from loadtest.resolve import address

    host = address(urlparse(target_url).hostname or "")  # a --resolve override decides where it is
    family = _loopback_family(host)
    if family == socket.AF_INET6:
        return IceChoice(("::1",), AUTO, "auto: loopback target", True)
    if family == socket.AF_INET:
        return IceChoice(("127.0.0.1",), AUTO, "auto: loopback target", True)
    found = tuple(aioice_host_addresses()(True, True))
    return IceChoice(found, AUTO, "auto: remote target", False)


def resolve_ice_addresses(configured: Sequence[str], target_url: str) -> tuple[str, ...]:
    """The addresses ICE will gather host candidates on for this target (``choose_ice(...).addresses``)."""
    return choose_ice(configured, target_url).addresses


def local_address_toward(choice: IceChoice, host: str, port: int) -> str:
    """The local address a peer at host:port can answer: the first chosen one when restricted, else the
    one the routing table picks (a connected UDP socket sends nothing, it only looks up the route)."""
    if choice.restrict and choice.addresses:
        return choice.addresses[0]
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.connect((host, port))
        return str(probe.getsockname()[0])


# --------------------------------------------------------------------------- TURN (relay-only runs)

# Where a TURN credential travels to child processes (locust): the environment, not argv, which any
# user can read in the process list.
TURN_CREDENTIAL_ENV = "SPEECHLOAD_TURN_CREDENTIAL"


@dataclass(frozen=True)
class TurnRelay:
    """A TURN server the caller's transports must relay through (iceTransportPolicy "relay")."""

    url: str  # turn:host:port?transport=udp | turns:…
    username: str = ""
    credential: str = ""

    def __repr__(self) -> str:  # the credential must never reach a log line or a report
        return f"TurnRelay(url={self.url!r}, username={self.username!r}, credential='***')"

    def ice_servers(self) -> list[Any]:
        from aiortc import RTCIceServer

        return [RTCIceServer(urls=self.url, username=self.username or None,
                             credential=self.credential or None)]


def validate_turn_url(url: str) -> str | None:
    """Why `url` is not a TURN URL (None: valid)."""
    scheme, _, rest = url.partition(":")
    if scheme not in ("turn", "turns") or not urlparse(f"//{rest.partition('?')[0]}").hostname:
        return f"must be turn:host[:port] or turns:host[:port], got {url!r}"
    return None


def force_relay(transport: Any, relay: TurnRelay) -> None:
    """Make a pymediasoup transport gather and use relay candidates only.

    pymediasoup 1.5.0 drops iceTransportPolicy when it builds the RTCPeerConnection; aiortc reads its
    configuration when the first transceiver is added (at produce/consume), so setting it right after
    the transport is created is in time.
    """
    from aiortc import RTCConfiguration
    from aiortc.rtcconfiguration import RTCIceTransportPolicy

    pc = transport._handler.pc
    pc._RTCPeerConnection__configuration = RTCConfiguration(
        iceServers=relay.ice_servers(), iceTransportPolicy=RTCIceTransportPolicy.RELAY)
