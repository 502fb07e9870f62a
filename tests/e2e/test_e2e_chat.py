"""End to end on the real embedded SmolLM2-135M: the CLI's server process, curl-like HTTP, the SDK."""
from __future__ import annotations

import json
import socket
import time

import openai
import pytest

from support.servers import KEY, sse_events
from support.rawhttp import read_until
from unsloth_min.engine.model import MIN_DEFAULT_CTX

pytestmark = pytest.mark.model
CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def client(real_server):
    return openai.OpenAI(base_url=real_server.base_url + "/v1", api_key=KEY, max_retries=0)


@pytest.fixture(scope="module")
def reference_tokens():
    """An independent token count: llama-cpp-python's own tokenizer over SmolLM2's ChatML prompt."""
    import llama_cpp
    from unsloth_min.engine import embedded_model_path
    llm = llama_cpp.Llama(embedded_model_path(), vocab_only=True, verbose=False)

    def count(user: str) -> int:
        prompt = ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
                  f"Face<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n")
        return len(llm.tokenize(prompt.encode(), add_bos=False, special=True))
    return count


def test_seed_page_examples(real_server):
    status, models = real_server.json("GET", "/v1/models")
    assert status == 200 and models["data"][0]["object"] == "model"
    status, body = real_server.json("POST", CHAT, {"model": "default",
                                                   "messages": [{"role": "user", "content": "你好"}]})
    assert status == 200 and body["choices"][0]["message"]["content"]
    assert body["model"] == models["data"][0]["id"]
    status, _, data = real_server.request("POST", CHAT, {
        "model": "qwen-local", "stream": True,
        "messages": [{"role": "user", "content": "写一首关于本地运行 LLM 的俳句。"}]})
    events = sse_events(data)
    assert status == 200 and events[-1] == (None, "[DONE]") and len(events) > 3
    status, body = real_server.json("POST", CHAT, {
        "model": "default", "temperature": 0.8, "top_p": 0.9, "max_tokens": 512,
        "messages": [{"role": "user", "content": "写一首关于本地 AI 的短诗。"}]})
    assert status == 200 and body["usage"]["completion_tokens"] <= 512


def test_sdk_create_exact_usage(client, reference_tokens):
    r = client.chat.completions.create(model="default", max_tokens=5, temperature=0,
                                       messages=[{"role": "user", "content": "Count: one, two,"}])
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 5
    assert r.usage.prompt_tokens == reference_tokens("Count: one, two,")
    assert r.usage.total_tokens == r.usage.prompt_tokens + 5


def test_sdk_stream_matches_non_stream(client):
    # an answer that ends by itself: the SDK's stream() helper refuses a `length` finish
    kw = dict(model="default", max_tokens=64, temperature=0,
              messages=[{"role": "system", "content": "You are terse."},
                        {"role": "user", "content": "What color is the sky? Answer in one word."}])
    plain = client.chat.completions.create(**kw)
    chunks = list(client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kw))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens == plain.usage.prompt_tokens
    with client.chat.completions.stream(**kw) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    assert final.choices[0].message.content == plain.choices[0].message.content


def test_stop_and_seed(client):
    kw = dict(model="default", max_tokens=40, temperature=1.0, seed=1234,
              messages=[{"role": "user", "content": "Tell me a story."}])
    a = client.chat.completions.create(**kw).choices[0].message.content
    b = client.chat.completions.create(**kw).choices[0].message.content
    assert a == b  # same seed, same text
    first_word = a.split()[1] if len(a.split()) > 1 else a
    r = client.chat.completions.create(stop=[first_word], **kw)
    assert first_word not in r.choices[0].message.content
    assert r.choices[0].finish_reason == "stop"


def test_follow_up_turn_reuses_the_prefix(client):
    messages = [{"role": "user", "content": "Describe the sea in a long paragraph. " * 20}]
    first = client.chat.completions.create(model="d", messages=messages, max_tokens=16, temperature=0)
    messages += [{"role": "assistant", "content": first.choices[0].message.content},
                 {"role": "user", "content": "Shorter please."}]
    second = client.chat.completions.create(model="d", messages=messages, max_tokens=8, temperature=0)
    assert second.usage.prompt_tokens_details.cached_tokens >= first.usage.prompt_tokens - 1


def test_context_length_exceeded(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="d", messages=[
            {"role": "user", "content": "hi " * (MIN_DEFAULT_CTX + 1000)}])
    assert e.value.body["code"] == "context_length_exceeded"


def test_disconnect_frees_the_model(real_server, client):
    body = json.dumps({"model": "d", "stream": True, "max_tokens": 2000, "temperature": 1,
                       "messages": [{"role": "user", "content": "Write a very long essay."}]}).encode()
    for _ in range(4):  # more abandoned streams than the server has slots
        s = socket.create_connection((real_server.host, real_server.port))
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                  b"Authorization: Bearer " + KEY.encode() + b"\r\nContent-Length: "
                  + str(len(body)).encode() + b"\r\n\r\n" + body)
        assert read_until(s, b"data:")
        s.close()
    start = time.time()
    r = client.chat.completions.create(model="d", max_tokens=4, temperature=0,
                                       messages=[{"role": "user", "content": "hi"}])
    assert r.choices[0].finish_reason in ("length", "stop")
    assert time.time() - start < 10  # would wait for ~2000-token generations if they still ran


@pytest.fixture(scope="module")
def vocab():
    from support.vocab import Vocab
    from unsloth_min.engine import embedded_model_path
    return Vocab(embedded_model_path())


def test_logit_bias_bans_and_forces_tokens(client, vocab):
    ends = vocab.endless()
    ask = dict(model="m", messages=[{"role": "user", "content": "Say hi."}], max_tokens=40, temperature=0)
    assert client.chat.completions.create(**ask).choices[0].finish_reason == "stop"  # it ends by itself
    banned = client.chat.completions.create(**ask, logit_bias=ends).choices[0]
    assert banned.finish_reason == "length" and banned.message.content
    [river] = vocab.tokenize(" river")
    forced = client.chat.completions.create(**dict(ask, max_tokens=3), logit_bias={str(river): 100})
    assert forced.choices[0].message.content.strip() == "river river river"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(**ask, logit_bias={"999999": 5})
    assert e.value.body["param"] == "logit_bias" and "999999" in e.value.body["message"]
