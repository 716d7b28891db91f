"""Locust users that are speech-translation conversations.

    locust -f loadtest/locustfile.py --host https://gateway:443 --ca-cert ca.pem --headless \\
           -u 10 -r 2 -t 60s --run-dir reports/swarm [--shape step --step-users 2 --step-time 30]

Each user is one conversation (speaker + listener, one clock) that speaks on a planned timetable until
the user stops. Each finished utterance fires one locust request per stage (``request_type
"pipeline"``: connect, stt, translation, tts, e2e); timeouts and errors fire failures naming the
stage. Exact percentiles come from the raw samples (``--run-dir``/journal, merged by ``loadtest
report``), not from locust's rounded histograms.
"""

from __future__ import annotations

import itertools
import logging
import os
import ssl
import sys
from pathlib import Path
from typing import Any

from locust import LoadTestShape, User, events, task
from locust.exception import StopUser
from locust.runners import MasterRunner, WorkerRunner

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # locust -f imports this file by path

from loadtest.adverse import add_locust_options, conditions_from_options  # noqa: E402
from loadtest.cast import KINDS, cast_for  # noqa: E402
from loadtest.credentials import AUTH_TOKEN_ENV, credentials_for  # noqa: E402
from loadtest.fixtures import DEFAULT_MANIFEST, FixtureLibrary  # noqa: E402
from loadtest.ice import TURN_CREDENTIAL_ENV, TurnRelay  # noqa: E402
from loadtest.journal import JournalShard  # noqa: E402
from loadtest.locust_patches import cache_default_args  # noqa: E402
from loadtest.profile_file import load_profile  # noqa: E402
from loadtest.redaction import install_log_scrubbing, register, register_url, scrub  # noqa: E402
from loadtest.rundir import new_run_id  # noqa: E402
from loadtest.shapes import ShapeSpec, target  # noqa: E402
from loadtest.swarm import (  # noqa: E402
    DONE_MESSAGE,
    ROWS_MESSAGE,
    SHIP_INTERVAL_S,
    STOP_MESSAGE,
    Swarm,
    SwarmSettings,
    fire_stage_events,
)
from loadtest.target import Target, ssl_context  # noqa: E402
from loadtest.webrtc_client import ClientOptions  # noqa: E402

cache_default_args()  # a worker rebuilt locust's parser ~100 times per spawn message
log = logging.getLogger("loadtest.locust")
SWARM: Swarm | None = None
MASTER_SHARDS: dict[str, JournalShard] = {}
MASTER_RECEIVED: dict[str, int] = {}
MASTER_DONE: dict[str, int] = {}  # worker id -> rows it says it shipped
# Live metrics (--metrics-port): served by the process that journals the run's rows -- a single process,
# or the master from the rows its workers ship (at least every SHIP_INTERVAL_S); never by a worker.
EXPORTER: Any = None
_user_ids = itertools.count()


