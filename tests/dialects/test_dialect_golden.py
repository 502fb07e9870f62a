"""The dialects without a server: each recorded request (test_wire_recorded's cases) read by its
dialect's `parse_request`, and the scripted answer encoded by its `Encoder`, compared with what
went over the socket when it was recorded — the readers' requests, the replayed JSON bodies, the
SSE bodies framed by pacing.sse_body, the error bodies."""
from __future__ import annotations

import asyncio
import json

import pytest

from support.wire import CASES, FIXTURE, mask
from unsloth_min.app import DIALECTS, OPENAI
from unsloth_min.core import ApiError, Finish, Started, TextDelta, Usage
from unsloth_min.pacing import sse_body

with open(FIXTURE) as f:
    RECORDED = json.load(f)[:len(CASES)]
PROMPT = 7  # the scripted engine's prompt size


def dialect(path: str):
    return next((d for d in DIALECTS if path.startswith(d.prefix)), OPENAI)


def answer(script: list) -> list:
    """What the scripted engine yields for `script`: Started, the items, a Finish unless given."""
    events = [Started(PROMPT)] + [TextDelta(x) if isinstance(x, str) else x for x in script]
    if not any(isinstance(ev, (Finish, Exception)) for ev in events):
        n = sum(isinstance(ev, TextDelta) for ev in events)
        events.append(Finish("stop", Usage(PROMPT, n, 0)))
    return events


async def frames(events: list, encoder) -> bytes:
    async def source():
        for ev in events[1:]:
            if isinstance(ev, Exception):
                raise ev
            yield ev
    return b"".join([chunk async for chunk in sse_body(events[0], source(), encoder, 60.0)])


@pytest.mark.parametrize("case, recorded", list(zip(CASES, RECORDED)),
                         ids=[f"{i}:{c[0]}" for i, c in enumerate(CASES)])
def test_reader_and_encoder_match_the_recorded_wire(case, recorded):
    path, body, script = case
    d = dialect(path)
    try:
        req = d.parse_request(body)
    except ApiError as e:
        assert (e.status, mask(json.dumps(d.render_error(e), ensure_ascii=False,
                                          separators=(",", ":")))) == (recorded["status"], recorded["body"])
        return
    if recorded["status"] != 200:  # refused by the app, not the reader (a missing stored response)
        assert recorded["status"] == 404 and req.previous_response_id
        return
    assert mask(repr(req)) == recorded["engine_saw"]
    events, encoder = answer(script or ["ok"]), d.encoder(req, "scripted")  # (the default answer)
    if req.stream:
        got = asyncio.run(frames(events, encoder)).decode()
    else:
        got = json.dumps(encoder.replay(events), ensure_ascii=False, separators=(",", ":"))
    assert mask(got) == recorded["body"]
