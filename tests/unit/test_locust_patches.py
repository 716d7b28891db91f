"""The locust work-around (loadtest/locust_patches.py): a worker's spawn message no longer rebuilds
locust's argument parser once per option.

`import locust` monkey-patches the whole process with gevent, so the checks run in a child process, as
they run in a locust worker.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]

PROBE = """
from locust import argument_parser
from loadtest.locust_patches import cache_default_args

real = argument_parser.default_args_dict()
builds = []
original = argument_parser.default_args_dict

def counting():
    builds.append(1)
    return original()

argument_parser.default_args_dict = counting
cache_default_args()
cache_default_args()  # idempotent: not wrapped twice
# As locust's worker uses it: once per option of a spawn message.
options = {f"opt{i}": i for i in range(100)} | {"users": 5}
custom = {k: v for k, v in options.items() if k not in argument_parser.default_args_dict()}
first = argument_parser.default_args_dict()
first["users"] = 99  # a caller's change must not leak into the cached dict
print(len(custom) == sum(k not in real for k in options) >= 100, len(builds),
      argument_parser.default_args_dict() == real)
"""


def test_default_args_are_built_once_and_handed_out_as_copies() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    custom, builds, unchanged = done.stdout.split()
    assert (custom, builds, unchanged) == ("True", "1", "True")
