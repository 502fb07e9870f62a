"""`--sleep-idle SECONDS`: the model is unloaded after that long without a request, and loaded
again by the next one.

Strategy: a task looks every `poll_s` whether the app has had no chat request in flight (its
`in_use`) for `idle_s` (since its `last_use`); then the app's engine is taken away at once (on
the event loop, so no request can pick it up meanwhile) and closed in a thread: the weights are
unmapped, the KV cache and the prompt cache's RAM freed, and glibc asked to give its free heap
back. The port, the supervisor, the keys, the Responses store and the prompt cache's files stay,
so a woken model finds its long prompts on disk. The first request that needs the engine starts
the load; every request that comes meanwhile waits for that same load, and all are answered.
/health says `sleeping` (200: the server answers, later) from the unload to the end of the load.

Does not: unload while anything uses the engine, count /health or /metrics as use, or unload the
server tools' kernels (they have their own idle timeout, --session-idle).
"""
from __future__ import annotations

import asyncio
import ctypes
import logging
import sys
import time
from typing import Callable

from .core import ApiError

log = logging.getLogger("unsloth_min")


def rss_mib() -> float | None:
    """This process's resident memory (Linux), for the log and the README's figures."""
    try:
        with open("/proc/self/status") as f:
            kib = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    except (OSError, StopIteration, ValueError):
        return None
    return kib / 1024


def give_back_heap() -> None:
    """glibc keeps freed heap for reuse; malloc_trim returns what it can to the system."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None).malloc_trim(0)
        except (OSError, AttributeError):  # not glibc (musl)
            pass


class Sleeper:
    def __init__(self, app, load: Callable[[], object], idle_s: float, poll_s: float | None = None):
        self.app, self.load, self.idle_s = app, load, idle_s
        self.poll_s = poll_s or min(1.0, idle_s / 4)
        self.asleep = False
        self._unloading: asyncio.Future | None = None
        self._waking: asyncio.Future | None = None
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self.run())

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            if self.due():
                try:
                    await self.unload()
                except Exception:  # the model may be half freed: the next request loads anew
                    log.exception("unloading the idle model failed")

    def due(self) -> bool:
        app = self.app
        return (app.engine is not None and not self.asleep and app.in_use == 0
                and time.monotonic() - app.last_use >= self.idle_s)

    async def unload(self) -> None:
        engine, self.app.engine = self.app.engine, None
        self.asleep = True
        self.app.ops.metrics.sleeps.inc()
        before = rss_mib()
        self._unloading = asyncio.ensure_future(asyncio.to_thread(self._close, engine))
        await asyncio.shield(self._unloading)
        log.info("idle for %g s: the model is unloaded (RSS %s → %s MiB); the next request loads "
                 "it again", self.idle_s, _mib(before), _mib(rss_mib()))

    @staticmethod
    def _close(engine) -> None:
        engine.close()
        del engine
        give_back_heap()

    async def wake(self):
        """The engine, loaded again (one load, however many requests wait for it)."""
        if self._waking is None:
            self._waking = asyncio.ensure_future(self._load())
        return await asyncio.shield(self._waking)

    async def _load(self):
        try:
            if self._unloading is not None:  # (one that failed has logged why)
                await asyncio.gather(self._unloading, return_exceptions=True)
            t = time.monotonic()
            engine = await asyncio.to_thread(self.load)
        except Exception as e:
            log.exception("loading the model again failed")
            raise ApiError(503, "overloaded_error", f"the model could not be loaded again: {e}",
                           headers=[("Retry-After", "5")]) from None
        finally:
            self._waking = None
        self.app.engine, self.asleep = engine, False
        self.app.last_use = time.monotonic()
        self.app.ops.metrics.wakes.inc()
        log.info("the model is loaded again in %.1f s (RSS %s MiB)", time.monotonic() - t, _mib(rss_mib()))
        return engine

    async def close(self) -> None:
        """At shutdown: no more unloads; one under way, or a load, finishes (the caller then frees
        the engine)."""
        if self._task is not None:
            self._task.cancel()
        for task in (self._unloading, self._waking):
            if task is not None:
                await asyncio.gather(task, return_exceptions=True)


def _mib(value: float | None) -> str:
    return "?" if value is None else f"{value:.0f}"
