"""Shared by every test: prerequisite marks (tests/prereq.py) skip, or fail under SPEECHLOAD_REQUIRE_ALL=1."""

from __future__ import annotations

import pytest

from tests.prereq import MARK, missing


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{MARK}(available, reason): skip when a prerequisite is missing, fail under "
        "SPEECHLOAD_REQUIRE_ALL=1 (use tests.prereq.needs)"
    )


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    for mark in item.iter_markers(MARK):
        if not mark.kwargs["available"]:
            missing(mark.kwargs["reason"])
