"""A scripted engine with the real engine's interface (core.ChatEngine), for exact protocol tests.

`enqueue([...])` queues one answer: strings become TextDelta, core events pass through, and a
Finish with exact usage closes it unless the script has its own. `history` records every request.
An asyncio.Event per answer (`gate`) can hold the answer back, to test disconnects mid-stream.
"""
from __future__ import annotations

import asyncio
import collections

from unsloth_min.core import ApiError, ChatRequest, Finish, Started, TextDelta, Usage


class ScriptedEngine:
    model_id = "scripted"
    n_ctx = 4096
    accepts_images = False  # True: the app fetches URL images before generate(), as for --mmproj
    on_gone = None

    def __init__(self):
        self.script: collections.deque = collections.deque()
        self.history: list[ChatRequest] = []
        self.cancelled = 0
        self.finished = 0
        self.prompt_tokens = 7

    def enqueue(self, items, delay: float = 0.0, error: ApiError | None = None) -> None:
        self.script.append((list(items), delay, error))

    def count_tokens(self, req: ChatRequest) -> int:
        return self.prompt_tokens

    def close(self) -> None:
        pass  # no model to free

    def slots(self) -> list[dict]:
        return [{"id": 0, "state": "idle", "n_tokens": 0}]

    def props(self) -> dict:
        return {"model_id": self.model_id, "n_ctx": self.n_ctx, "slots": 1}

    def gauges(self) -> dict:
        return {}

    async def generate(self, req: ChatRequest):
        self.history.append(req)
        items, delay, error = self.script.popleft() if self.script else (["ok"], 0.0, None)
        if error is not None:
            raise error
        done = False
        try:
            yield Started(self.prompt_tokens)
            n = 0
            for item in items:
                if delay:
                    await asyncio.sleep(delay)
                if isinstance(item, Exception):
                    raise item
                ev = TextDelta(item) if isinstance(item, str) else item
                n += isinstance(ev, TextDelta)
                yield ev
                if isinstance(ev, Finish):
                    done = True
                    return
            done = True
            yield Finish("stop", Usage(self.prompt_tokens, n, 0))
        finally:
            if done:
                self.finished += 1
            else:
                self.cancelled += 1
