"""Preflight: the deployment's connectivity audit, automated (docs/preflight.md).

Routes and certificates, the gateway (/health, Socket.IO polling and WebSocket upgrade, Redis
coordination), WebRTC media through the SFU, TURN allocation and relayed media, backend health, Redis,
metrics and Prometheus, and one utterance end to end — each ✅/⚠️/❌ with one line of evidence.

    loadtest preflight [--target URL] [--config FILE] [--json PATH] [--markdown PATH] [--strict]

From code: ``audit.run_preflight(config)`` (async) or ``audit.run_preflight_sync(config)``;
``command.preflight_before_run(...)`` is the hook `loadtest run` calls first. This package's own
import loads nothing: `loadtest --help` must not pay for the checks' dependencies.
"""
