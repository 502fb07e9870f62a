"""The scheduler with the real model: shared batches, slots, queue bound, cancellation."""
from __future__ import annotations

import concurrent.futures as cf
import json
import re
import socket
import time

import openai
import pytest

from support.servers import KEY, start_server_process, stop_server_process, wait_for
from support.rawhttp import read_until
from support.vocab import Vocab
from unsloth_min.engine import embedded_model_path

pytestmark = pytest.mark.model


def ask(client, text: str, **kw) -> str:
    kw = {"max_tokens": 24, "temperature": 0, **kw}
    r = client.chat.completions.create(model="m", messages=[{"role": "user", "content": text}], **kw)
    return r.choices[0].message.content


@pytest.fixture(scope="module")
def client(real_server):
    return openai.OpenAI(base_url=real_server.base_url + "/v1", api_key=KEY, max_retries=0)


def test_concurrent_requests_match_solo_runs(client):
    """Different settings side by side in one batch, each greedy: the text of a solo run."""
    jobs = [("Name a fruit.", {}), ("Name a planet.", {"seed": 7, "max_tokens": 40}),
            ("Name a color.", {"extra_body": {"top_k": 5}, "seed": 3, "stop": ["."]}),
            ("Name an animal.", {"extra_body": {"repetition_penalty": 1.3}}),
            ("Name a city.", {"frequency_penalty": 0.5, "max_tokens": 12})]
    alone = [ask(client, text, **kw) for text, kw in jobs]
    with cf.ThreadPoolExecutor(len(jobs)) as pool:
        together = list(pool.map(lambda job: ask(client, job[0], **job[1]), jobs))
    assert together == alone


def _open_stream(server, max_tokens: int = 4000) -> socket.socket:
    """A stream that runs for minutes: no end-of-generation token may be sampled."""
    body = json.dumps({"model": "m", "stream": True, "max_tokens": max_tokens, "temperature": 1,
                       "logit_bias": Vocab(embedded_model_path()).endless(),
                       "messages": [{"role": "user", "content": "Write a very long essay about rivers."}]})
    s = socket.create_connection((server.host, server.port))
    s.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
              f"Authorization: Bearer {KEY}\r\nContent-Length: {len(body)}\r\n\r\n{body}".encode())
    assert read_until(s, b'"content":"')  # generating
    return s


def test_a_cancelled_stream_frees_its_slot(tmp_path):
    server = start_server_process(str(tmp_path), "--parallel", "2")
    try:
        client = openai.OpenAI(base_url=server.base_url + "/v1", api_key=KEY, max_retries=0)
        busy, leaving = _open_stream(server), _open_stream(server)  # both slots taken
        leaving.close()
        start = time.time()
        assert ask(client, "hi", max_tokens=4)  # gets the freed slot while `busy` still streams
        assert time.time() - start < 60  # the busy stream alone would run for minutes
        busy.close()
    finally:
        assert stop_server_process(server) == 0


def test_queue_bound_answers_503(tmp_path):
    server = start_server_process(str(tmp_path), "--parallel", "1", "--max-queue", "1")
    try:
        running, queued = _open_stream(server), None
        body = {"model": "m", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}
        with cf.ThreadPoolExecutor(1) as pool:
            queued = pool.submit(server.json, "POST", "/v1/chat/completions", body)
            assert wait_for(lambda: re.search(rb"^llamacpp:requests_deferred 1",
                                              server.request("GET", "/metrics")[2], re.M), 60)  # queued
            status, headers, data = server.request("POST", "/v1/chat/completions", body)
            assert status == 503 and headers["retry-after"]
            assert json.loads(data)["error"]["type"] == "overloaded_error"
            running.close()  # the queued request now gets the slot
            assert queued.result(30)[0] == 200
    finally:
        assert stop_server_process(server) == 0
