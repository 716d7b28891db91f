"""Work-arounds for locust itself, applied by the locustfile in every locust process.

``cache_default_args``: locust 2.47's worker, on every ``spawn`` message from the master, filters the
master's options with ``k not in argument_parser.default_args_dict()`` inside a comprehension, so it
builds and runs locust's whole argument parser once per option (~100 times, ~0.4 s of an idle core
per message; a ramp-up sends one a second). On a busy machine that keeps the worker's gevent hub
from sending its heartbeat for more than the master's 3 s: the master marks the worker missing and,
when the last one goes, ends the run ("failed to send heartbeat", exit 0, nothing measured;
bench/swarm_scale.py hit it at 150 conversations). The dict is locust's own defaults, the same every
time: it is built once.
"""

from __future__ import annotations

import functools
from typing import Any


def cache_default_args() -> None:
    """Make ``locust.argument_parser.default_args_dict`` build its dict once (each call gets a copy)."""
    from locust import argument_parser

    original = argument_parser.default_args_dict
    if getattr(original, "speechload_cached", False):
        return
    build = functools.cache(original)

    def default_args_dict() -> dict[str, Any]:
        return dict(build())

    default_args_dict.speechload_cached = True  # type: ignore[attr-defined]
    argument_parser.default_args_dict = default_args_dict
