"""Gateway replicas: two gateway processes behind the proxy, rooms spanning them through Redis.

Real processes, no mocks: the `replicas` stack (offset 1000) and the standalone trap
`broken-redis-replicas` (offset 1010). Conversations are placed by connecting each peer to a chosen
replica's own port; a conversation whose speaker and listener sit on different replicas only works if
announcements, result events and the translated speech all cross between them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from loadtest.report.placement import placement_groups, placement_line
from sut.config import load_stack_config
from sut.stack import ReferenceStack, StackInfo, stack_status
from tests.integration.edge_http import EdgeClient, get
from tests.integration.replica_calls import (
    Conversation,
    converse,
    get_json,
    join_answer,
    join_twice,
    late_join,
    metric,
)
from tests.integration.stackrun import ground_truth, run_callers, running_stack, short_fixture_ids

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# As in test_pipeline.py: the tester's and the stack's times of one moment differ by transport only.
TRANSPORT_TOLERANCE_MS = 20.0
PIPED_IN = ("gateway_piped_producers_total", 'direction="in"')
PIPED_OUT = ("gateway_piped_producers_total", 'direction="out"')


@pytest.fixture(scope="module")
def replicated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackInfo]:
    with running_stack("replicas", tmp_path_factory.mktemp("stack"), 1000) as info:
        yield info


def wait_until(predicate, timeout_s: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    """Poll another process's state (it cannot notify us), bounded."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_every_replica_is_up_and_knows_the_other(replicated: StackInfo) -> None:
    a, b = replicated.gateway_urls
    assert (a, b) == ("http://127.0.0.1:4000", "http://127.0.0.1:4001")
    status = stack_status(replicated.state_dir)
    gateways = {p.name: p.healthy for p in status.processes if p.name.startswith("gateway")}
    assert status.running and gateways == {"gateway-0": True, "gateway-1": True}
    nodes = set()
    for url in (a, b):
        health = get_json(f"{url}/health")
        assert health["redis"]["mode"] == "cluster" and health["redis"]["nodes"] == 2, health["redis"]
        assert {r["address"] for r in health["replicas"]} == {a, b}
        nodes.add(health["redis"]["nodeId"])
    assert len(nodes) == 2
    answer = get(replicated, f"{replicated.target_url}/health")  # through Traefik, by host name
    assert {r["address"] for r in json.loads(answer.body)["replicas"]} == {a, b}


def test_join_answer_names_the_replica_and_peer_ids_are_unique_across_replicas(replicated: StackInfo) -> None:
    a, b = replicated.gateway_urls
    for url in (a, b):
        answer = join_answer(url, "join-node", f"peer-{url[-4:]}")
        assert answer["ok"], answer
        assert answer["data"]["node"] == get_json(f"{url}/health")["redis"]["nodeId"]
    twice = join_twice(a, b, "join-twice", "same-peer")
    assert not twice["ok"] and "already in room" in twice["error"] and "replica" in twice["error"], twice


def test_cross_replica_conversations_pipe_the_translated_speech(replicated: StackInfo) -> None:
    a, b = replicated.gateway_urls
    before = {url: (metric(url, *PIPED_IN), metric(url, *PIPED_OUT)) for url in (a, b)}
    ids = short_fixture_ids(max_duration_s=3.5, count=3)
    started = time.monotonic()
    convs = [Conversation("cross-ab", a, b), Conversation("cross-ba", b, a), Conversation("same-bb", b, b)]
    ((join_listed, get_listed),) = converse(convs, ids, interval_s=4.0, probes=(late_join(b, "cross-ab"),))
    elapsed = time.monotonic() - started
    for conv in convs:
        assert [o.status.value for o in conv.outcomes] == ["ok"] * len(ids), (conv.name, conv.outcomes)
    # The tester recorded where each peer joined (speaker_node/listener_node in its rows).
    assert [c.speaker_node != c.listener_node for c in convs] == [True, True, False]
    # A peer joining replica B is told of the producers living on replica A (the room's directory).
    for listed in (join_listed, get_listed):
        assert sorted((p["peerId"], p["appData"]["type"]) for p in listed) == [
            ("cross-ab-speaker", "mic"), ("cross-ab-speaker", "tts")], listed
    # Each cross conversation piped its TTS producer from the speaker's replica to the listener's; the
    # same-replica one piped nothing.
    for url in (a, b):
        assert metric(url, *PIPED_IN) - before[url][0] == 1, url
        assert metric(url, *PIPED_OUT) - before[url][1] == 1, url
    logs = {p.name: p.log.read_text() for p in stack_status(replicated.state_dir).processes}
    assert "room cross-ab: producer" in logs["gateway-1"] and "piped in from replica" in logs["gateway-1"]
    assert "room cross-ba: producer" in logs["gateway-0"] and "piped in from replica" in logs["gateway-0"]
    assert "room same-bb: producer" not in logs["gateway-0"] + logs["gateway-1"]
    # Ground truth: one file, whole lines from both replicas (two boot ids); the listener heard each
    # utterance's first synthesized packet within transport time of its sending, through the pipe too.
    assert replicated.ground_truth_path is not None
    lines = replicated.ground_truth_path.read_text().splitlines()
    assert all(json.loads(line) for line in lines)
    truth = ground_truth(replicated.ground_truth_path)
    for conv in convs:
        for tl in conv.timelines:
            gt = truth.loc[tl.server_utterance_id]
            assert tl.t_audio_onset is not None and tl.t_speech_end is not None
            delay_ms = (tl.t_audio_onset - gt["tts_first_packet"]) * 1000
            # The gateway stamps a TTS packet just before sending it: same clock, so never negative.
            assert 0 <= delay_ms <= TRANSPORT_TOLERANCE_MS, (conv.name, tl.utterance_id, delay_ms)
    boots = {str(tl.server_utterance_id).rsplit("-", 1)[0] for conv in convs[:2] for tl in conv.timelines}
    assert len(boots) == 2, boots
    # Rooms closed with their peers: so did every pipe.
    closed = wait_until(lambda: all(metric(u, "gateway_pipe_transports") == 0 for u in (a, b)))
    assert closed, "pipe transports left open after the rooms closed"
    assert elapsed < 3 * 4.0 + 30, elapsed


