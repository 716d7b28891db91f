"""How `loadtest profile check` prints its walk: one line per step, ✅/❌/⏭️ like the preflight report,
and under the first failure the profile key that failed, why (the server's text) and the hint.

Everything printed goes through `redact` with every secret the walk knows (the credentials' secrets and
each caller's token): a handshake URL carrying `access_token=…` shows `***`.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import Any, TextIO

from loadtest.credentials import redact
from loadtest.profile_hints import Hint

ICONS = {"ok": "✅", "fail": "❌", "skip": "⏭️"}
LABEL_WIDTH = 40
VALUE_LIMIT = 160


def brief(value: Any, limit: int = VALUE_LIMIT) -> str:
    """A payload or answer on one line, cut to `limit` characters."""
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
    else:
        text = json.dumps(value, default=str, ensure_ascii=False, separators=(", ", ": "))
    return text if len(text) <= limit else text[: limit - 1] + "…"


class WalkStopped(Exception):
    """The walk failed at a step (already printed): it goes no further."""


@dataclass
class StepFailure:
    key: str  # the profile key that failed
    why: str  # what went wrong, in the server's words where it said any
    hint: Hint | None = None


@dataclass
class Printer:
    out: TextIO = field(default_factory=lambda: sys.stdout)
    secrets: list[str] = field(default_factory=list)
    steps: int = 0
    failure: StepFailure | None = None  # the first one: the walk stops there
    lines: list[str] = field(default_factory=list)

    def add_secret(self, value: str) -> None:
        if value and value not in self.secrets:
            self.secrets.append(value)

    def clean(self, value: Any) -> Any:
        return redact(value, tuple(self.secrets))

    def show(self, value: Any, limit: int = VALUE_LIMIT) -> str:
        """A value for a step line: secrets redacted first (by key and by value), then cut short."""
        return brief(self.clean(value), limit)

    def _emit(self, text: str) -> None:
        line = str(self.clean(text))
        self.lines.append(line)
        print(line, file=self.out, flush=True)

    def step(self, status: str, label: str, detail: str, ms: float | None = None) -> None:
        self.steps += 1
        took = f" · {ms:.0f} ms" if ms is not None else ""
        self._emit(f"{ICONS[status]} {label:<{LABEL_WIDTH}} {detail}{took}")

    def ok(self, label: str, detail: str, ms: float | None = None) -> None:
        self.step("ok", label, detail, ms)

    def skip(self, label: str, detail: str) -> None:
        self.step("skip", label, detail)

    def fail(self, label: str, detail: str, failure: StepFailure, ms: float | None = None) -> None:
        self.step("fail", label, detail, ms)
        if self.failure is None:
            self.failure = failure
        self._emit(f"   failed: {failure.key}")
        self._emit(f"   why:    {failure.why}")
        if failure.hint is not None:
            where = "" if failure.hint.key == failure.key else f"{failure.hint.key}: "
            self._emit(f"   hint:   {where}{failure.hint.text}")

    def note(self, text: str) -> None:
        self._emit(text)

    def summary(self, elapsed_s: float) -> None:
        if self.failure is None:
            self._emit(f"PASS walk complete: {self.steps} steps in {elapsed_s:.1f} s")
        else:
            key = self.failure.hint.key if self.failure.hint is not None else self.failure.key
            self._emit(f"FAIL at {self.failure.key} after {self.steps} steps ({elapsed_s:.1f} s); "
                       f"fix: {key}")

