"""The impairment models, on 100 000 seeded packets: loss rates, burst lengths, delay, jitter, reorder, cap.

Tolerances are about 4 standard errors of each estimate (given beside each), so a correct model passes
for any seed and a wrong parameter (a burst length off by one packet, a loss rate off by half a point)
fails.
"""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest

from loadtest.impairments.models import DROP_LOSS, DROP_QUEUE, PathModel, PathSpec

pytestmark = pytest.mark.unit

N = 100_000
SPACING_S = 0.020  # one audio packet every 20 ms
SIZE = 130  # bytes: 32 kbit/s Opus + RTP/SRTP/UDP/IP


def run(spec: PathSpec, n: int = N, seed: int = 7, spacing: float = SPACING_S,
        size: int = SIZE) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
    """Send times, delivery times (NaN: dropped) and drop causes of n packets through one model."""
    model = PathModel(spec, seed)
    sent = np.arange(n) * spacing
    delivered = np.full(n, np.nan)
    causes: list[str | None] = []
    for i, t in enumerate(sent):
        fate = model.admit(float(t), size)
        causes.append(fate.cause)
        if fate.deliver_at is not None:
            delivered[i] = fate.deliver_at
    return sent, delivered, causes


def runs(mask: np.ndarray) -> list[int]:
    """Lengths of the runs of True in mask."""
    edges = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    return list(np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_loss_rate(seed: int) -> None:
    _, delivered, causes = run(PathSpec(loss=0.05), seed=seed)
    rate = np.isnan(delivered).mean()
    assert abs(rate - 0.05) < 0.003  # standard error 0.0007
    assert set(causes) == {None, DROP_LOSS}
    # Independent losses: bursts are geometric with P(len = 1) = 0.95.
    bursts = runs(np.isnan(delivered))
    assert abs(np.mean(np.array(bursts) == 1) - 0.95) < 0.02


@pytest.mark.parametrize("seed", [1, 2])
def test_gilbert_elliott_loss_rate_and_burst_lengths(seed: int) -> None:
    # Loss only in the bad state: a loss burst is a bad-state sojourn, geometric with mean 1/r = 4.
    spec = PathSpec(burst_p=0.01, burst_r=0.25, burst_loss=1.0)
    _, delivered, _ = run(spec, seed=seed)
    lost = np.isnan(delivered)
    assert spec.configured_loss == pytest.approx(0.01 / 0.26)
    # ~960 bursts of mean 4 (sd 3.5), their count itself random: the loss rate's standard error ~0.0017.
    assert abs(lost.mean() - spec.configured_loss) < 0.007
    bursts = np.array(runs(lost))
    assert 850 < len(bursts) < 1080  # expected 100 000 · (1 − 0.0385) · 0.01 ≈ 962, sd ≈ 31
    assert abs(bursts.mean() - 4.0) < 0.45  # standard error 0.11
    for k in range(1, 6):  # the whole distribution, not just its mean: P(len = k) = r (1 − r)^(k − 1)
        assert abs(np.mean(bursts == k) - 0.25 * 0.75 ** (k - 1)) < 0.06
    gaps = np.array(runs(~lost)[1:-1])  # good sojourns between bursts: geometric with mean 1/p = 100
    assert abs(gaps.mean() - 100.0) < 13.0  # standard error 3.2


def test_gilbert_elliott_with_partial_loss_in_each_state() -> None:
    spec = PathSpec(loss=0.005, burst_p=0.01, burst_r=0.25, burst_loss=0.5)  # the 4g-busy profile
    _, delivered, _ = run(spec, seed=11)
    assert spec.configured_loss == pytest.approx(0.9615 * 0.005 + 0.0385 * 0.5, abs=1e-4)
    assert abs(np.isnan(delivered).mean() - spec.configured_loss) < 0.006
    # Bursty: losses cluster, far more back-to-back losses than independent losses at the same rate.
    lost = np.isnan(delivered)
    pairs = np.mean(lost[1:] & lost[:-1]) / np.mean(lost) ** 2
    assert pairs > 5.0  # independence gives 1


def test_constant_delay() -> None:
    sent, delivered, _ = run(PathSpec(delay_ms=200.0), n=1000)
    assert np.allclose(delivered - sent, 0.200)


@pytest.mark.parametrize("reorder", [False, True])
def test_jitter_with_and_without_reordering(reorder: bool) -> None:
    spec = PathSpec(delay_ms=60.0, jitter_ms=10.0, reorder=reorder)
    sent, delivered, _ = run(spec)
    added_ms = (delivered - sent) * 1000
    overtaken = np.mean(np.diff(delivered) < 0)
    if reorder:
        # Independent N(60, 10) delays: mean and sd as configured; a packet overtakes the one before it
        # when its delay is 20 ms shorter: P(N(0, 14.1) < −20) = 7.8 %.
        assert abs(added_ms.mean() - 60.0) < 0.2  # standard error 0.03
        assert abs(added_ms.std() - 10.0) < 0.2
        assert abs(overtaken - 0.078) < 0.006
    else:
        # In order: nothing overtakes; a packet held behind a slower one gains delay, so the mean is above
        # 60 by the expected max(0, previous delivery − own delivery).
        assert overtaken == 0
        assert (added_ms >= 60.0 - 4.5 * 10.0).all()
        assert 60.0 < added_ms.mean() < 62.5
        assert 8.0 < added_ms.std() < 10.0


def test_jitter_never_delivers_before_sending() -> None:
    spec = PathSpec(delay_ms=5.0, jitter_ms=10.0, reorder=True)
    sent, delivered, _ = run(spec)
    added_ms = (delivered - sent) * 1000
    assert added_ms.min() >= 0.0
    assert abs(added_ms.mean() - spec.mean_delay_ms) < 0.2  # the normal truncated at zero
    assert spec.mean_delay_ms == pytest.approx(6.978, abs=0.001)  # 5 Φ(0.5) + 10 φ(0.5)


def test_bandwidth_cap_under_the_rate_only_serialises() -> None:
    # 50 packets/s of 200 bytes = 80 kbit/s through 100 kbit/s: no queue, 16 ms of serialisation each.
    sent, delivered, causes = run(PathSpec(rate_kbps=100.0), n=10_000, size=200)
    assert not any(causes)
    assert np.allclose(delivered - sent, 200 * 8 / 100_000)


def test_bandwidth_cap_over_the_rate_drops_at_the_tail() -> None:
    # 100 packets/s of 250 bytes = 200 kbit/s offered to 100 kbit/s with a 200 ms queue.
    spec = PathSpec(rate_kbps=100.0, queue_ms=200.0)
    sent, delivered, causes = run(spec, spacing=0.010, size=250)
    ok = ~np.isnan(delivered)
    throughput_bps = ok.sum() * 250 * 8 / (delivered[ok].max() - sent[0])
    assert abs(throughput_bps - 100_000) / 100_000 < 0.01  # the link is busy all the time, no faster
    assert abs((~ok).mean() - 0.5) < 0.01
    assert set(causes) == {None, DROP_QUEUE}
    waited = delivered[ok] - sent[ok]
    assert waited.max() <= 0.200 + 250 * 8 / 100_000 + 1e-9  # never more than the queue allows
    assert (np.diff(delivered[ok]) > 0).all()  # a FIFO: in order


def test_loss_then_cap_then_delay_compose() -> None:
    spec = PathSpec(loss=0.1, rate_kbps=1000.0, delay_ms=40.0)
    sent, delivered, causes = run(spec, n=20_000)
    assert abs(np.isnan(delivered).mean() - 0.1) < 0.01
    assert causes.count(DROP_QUEUE) == 0
    assert np.allclose((delivered - sent)[~np.isnan(delivered)], 0.040 + SIZE * 8 / 1_000_000)


def test_seeded_and_independent_streams() -> None:
    spec = PathSpec(loss=0.05, delay_ms=30.0, jitter_ms=5.0, reorder=True)
    a, b = run(spec, n=5000, seed=3), run(spec, n=5000, seed=3)
    assert np.array_equal(np.isnan(a[1]), np.isnan(b[1]))
    assert np.allclose(a[1], b[1], equal_nan=True)
    # The loss decisions do not depend on whether jitter is drawn (separate random streams).
    lossy = run(PathSpec(loss=0.05), n=5000, seed=3)[1]
    assert np.array_equal(np.isnan(lossy), np.isnan(a[1]))


def test_identity_and_validation() -> None:
    sent, delivered, _ = run(PathSpec(), n=100)
    assert np.array_equal(sent, delivered)
    problems = PathSpec(loss=1.5, burst_r=0.0, delay_ms=-1.0, jitter_ms=math.inf).problems()
    assert len(problems) == 4 and any("'loss'" in p for p in problems)
    assert statistics.mean([PathSpec(delay_ms=5.0).mean_delay_ms]) == 5.0
