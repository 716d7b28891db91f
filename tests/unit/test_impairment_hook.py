"""The impairment hook on fake sockets (no network): counting, dropping, holding in order; the profiles file;
the per-caller split of profiles and SNRs."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from loadtest.conditions import (
    NETWORK_COLUMNS,
    ImpairmentConfig,
    NoiseConfig,
    impairment_from_table,
    noise_from_table,
    parse_impairment_spec,
    parse_snr_list,
    pick,
)
from loadtest.config import ConfigError, load_run_config
from loadtest.impairments.hook import DTLS, RTCP, RTP, STUN, ImpairedTransport, Link, classify
from loadtest.impairments.models import PathSpec
from loadtest.impairments.observe import NetworkPlan, NetworkWatch
from loadtest.impairments.profiles import ImpairmentError, Profile, describe_run, load_profiles, resolve
from loadtest.timeline import SampleRow

pytestmark = pytest.mark.unit


def rtp(seq: int, ssrc: int = 0x1234, pt: int = 100) -> bytes:
    return bytes([0x80, pt]) + seq.to_bytes(2, "big") + bytes(4) + ssrc.to_bytes(4, "big") + b"x" * 100


class FakeSocket:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.sent: list[tuple[float, bytes]] = []
        self.closing = False

    def sendto(self, data: bytes, addr: Any = None) -> None:
        self.sent.append((self.loop.time(), data))

    def is_closing(self) -> bool:
        return self.closing

    def get_extra_info(self, name: str) -> str:
        return f"info:{name}"


def test_classify_demultiplexes_like_rfc_7983() -> None:
    assert classify(b"\x00\x01" + bytes(18)) == STUN
    assert classify(bytes([22, 254, 253]) + bytes(10)) == DTLS
    assert classify(rtp(1)) == RTP
    assert classify(bytes([0x81, 201]) + bytes(30)) == RTCP  # a receiver report
    assert classify(b"") == "other"


def test_profiles_shipped_and_extended(tmp_path: Path) -> None:
    shipped = load_profiles()
    assert {"none", "wifi-good", "4g-busy", "lossy-5", "satellite", "delay-200"} <= set(shipped)
    busy = shipped["4g-busy"]
    assert busy.uplink.rate_kbps == 512 and busy.downlink.rate_kbps == 2048  # per-direction overrides
    assert busy.uplink.jitter_ms == busy.downlink.jitter_ms == 20  # shared keys
    assert busy.uplink.configured_loss == pytest.approx(0.024, abs=0.001)
    assert shipped["none"].uplink.is_identity and shipped["lossy-5"].downlink.loss == 0.05
    extra = tmp_path / "mine.toml"
    extra.write_text('[lossy-5]\nloss = 0.1\n[train]\ndescription = "tunnels"\nburst_p = 0.002\n'
                     'burst_r = 0.05\n[train.downlink]\ndelay_ms = 80\n')
    mine = load_profiles(extra)
    assert mine["lossy-5"].uplink.loss == 0.1  # a same-named profile replaces the shipped one
    assert mine["train"].downlink.delay_ms == 80 and mine["train"].uplink.delay_ms == 0
    bad = tmp_path / "bad.toml"
    bad.write_text("[x]\nlos = 0.1\n")
    with pytest.raises(ImpairmentError, match=r"unknown key 'bad.toml: x.los'"):
        load_profiles(bad)
    bad.write_text("[x.uplink]\nloss = 2\n")
    with pytest.raises(ImpairmentError, match=r"x.uplink.*'loss' must lie in \[0, 1\]"):
        load_profiles(bad)
    with pytest.raises(ImpairmentError, match="unknown impairment profile 'nope'"):
        resolve(ImpairmentConfig((("nope", 1),)))
    described = describe_run(ImpairmentConfig((("lossy-5", 1), ("none", 2))))
    assert described is not None and described["profiles"]["lossy-5"]["uplink"]["configured_loss"] == 0.05


def test_callers_are_split_across_groups_and_snrs() -> None:
    groups = parse_impairment_spec("lossy-5:1, none:3")
    assert groups == (("lossy-5", 1), ("none", 3))
    assert [pick(groups, i) for i in range(8)] == ["lossy-5", "none", "none", "none"] * 2
    assert ImpairmentConfig(groups).spec() == "lossy-5:1,none:3"
    with pytest.raises(ValueError, match="weight"):
        parse_impairment_spec("a:0")
    noise = NoiseConfig(parse_snr_list("clean,10,5"))
    assert [noise.snr_for(i) for i in range(4)] == [None, 10.0, 5.0, None]
    assert noise.spec() == "clean,10,5" and noise.enabled
    with pytest.raises(ValueError, match="-20..60"):
        parse_snr_list("100")
    assert impairment_from_table({"groups": ["4g-busy:2", "none"], "seed": 3}, ValueError).groups == (
        ("4g-busy", 2), ("none", 1))
    with pytest.raises(ValueError, match="exclude each other"):
        impairment_from_table({"profile": "a", "groups": ["b"]}, ValueError)
    assert noise_from_table({"snr_db": [20, "clean"], "kind": "babble"}, ValueError).snr_db == (20.0, None)


def test_run_config_sections(tmp_path: Path) -> None:
    run = tmp_path / "run.toml"
    run.write_text('[impairment]\nprofile = "lossy-5"\nseed = 4\n[noise]\nsnr_db = [20, 5]\n')
    cfg = load_run_config(run)
    assert cfg.impairment.groups == (("lossy-5", 1),) and cfg.impairment.seed == 4
    assert cfg.noise.snr_db == (20.0, 5.0) and cfg.noise.kind == "pink"
    run.write_text('[impairment]\nprofile = "no-such"\n')
    with pytest.raises(ConfigError, match="unknown impairment profile 'no-such'"):
        load_run_config(run)


def profile(up: PathSpec, down: PathSpec | None = None) -> Profile:
    return Profile("test", "", up, down or PathSpec())


async def test_link_drops_and_counts_media_only_as_rtp() -> None:
    loop = asyncio.get_running_loop()
    link = Link(profile(PathSpec(loss=0.5)), seed="t")
    sock = FakeSocket(loop)
    wrapped = ImpairedTransport(sock, link)
    for seq in range(1000):
        wrapped.sendto(rtp(seq), ("127.0.0.1", 1))
    for _ in range(100):
        wrapped.sendto(b"\x00\x01" + bytes(18), ("127.0.0.1", 1))  # STUN: dropped too, not counted as RTP
    up = link.counters["up"]
    assert up.rtp == 1000 and up.packets == 1100
    assert len(sock.sent) == 1100 - up.dropped
    assert 400 < up.rtp_dropped < 600 and up.dropped > up.rtp_dropped
    assert link.first_rtp_seq == {0x1234: 0}
    assert wrapped.get_extra_info("sockname") == "info:sockname"  # the rest is the real transport


async def test_delayed_datagrams_leave_in_order_at_their_time() -> None:
    loop = asyncio.get_running_loop()
    link = Link(profile(PathSpec(delay_ms=30.0, jitter_ms=10.0)), seed="t")
    sock = FakeSocket(loop)
    wrapped = ImpairedTransport(sock, link)
    start = loop.time()
    for seq in range(20):
        wrapped.sendto(rtp(seq), None)
    assert sock.sent == []  # held
    done = loop.create_future()
    loop.call_later(0.2, done.set_result, None)
    await done
    seqs = [int.from_bytes(d[2:4], "big") for _, d in sock.sent]
    assert seqs == list(range(20))  # no reordering without `reorder`
    assert all(t - start >= 0.0 for t, _ in sock.sent)
    assert link.counters["up"].rtp_delayed == 20
    assert 25.0 < link.counters["up"].rtp_mean_added_ms() < 60.0


async def test_receive_side_and_a_closed_socket() -> None:
    loop = asyncio.get_running_loop()
    link = Link(profile(PathSpec(), PathSpec(delay_ms=20.0)), seed="t")
    got: list[bytes] = []
    link.receive(lambda proto, data, addr: got.append(data), object(), rtp(7), None)
    assert got == []
    done = loop.create_future()
    loop.call_later(0.05, done.set_result, None)
    await done
    assert got == [rtp(7)] and link.counters["down"].rtp == 1
    # A datagram still held when its socket closes is dropped with the connection, not sent.
    sender = Link(profile(PathSpec(delay_ms=20.0)), seed="t")
    sock = FakeSocket(loop)
    ImpairedTransport(sock, sender).sendto(rtp(1), None)
    sock.closing = True
    done = loop.create_future()
    loop.call_later(0.05, done.set_result, None)
    await done
    assert sock.sent == []


class FakeSender:
    _ssrc = 0x1234

    def __init__(self) -> None:
        self.handled: list[Any] = []

    async def _handle_rtcp_packet(self, packet: Any) -> None:
        self.handled.append(packet)


class Report:
    def __init__(self, ssrc: int, lost: int, highest: int) -> None:
        self.ssrc, self.packets_lost, self.highest_sequence, self.fraction_lost = ssrc, lost, highest, 12


class Packet:
    def __init__(self, *reports: Report) -> None:
        self.reports = list(reports)


async def test_watch_reads_the_sfu_receiver_reports_and_makes_row_columns() -> None:
    plan = NetworkPlan(ImpairmentConfig((("lossy-5", 1), ("none", 1))))
    watch = plan.watch_for(0)
    assert isinstance(watch, NetworkWatch) and watch.profile == "lossy-5"
    assert plan.watch_for(1).profile == "none"  # type: ignore[union-attr]
    sender = FakeSender()
    watch.attach_sender(sender)
    watch.link.first_rtp_seq[0x1234] = 65000  # the SFU's extended sequence numbers wrap past 65535
    await sender._handle_rtcp_packet(Packet(Report(0x9999, 50, 10), Report(0x1234, 50, 65536 + 999)))
    assert len(sender.handled) == 1  # aiortc still gets every report
    assert watch.sfu_observed() == (50, 1536)
    cols = watch.columns({"packets_lost": 3.0, "packets_received": 97.0})
    assert cols["impairment"] == "lossy-5" and cols["sfu_up_expected"] == 1536
    assert cols["rx_down_lost"] == 3.0 and cols["rx_down_expected"] == 100.0
    # Every column the watch makes is a journal column, and the report reads each of them.
    assert set(cols) == {"impairment", *NETWORK_COLUMNS}
    assert set(cols) <= set(SampleRow.__dataclass_fields__)