@events.init_command_line_parser.add_listener
def add_options(parser: Any) -> None:
    # The web UI (when not --headless) listens on loopback unless --web-host (or LOCUST_WEB_HOST) says
    # otherwise: it starts and stops load against the target, so it is not for the whole network.
    parser.set_defaults(web_host="127.0.0.1")
    group = parser.add_argument_group("speechload")
    group.add_argument("--run-dir", default="reports/swarm", help="where raw samples are journaled")
    group.add_argument("--run-id", default="", help="run identifier shared by all processes")
    group.add_argument("--signaling-profile", default="reference", help="signaling profile name or TOML path")
    group.add_argument("--ca-cert", default="", help="PEM bundle for the target's certificate")
    group.add_argument("--insecure", action="store_true", default=False, help="skip certificate checks")
    group.add_argument("--fixtures", default=str(DEFAULT_MANIFEST), help="fixture manifest")
    group.add_argument("--fixture-ids", default="", help="comma-separated fixture ids (default: all)")
    group.add_argument("--interval", type=float, default=9.0, help="planned seconds between utterances")
    group.add_argument("--scenario", default="one-way", choices=KINDS, help="call shape (loadtest/cast.py)")
    group.add_argument("--listeners", type=int, default=4, help="group: listeners per call")
    group.add_argument("--target-languages", default="", help="group: the listeners' languages in turn")
    group.add_argument("--listen-sample", type=float, default=0.0, help="share of utterances decoded")
    group.add_argument("--response-timeout", type=float, default=10.0, help="seconds to wait per result")
    group.add_argument("--connect-timeout", type=float, default=15.0, help="seconds to connect a caller")
    group.add_argument("--ice-address", default="auto",
                       help="comma-separated local ICE host addresses, or auto (loadtest/ice.py)")
    group.add_argument("--relay-only", action="store_true", default=False,
                       help="relay all media through --turn-url (password: $SPEECHLOAD_TURN_CREDENTIAL)")
    group.add_argument("--turn-url", default="", help="TURN server for --relay-only, turn:host:port")
    group.add_argument("--turn-username", default="", help="TURN user name")
    group.add_argument("--reconnect", action="store_true", default=False,
                       help="a caller the server drops connects again and speaks on")
    group.add_argument("--source-language", default="en")
    group.add_argument("--target-language", default="es")
    group.add_argument("--shape", default="steady", choices=["steady", "step", "spike"])
    group.add_argument("--step-users", type=int, default=1, help="step shape: users added per step")
    group.add_argument("--step-time", type=float, default=30.0, help="step shape: seconds per step")
    group.add_argument("--spike-users", type=int, default=0, help="spike shape: users at the peak")
    group.add_argument("--spike-at", type=float, default=20.0, help="spike shape: seconds before the spike")
    group.add_argument("--spike-time", type=float, default=10.0, help="spike shape: seconds of the spike")
    add_locust_options(group)  # adverse conditions: --impairment, --snr-db, … (loadtest/adverse.py)
    group.add_argument("--metrics-port", type=int, default=0, help="serve live Prometheus metrics (0: off)")
    group.add_argument("--metrics-host", default="127.0.0.1", help="address of the metrics endpoint")
    group.add_argument("--metrics-linger", type=float, default=15.0, help="wait for a last scrape (s)")
    group.add_argument("--metrics-label", default="default", help="the metrics' scenario label")


def _relay(opts: Any) -> TurnRelay | None:
    """The TURN relay of a relay-only run; its credential comes from the environment, never argv (ps)."""
    if not opts.relay_only:
        return None
    if not opts.turn_url:
        raise SystemExit("speechload: --relay-only needs --turn-url")
    return TurnRelay(opts.turn_url, opts.turn_username, os.environ.get(TURN_CREDENTIAL_ENV, ""))


def _conditions(opts: Any) -> dict[str, Any]:
    impairment, noise = conditions_from_options(opts)
    return {"impairment": impairment, "noise": noise}


def _settings(environment: Any) -> SwarmSettings:
    opts = environment.parsed_options
    if not environment.host:
        raise SystemExit("speechload: --host (the gateway URL through its proxy) is required")
    library = FixtureLibrary(Path(opts.fixtures))
    fixture_ids = [i for i in opts.fixture_ids.split(",") if i] or library.ids
    library.require(fixture_ids)
    tls: ssl.SSLContext | bool = ssl_context(Target(environment.host, opts.ca_cert, opts.insecure))
    profile = load_profile(opts.signaling_profile)
    token = os.environ.get(AUTH_TOKEN_ENV, "")
    credentials = credentials_for(profile, token)
    # Nothing this process writes or logs (journal, locust CSVs, stderr) shows a secret of the run.
    register(token, os.environ.get(TURN_CREDENTIAL_ENV, ""), *credentials.secrets())
    register_url(environment.host)
    install_log_scrubbing()
    options = ClientOptions(
        url=environment.host, profile=profile, ssl_context=tls,
        connect_timeout_s=opts.connect_timeout, request_timeout_s=opts.connect_timeout,
        response_timeout_s=opts.response_timeout, source_language=opts.source_language,
        target_language=opts.target_language, relay=_relay(opts),
        credentials=credentials, listen_sample=opts.listen_sample,
        cast=cast_for(opts.scenario, opts.source_language, opts.target_language, opts.listeners,
                      tuple(x for x in opts.target_languages.split(",") if x)))
    return SwarmSettings(
        options=options, library=library, fixture_ids=fixture_ids, interval_s=opts.interval,
        run_dir=Path(opts.run_dir), run_id=opts.run_id or new_run_id(),
        ice_addresses=[a for a in opts.ice_address.split(",") if a],
        ship_to_master=isinstance(environment.runner, WorkerRunner), reconnect=opts.reconnect,
        **_conditions(opts))


