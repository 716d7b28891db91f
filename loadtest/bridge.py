"""The asyncio media loop beside locust's gevent: the one module that knows about both.

``import locust`` monkey-patches threading, select and selectors. An asyncio loop on the patched
default selector dies with LoopExit, and a patched ``threading.Thread`` is a greenlet, not an OS thread
(even ``gevent.monkey.get_original('threading', 'Thread')`` gives one). So the media loop runs on a
native thread (the original ``_thread.start_new_thread``) with
a selector built on the original ``select.epoll``; results come back to greenlets through a libev async
watcher, whose ``send()`` is safe to call from another thread.

Without gevent patching (plain ``loadtest run``) the same class works with ordinary threads.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import selectors
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def _original(module: str, name: str) -> Any:
    try:
        from gevent import monkey

        return monkey.get_original(module, name)
    except ImportError:
        return getattr(__import__(module), name)


def _native_selector() -> selectors.BaseSelector:
    # The stdlib class bound select.epoll when it was defined, before gevent patched anything.
    return _original("selectors", "EpollSelector")()


class NativeThreadLoop(asyncio.SelectorEventLoop):
    """A selector loop whose blocking helpers run on native threads.

    Under gevent patching, the default executor's pool threads are greenlets of a hub that never
    runs on this thread, so ``run_in_executor`` (and with it DNS resolution: ``localhost``) hangs.
    """

    def run_in_executor(self, executor: Any, func: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        if executor is not None:
            return super().run_in_executor(executor, func, *args)
        future: asyncio.Future[T] = self.create_future()

        def settle(result: Any, error: BaseException | None) -> None:
            if future.cancelled():
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)

        def work() -> None:
            try:
                result = func(*args)
            except BaseException as exc:  # noqa: BLE001 — handed to the awaiting coroutine
                self.call_soon_threadsafe(settle, None, exc)
            else:
                self.call_soon_threadsafe(settle, result, None)

        _original("_thread", "start_new_thread")(work, ())
        return future

    async def getaddrinfo(self, host: Any, port: Any, *, family: int = 0, type: int = 0,  # noqa: A002
                          proto: int = 0, flags: int = 0) -> Any:
        # gevent's resolver needs a hub; the original one does not.
        lookup = _original("socket", "getaddrinfo")
        return await self.run_in_executor(None, lookup, host, port, family, type, proto, flags)


class MediaLoop:
    """One asyncio loop on one native thread per process, started once and stopped once."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self._ready = _original("_thread", "allocate_lock")()
        self._stopped = _original("_thread", "allocate_lock")()

    def start(self, timeout_s: float = 10.0) -> None:
        if self.loop is not None:
            return
        self._ready.acquire()
        self._stopped.acquire()
        _original("_thread", "start_new_thread")(self._run, ())
        # A native lock, not a gevent one: released by the native thread once its loop runs.
        if not self._ready.acquire(timeout=timeout_s):
            raise RuntimeError(f"media loop did not start within {timeout_s:.0f} s")

    def _run(self) -> None:
        loop = NativeThreadLoop(_native_selector())
        asyncio.set_event_loop(loop)
        self.loop = loop
        loop.call_soon(self._ready.release)
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            self._stopped.release()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        if self.loop is None:
            raise RuntimeError("media loop not started")
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.loop is None:
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._stopped.acquire(timeout=timeout_s)
        self.loop = None


def wait_in_greenlet(future: concurrent.futures.Future[T], timeout_s: float | None = None) -> T:
    """Block the current greenlet (not the hub) until a media-loop future is done."""
    import gevent
    from gevent.event import AsyncResult

    hub = gevent.get_hub()
    done = AsyncResult()
    watcher = hub.loop.async_()
    watcher.start(lambda: done.set(True))
    try:
        future.add_done_callback(lambda _f: watcher.send())
        if not future.done():
            done.wait(timeout_s)
        return future.result(timeout=0)
    finally:
        watcher.stop()
        watcher.close()
