"""The dialects without a server: each recorded request (test_wire_recorded's cases) read by its
dialect's `parse_request`, and the scripted answer encoded by its `Encoder`, compared with what
went over the socket when it was recorded — the readers' requests, the replayed JSON bodies, the
SSE bodies framed by pacing.sse_body, the error bodies."""
from __future__ import annotations

import asyncio
import json

import pytest

from support.scripted import ScriptedEngine
from support.wire import CASES, FIXTURE, mask
from unsloth_min.app import DIALECTS, OPENAI
from unsloth_min.core import ApiError
from unsloth_min.pacing import sse_body

with open(FIXTURE) as f:
    RECORDED = json.load(f)
assert len(RECORDED) == len(CASES) + 3  # (then the store's three requests)


def dialect(path: str):
    return next((d for d in DIALECTS if path.startswith(d.prefix)), OPENAI)


async def encode(req, script: list, encoder) -> str:
    """The scripted engine's answer to `req`: SSE framed by pacing.sse_body, or the replay."""
    engine = ScriptedEngine()
    engine.enqueue(script)
    events = engine.generate(req)
    if req.stream:
        first = await events.__anext__()
        return b"".join([c async for c in sse_body(first, events, encoder, 60.0)]).decode()
    return json.dumps(encoder.replay([ev async for ev in events]), ensure_ascii=False,
                      separators=(",", ":"))


@pytest.mark.parametrize("case, recorded", list(zip(CASES, RECORDED[:len(CASES)])),
                         ids=[f"{i}:{c[0]}" for i, c in enumerate(CASES)])
def test_reader_and_encoder_match_the_recorded_wire(case, recorded):
    path, body, script = case
    assert (recorded["path"], recorded["request"]) == (path, body)
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
    assert mask(asyncio.run(encode(req, script, d.encoder(req, "scripted")))) == recorded["body"]