def _serve_metrics(environment: Any) -> Any:
    """The exporter of this process, when --metrics-port is given and this process is not a worker."""
    global EXPORTER
    opts = environment.parsed_options
    if not opts.metrics_port or isinstance(environment.runner, WorkerRunner):
        return None
    from loadtest.metrics import MetricsOptions, serve

    options = MetricsOptions(opts.metrics_port, opts.metrics_host, opts.metrics_label, opts.metrics_linger)
    EXPORTER = serve(opts.run_id or new_run_id(), options)
    log.warning("metrics: %s", EXPORTER.url)
    return EXPORTER.metrics


def _ship_periodically(swarm: Swarm) -> None:
    """Worker: ship rows at least every second even when no new row arrives (the master's live view)."""
    import gevent

    while True:  # ends with the process (killed at quit)
        gevent.sleep(SHIP_INTERVAL_S)
        swarm.flush_to_master()


@events.init.add_listener
def on_init(environment: Any, **_kwargs: Any) -> None:
    """Create the media loop once per tester process (creating it lazily in on_start raced: two users
    of one process could each start a loop)."""
    global SWARM
    runner = environment.runner
    metrics = _serve_metrics(environment) if runner is not None else None
    if isinstance(runner, MasterRunner):
        runner.register_message(ROWS_MESSAGE, _on_rows)
        runner.register_message(DONE_MESSAGE, _on_done)
        if metrics is not None:
            metrics.track_active(lambda: runner.user_count)
        return
    if runner is None:
        return
    fire = environment.events.request.fire

    def ship(batch: list[dict[str, Any]]) -> None:
        runner.send_message(ROWS_MESSAGE, batch)

    def finished(row: Any) -> None:
        fire_stage_events(fire, row)
        if metrics is not None:
            metrics.observe(row)

    SWARM = Swarm(_settings(environment), finished, ship if isinstance(runner, WorkerRunner) else None)
    SWARM.start()
    if metrics is not None:
        swarm = SWARM
        metrics.track_active(lambda: swarm.active.current)
    if isinstance(runner, WorkerRunner):
        runner.register_message(STOP_MESSAGE, _on_stop_request)
        import gevent

        gevent.spawn(_ship_periodically, SWARM)


def _on_stop_request(environment: Any, msg: Any, **_kwargs: Any) -> None:
    """Worker: the master ends the run (headless shapes quit without a stop): stop like a stop would."""
    import gevent

    gevent.spawn(environment.runner.stop)


def _on_rows(environment: Any, msg: Any, **_kwargs: Any) -> None:
    """Master: journal the rows a worker shipped, one shard per worker."""
    run_dir = Path(environment.parsed_options.run_dir)
    shard = MASTER_SHARDS.get(msg.node_id)
    if shard is None:
        shard = MASTER_SHARDS[msg.node_id] = JournalShard(run_dir, f"worker-{msg.node_id}")
    for record in msg.data:
        shard.append_record(record)
        if EXPORTER is not None:
            EXPORTER.metrics.observe(record)
    MASTER_RECEIVED[msg.node_id] = MASTER_RECEIVED.get(msg.node_id, 0) + len(msg.data)


def _on_done(environment: Any, msg: Any, **_kwargs: Any) -> None:
    MASTER_DONE[msg.node_id] = int(msg.data["rows"])
    if set(MASTER_DONE) >= set(environment.runner.clients):
        _workers_done().set()


_DONE_EVENT: Any = None