def test_polling_sessions_stay_on_their_replica_through_the_proxy(replicated: StackInfo) -> None:
    # Traefik keeps a client on its replica by the sticky cookie of its first answer (a client that
    # keeps cookies, as browsers and the tester do); test_traefik_edge.py shows what happens without.
    base = f"{replicated.target_url}/socket.io/?EIO=4&transport=polling"
    prefixes = set()
    for _ in range(4):  # round robin for new clients: both replicas hand out sessions
        client = EdgeClient(replicated, cookies=True)
        sid = json.loads(client.request(base).text[1:])["sid"]
        prefixes.add(sid.split(".")[0])
        connect = client.request(f"{base}&sid={sid}", b"40")  # Socket.IO CONNECT, on the same replica
        assert (connect.status, connect.text) == (200, "ok")
        answer = client.request(f"{base}&sid={sid}")
        assert answer.status == 200 and answer.text.startswith("40{"), answer.text
    assert prefixes == {"r0", "r1"}


def test_conversations_through_the_proxy_all_end_ok(replicated: StackInfo, tmp_path: Path) -> None:
    urls = replicated.gateway_urls
    joins = 'event="joinRoom",result="ok"'
    before = [metric(u, "gateway_signaling_requests_total", joins) for u in urls]
    ids = short_fixture_ids(max_duration_s=3.5, count=4)
    frame = run_callers(replicated, tmp_path / "run", callers=4, duration_s=2 * 4.0, interval_s=4.0,
                        fixture_ids=ids)
    assert len(frame) == 8
    assert list(frame["status"]) == ["ok"] * 8, frame[["status", "status_stage", "error"]]
    after = [metric(u, "gateway_signaling_requests_total", joins) for u in urls]
    spread = [n - m for n, m in zip(after, before, strict=True)]
    assert sum(spread) == 8 and min(spread) > 0, spread


def test_standalone_replicas_keep_same_replica_calls_and_lose_cross_replica_ones(state_dir: Path) -> None:
    stack = ReferenceStack(load_stack_config("broken-redis-replicas").with_port_offset(1010), state_dir)
    with stack as info:
        a, b = info.gateway_urls
        for url in (a, b):
            health = get_json(f"{url}/health")
            # The trap: both "ok", each alone.
            assert health["status"] == "ok" and health["redis"]["mode"] == "standalone", health
            assert [r["address"] for r in health["replicas"]] == [url]
        ids = short_fixture_ids(max_duration_s=3.5, count=2)
        convs = [Conversation("cross-ab", a, b), Conversation("cross-ba", b, a),
                 Conversation("same-aa", a, a), Conversation("same-bb", b, b)]
        converse(convs, ids, interval_s=4.0, timeout_s=6.0)
        piped = [metric(u, *PIPED_IN) for u in (a, b)]
    cross, same = convs[:2], convs[2:]
    for conv in same:
        assert [o.status.value for o in conv.outcomes] == ["ok"] * len(ids), (conv.name, conv.outcomes)
    # A cross-replica conversation is two half-rooms: the listener's replica never hears of the
    # speaker's producers, so the first thing that fails to cross is the announcement of the translated
    # speech, and the tester gives up at connect (after its connect timeout) before any utterance.
    for conv in cross:
        (only,) = conv.outcomes
        assert (only.status.value, only.status_stage) == ("error", "connect"), (conv.name, only)
        assert only.error is not None and "no producer was announced" in only.error
    assert piped == [0, 0]
    # The tester's report says it in one line, from the replicas its rows recorded.
    frame = pd.DataFrame([{"speaker_node": c.speaker_node, "listener_node": c.listener_node,
                           "status": o.status.value, "status_stage": o.status_stage, "e2e_ms": None,
                           "sfu_ms": None} for c in convs for o in c.outcomes])
    assert all(c.speaker_node and c.listener_node for c in convs)
    line = placement_line(placement_groups(frame))
    assert line is not None, frame.to_string()
    assert line.startswith("2 of 2 cross-node utterances failed (at connect) while "
                                                "same-node ones passed"), line
