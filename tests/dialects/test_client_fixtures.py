"""What the real clients sent (tests/fixtures/clients/, recorded from Claude Code, Codex and
opencode with `make e2e-clients`' proxy, keys removed), replayed over a scripted engine: every
recorded request is a 200 with a well-formed answer — an SSE stream that ends as its dialect ends
one — and the fields our policy refuses name themselves in a 400."""
from __future__ import annotations

import glob
import json
import os

import pytest

from support.servers import sse_events

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # tests/
FIXTURES = sorted(glob.glob(os.path.join(HERE, "fixtures", "clients", "*.json")))
KEEP = {"anthropic-version", "anthropic-beta", "openai-beta", "accept", "user-agent"}
LAST_EVENT = {"/v1/messages": "message_stop", "/v1/responses": "response.completed"}


def load(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


@pytest.mark.parametrize("fixture", FIXTURES, ids=[os.path.basename(f) for f in FIXTURES])
def test_each_recorded_client_request_is_answered(scripted_server, fixture):
    rec = load(fixture)
    headers = {k: v for k, v in rec["headers"].items() if k.lower() in KEEP}
    body = json.dumps(rec["body"]).encode() if rec.get("body") is not None else None
    status, got, data = scripted_server.request(rec["method"], rec["path"], body, headers=headers)
    assert status == 200, data[:500]
    route = rec["path"].partition("?")[0]
    if not rec.get("body") or not rec["body"].get("stream"):
        return
    assert got["content-type"].startswith("text/event-stream")
    events = sse_events(data)
    if route == "/v1/chat/completions":
        assert events[-1][1] == "[DONE]" and all(json.loads(d)["choices"] is not None
                                                 for _, d in events[:-1])
        assert any(json.loads(d).get("usage") for _, d in events[:-1])  # include_usage honoured
    else:
        assert events[-1][0] == LAST_EVENT[route]
        for name, payload in events:
            assert json.loads(payload)["type"] == name


def test_the_fixtures_cover_the_three_clients():
    clients = {load(f)["client"] for f in FIXTURES}
    assert {"claude-code", "codex", "opencode"} <= clients, clients


@pytest.mark.parametrize("path, body, field", [
    ("/v1/messages", {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}],
                      "output_config": {"effort": "extreme"}}, "output_config.effort"),
    ("/v1/messages", {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}],
                      "tools": [{"type": "computer_20250124", "name": "computer"}]}, "tools[0].type"),
    ("/v1/responses", {"model": "m", "input": "hi", "tools": [{"type": "file_search"}]}, "tools[0].type"),
    ("/v1/responses", {"model": "m", "input": "hi", "tools": [{"type": "namespace", "name": "n",
                                                               "tools": [{"type": "mcp"}]}]},
     "tools[0].tools[0].type"),
    ("/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "hi"}], "n": 2}, "n"),
])
def test_a_field_that_would_change_the_answer_is_refused_by_name(scripted_server, path, body, field):
    status, err = scripted_server.json("POST", path, body)
    assert status == 400, err
    text = json.dumps(err)
    assert field in text
