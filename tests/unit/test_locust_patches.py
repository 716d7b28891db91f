"""The locust work-around (loadtest/locust_patches.py): a worker's spawn message no longer rebuilds
locust's argument parser once per option."""

from __future__ import annotations

import pytest
from locust import argument_parser

from loadtest.locust_patches import cache_default_args

pytestmark = pytest.mark.unit


def test_default_args_are_built_once_and_handed_out_as_copies(monkeypatch: pytest.MonkeyPatch) -> None:
    builds = []

    def build() -> dict[str, object]:
        builds.append(1)
        return {"users": 1, "spawn_rate": 1.0}

    monkeypatch.setattr(argument_parser, "default_args_dict", build)
    cache_default_args()
    cache_default_args()  # idempotent: not wrapped twice
    # As locust's worker uses it: once per option of a spawn message.
    options = {f"opt{i}": i for i in range(100)} | {"users": 5}
    custom = {k: v for k, v in options.items() if k not in argument_parser.default_args_dict()}
    assert len(custom) == 100 and len(builds) == 1
    first = argument_parser.default_args_dict()
    first["users"] = 99
    assert argument_parser.default_args_dict() == {"users": 1, "spawn_rate": 1.0}


def test_the_real_defaults_are_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(argument_parser, "default_args_dict", argument_parser.default_args_dict)
    expected = argument_parser.default_args_dict()
    cache_default_args()
    assert argument_parser.default_args_dict() == expected
