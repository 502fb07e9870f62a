"""An answer's events as SSE bytes: the encoder's wire events framed, heartbeats in silences, and
the generation closed whatever ends the response.

Strategy: `sse_body` frames each wire event an `Encoder` makes of the core events; a failure
after the first byte becomes the dialect's error event (a status can no longer change). When the
encoder has `heartbeat(quiet_s)` (Anthropic's ping), `paced` yields None after each `interval` of
silence — the pending step of the events runs as a task a timeout leaves running, since
`wait_for` on the generator itself would cancel it, and with it the generation — and the encoder
is told how long the stream has sent nothing but heartbeats (what a client's event watchdog
sees). `ClosingBody`
closes the events even when the body never started (closing a never-started async generator
skips its `finally`).

Does not: choose the dialect, generate, or write to sockets (http/ does).
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import AsyncIterator

from .core import ApiError, Finish
from .http import sse_event

log = logging.getLogger("unsloth_min")


async def sse_body(first, events: AsyncIterator, encoder, heartbeat_s: float,
                   on_finish=None) -> AsyncIterator[bytes]:
    """Frame `encoder`'s wire events for `first` and the rest of `events` as SSE. `on_finish(ev)`
    runs when the Finish is encoded, before it is sent."""
    beat = getattr(encoder, "heartbeat", None)
    ticks = paced(events, heartbeat_s) if beat else events
    said = time.monotonic()  # when an event's frames last went out (heartbeats are not events)
    try:
        for name, data in encoder.event(first):
            yield sse_event(data, name)
        async for ev in ticks:
            frames = beat(time.monotonic() - said) if ev is None else encoder.event(ev)
            if isinstance(ev, Finish) and on_finish:
                on_finish(ev)
            if frames and ev is not None:
                said = time.monotonic()
            for name, data in frames:
                yield sse_event(data, name)
    except ApiError as e:
        for name, data in encoder.error(e):
            yield sse_event(data, name)
    except Exception:
        log.exception("stream failed")
        for name, data in encoder.error(ApiError(500, "server_error", "generation failed")):
            yield sse_event(data, name)
    finally:
        if ticks is not events:
            await ticks.aclose()  # first: it may hold a pending step of `events`
        await events.aclose()


async def paced(events: AsyncIterator, interval: float) -> AsyncIterator:
    """`events`, plus a None after each `interval` seconds without one."""
    pending = None
    try:
        while True:
            pending = pending or asyncio.ensure_future(events.__anext__())
            done, _ = await asyncio.wait({pending}, timeout=interval)
            if not done:
                yield None
                continue
            task, pending = pending, None
            try:
                ev = task.result()
            except StopAsyncIteration:
                return
            yield ev
    finally:
        if pending is not None:  # closed while waiting: stop the step, so aclose() can run
            pending.cancel()
            await asyncio.gather(pending, return_exceptions=True)


class ClosingBody:
    """An SSE body whose aclose() also closes the events, even if the body never started."""

    def __init__(self, body: AsyncIterator[bytes], events: AsyncIterator):
        self.body, self.events = body, events

    def __aiter__(self):
        return self

    async def __anext__(self) -> bytes:
        return await self.body.__anext__()

    async def aclose(self) -> None:
        try:
            await self.body.aclose()
        finally:
            await self.events.aclose()
