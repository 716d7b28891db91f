"""Preflight: the deployment's connectivity audit, automated (docs/preflight.md).

Routes and certificates, the gateway (/health, Socket.IO polling and WebSocket upgrade, Redis
coordination), WebRTC media through the SFU, TURN allocation and relayed media, backend health, Redis,
metrics and Prometheus, and one utterance end to end — each ✅/⚠️/❌ with one line of evidence.

    loadtest preflight [--target URL] [--config FILE] [--json PATH] [--markdown PATH] [--strict]

From code: ``report = await run_preflight(config)`` or ``run_preflight_sync(config)``;
``preflight_before_run(...)`` is the hook `loadtest run` calls first.
"""

from loadtest.preflight.audit import run_preflight, run_preflight_sync
from loadtest.preflight.command import add_preflight_command, preflight_before_run
from loadtest.preflight.config import (
    PreflightConfig,
    PreflightConfigError,
    config_for_target,
    config_from_stack,
    load_config,
)
from loadtest.preflight.model import CheckResult, PreflightReport
from loadtest.preflight.report import print_report, to_markdown

__all__ = [
    "CheckResult",
    "PreflightConfig",
    "PreflightConfigError",
    "PreflightReport",
    "add_preflight_command",
    "config_for_target",
    "config_from_stack",
    "load_config",
    "preflight_before_run",
    "print_report",
    "run_preflight",
    "run_preflight_sync",
    "to_markdown",
]
