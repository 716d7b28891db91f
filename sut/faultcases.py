"""The fault matrix: each fault of docs/reliability.md, how it is made real, and the outcome it implies.

A check returns the problems it finds ([] = the outcome is the expected one); the generic checks
(tester survives, report builds, exact accounting, every failure names its stage and why) are
sut/faultkit.py's and apply to every fault.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sut.faultkit import Fault, Observed

Check = Callable[[Observed], list[str]]
STT_CONFIGURED_MS = 300.0  # fixed-delays.toml's constant STT service time


def _share(rows: list[dict[str, Any]], status: str = "ok") -> float:
    return sum(r.get("status") == status for r in rows) / len(rows) if rows else 0.0


def all_fail_at(stage: str, *reasons: str) -> Check:
    """Every utterance is an error at `stage`, its reason naming one of `reasons`."""
    def check(o: Observed) -> list[str]:
        problems = [] if len(o.rows) >= 4 else [f"only {len(o.rows)} utterances"]
        wrong = [r for r in o.rows if r.get("status") != "error" or r.get("status_stage") != stage
                 or not any(x in str(r.get("error")) for x in reasons)]
        if wrong:
            w = wrong[0]
            problems.append(f"{len(wrong)} not error at {stage} naming {'/'.join(reasons)}, e.g. "
                            f"{w.get('status')} at {w.get('status_stage')}: {w.get('error')}")
        return problems
    return check


def stt_slow(o: Observed) -> list[str]:
    problems = []
    if _share(o.rows) < 0.9:
        problems.append(f"ok {_share(o.rows):.0%} < 90 %")
    p50 = (o.summary.get("stages", {}).get("stt") or {}).get("p50")
    if p50 is None or p50 < 5 * STT_CONFIGURED_MS:
        problems.append(f"stt p50 {p50} ms, expected >= 5 × {STT_CONFIGURED_MS:.0f} ms")
    return problems


def dropped_then(reconnect: bool) -> Check:
    """A restart drops every caller: in-flight utterances end as errors naming the disconnect; with
    reconnect the callers come back and what follows is ok, without it nothing follows."""
    def check(o: Observed) -> list[str]:
        problems = []
        dropped = [r for r in o.failed() if "disconnected by server" in str(r.get("error"))]
        if not dropped:
            problems.append("no utterance ended by the disconnect")
        if _share(o.before()) < 1.0:
            problems.append("utterances before the fault were not all ok")
        reconnects, after = int(o.summary.get("reconnects", 0)), o.after()
        if reconnect:
            if reconnects < 1:
                problems.append("no caller reconnected")
            if not after or _share(after) < 0.8:
                problems.append(f"after the restart: {len(after)} utterances, {_share(after):.0%} ok")
        elif reconnects or after:
            problems.append(f"callers did not stay down: {reconnects} reconnects, {len(after)} after")
        return problems
    return check


def worker_killed(o: Observed) -> list[str]:
    problems = [] if any("disconnected by server" in str(r.get("error")) for r in o.failed()) \
        else ["no utterance ended by the disconnect"]
    if any(r.get("status") == "ok" for r in o.after()):
        problems.append("an utterance succeeded after the gateway lost its only media worker")
    return problems


def redis_killed(o: Observed) -> list[str]:
    after = o.after()
    cross = [r for r in after if r.get("speaker_node") != r.get("listener_node")]
    same = [r for r in after if r.get("speaker_node") == r.get("listener_node")]
    problems = [] if after else ["no utterance after the kill"]
    if any(r.get("status") == "ok" for r in cross):
        problems.append("a cross-replica utterance got its results without Redis")
    if any(r.get("status") != "timeout" or r.get("status_stage") != "stt" for r in cross):
        problems.append("cross-replica utterances after the kill did not all time out at stt")
    if same and _share(same) < 0.8:
        problems.append(f"same-replica utterances {_share(same):.0%} ok (< 80 %)")
    if _share(o.before()) < 1.0:
        problems.append("utterances before the kill were not all ok")
    return problems


def tap_loss(o: Observed) -> list[str]:
    problems = [] if _share(o.rows) >= 0.75 else [f"ok {_share(o.rows):.0%} < 75 %"]
    if any(r.get("status_stage") not in ("stt", "send") for r in o.failed()):
        problems.append("a failure outside stt/send")
    return problems


FAULTS: tuple[Fault, ...] = (
    Fault("stt-slow", "STT slow (5× its latency)",
          "every utterance ok, stt p50 ≥ 5 × the configured 300 ms (e2e over budget)",
          stt_slow, faults={"stt_latency_factor": 5.0}),
    Fault("stt-500", "STT returning 500s", "every utterance an error at stt naming HTTP 500",
          all_fail_at("stt", "HTTP 500"), faults={"stt_error_rate": 1.0}),
    Fault("translation-down", "translation down",
          "every utterance an error at translation (connection refused)",
          all_fail_at("translation", "ECONNREFUSED", "refused"), faults={"translation_down": True}),
    Fault("tts-down", "TTS down", "every utterance an error at tts (connection refused)",
          all_fail_at("tts", "ECONNREFUSED", "refused"), faults={"tts_down": True}),
    Fault("tts-garbage", "TTS returning garbage audio",
          "every utterance an error at tts naming the bad audio",
          all_fail_at("tts", "Ogg", "WAV", "audio"), faults={"tts_garbage_audio": True}),
    Fault("gateway-restart", "gateway killed and restarted mid-run (reconnect on)",
          "in-flight utterances: errors naming the disconnect; callers reconnect; what follows ≥ 80 % ok",
          dropped_then(True), action="restart:gateway", reconnect=True),
    Fault("gateway-restart-stay-down", "gateway killed and restarted mid-run (reconnect off)",
          "in-flight utterances: errors naming the disconnect; callers stay down (nothing after)",
          dropped_then(False), action="restart:gateway"),
    Fault("proxy-restart", "proxy restarted mid-run (reconnect on)",
          "in-flight utterances: errors naming the disconnect; callers reconnect; what follows ≥ 80 % ok",
          dropped_then(True), action="restart:proxy", reconnect=True),
    Fault("worker-kill", "mediasoup worker killed",
          "the gateway drops its rooms: in-flight utterances error (disconnect); no worker is respawned, "
          "so reconnects fail and nothing succeeds after", worker_killed, action="kill-worker",
          reconnect=True),
    Fault("redis-kill", "Redis killed mid-run, 2 gateway replicas",
          "cross-replica conversations lose their result events (Socket.IO broadcasts go through Redis): "
          "their utterances time out at stt; same-replica ones stay ok", redis_killed,
          base="replicas", action="kill:redis", callers=4),
    Fault("tap-loss", "5 % packet loss on the media path (gateway tap)",
          "≥ 75 % ok; a failure names stt (a lossy utterance's transcript misses)", tap_loss,
          faults={"tap_loss": 0.05}),
)


def by_name(names: list[str]) -> list[Fault]:
    known = {f.name: f for f in FAULTS}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise KeyError(f"unknown fault(s) {unknown}; known: {', '.join(known)}")
    return [known[n] for n in names]
