"""Registering the verbs imports nothing heavy: `loadtest --help` must not pay for the engines."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("pandas", "numpy", "scipy", "matplotlib", "aiortc", "pymediasoup", "av", "locust", "gevent",
         "socketio", "aiohttp", "pyarrow")


def test_building_the_cli_parser_imports_no_heavy_package() -> None:
    code = ("import sys, loadtest.cli as c; c.make_parser(); "
            f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60,
                          check=True)
    assert done.stdout.strip() == "", f"imported while registering verbs: {done.stdout.strip()}"


def test_the_check_sees_a_heavy_import() -> None:
    code = "import sys, loadtest.report.placement; print('pandas' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60,
                          check=True)
    assert done.stdout.strip() == "True"