def _workers_done() -> Any:
    global _DONE_EVENT
    if _DONE_EVENT is None:
        from gevent.event import Event

        _DONE_EVENT = Event()
    return _DONE_EVENT


@events.test_stop.add_listener
def on_test_stop(environment: Any, **_kwargs: Any) -> None:
    """Every utterance already spoken gets its final status and reaches the journal before we stop."""
    opts = environment.parsed_options
    drain_s = opts.response_timeout + 10.0
    runner = environment.runner
    if SWARM is not None:
        SWARM.drain(timeout_s=drain_s)
        if isinstance(runner, WorkerRunner):
            runner.send_message(DONE_MESSAGE, {"rows": SWARM.shipped})
    elif isinstance(runner, MasterRunner) and runner.clients:
        # A headless shape ends with quit(), which stops no worker; and workers report zero users
        # before their last utterances are answered. Ask them to stop, then wait for their rows.
        runner.send_message(STOP_MESSAGE, None)
        if not _workers_done().wait(timeout=drain_s + 15.0):
            missing = set(runner.clients) - set(MASTER_DONE)
            log.error("workers %s did not finish shipping their samples", sorted(missing))
        for node, shipped in MASTER_DONE.items():
            arrived = MASTER_RECEIVED.get(node, 0)
            if arrived != shipped:
                log.error("worker %s shipped %d rows, %d arrived", node, shipped, arrived)
    if EXPORTER is not None and not EXPORTER.final_scrape():
        log.warning("metrics: no scrape within %.0f s after the last utterance", EXPORTER.options.linger_s)


@events.quitting.add_listener
def on_quitting(environment: Any, **_kwargs: Any) -> None:
    if SWARM is not None:
        # SIGTERM/SIGINT reach here before the runner stops its users: finish what is in flight first
        # (after a normal end test_stop has drained already, and this returns at once).
        SWARM.drain(timeout_s=environment.parsed_options.response_timeout + 10.0)
        SWARM.close()
    for shard in MASTER_SHARDS.values():
        shard.close()
    if EXPORTER is not None:
        EXPORTER.close()


class PipelineUser(User):
    """One conversation: connects on start, speaks until stopped; results arrive as request events."""

    def on_start(self) -> None:
        assert SWARM is not None, "the speechload media loop did not start (see the init event)"
        self.index = next(_user_ids)
        opts = self.environment.parsed_options
        fire = self.environment.events.request.fire
        if SWARM.stopping:
            raise StopUser()  # the run is stopping: no new conversation
        try:
            connect_ms = SWARM.connect(self.index, opts.connect_timeout + 5)
        except Exception as exc:  # noqa: BLE001 — every failure to connect is a failed connect row
            fire(request_type="pipeline", name="connect", response_time=0.0, response_length=0,
                 exception=RuntimeError(scrub(str(exc) or type(exc).__name__)), context={})
            raise StopUser() from None
        fire(request_type="pipeline", name="connect", response_time=connect_ms, response_length=0,
             exception=None, context={})

    @task
    def converse(self) -> None:
        # The conversation runs on the media loop; this greenlet just lives as long as it does.
        assert SWARM is not None
        SWARM.wait_conversation(self.index)
        raise StopUser()

    def on_stop(self) -> None:
        if SWARM is not None and hasattr(self, "index"):
            SWARM.stop_conversation(self.index)


class SelectedShape(LoadTestShape):
    """--shape steady|step|spike, sized by locust's own -u/-r/-t."""

    use_common_options = True

    def tick(self) -> tuple[int, float] | None:
        assert self.runner is not None
        opts = self.runner.environment.parsed_options
        spec = ShapeSpec(
            name=opts.shape, users=opts.num_users or 1, spawn_rate=opts.spawn_rate or 1.0,
            duration_s=float(opts.run_time or 60), step_users=opts.step_users, step_s=opts.step_time,
            spike_users=opts.spike_users, spike_at_s=opts.spike_at, spike_s=opts.spike_time)
        spec.validate()
        return target(spec, self.get_run_time())
