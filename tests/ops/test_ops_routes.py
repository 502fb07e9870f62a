"""GET /metrics, /slots and /props over the scripted engine: keys, what requests are counted as,
counters that only grow, and prompt progress in each dialect's stream (`return_progress`)."""
from __future__ import annotations

import json

import pytest
from prometheus_client.parser import text_string_to_metric_families

from support.scripted import ScriptedEngine
from support.servers import KEY, serve_app, sse_events, wait_for
from unsloth_min.app import App
from unsloth_min.auth import Authenticator
from unsloth_min.core import PromptProgress

CHAT = "/v1/chat/completions"
USER = [{"role": "user", "content": "hi"}]
PROGRESS = [PromptProgress(3000, 1000, 1512, 900), PromptProgress(3000, 1000, 3000, 2100), "ok"]


def samples(running) -> dict:
    status, headers, data = running.request("GET", "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
    out = {}
    for family in text_string_to_metric_families(data.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


@pytest.fixture
def public_metrics():
    engine = ScriptedEngine()
    with serve_app(App("scripted", Authenticator(None, [KEY]), engine, metrics_public=True),
                   engine) as running:
        yield running


def test_metrics_slots_and_props_need_the_key(scripted_server):
    for path in ("/metrics", "/slots", "/props"):
        status, headers, _ = scripted_server.request("GET", path, key=False)
        assert status == 401 and headers["www-authenticate"] == "Bearer", path
        assert scripted_server.request("GET", path)[0] == 200


def test_metrics_public_opens_metrics_only(public_metrics):
    assert public_metrics.request("GET", "/metrics", key=False)[0] == 200
    assert public_metrics.request("GET", "/slots", key=False)[0] == 401
    assert public_metrics.request("GET", "/props", key=False)[0] == 401


def test_requests_are_counted_by_route_dialect_and_status(scripted_server):
    s = scripted_server
    open_now = lambda: samples(s)[("unsloth_min_open_connections", ())]  # noqa: E731
    before = open_now()  # the scrape's own, and any an earlier test's client keeps alive
    assert s.request("POST", CHAT, {"model": "m", "messages": USER})[0] == 200
    assert s.request("POST", "/v1/messages", {"model": "m", "messages": USER})[0] == 400  # no max_tokens
    assert s.request("POST", "/v1/responses", {"model": "m", "input": "hi", "stream": True})[0] == 200
    assert s.request("GET", "/nowhere/abc")[0] == 404
    got = samples(s)
    req = lambda route, dialect, status: got.get(("unsloth_min_requests_total", (  # noqa: E731
        ("dialect", dialect), ("route", route), ("status", str(status)))), 0)
    assert req(CHAT, "openai", 200) == 1 and req("/v1/messages", "anthropic", 400) == 1
    assert req("/v1/responses", "responses", 200) == 1 and req("other", "openai", 404) == 1
    ttft = lambda d: got[("unsloth_min_time_to_first_token_seconds_count", (("dialect", d),))]  # noqa: E731
    assert ttft("openai") == 1 and ttft("responses") == 1  # (the refused request had no first token)
    assert got[("unsloth_min_request_duration_seconds_count", (("route", "/v1/responses"),))] == 1
    assert wait_for(lambda: open_now() <= before)  # (ours close as the server reads their EOF)


def test_counters_only_grow(scripted_server):
    before = samples(scripted_server)
    for stream in (False, True, False):
        scripted_server.request("POST", CHAT, {"model": "m", "messages": USER, "stream": stream})
    after = samples(scripted_server)
    counted = [k for k in before if k[0].endswith(("_total", "_count", "_sum", "_bucket"))]
    assert counted and all(after[k] >= before[k] for k in counted)
    key = ("unsloth_min_requests_total", (("dialect", "openai"), ("route", CHAT), ("status", "200")))
    assert after[key] == before.get(key, 0) + 3


def test_slots_and_props(scripted_server):
    status, slots = scripted_server.json("GET", "/slots")
    assert status == 200 and slots == [{"id": 0, "state": "idle", "n_tokens": 0}]
    status, props = scripted_server.json("GET", "/props")
    assert status == 200 and props["model_id"] == "scripted" and props["status"] == "ok"


def test_the_app_tells_the_engine_who_asked(scripted_server):
    _, body = scripted_server.json("POST", "/v1/messages", {"model": "m", "max_tokens": 5, "messages": USER})
    req = scripted_server.engine.history[-1]
    assert (req.request_id, req.dialect, req.return_progress) == (body["id"], "anthropic", False)


@pytest.mark.parametrize("path, body, name", [
    (CHAT, {"messages": USER}, None),
    ("/v1/messages", {"messages": USER, "max_tokens": 5}, "prompt_progress"),
    ("/v1/responses", {"input": "hi"}, "response.prompt_progress"),
])
def test_return_progress_streams_the_prompts_progress(scripted_server, path, body, name):
    scripted_server.engine.enqueue(PROGRESS)
    status, _, data = scripted_server.request("POST", path, dict(body, model="m", stream=True,
                                                               return_progress=True))
    assert status == 200 and scripted_server.engine.history[-1].return_progress is True
    found = [json.loads(d) for e, d in sse_events(data) if d != "[DONE]" and "prompt_progress" in d]
    assert [f["prompt_progress"] for f in found] == [
        {"total": 3000, "cache": 1000, "processed": 1512, "time_ms": 900},
        {"total": 3000, "cache": 1000, "processed": 3000, "time_ms": 2100}]
    names = [e for e, d in sse_events(data) if "prompt_progress" in d]
    assert names == [name, name]
    if name is None:  # Chat: a chunk without choices, as llama-server sends it
        assert all(f["object"] == "chat.completion.chunk" and f["choices"] == [] for f in found)
    else:
        assert all(f["type"] == name for f in found)


def test_progress_is_never_in_a_whole_answer(scripted_server):
    scripted_server.engine.enqueue(PROGRESS)
    _, body = scripted_server.json("POST", CHAT, {"model": "m", "messages": USER, "return_progress": True})
    assert "prompt_progress" not in json.dumps(body) and body["choices"][0]["message"]["content"] == "ok"


def test_return_progress_must_be_a_boolean(scripted_server):
    status, body = scripted_server.json("POST", "/v1/messages", {
        "model": "m", "max_tokens": 5, "messages": USER, "return_progress": "yes"})
    assert status == 400 and body["type"] == "error" and "return_progress" in body["error"]["message"]
