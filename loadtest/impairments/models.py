"""Network impairment models: what one direction of a caller's access network does to each packet.

Pure and seeded: a model is fed (arrival time, size) per packet and answers when the packet leaves the
far end, or that it was dropped and why. Nothing here touches a socket or a clock; `hook.py` applies the
answers to real datagrams. Per packet, in this order (as a packet meets an access network):

1. **loss** — random (Bernoulli, ``loss``) or bursty (Gilbert–Elliott: a two-state Markov chain, one
   step per packet: good → bad with probability ``burst_p``, bad → good with ``burst_r``; a packet is
   lost with ``loss`` in the good state and ``burst_loss`` in the bad one). A lost packet never takes up
   the link.
2. **bandwidth cap** — ``rate_kbps`` serialises packets one after another (a FIFO bottleneck); a
   packet that would wait more than ``queue_ms`` behind the others is dropped (tail drop).
3. **delay and jitter** — ``delay_ms`` plus a normal ``jitter_ms`` (standard deviation), never below
   zero. Without ``reorder`` packets keep their order (a packet is never delivered before the one sent
   before it, as through one queue); with ``reorder`` each packet's delay is independent, so packets
   sent closer together than the jitter overtake one another.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import NamedTuple

DROP_LOSS = "loss"
DROP_QUEUE = "queue"


@dataclass(frozen=True)
class PathSpec:
    """One direction (uplink or downlink) of an impaired network; the defaults change nothing."""

    loss: float = 0.0  # random loss probability (Gilbert–Elliott: in the good state)
    burst_p: float = 0.0  # Gilbert–Elliott: P(good → bad) per packet; 0 = no bursts (Bernoulli loss)
    burst_r: float = 1.0  # P(bad → good) per packet: mean burst (bad-state) length 1 / burst_r packets
    burst_loss: float = 1.0  # loss probability in the bad state
    delay_ms: float = 0.0  # one-way added delay
    jitter_ms: float = 0.0  # standard deviation of a normal variation around delay_ms (never below 0)
    reorder: bool = False  # independent per-packet delays (packets may overtake one another)
    rate_kbps: float = 0.0  # bandwidth cap (0: none)
    queue_ms: float = 200.0  # with a cap: the most a packet may wait in the bottleneck before it is dropped

    def problems(self) -> list[str]:
        """What is out of range, each naming its key (empty: valid)."""
        out = []
        for key in ("loss", "burst_p", "burst_loss"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                out.append(f"'{key}' must lie in [0, 1], got {getattr(self, key)}")
        if not 0.0 < self.burst_r <= 1.0:
            out.append(f"'burst_r' must lie in (0, 1], got {self.burst_r}")
        for key in ("delay_ms", "jitter_ms", "rate_kbps", "queue_ms"):
            if getattr(self, key) < 0 or not math.isfinite(getattr(self, key)):
                out.append(f"'{key}' must be a finite number >= 0, got {getattr(self, key)}")
        return out

    @property
    def bursty(self) -> bool:
        return self.burst_p > 0.0

    @property
    def bad_state_share(self) -> float:
        """Stationary probability of the Gilbert–Elliott bad state, p / (p + r)."""
        return self.burst_p / (self.burst_p + self.burst_r) if self.bursty else 0.0

    @property
    def configured_loss(self) -> float:
        """The long-run share of packets the loss model drops (before any bandwidth-cap drop)."""
        bad = self.bad_state_share
        return (1.0 - bad) * self.loss + bad * self.burst_loss

    @property
    def mean_delay_ms(self) -> float:
        """Expected added delay of a delivered packet without a cap (the normal truncated at zero)."""
        if self.jitter_ms == 0:
            return self.delay_ms
        mu, sigma = self.delay_ms, self.jitter_ms
        z = mu / sigma  # E[max(0, X)] for X ~ N(mu, sigma)
        return mu * _phi_cdf(z) + sigma * math.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)

    @property
    def is_identity(self) -> bool:
        return self == PathSpec()


def _phi_cdf(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


class Fate(NamedTuple):
    """What happens to one packet: delivered at ``deliver_at`` (same clock as the arrival), or dropped."""

    deliver_at: float | None
    cause: str | None  # DROP_LOSS | DROP_QUEUE when dropped


class LossModel:
    """Bernoulli or Gilbert–Elliott loss, one decision per packet."""

    def __init__(self, spec: PathSpec, rng: random.Random) -> None:
        self.spec = spec
        self._rng = rng
        # Start in the stationary distribution, so short runs are not biased toward the good state.
        self.bad = spec.bursty and rng.random() < spec.bad_state_share

    def lost(self) -> bool:
        s = self.spec
        if s.bursty:
            if self.bad:
                self.bad = self._rng.random() >= s.burst_r
            else:
                self.bad = self._rng.random() < s.burst_p
            p = s.burst_loss if self.bad else s.loss
        else:
            p = s.loss
        return p > 0.0 and self._rng.random() < p


class Bottleneck:
    """A FIFO link of ``rate_kbps`` with at most ``queue_ms`` of waiting: departure time or a tail drop."""

    def __init__(self, rate_kbps: float, queue_ms: float) -> None:
        self.rate_bps = rate_kbps * 1000.0
        self.queue_s = queue_ms / 1000.0
        self.busy_until = -math.inf

    def depart(self, now: float, size: int) -> float | None:
        start = max(now, self.busy_until)
        if start - now > self.queue_s:
            return None
        self.busy_until = start + size * 8.0 / self.rate_bps
        return self.busy_until


class DelayModel:
    """delay_ms + N(0, jitter_ms), at least 0; in order unless ``reorder``."""

    def __init__(self, spec: PathSpec, rng: random.Random) -> None:
        self.spec = spec
        self._rng = rng
        self.last_delivery = -math.inf

    def deliver(self, departure: float) -> float:
        s = self.spec
        extra = s.delay_ms
        if s.jitter_ms > 0:
            extra = max(0.0, self._rng.gauss(s.delay_ms, s.jitter_ms))
        at = departure + extra / 1000.0
        if not s.reorder:
            at = max(at, self.last_delivery)  # never before the packet sent before it
        self.last_delivery = max(self.last_delivery, at)
        return at


class PathModel:
    """One direction: loss, then the bandwidth cap, then delay/jitter (see the module docstring)."""

    def __init__(self, spec: PathSpec, seed: int | str) -> None:
        self.spec = spec
        # Two streams: the loss decisions do not shift with the jitter draws and vice versa.
        self.loss = LossModel(spec, random.Random(f"{seed}/loss"))
        self.delay = DelayModel(spec, random.Random(f"{seed}/delay"))
        self.bottleneck = Bottleneck(spec.rate_kbps, spec.queue_ms) if spec.rate_kbps > 0 else None
        self.identity = spec.is_identity

    def admit(self, now: float, size: int) -> Fate:
        if self.identity:
            return Fate(now, None)
        if self.loss.lost():
            return Fate(None, DROP_LOSS)
        departure = now
        if self.bottleneck is not None:
            left = self.bottleneck.depart(now, size)
            if left is None:
                return Fate(None, DROP_QUEUE)
            departure = left
        return Fate(self.delay.deliver(departure), None)
