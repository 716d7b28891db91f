"""Producer announcements and which of them a listener consumes.

Gateways announce producers one at a time (`{id, appData}`) or as lists (`[{…}, {…}]`, sometimes under
a key); each element is one announcement. The profile's `producers.consume` rules (all must hold) pick
the producer the listener wants: the translated speech of our speaker in mode "pipeline", our speaker's
own microphone in mode "sfu".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from loadtest.profile import MissingField, ProducerSpec, lookup

MAX_ANNOUNCED = 1000  # producers remembered per listener (a room with more is not a conversation)


@dataclass
class Announcements:
    spec: ProducerSpec
    announced: dict[str, Any] = field(default_factory=dict)  # producer id → its announcement
    consumed: set[str] = field(default_factory=set)
    malformed: int = 0

    def add(self, payload: Any) -> list[str]:
        """Record an event's announcements; the ids newly seen."""
        items = payload
        if self.spec.list_path:
            try:
                items = lookup(payload, self.spec.list_path)
            except MissingField:
                self.malformed += 1
                return []
        if not isinstance(items, list):
            items = [items]
        fresh = []
        for info in items:
            try:
                pid = str(lookup(info, self.spec.id))
            except MissingField:
                self.malformed += 1
                continue
            if pid not in self.announced:
                fresh.append(pid)
            self.announced[pid] = info
            if len(self.announced) > MAX_ANNOUNCED:  # a flood of producers: forget the oldest
                oldest = next(iter(self.announced))
                self.announced.pop(oldest)
        return fresh

    def wanted(self, variables: dict[str, Any]) -> list[str]:
        """Announced producers not yet consumed whose announcement meets every consume rule."""
        out = []
        for pid, info in self.announced.items():
            if pid in self.consumed:
                continue
            if all(rule.holds(info, variables) for rule in self.spec.consume):
                out.append(pid)
        return out

    def describe(self, limit: int = 3) -> str:
        """The announcements seen, short, for an error that says none matched."""
        if not self.announced:
            return "no producer was announced"
        shown = [str(info)[:160] for info in list(self.announced.values())[:limit]]
        more = f" (+{len(self.announced) - limit} more)" if len(self.announced) > limit else ""
        return f"announced: {'; '.join(shown)}{more}"
