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
    start, _ = pacer.start(loop.time() + 0.01)
    assert abs(start / 0.002 - round(start / 0.002)) < 1e-6
    scheduled_before = len(loop._scheduled)  # type: ignore[attr-defined]
    waiters = [pacer.wait_until(start) for _ in range(50)] + [pacer.wait_until(start + 0.02)]
    assert len(loop._scheduled) - scheduled_before == 2  # type: ignore[attr-defined]
    await asyncio.gather(*waiters[:50])
    assert loop.time() >= start and not waiters[50].done()
    await waiters[50]
    assert loop.time() >= start + 0.02


def test_new_tracks_fill_the_least_used_phase_of_the_frame() -> None:
    pacer = Pacer(asyncio.new_event_loop(), grid_s=0.002, frame_s=0.020)
    assert pacer.phases == 10
    starts = [pacer.start(1.0001) for _ in range(100)]
    assert pacer.tracks_by_phase == (10,) * 10
    first = [t for t, _ in starts[:10]]
    # The first ten take the next ten instants in order; none starts before it was asked to.
    assert first == sorted(first) and min(first) >= 1.0001 and max(first) < 1.0001 + 0.020
    assert len({round(t / 0.002) % 10 for t in first}) == 10
    pacer.release(starts[0][1])
    pacer.release(starts[0][1])
    t, phase = pacer.start(5.0)
    assert phase == starts[0][1] and pacer.tracks_by_phase.count(10) == 9


async def test_a_stopped_track_gives_its_phase_back() -> None:
    from loadtest.media import UtteranceTrack, pacer_for

    pacer = pacer_for(asyncio.get_running_loop())
    before = sum(pacer.tracks_by_phase)
    tracks = [UtteranceTrack(b"\xf8\xff\xfe") for _ in range(3)]
    for track in tracks:
        await track.next_payload()
    assert sum(pacer.tracks_by_phase) == before + 3
    for track in tracks:
        track.stop()
        track.stop()
    assert sum(pacer.tracks_by_phase) == before


def test_a_finished_loop_is_not_kept_alive_by_its_pacer_or_cadence() -> None:
    import gc
    import weakref

    from loadtest.gcpolicy import cadence_for
    from loadtest.media import pacer_for

    async def use() -> None:
        loop = asyncio.get_running_loop()
        when, phase = pacer_for(loop).start(loop.time())
        await pacer_for(loop).wait_until(when)
        pacer_for(loop).release(phase)
        cadence_for(loop).hold()
        cadence_for(loop).release()

    loop = asyncio.new_event_loop()
    loop.run_until_complete(use())
    loop.close()
    gone = weakref.ref(loop)
    del loop
    gc.collect()
    assert gone() is None
