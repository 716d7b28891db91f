"""``--listen-sample``: a deterministic fraction of utterances whose translated audio is decoded and checked.

Which utterances: a hash of the tester's utterance id, so the same utterances are sampled whatever the
process, the order or the load. What is checked, once the audio has ended (decoded with libopus through
PyAV at 48 kHz, the packets in sequence order, a lost packet simply absent):

* ``rms_dbfs``: the RMS level of the decoded samples, dBFS (full scale = 1.0: a full-scale sine is -3 dBFS);
* ``silent``: RMS below ``SILENT_DBFS`` — the gateway sent packets, but of (near) silence;
* ``clipped``: at least ``CLIPPED_SHARE`` of the samples at full scale (|x| ≥ ``FULL_SCALE``).

Decoding costs ~75 µs of CPU per 20 ms packet (2 shared cores); it runs on the media loop, a few packets
per loop turn (``ListenDecoder.step``), once per sampled utterance.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass

import av
import numpy as np

SILENT_DBFS = -50.0
FULL_SCALE = 0.999  # a decoded sample this close to ±1.0 is at full scale (s16 output: ≥ 32736)
CLIPPED_SHARE = 0.001  # 0.1 % of the samples
FLOOR_DBFS = -120.0  # digital silence
RATE = 48_000
STEP_PACKETS = 8  # decoded per loop turn (~0.6 ms)


@dataclass(frozen=True)
class ListenCheck:
    rms_dbfs: float
    silent: bool
    clipped: bool
    samples: int
    undecodable: int = 0  # packets the decoder refused (a gateway sending garbage hears as silence)


def sampled(utterance_id: str, fraction: float) -> bool:
    """Whether this utterance is in the listen sample: the same answer for the same id, everywhere."""
    if fraction <= 0.0:
        return False
    if fraction >= 1.0:
        return True
    digest = hashlib.blake2b(utterance_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64 < fraction


def in_order(payloads: Iterable[tuple[int, bytes]]) -> list[bytes]:
    """Payloads by sequence number (16-bit wrap handled, relative to the first received)."""
    items = list(payloads)
    if not items:
        return []
    base = items[0][0]
    items.sort(key=lambda item: ((item[0] - base + 32768) & 0xFFFF) - 32768)
    return [payload for _seq, payload in items]


class ListenDecoder:
    """Decodes one stream's payloads a few packets per call and accumulates the checks as it goes.

    One 20 ms packet costs ~75 µs to decode here: a 5 s utterance at once would hold the media loop for
    ~20 ms (more than the send-lateness budget), so the caller runs ``step`` once per loop turn."""

    def __init__(self, payloads: Iterable[tuple[int, bytes]]) -> None:
        self._payloads = in_order(payloads)
        self._next = 0
        self._ctx = av.CodecContext.create("libopus", "r")
        self._ctx.sample_rate = RATE
        self._ctx.layout = "mono"
        self._sum_squares = 0.0
        self._samples = 0
        self._at_full = 0
        self._bad = 0

    @property
    def done(self) -> bool:
        return self._next >= len(self._payloads)

    def step(self, packets: int = STEP_PACKETS) -> bool:
        """Decode up to ``packets`` more; True once every payload is decoded."""
        end = min(len(self._payloads), self._next + packets)
        for payload in self._payloads[self._next:end]:
            if not payload:  # an empty packet would put the decoder into draining, refusing the rest
                self._bad += 1
                continue
            try:
                frames = self._ctx.decode(av.Packet(payload))
            except (av.error.FFmpegError, ValueError):
                self._bad += 1  # a gateway's garbage: heard as nothing
                continue
            for frame in frames:
                self._add(frame.to_ndarray().reshape(-1))
        self._next = end
        return self.done

    def _add(self, pcm: np.ndarray) -> None:
        x = pcm.astype(np.float64) / 32768.0 if pcm.dtype == np.int16 else pcm.astype(np.float64)
        self._sum_squares += float(np.dot(x, x))
        self._samples += int(x.size)
        self._at_full += int(np.count_nonzero(np.abs(x) >= FULL_SCALE))

    def result(self) -> ListenCheck:
        if self._samples == 0:
            return ListenCheck(FLOOR_DBFS, True, False, 0, self._bad)
        rms = math.sqrt(self._sum_squares / self._samples)
        dbfs = max(FLOOR_DBFS, 20.0 * math.log10(rms)) if rms > 0 else FLOOR_DBFS
        clipped = self._at_full >= CLIPPED_SHARE * self._samples
        return ListenCheck(round(dbfs, 2), dbfs < SILENT_DBFS, clipped, self._samples, self._bad)


def check_payloads(payloads: Iterable[tuple[int, bytes]]) -> ListenCheck | None:
    """Decode (sequence number, Opus payload) pairs and check them at once; None when there are none."""
    decoder = ListenDecoder(payloads)
    if decoder.done:
        return None
    while not decoder.step():
        pass  # bounded: every step advances through a finite list
    return decoder.result()
