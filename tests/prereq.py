"""Skips that mean "not tested": a prerequisite the test needs is missing (a Debian package, the
mediasoup worker, the gateway's node_modules, a browser).

Without one, a developer's run skips the test and names what is missing. Under SPEECHLOAD_REQUIRE_ALL=1
-- set by `make test`, which CI runs after setup installed every prerequisite -- the same test fails
instead: there a skip would only hide that the test never ran.

    pytestmark = needs(TESTDATA.exists(), "Debian package pocketsphinx-testdata not installed")
    ...
    if worker_bin() is None:
        missing("no mediasoup worker")

Use these for prerequisites only; a skip that is a legitimate outcome stays a plain pytest.skip.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

REQUIRE_ALL_ENV = "SPEECHLOAD_REQUIRE_ALL"
MARK = "prerequisite"


def required() -> bool:
    """True when every prerequisite must be present (make test, CI)."""
    return os.environ.get(REQUIRE_ALL_ENV, "") == "1"


def missing(reason: str) -> NoReturn:
    """Skip the running test for a missing prerequisite -- or fail it under SPEECHLOAD_REQUIRE_ALL=1."""
    if required():
        pytest.fail(f"missing prerequisite ({REQUIRE_ALL_ENV}=1, so this is not a skip): {reason}",
                    pytrace=False)
    pytest.skip(reason)


def needs(available: bool, reason: str) -> pytest.MarkDecorator:
    """Instead of pytest.mark.skipif(not available, reason=...) for a prerequisite (see tests/conftest.py)."""
    return getattr(pytest.mark, MARK)(available=bool(available), reason=reason)


def require_worker() -> None:
    """The mediasoup worker binary every reference-stack test needs (scripts/setup.sh builds it)."""
    from sut.stack import StackError, mediasoup_worker_bin

    try:
        mediasoup_worker_bin()
    except StackError as exc:
        missing(str(exc))
