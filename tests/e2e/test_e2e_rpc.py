"""--rpc on one machine: the embedded model split across two ggml-rpc-servers on loopback ports.

Greedy answers in all three dialects, streamed, are the same token for token as the same server's
without --rpc; killing one ggml-rpc-server mid-stream ends that answer with the dialect's error
event and the server with EXIT_MODEL_GONE, never a hang; pausing one (SIGSTOP: a host gone
without a TCP reset) ends the answer and the queued request with errors after --rpc-timeout, and
with --restart a new server process waits for it and answers once it is resumed (SIGCONT); --rpc
to a closed port stops the start and says why. The servers are `make install`'s
.venv/bin/ggml-rpc-server (unsloth_min/rpc_server.py): without an RPC build these tests fail,
unless UNSLOTH_MIN_SKIP_RPC=1 says to skip them.
"""
from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import subprocess
import signal
import sys
import threading
import time

import pytest

from support.servers import (KEY, die_with_parent, free_port, healthy, launch_server_process,
                             sse_events, start_server_process, stop_server_process, wait_for)
from unsloth_min.engine import ggml, rpc
from unsloth_min.supervisor import EXIT_MODEL_GONE

pytestmark = pytest.mark.model
RPC_SERVER = os.path.join(os.path.dirname(sys.executable), "ggml-rpc-server")
HAS_RPC = bool(ggml.lib().ggml_backend_reg_by_name(b"RPC"))
needs_rpc = pytest.mark.skipif(os.environ.get("UNSLOTH_MIN_SKIP_RPC") == "1",
                               reason="UNSLOTH_MIN_SKIP_RPC=1: the --rpc split is not tested")
NO_RPC = ("no RPC build here: `make install` builds llama-cpp-python with GGML_RPC=ON and "
          ".venv/bin/ggml-rpc-server (UNSLOTH_MIN_SKIP_RPC=1 skips these tests)")
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
    assert HAS_RPC and os.path.exists(RPC_SERVER), NO_RPC
    ports = [free_port() for _ in range(n)]
    procs = [subprocess.Popen([RPC_SERVER, "-H", "127.0.0.1", "-p", str(p), "-t", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              preexec_fn=die_with_parent) for p in ports]
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


RPC_TIMEOUT = 8  # seconds: a decode of the 135M model takes milliseconds, even on a busy machine
SLACK = 20       # for the error to reach the client, generously


def open_stream(running, dialect: str, text: str, n: int, timeout: float):
    """A streamed request under way: (connection, response, the first events read)."""
    conn = http.client.HTTPConnection(running.host, running.port, timeout=timeout)
    route, body = ask(dialect, text, n)
    conn.request("POST", route, json.dumps(body), {"Authorization": f"Bearer {KEY}",
                                                   "Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200
    data = b""
    while data.count(b"delta") < 5:  # it is answering
        data += resp.readline()
    return conn, resp, data


def read_until_end(resp, deadline: float) -> bytes:
    """The rest of a stream, or nothing if it has not ended by `deadline` (pings keep a hung one
    open: the socket's timeout would not end it)."""
    got = {}

    def read():
        try:
            got["data"] = resp.read()
        except http.client.IncompleteRead as e:  # (the server process ended it)
            got["data"] = e.partial
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(max(0.0, deadline - time.monotonic()))
    return got.get("data", b"")


@needs_rpc
@pytest.mark.parametrize("dialect, last_event", [("chat", None), ("messages", "error"),
                                                 ("responses", "response.failed")])
def test_a_server_killed_mid_stream_ends_the_answer_then_ours(tmp_path, dialect, last_event):
    with rpc_servers(2) as (endpoints, procs):
        running = start_server_process(str(tmp_path), *FLAGS, "--rpc", ",".join(endpoints))
        conn, resp, data = open_stream(running, dialect, COUNT, 2000, 60)
        procs[1].kill()
        data += read_until_end(resp, time.monotonic() + 60)  # the rest comes at once
        name, ev = sse_events(data)[-2 if dialect == "chat" else -1]  # (chat: then [DONE])
        error = json.loads(ev).get("error") or json.loads(ev)["response"]["error"]
        assert name == last_event and "llama.cpp stopped (" in error["message"], data[-800:]
        assert "Remote RPC server crashed" in error["message"]
        assert running.proc.wait(30) == EXIT_MODEL_GONE
        assert "the model is gone" in running.log_text()


@needs_rpc
def test_a_server_paused_mid_stream_ends_every_request_then_a_new_process_serves(tmp_path):
    with rpc_servers(2) as (endpoints, procs):
        running = start_server_process(str(tmp_path), *FLAGS, "--rpc", ",".join(endpoints),
                                       "--rpc-timeout", str(RPC_TIMEOUT), "--restart", "1")
        conn, resp, data = open_stream(running, "messages", COUNT, 2000, RPC_TIMEOUT + SLACK)
        queued = {}  # -np 1: a second request waits for the slot
        waiter = threading.Thread(target=lambda: queued.update(answer=running.request(
            "POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": STORY}]},
            timeout=RPC_TIMEOUT + SLACK)), daemon=True)
        waiter.start()
        procs[1].send_signal(signal.SIGSTOP)  # no reset, no FIN: ggml's client waits for good
        paused = time.monotonic()
        data += read_until_end(resp, paused + RPC_TIMEOUT + SLACK)
        took = time.monotonic() - paused
        waiter.join(SLACK)
        name, ev = sse_events(data)[-1]
        assert name == "error" and "(--rpc-timeout)" in json.loads(ev)["error"]["message"], data[-800:]
        assert took < RPC_TIMEOUT + SLACK, took
        status, _, body = queued["answer"]
        assert status == 500 and "no answer from one of its --rpc servers" in body.decode(), body
        # the new server process waits for the paused one, and serves once it is back
        assert wait_for(lambda: "trying again every" in running.log_text(), 60), running.log_text()
        assert not healthy(running)
        procs[1].send_signal(signal.SIGCONT)
        assert wait_for(lambda: healthy(running), 120), running.log_text()
        status, _, data = running.request("POST", *ask("chat", STORY, 16), timeout=120)
        assert status == 200 and len(streamed("chat", data)[0]) > 20, data
        assert stop_server_process(running) == 0
    log = running.log_text()
    assert "the model is gone (no answer from one of its --rpc servers" in log
    assert "lost its model while serving (its log says why); restarting it" in log


def test_rpc_to_a_closed_port_stops_the_start_saying_why(tmp_path):
    running = launch_server_process(str(tmp_path), "--rpc", f"127.0.0.1:{free_port()}")
    started = time.monotonic()
    assert running.proc.wait(60) == 1
    log = running.log_text()
    if HAS_RPC:
        assert "cannot reach a ggml-rpc-server there (Connection refused)" in log, log
    else:
        assert "built without it: `make install` builds one" in log, log
    assert time.monotonic() - started < 30 and "Traceback" not in log


@needs_rpc
def test_a_public_address_is_warned_about(tmp_path):
    running = launch_server_process(str(tmp_path), "--rpc", "1.1.1.1:50052")  # (unreachable here)
    assert running.proc.wait(60) == 1
    log = running.log_text()
    assert "--rpc 1.1.1.1:50052 is not a loopback or private address: ggml-rpc-server has no " \
           "authentication" in log, log
    assert "--rpc 1.1.1.1:50052: cannot reach a ggml-rpc-server there" in log, log
