"""The listener's inbox: every message the gateway pushes, parsed, counted and handed on — whatever it is.

A gateway under load, a buggy one or a hostile one may send anything: wrong types, missing or extra
fields, huge strings, deep nesting, unknown or duplicated ids, events for other rooms, binary frames.
Each message is counted exactly once as handled, malformed or unmatched; nothing a server sends can
raise out of a handler, and nothing it sends is kept beyond a bound (texts are cut at MAX_TEXT before
they reach the journal, the report or a log; oversized announcements are refused).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from loadtest.announcements import Announcements
from loadtest.events import EventParser, MalformedEvent, ResultEvent
from loadtest.profile import SignalingProfile

log = logging.getLogger(__name__)
MAX_ANNOUNCEMENT_BYTES = 64 * 1024  # a producer announcement is a few hundred bytes; more is not one


@dataclass
class InboxCounts:
    received: int = 0
    handled: int = 0
    malformed: int = 0
    unmatched: int = 0
    last_malformed: str = ""

    def balanced(self) -> bool:
        return self.received == self.handled + self.malformed + self.unmatched


class Inbox:
    """Routes a listener channel's events: result events to `on_event`, announcements to `announcements`.

    `on_event(event, t)` returns True when the event matched one of our utterances (handled) and False
    when it did not (unmatched)."""

    def __init__(self, profile: SignalingProfile, announcements: Announcements,
                 on_event: Callable[[ResultEvent, float], bool], on_announced: Callable[[], None],
                 clock: Callable[[], float]) -> None:
        self.profile = profile
        self.parser = EventParser(profile)
        self.announcements = announcements
        self.counts = InboxCounts()
        self._on_event = on_event
        self._on_announced = on_announced
        self._clock = clock

    def register(self, on: Callable[[str, Callable[..., None]], None]) -> None:
        """Subscribe the handlers on a channel (`channel.on`)."""
        on(self.profile.producers.announce_event, self.announce)
        for kind, spec in self.profile.events.items():
            on(spec.event, self._handler(kind))

    def _malformed(self, why: str) -> None:
        self.counts.malformed += 1
        self.counts.last_malformed = why[:200]
        log.debug("malformed server message ignored: %s", self.counts.last_malformed)

    def _handler(self, kind: str) -> Callable[..., None]:
        def handle(payload: Any = None, *_extra: Any) -> None:
            t = self._clock()
            self.counts.received += 1
            try:
                event = self.parser.parse(kind, payload)
            except MalformedEvent as exc:
                self._malformed(str(exc))
                return
            except Exception as exc:  # noqa: BLE001 — whatever a server sends must not break the listener
                self._malformed(f"{kind}: {type(exc).__name__}")
                return
            try:
                matched = self._on_event(event, t)
            except Exception:  # noqa: BLE001 — a bug of ours shows in the log, the message is still counted
                log.exception("handling a %s event failed", kind)
                matched = False
            if matched:
                self.counts.handled += 1
            else:
                self.counts.unmatched += 1

        return handle

    def announce(self, payload: Any = None, *_extra: Any) -> None:
        self.counts.received += 1
        try:
            size = len(json.dumps(payload, default=str))
        except (TypeError, ValueError, RecursionError):
            self._malformed("announcement: not JSON")
            return
        if size > MAX_ANNOUNCEMENT_BYTES:
            self._malformed(f"announcement: {size} bytes (more than {MAX_ANNOUNCEMENT_BYTES})")
            return
        before = self.announcements.malformed
        try:
            self.announcements.add(payload)
        except Exception as exc:  # noqa: BLE001
            self._malformed(f"announcement: {type(exc).__name__}")
            return
        if self.announcements.malformed > before:
            self._malformed("announcement without the profile's producer id")
            return
        self.counts.handled += 1
        self._on_announced()
