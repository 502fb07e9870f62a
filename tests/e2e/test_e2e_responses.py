"""OpenAI Responses end to end on the real embedded SmolLM2-135M: the seed page's curl body and the
official `openai` SDK (`create`, `stream()` → `get_final_response()`, `retrieve`, a chain)."""
from __future__ import annotations

import openai
import pytest

from support.servers import KEY
from test_e2e_messages import stream_head
from unsloth_min.engine.model import MIN_DEFAULT_CTX

pytestmark = pytest.mark.model
RESPONSES = "/v1/responses"


@pytest.fixture(scope="module")
def client(real_server):
    return openai.OpenAI(base_url=real_server.base_url + "/v1", api_key=KEY, max_retries=0, timeout=300)


def test_seed_page_example(real_server):
    seed = {"model": "qwen-local", "input": "写一句问候语。"}
    # streamed, as the page says ("add "stream": true"): the unbounded answer is cut after its start
    names = stream_head(real_server, RESPONSES, dict(seed, stream=True), "response.output_text.delta")
    assert names == ["response.created", "response.in_progress", "response.output_item.added",
                     "response.content_part.added", "response.output_text.delta"]
    status, body = real_server.json("POST", RESPONSES, dict(seed, max_output_tokens=32), timeout=300)
    assert status == 200 and body["object"] == "response" and body["id"].startswith("resp_")
    assert body["status"] in ("completed", "incomplete") and body["output_text"]
    assert body["output"][0]["content"][0]["type"] == "output_text"


def test_sdk_create_incomplete(client):
    r = client.responses.create(model="default", input="Count: one, two,", max_output_tokens=8,
                                temperature=0)
    assert r.status == "incomplete" and r.incomplete_details.reason == "max_output_tokens"
    assert r.usage.output_tokens == 8 and r.usage.total_tokens == r.usage.input_tokens + 8
    assert r.output_text and r.output[0].type == "message" and r.temperature == 0


def test_sdk_stream_matches_create_and_retrieve(client):
    # an answer that ends by itself: get_final_response() needs response.completed (not .incomplete)
    kw = dict(model="default", instructions="You are terse.", max_output_tokens=64, temperature=0,
              input="What color is the sky? Answer in one word.")
    plain = client.responses.create(**kw)
    with client.responses.stream(**kw) as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert plain.status == final.status == "completed"
    assert "".join(deltas) == final.output_text == plain.output_text
    assert final.usage.output_tokens == plain.usage.output_tokens
    assert final.instructions == "You are terse."
    got = client.responses.retrieve(final.id)
    assert got.id == final.id and got.output_text == final.output_text
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve("resp_does_not_exist")


def test_previous_response_id_chain(client):
    first = client.responses.create(model="default", input="My name is Ada. " * 10 + "Say hello.",
                                    max_output_tokens=8, temperature=0)
    second = client.responses.create(model="default", previous_response_id=first.id,
                                     input="What is my name?", max_output_tokens=8, temperature=0)
    assert second.previous_response_id == first.id
    # the first turn (input and output) comes first in the prompt, so its KV prefix is reused
    assert second.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens
    assert second.usage.input_tokens_details.cached_tokens >= first.usage.input_tokens - 1
    third = client.responses.create(model="default", previous_response_id=second.id, input="Thanks.",
                                    max_output_tokens=4, temperature=0)
    assert third.usage.input_tokens > second.usage.input_tokens
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="default", previous_response_id="resp_gone", input="hi")


def test_context_length_exceeded(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="default", input="hi " * (MIN_DEFAULT_CTX + 1000))
    assert e.value.body["code"] == "context_length_exceeded"
