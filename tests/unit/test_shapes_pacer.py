"""Load shapes over time, and the shared pacing timer of the media loop."""

from __future__ import annotations

import asyncio

import pytest

from loadtest.media import Pacer
from loadtest.shapes import ShapeError, ShapeSpec, step_levels, target

pytestmark = pytest.mark.unit


def test_steady_holds_its_users_until_the_end() -> None:
    spec = ShapeSpec("steady", users=5, spawn_rate=2, duration_s=30)
    assert target(spec, 0) == (5, 2) and target(spec, 29.9) == (5, 2)
    assert target(spec, 30) is None


def test_step_climbs_by_steps_and_caps_at_users() -> None:
    spec = ShapeSpec("step", users=5, spawn_rate=5, duration_s=100, step_users=2, step_s=10)
    assert [target(spec, t)[0] for t in (0, 9.9, 10, 25, 45, 99)] == [2, 2, 4, 5, 5, 5]  # type: ignore[index]
    assert step_levels(spec) == [2, 4, 5]


def test_spike_goes_up_and_comes_back() -> None:
    spec = ShapeSpec("spike", users=2, duration_s=60, spike_users=10, spike_at_s=20, spike_s=10)
    assert [target(spec, t)[0] for t in (0, 19.9, 20, 29.9, 30)] == [2, 2, 10, 10, 2]  # type: ignore[index]


@pytest.mark.parametrize("spec", [ShapeSpec("ramp"), ShapeSpec("step", step_users=0),
                                  ShapeSpec("spike", users=5, spike_users=3), ShapeSpec(users=0)])
def test_bad_shapes_are_named(spec: ShapeSpec) -> None:
    with pytest.raises(ShapeError):
        spec.validate()


async def test_one_timer_wakes_every_track_due_at_the_same_instant() -> None:
    loop = asyncio.get_running_loop()
    pacer = Pacer(loop, grid_s=0.002)
    start = pacer.align(loop.time() + 0.01)
    assert abs(start / 0.002 - round(start / 0.002)) < 1e-6
    scheduled_before = len(loop._scheduled)  # type: ignore[attr-defined]
    waiters = [pacer.wait_until(start) for _ in range(50)] + [pacer.wait_until(start + 0.02)]
    assert len(loop._scheduled) - scheduled_before == 2  # type: ignore[attr-defined]
    await asyncio.gather(*waiters[:50])
    assert loop.time() >= start and not waiters[50].done()
    await waiters[50]
    assert loop.time() >= start + 0.02
