"""SIGINT and SIGTERM during `loadtest run`, and children that never outlive their parent.

A run has three phases. While it sets up (stack start, probe, preflight) a signal aborts it at once
(KeyboardInterrupt: whatever was started is stopped on the way out). While its engine runs, the first
signal stops the run gracefully: no new utterance starts, those in flight finish or time out, the
report is written marked partial. While it tears down, the first signal is only noted. A second
signal always aborts (exit 130); the journal still holds every finished utterance.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

PR_SET_PDEATHSIG = 1
SETUP, ENGINE, TEARDOWN = "setup", "engine", "teardown"


class StopRequest:
    """The run's stop switch; `install()` routes SIGINT and SIGTERM to it (main thread only)."""

    def __init__(self) -> None:
        self.signal_name: str | None = None  # the signal that asked the run to stop gracefully
        self.phase = SETUP
        self._callbacks: list[Callable[[], None]] = []
        self._signals = 0
        self._installed = False

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def on_stop(self, callback: Callable[[], None]) -> None:
        """Call `callback` (from the signal handler: keep it short, thread-safe) when a graceful stop is
        asked; at once if it already was."""
        self._callbacks.append(callback)
        if self.requested:
            callback()

    @contextmanager
    def engine_running(self) -> Iterator[None]:
        self.phase = ENGINE
        self._reassert()  # a library may have taken SIGINT over while the run set up
        try:
            yield
        finally:
            self.phase = TEARDOWN
            self._callbacks.clear()

    def handle(self, signum: int, _frame: FrameType | None = None) -> None:
        self._signals += 1
        name = signal.Signals(signum).name
        if self._signals > 1 or self.phase == SETUP:
            raise KeyboardInterrupt(name)
        self.signal_name = name
        if self.phase == ENGINE:
            print(f"{name}: stopping the run: no new utterance starts, those in flight finish or time out "
                  "(again to abort)", file=sys.stderr, flush=True)
            for callback in list(self._callbacks):
                callback()
        else:
            print(f"{name}: the run is already finishing (again to abort)", file=sys.stderr, flush=True)

    @contextmanager
    def installed(self) -> Iterator[StopRequest]:
        """Route SIGINT/SIGTERM here for the duration (a no-op off the main thread)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {sig: signal.signal(sig, self.handle) for sig in (signal.SIGINT, signal.SIGTERM)}
        self._installed = True
        try:
            yield self
        finally:
            self._installed = False
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _reassert(self) -> None:
        if self._installed and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                if signal.getsignal(sig) != self.handle:
                    signal.signal(sig, self.handle)


def die_with_parent(sig: signal.Signals = signal.SIGTERM) -> Callable[[], None]:
    """A `preexec_fn` that makes the child receive `sig` when this process (the thread that forks it)
    dies, however it dies (kill -9 included): prctl(PR_SET_PDEATHSIG). If this process died between
    fork and prctl, the child signals itself."""
    parent = os.getpid()
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved before fork: no dlopen in the child

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:
            os.kill(os.getpid(), sig)

    return preexec
