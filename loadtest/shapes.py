"""Load shapes as pure functions of elapsed time: how many callers, spawned how fast.

Used by the locustfile's LoadTestShape; kept here so they are unit-tested without locust running.
``None`` means the run is over.
"""

from __future__ import annotations

from dataclasses import dataclass

SHAPES = ("steady", "step", "spike")


class ShapeError(ValueError):
    pass


@dataclass(frozen=True)
class ShapeSpec:
    name: str = "steady"
    users: int = 1  # steady: the users; step: the final level; spike: the base level
    spawn_rate: float = 1.0
    duration_s: float = 60.0
    step_users: int = 1  # step: users added per step
    step_s: float = 30.0  # step: seconds per step
    spike_users: int = 0  # spike: users at the peak
    spike_at_s: float = 20.0
    spike_s: float = 10.0

    def validate(self) -> None:
        if self.name not in SHAPES:
            raise ShapeError(f"unknown shape {self.name!r} (known: {', '.join(SHAPES)})")
        if self.users < 1 or self.duration_s <= 0 or self.spawn_rate <= 0:
            raise ShapeError("shape needs users >= 1, duration > 0 and spawn rate > 0")
        if self.name == "step" and (self.step_users < 1 or self.step_s <= 0):
            raise ShapeError("step shape needs --step-users >= 1 and --step-time > 0")
        if self.name == "spike" and self.spike_users <= self.users:
            raise ShapeError("spike shape needs --spike-users above the base --users")


def target(spec: ShapeSpec, elapsed_s: float) -> tuple[int, float] | None:
    if elapsed_s >= spec.duration_s:
        return None
    if spec.name == "steady":
        return spec.users, spec.spawn_rate
    if spec.name == "step":
        level = spec.step_users * (int(elapsed_s // spec.step_s) + 1)
        return min(level, spec.users), spec.spawn_rate
    in_spike = spec.spike_at_s <= elapsed_s < spec.spike_at_s + spec.spike_s
    return (spec.spike_users if in_spike else spec.users), spec.spawn_rate


def step_levels(spec: ShapeSpec) -> list[int]:
    """The caller counts a step run visits, in order (for reports and tests)."""
    levels: list[int] = []
    t = 0.0
    while (tick := target(spec, t)) is not None:
        if not levels or levels[-1] != tick[0]:
            levels.append(tick[0])
        t += spec.step_s if spec.name == "step" else 1.0
    return levels
