"""The recorded wire: a fixed set of requests to every chat route over a scripted engine, with what
the engine was asked (the ChatRequest) and what went back (status, content type, body), compared
byte for byte with `fixtures/wire/recorded.json` once ids and clocks are masked.

It pins behaviour while the dialects are reshaped: a change that means to alter the wire
re-records (`UNSLOTH_MIN_RECORD=1 pytest tests/dialects/test_wire_recorded.py`) and shows the diff.
"""
from __future__ import annotations

import json
import os

import pytest

from support.wire import FIXTURE, record


def test_the_wire_is_what_was_recorded():
    now = record()
    if os.environ.get("UNSLOTH_MIN_RECORD"):
        os.makedirs(os.path.dirname(FIXTURE), exist_ok=True)
        with open(FIXTURE, "w") as f:
            json.dump(now, f, indent=1, ensure_ascii=False)
            f.write("\n")
        pytest.skip("recorded")
    with open(FIXTURE) as f:
        then = json.load(f)
    assert len(now) == len(then)
    for got, want in zip(now, then):
        assert got == want, f"{want.get('path')} {json.dumps(want.get('request'))[:200]}"
