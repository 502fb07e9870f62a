"""The worker thread's way into an event loop: a `Mailbox` per loop, an `Inbox` per request.

Strategy: the scheduler's worker hands a step's events over in one burst, just before its next
llama_decode; the Mailbox queues them and wakes the loop with one byte on a pipe, written with
the GIL held (see Mailbox); the loop's reader moves each event into its request's Inbox, which
wakes the one coroutine waiting there.

Does not: parse, encode or send anything (the engine's `parsed` and the server do).
"""
from __future__ import annotations

import asyncio
import collections
import ctypes
import os

_LIBC = ctypes.PyDLL(None)  # a PyDLL call keeps the GIL (a CDLL one, like socket.send, drops it)
_LIBC.write.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t)
_LIBC.write.restype = ctypes.c_ssize_t


class Mailbox:
    """The worker thread's way into one event loop.

    `loop.call_soon_threadsafe` wakes the loop with `socket.send`, which drops the GIL: the
    loop thread then takes it and runs its whole per-token work (parsing, JSON, SSE, the
    client's socket) while the worker waits to get it back before its next `llama_decode`, a
    stall of about half a millisecond per token measured on 2 cores. Here the wake-up byte goes
    through libc's write() with the GIL held, so the loop wakes, waits the few microseconds
    until the worker enters llama.cpp, and does its work while the model computes. One byte per
    batch of events: the scheduler hands a whole step's events over at once."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.rfd, self.wfd = os.pipe()  # (not pipe2: macOS has none; both ends close-on-exec)
        os.set_blocking(self.rfd, False)
        os.set_blocking(self.wfd, False)
        self.pending: collections.deque = collections.deque()
        self.armed = False  # a wake-up byte is on its way
        self.closed = False
        self.loop = loop
        loop.add_reader(self.rfd, self._drain)

    def post(self, queue: Inbox, ev) -> None:  # the worker thread
        self.pending.append((queue, ev))
        if not self.armed and not self.closed:
            self.armed = True
            _LIBC.write(self.wfd, b"\0", 1)  # non-blocking, and never more than one byte queued

    def _drain(self) -> None:  # the loop thread
        try:
            os.read(self.rfd, 64)
        except BlockingIOError:
            pass
        self.armed = False  # first: a post from now on sends a new byte
        while self.pending:
            queue, ev = self.pending.popleft()
            queue.put_nowait(ev)

    def close(self) -> None:
        self.closed = True
        if not self.loop.is_closed():
            self.loop.remove_reader(self.rfd)
        os.close(self.rfd)
        os.close(self.wfd)


class Inbox:
    """One request's events, put by its Mailbox and awaited by `parsed`: asyncio.Queue's
    put_nowait and get for a single consumer, with a third of the work per event."""
    __slots__ = ("items", "waiter")

    def __init__(self):
        self.items: collections.deque = collections.deque()
        self.waiter: asyncio.Future | None = None

    def put_nowait(self, ev) -> None:
        self.items.append(ev)
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():  # (done: its get was cancelled)
            waiter.set_result(None)

    async def get(self):
        while not self.items:
            self.waiter = asyncio.get_running_loop().create_future()
            await self.waiter
        return self.items.popleft()
