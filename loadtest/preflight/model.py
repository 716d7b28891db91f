"""Results of the preflight audit: one CheckResult per check, a PreflightReport for the whole audit.

A check is a coroutine returning a Verdict; `run_check` times it, bounds it by a timeout and turns
any exception into a ❌ whose evidence is one readable line (never a traceback).
"""

from __future__ import annotations

import asyncio
import errno
import json
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import aiohttp

from loadtest.signaling import SignalingError, server_text

Status = Literal["ok", "warn", "fail", "skip"]
STATUSES: tuple[Status, ...] = ("ok", "warn", "fail", "skip")
ICONS: dict[str, str] = {"ok": "✅", "warn": "⚠️", "fail": "❌", "skip": "⏭️"}
# Display order of the groups, as an audit report reads: edge first, then inward.
GROUPS = ("Routes", "Gateway", "Media", "TURN", "Backends", "Metrics", "Pipeline")
EXIT_OK = 0
EXIT_FAILED = 1


@dataclass(frozen=True)
class Verdict:
    status: Status
    evidence: str
    hint: str = ""
    details: dict[str, Any] = field(default_factory=dict)


class CheckFailed(Exception):
    """Raised inside a check: becomes a ❌ with this message as evidence (and the hint)."""

    def __init__(self, evidence: str, hint: str = "", details: dict[str, Any] | None = None) -> None:
        super().__init__(evidence)
        self.evidence = evidence
        self.hint = hint
        self.details = details or {}


@dataclass
class CheckResult:
    key: str  # stable identifier, e.g. "gateway.health", "turn.allocation[turn:host:3478]"
    group: str
    name: str
    status: Status
    evidence: str
    elapsed_ms: float
    hint: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def icon(self) -> str:
        return ICONS[self.status]


@dataclass
class PreflightReport:
    target: str
    started_unix: float
    elapsed_s: float
    checks: list[CheckResult]
    notes: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {s: sum(1 for c in self.checks if c.status == s) for s in STATUSES}

    @property
    def failed(self) -> list[CheckResult]:
        return [c for c in self.checks if c.status == "fail"]

    @property
    def warnings(self) -> list[CheckResult]:
        return [c for c in self.checks if c.status == "warn"]

    def exit_code(self, strict: bool = False) -> int:
        """0 when nothing failed (warnings allowed unless strict), else 1."""
        if self.failed or (strict and self.warnings):
            return EXIT_FAILED
        return EXIT_OK

    def check(self, key: str) -> CheckResult:
        for c in self.checks:
            if c.key == key:
                return c
        raise KeyError(f"no check {key!r} in this report (have: {', '.join(c.key for c in self.checks)})")

    def summary_line(self) -> str:
        n = self.counts()
        return (f"{n['ok']} {ICONS['ok']}  {n['warn']} {ICONS['warn']}  {n['fail']} {ICONS['fail']}  "
                f"{n['skip']} skipped — {len(self.checks)} checks in {self.elapsed_s:.1f} s")

    def to_dict(self, strict: bool = False) -> dict[str, Any]:
        return {
            "target": self.target,
            "started_unix": self.started_unix,
            "elapsed_s": round(self.elapsed_s, 3),
            "summary": self.counts(),
            "exit_code": self.exit_code(strict),
            "notes": list(self.notes),
            "checks": [asdict(c) for c in self.checks],
        }

    def to_json(self, strict: bool = False) -> str:
        return json.dumps(self.to_dict(strict), indent=2, ensure_ascii=False, default=str) + "\n"


def short(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def body_text(body: bytes) -> str:
    """An HTTP error body as the server's words: a JSON error's message, else the text, short."""
    text = body.decode("utf-8", "replace")
    try:
        return server_text(json.loads(text))
    except ValueError:
        return short(text, 160)


_ERRNO_TEXT = {errno.ECONNREFUSED: "connection refused", errno.EHOSTUNREACH: "host unreachable",
               errno.ENETUNREACH: "network unreachable", errno.ETIMEDOUT: "connect timed out",
               errno.ECONNRESET: "connection reset"}


def _os_reason(error: OSError) -> str:
    # asyncio words a refused connect as "Connect call failed (addr)": say what happened instead.
    return _ERRNO_TEXT.get(error.errno or 0) or (error.strerror or str(error)).lower()


def describe_error(exc: BaseException) -> str:
    """One line naming the cause of a network failure (refused, unresolvable, TLS, timeout)."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return f"TLS certificate not trusted: {short(str(exc.certificate_error))}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        os_error = exc.os_error
        if isinstance(os_error, socket.gaierror):
            return f"host name '{exc.host}' does not resolve ({os_error.strerror})"
        return f"{_os_reason(os_error)} at {exc.host}:{exc.port}"
    if isinstance(exc, socket.gaierror):
        return f"host name does not resolve ({exc.strerror})"
    if isinstance(exc, OSError) and exc.errno in _ERRNO_TEXT:
        return _os_reason(exc)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted: {exc.verify_message}"
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return "timed out"
    if isinstance(exc, SignalingError):
        return short(str(exc))  # already one line naming the cause
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"HTTP {exc.status} {exc.message}"
    text = str(exc) or type(exc).__name__
    return short(f"{type(exc).__name__}: {text}" if type(exc).__name__ not in text else text)


CheckFn = Callable[[], Awaitable[Verdict]]


async def run_check(key: str, group: str, name: str, fn: CheckFn, timeout_s: float) -> CheckResult:
    """Run one check, bounded by `timeout_s`; exceptions become ❌ with a one-line cause."""
    t0 = time.monotonic()
    try:
        verdict = await asyncio.wait_for(fn(), timeout_s)
    except CheckFailed as exc:
        verdict = Verdict("fail", exc.evidence, exc.hint, exc.details)
    except TimeoutError:
        verdict = Verdict("fail", f"no result within {timeout_s:g} s (check timeout)")
    except Exception as exc:  # a check must never take the audit down: report what broke
        verdict = Verdict("fail", describe_error(exc))
    elapsed = (time.monotonic() - t0) * 1000.0
    return CheckResult(key, group, name, verdict.status, verdict.evidence, round(elapsed, 1),
                       verdict.hint, dict(verdict.details))


def skipped(key: str, group: str, name: str, why: str) -> CheckResult:
    return CheckResult(key, group, name, "skip", why, 0.0)
