"""A signaling session that remembers what it sent and what came back.

The preflight probe and `loadtest profile check` both need more than a request's parsed fields: a step
that is stuck must name the request still waiting for its answer, and a failed step is explained from
the answer as the gateway sent it (a plain string, a bare `{error}`, the keys it does have). The
channel below records that without changing how requests are sent, filled or unwrapped.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from loadtest.credentials import Credentials
from loadtest.profile import ProfileError, SignalingProfile
from loadtest.session import Party, PeerSession, session_variables
from loadtest.signaling import SignalingChannel, SignalingError

NO_ANSWER = object()  # the exchange ended without an answer (refused before sending, timeout, disconnect)
NOT_BUILT = object()  # the payload could not be built (an unknown placeholder)


@dataclass
class Exchange:
    """One request as it went over the wire: its payload, the raw answer, and how it ended."""

    name: str
    role: str
    event: str
    payload: Any = NOT_BUILT
    answer: Any = NO_ANSWER
    fields: dict[str, Any] | None = None  # the response fields, when the request succeeded
    error: Exception | None = None
    ms: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


ExchangeSink = Callable[[Exchange], None]


class TracingChannel(SignalingChannel):
    def __init__(self, url: str, profile: SignalingProfile, ssl_context: ssl.SSLContext | bool,
                 request_timeout_s: float, variables: dict[str, Any],
                 on_exchange: ExchangeSink | None = None) -> None:
        super().__init__(url, profile, ssl_context, request_timeout_s, variables)
        self.role = str(variables.get("role", ""))
        self.pending: str | None = None  # the request waiting for its answer, if any
        self.exchanges: list[Exchange] = []
        self._on_exchange = on_exchange
        self._raw: dict[str, Any] = {}

    async def request(self, name: str, variables: dict[str, Any]) -> dict[str, Any]:
        spec = self.profile.requests[name]
        record = Exchange(name, self.role, spec.event)
        try:
            record.payload = spec.build(self.profile.mapped(variables))
        except ProfileError:
            pass  # super() raises the same error, naming the key; the record keeps NOT_BUILT
        self._raw.pop(name, None)
        self.pending = name
        t0 = time.monotonic()
        try:
            record.fields = await super().request(name, variables)
            return record.fields
        except (SignalingError, ProfileError) as exc:
            record.error = exc
            raise
        finally:
            self.pending = None
            record.ms = (time.monotonic() - t0) * 1000.0
            record.answer = self._raw.pop(name, NO_ANSWER)
            self.exchanges.append(record)
            if self._on_exchange is not None:
                self._on_exchange(record)

    def unwrap(self, name: str, answer: Any) -> Any:
        self._raw[name] = answer  # the answer as sent, before the profile's ack rules read it
        return super().unwrap(name, answer)

    def last_exchange(self) -> Exchange | None:
        return self.exchanges[-1] if self.exchanges else None


def open_traced(url: str, profile: SignalingProfile, ssl_context: ssl.SSLContext | bool,
                request_timeout_s: float, party: Party, credentials: Credentials,
                on_exchange: ExchangeSink | None = None) -> PeerSession:
    """PeerSession.open with a TracingChannel (the same variables, credentials and handshake)."""
    variables = session_variables(party, credentials)
    channel = TracingChannel(url, profile, ssl_context, request_timeout_s, variables, on_exchange)
    return PeerSession(channel, variables)


def traced(session: PeerSession) -> TracingChannel:
    channel = session.channel
    assert isinstance(channel, TracingChannel)
    return channel
