"""--rpc on one machine: the embedded model split across two ggml-rpc-servers on loopback ports.

Greedy answers in all three dialects, streamed, are the same token for token as the same server's
without --rpc; killing one ggml-rpc-server mid-stream ends that answer with the dialect's error
event and the server with EXIT_MODEL_GONE, never a hang; --rpc to a closed port stops the start
and says why. The split runs need `make install-rpc` (llama-cpp-python with the RPC backend and
the ggml-rpc-server binary in .venv/bin): without it they are skipped, saying so.
"""
from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import subprocess
import sys
import time

import pytest

from support.servers import (KEY, free_port, launch_server_process, sse_events, start_server_process,
                             stop_server_process, wait_for)
from unsloth_min.engine import ggml, rpc
from unsloth_min.supervisor import EXIT_MODEL_GONE

pytestmark = pytest.mark.model
RPC_SERVER = os.path.join(os.path.dirname(sys.executable), "ggml-rpc-server")
HAS_RPC = bool(ggml.lib().ggml_backend_reg_by_name(b"RPC"))
needs_rpc = pytest.mark.skipif(not (HAS_RPC and os.path.exists(RPC_SERVER)),
                               reason="no RPC build here: `make test-rpc` (or `make install-rpc`) "
                                      "builds llama-cpp-python with GGML_RPC=ON and ggml-rpc-server")
FLAGS = ("-np", "1", "-c", "4096", "--temp", "0")  # a small KV cache: it lives on the servers
STORY = "Write a short story about a robot who learns to paint."
COUNT = "Count from one to fifty in words."  # an answer that goes on


def ask(dialect: str, text: str, n: int) -> tuple[str, dict]:
    """A streamed request of `dialect` for at most `n` tokens."""
    if dialect == "responses":
        return "/v1/responses", {"input": text, "stream": True, "max_output_tokens": n}
    body = {"messages": [{"role": "user", "content": text}], "stream": True, "max_tokens": n}
    if dialect == "chat":
        return "/v1/chat/completions", dict(body, stream_options={"include_usage": True})
    return "/v1/messages", body


