"""A bounded, in-memory store of Responses: `previous_response_id` and `GET /v1/responses/{id}`.

Strategy: an `OrderedDict` kept in least-recently-used order. At most `max_entries` responses are
kept (a put beyond that drops the least recently used) and none older than `max_age_s` (expired
entries are dropped on every put and get; reading does not extend an entry's life). Each entry
holds the Response JSON (for GET) and the conversation as core `Message`s (for continuing it);
a chain shares its `Message` objects, so a long chain costs references, not copies.
The clock is injected so tests never sleep.

Does not: persist (a restart forgets every response, and the ids then 404), bound the bytes of
one entry (request bodies are already capped by the HTTP layer), or lock: it lives in one
event loop.
"""
from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

from .core import Message

MAX_ENTRIES = 512  # a few hundred conversations; each entry is a few KB of text plus references
MAX_AGE_S = 60 * 60  # an hour: long enough for an agent's session, short enough to forget


@dataclass
class StoredResponse:
    response: dict  # the Response object, as returned
    conversation: list[Message]  # input (without instructions) and output, to continue from
    created: float = 0.0  # store clock when put


class ResponseStore:
    def __init__(self, max_entries: int = MAX_ENTRIES, max_age_s: float = MAX_AGE_S,
                 clock: Callable[[], float] = time.monotonic):
        self.max_entries, self.max_age_s, self.clock = max_entries, max_age_s, clock
        self.entries: OrderedDict[str, StoredResponse] = OrderedDict()

    def __len__(self) -> int:
        return len(self.entries)

    def put(self, response: dict, conversation: list[Message]) -> None:
        self._expire()
        self.entries[response["id"]] = StoredResponse(response, conversation, self.clock())
        self.entries.move_to_end(response["id"])
        while len(self.entries) > self.max_entries:
            self.entries.popitem(last=False)

    def get(self, response_id: str) -> StoredResponse | None:
        self._expire()
        entry = self.entries.get(response_id)
        if entry is not None:
            self.entries.move_to_end(response_id)
        return entry

    def _expire(self) -> None:
        # entries are in use order, not age order: scan them all (max_entries bounds the cost)
        deadline = self.clock() - self.max_age_s
        for key in [k for k, e in self.entries.items() if e.created < deadline]:
            del self.entries[key]
