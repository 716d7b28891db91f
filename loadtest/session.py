"""One peer's signaling session: its channel and the variables every request of the profile is filled from.

Variables every request may use: `{room}`, `{peer}`, `{role}`, `{caller}`, `{conversation}`,
`{speaker_peer}`, `{listener_peer}`, `{source_language}`, `{target_language}`, `{token}`; the answers of
the join steps add theirs (a `room_ref` returned by one step feeds the next); requests add their own
(`{direction}`, `{transport_id}`, `{producer_id}`, …). Secrets are never part of what is printed.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from typing import Any

from loadtest.credentials import Credentials
from loadtest.profile import SignalingProfile
from loadtest.signaling import SignalingChannel


@dataclass(frozen=True)
class Party:
    """Who a peer is in a conversation."""

    conversation: str
    role: str  # speaker | listener
    caller: int = 0
    source_language: str = "en"
    target_language: str = "es"
    # In a call with several speakers or listeners (cast.py) each peer carries its name, and a listener
    # the name of the party it hears; a one-speaker one-listener call keeps the plain peer names.
    name: str = ""
    speaker_name: str = ""

    @property
    def peer(self) -> str:
        return f"{self.conversation}-{self.role}" + (f"-{self.name}" if self.name else "")

    @property
    def speaker_peer(self) -> str:
        return f"{self.conversation}-speaker" + (f"-{self.speaker_name}" if self.speaker_name else "")


def session_variables(party: Party, credentials: Credentials) -> dict[str, Any]:
    variables: dict[str, Any] = {
        "room": party.conversation, "conversation": party.conversation, "peer": party.peer,
        "role": party.role, "caller": party.caller,
        "speaker_peer": party.speaker_peer,
        "listener_peer": party.peer if party.role == "listener" else f"{party.conversation}-listener",
        "source_language": party.source_language, "target_language": party.target_language,
    }
    variables["token"] = credentials.token(party.caller, variables)
    return variables


@dataclass
class PeerSession:
    channel: SignalingChannel
    variables: dict[str, Any]
    answers: dict[str, Any] = field(default_factory=dict)  # what the join steps returned

    @classmethod
    def open(cls, url: str, profile: SignalingProfile, ssl_context: ssl.SSLContext | bool,
             request_timeout_s: float, party: Party, credentials: Credentials) -> PeerSession:
        variables = session_variables(party, credentials)
        return cls(SignalingChannel(url, profile, ssl_context, request_timeout_s, variables), variables)

    @property
    def profile(self) -> SignalingProfile:
        return self.channel.profile

    async def connect(self, timeout_s: float) -> None:
        await self.channel.connect(timeout_s)

    async def join(self) -> dict[str, Any]:
        """The profile's join steps, then this role's own; each answer feeds the steps after it."""
        for step in self.profile.steps(str(self.variables["role"])):
            answer = await self.channel.request(step, self.variables)
            self.answers.update(answer)
            self.variables.update(answer)
        return self.answers

    async def request(self, name: str, **extra: Any) -> dict[str, Any]:
        return await self.channel.request(name, {**self.variables, **extra})

    async def close(self) -> None:
        await self.channel.close()