@contextlib.contextmanager
def rpc_servers(n: int):
    """`n` ggml-rpc-servers on loopback ports, one thread each: (endpoints, processes)."""
    ports = [free_port() for _ in range(n)]
    procs = [subprocess.Popen([RPC_SERVER, "-H", "127.0.0.1", "-p", str(p), "-t", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for p in ports]
    endpoints = [f"127.0.0.1:{p}" for p in ports]
    try:
        for e in endpoints:
            assert wait_for(lambda: answers(e), 30), f"ggml-rpc-server {e} did not start"
        yield endpoints, procs
    finally:
        for p in procs:
            p.kill()
            p.wait()


def answers(endpoint: str) -> bool:
    try:
        return bool(rpc.hello(endpoint, timeout=1))
    except rpc.RpcError:
        return False


def streamed(dialect: str, data: bytes) -> tuple[str, int]:
    """(the answer's text, its output tokens) from an SSE body of `dialect`."""
    text, tokens = [], None
    for name, raw in sse_events(data):
        ev = json.loads(raw) if raw != "[DONE]" else {}
        if dialect == "chat":
            text += [c["delta"].get("content") or "" for c in ev.get("choices", [])]
            tokens = (ev.get("usage") or {}).get("completion_tokens", tokens)
        elif dialect == "messages":
            text.append(ev.get("delta", {}).get("text", "") if name == "content_block_delta" else "")
            tokens = ev.get("usage", {}).get("output_tokens", tokens) if name == "message_delta" else tokens
        elif name == "response.output_text.delta":
            text.append(ev["delta"])
        elif name in ("response.completed", "response.incomplete"):  # (incomplete: the token cap)
            tokens = ev["response"]["usage"]["output_tokens"]
    return "".join(text), tokens


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    running = start_server_process(str(tmp_path_factory.mktemp("local")), *FLAGS)
    yield running
    assert stop_server_process(running) == 0


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    with rpc_servers(2) as (endpoints, _):
        running = start_server_process(str(tmp_path_factory.mktemp("split")), *FLAGS,
                                       "--rpc", ",".join(endpoints), "--log-level", "debug")
        yield running
        assert stop_server_process(running) == 0
        log = running.log_text()
        devices = [line for line in log.splitlines() if "INFO unsloth_min.engine: devices: " in line]
        assert len(devices) == 1 and all(e in devices[0] for e in endpoints), devices
        for e in endpoints:  # each holds layers (llama.cpp's load log: the KV cache per device)
            assert f"[{e}] KV buffer size" in log


@needs_rpc
@pytest.mark.parametrize("dialect", ["chat", "messages", "responses"])
def test_the_split_model_answers_as_the_local_one(local, split, dialect):
    answers = []
    for server in (local, split):
        status, _, data = server.request("POST", *ask(dialect, STORY, 64), timeout=120)
        assert status == 200, data
        answers.append(streamed(dialect, data))
    assert len(answers[0][0]) > 100 and answers[0][1] == 64, answers  # (it rambles on, greedy)
    assert answers[1] == answers[0]


@needs_rpc
def test_tensor_split_steers_the_layers(tmp_path, local):
    with rpc_servers(2) as (endpoints, _):
        running = start_server_process(str(tmp_path), *FLAGS, "--rpc", ",".join(endpoints),
                                       "-ts", "1,3", "--log-level", "debug")
        try:
            status, _, data = running.request("POST", *ask("chat", STORY, 16), timeout=120)
        finally:
            assert stop_server_process(running) == 0
    kv = [float(re.search(rf"\[{e}\] KV buffer size = +([\d.]+) MiB", running.log_text())[1])
          for e in endpoints]
    assert 2.5 < kv[1] / kv[0] < 3.5, kv  # a quarter of the layers, then three
    assert status == 200 and streamed("chat", data) == \
        streamed("chat", local.request("POST", *ask("chat", STORY, 16), timeout=120)[2])


@needs_rpc
@pytest.mark.parametrize("dialect, last_event", [("chat", None), ("messages", "error"),
                                                 ("responses", "response.failed")])
def test_a_server_killed_mid_stream_ends_the_answer_then_ours(tmp_path, dialect, last_event):
    with rpc_servers(2) as (endpoints, procs):
        running = start_server_process(str(tmp_path), *FLAGS, "--rpc", ",".join(endpoints))
        conn = http.client.HTTPConnection(running.host, running.port, timeout=60)
        route, body = ask(dialect, COUNT, 2000)
        conn.request("POST", route, json.dumps(body), {"Authorization": f"Bearer {KEY}",
                                                       "Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 200
        data = b""
        while data.count(b"delta") < 5:  # it is answering
            data += resp.readline()
        procs[1].kill()
        data += resp.read()  # the rest comes at once; a hang would end in the socket's timeout
        name, ev = sse_events(data)[-2 if dialect == "chat" else -1]  # (chat: then [DONE])
        error = json.loads(ev).get("error") or json.loads(ev)["response"]["error"]
        assert name == last_event and "llama.cpp stopped (" in error["message"], data[-800:]
        assert "Remote RPC server crashed" in error["message"]
        assert running.proc.wait(30) == EXIT_MODEL_GONE
        assert "the model is gone" in running.log_text()


def test_rpc_to_a_closed_port_stops_the_start_saying_why(tmp_path):
    running = launch_server_process(str(tmp_path), "--rpc", f"127.0.0.1:{free_port()}")
    started = time.monotonic()
    assert running.proc.wait(60) == 1
    log = running.log_text()
    if HAS_RPC:
        assert "cannot reach a ggml-rpc-server there (Connection refused)" in log, log
    else:
        assert "built without it: `make install-rpc`" in log, log
    assert time.monotonic() - started < 30 and "Traceback" not in log


@needs_rpc
def test_a_public_address_is_warned_about(tmp_path):
    running = launch_server_process(str(tmp_path), "--rpc", "1.1.1.1:50052")  # (unreachable here)
    assert running.proc.wait(60) == 1
    log = running.log_text()
    assert "--rpc 1.1.1.1:50052 is not a loopback or private address: ggml-rpc-server has no " \
           "authentication" in log, log
    assert "--rpc 1.1.1.1:50052: cannot reach a ggml-rpc-server there" in log, log
