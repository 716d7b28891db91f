"""What the reference stack writes for its gateway processes: names, URLs and each replica's config file.

Pure functions of the stack config (sut/config.py); sut/stack.py starts the processes with them.
"""

from __future__ import annotations

import os
from pathlib import Path

from sut import proxy
from sut.config import StackConfig
from sut.proxy import edge

SERVICES = ("stt", "translation", "tts")


def target_url(config: StackConfig) -> str:
    return edge.target_url(config)  # Traefik: https://webrtc.<domain>:<port>; nginx: https://localhost:<port>


def url_of(host: str, port: int, path: str = "", scheme: str = "http") -> str:
    return f"{scheme}://[{host}]:{port}{path}" if ":" in host else f"{scheme}://{host}:{port}{path}"


def gateway_names(config: StackConfig) -> list[str]:
    """Process names of the gateway replicas: `gateway` alone, else gateway-0 .. gateway-<N-1>."""
    n = config.gateway.replicas
    return ["gateway"] if n == 1 else [f"gateway-{i}" for i in range(n)]


def gateway_urls(config: StackConfig) -> tuple[str, ...]:
    return tuple(url_of(config.host, config.gateway.replica_port(i)) for i in range(config.gateway.replicas))


def gateway_json(config: StackConfig, ground_truth: Path | None, replica: int = 0) -> dict[str, object]:
    """Gateway replica `replica`'s config file contents (keys as sut/gateway/src/config.js reads them)."""
    gw = config.gateway
    rtc_min, rtc_max = gw.replica_rtc_range(replica)
    doc: dict[str, object] = {
        "host": config.host,
        "port": gw.replica_port(replica),
        "rtcMinPort": rtc_min,
        "rtcMaxPort": rtc_max,
        "announcedIp": gw.announced_ip,
        "vad": {
            "source": gw.vad_source,
            "thresholdDbfs": gw.vad_threshold_dbfs,
            "levelThresholdDbov": gw.vad_level_threshold_dbov,
            "hangoverMs": gw.vad_hangover_ms,
            "maxUtteranceMs": gw.max_utterance_ms,
        },
        "sourceLanguage": gw.source_language,
        "targetLanguage": gw.target_language,
        "services": {name: url_of(config.host, config.service(name).port) for name in SERVICES},
        "requestTimeoutMs": gw.request_timeout_ms,
        "tapLoss": config.faults.tap_loss,  # fault: mic packets the tap drops
        "reportErrors": gw.report_errors,
        "groundTruthPath": None if ground_truth is None else str(ground_truth),
        "logLevel": os.environ.get("SPEECHLOAD_GATEWAY_LOG_LEVEL", "info"),
        # Room coordination through Redis under the configured host name (null: a single node).
        "redis": {"host": gw.redis_host, "port": config.redis.port} if gw.redis_host else None,
    }
    if gw.replicas > 1:
        # Engine.IO session ids name their replica, so the proxy can keep a polling session on it.
        doc["sessionIdPrefix"] = proxy.session_id_prefix(replica)
    return doc


def enabled_services(config: StackConfig) -> list[str]:
    return [name for name in SERVICES if not getattr(config.faults, f"{name}_down")]
