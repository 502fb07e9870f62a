"""Crash containment (supervisor.py) and the warm-up at load, with the real model in real processes:
a broken engine stops the start with its cause; a crash while serving is reported in one line, or
survived with --restart; ggml aborting while serving (a lost --rpc server) ends each dialect's
answer with its error event and the server with EXIT_MODEL_GONE, or a restart."""
from __future__ import annotations

import json
import os
import signal
import time

import pytest

from support import SUPPORT
from support.servers import (healthy, launch_server_process, sse_events, start_server_process,
                             stop_server_process, wait_for)
from unsloth_min.supervisor import EXIT_MODEL_GONE

FAULTY = [os.path.join(SUPPORT, "faulty_main.py")]
pytestmark = pytest.mark.model


def ended(running, timeout: float = 60) -> tuple[int, bool, str]:
    """Wait for the supervisor to exit: (its code, whether /health ever said ok, its log)."""
    ok, deadline = False, time.time() + timeout
    while running.proc.poll() is None and time.time() < deadline:
        ok = ok or healthy(running)
        time.sleep(0.1)
    if running.proc.poll() is None:
        running.proc.kill()
        pytest.fail("the server did not stop")
    return running.proc.returncode, ok, open(running.log, errors="replace").read()


@pytest.mark.parametrize("fault, code, cause", [
    ("error", 1, "the warm-up decode failed (llama_decode returned -1) with --extra-bufts"),
    ("segv", 128 + signal.SIGSEGV, "died of SIGSEGV while loading the model"),
])
def test_a_broken_engine_stops_the_start(tmp_path, fault, code, cause):
    running = launch_server_process(str(tmp_path), main=FAULTY, env={"UNSLOTH_MIN_FAULT": fault})
    status, was_healthy, log = ended(running)
    assert (status, was_healthy) == (code, False), log
    assert cause in log and "--extra-bufts off" in log, log


def test_a_crash_while_serving_is_reported_in_one_line(tmp_path):
    running = start_server_process(str(tmp_path))
    os.kill(running.server_pid, signal.SIGSEGV)
    status, _, log = ended(running)
    assert status == 128 + signal.SIGSEGV
    lines = [line for line in log.splitlines() if "died of SIGSEGV" in line]
    assert len(lines) == 1 and "while serving" in lines[0] and "--extra-bufts off" in lines[0], log


def test_restart_serves_again_on_the_same_port(tmp_path):
    running = start_server_process(str(tmp_path), "--restart", "1", "--max-tokens", "4")
    try:
        first = running.server_pid
        os.kill(first, signal.SIGSEGV)
        assert wait_for(lambda: running.proc.poll() is None and healthy(running)
                        and running.server_pid != first, 60), running.log_text()
        status, _, body = running.request("POST", "/v1/chat/completions",
                                          {"messages": [{"role": "user", "content": "Hi"}]})
        assert status == 200, body
    finally:
        assert stop_server_process(running) == 0
    assert "restarting it (0 restarts left)" in running.log_text()


ASK = {"messages": [{"role": "user", "content": "Count from one to fifty in words."}]}
STREAMS = {  # an answer longer than faulty_main's ABORT_AT tokens, streamed
    "chat": ("/v1/chat/completions", dict(ASK, stream=True, max_tokens=64, temperature=0)),
    "messages": ("/v1/messages", dict(ASK, stream=True, max_tokens=64, temperature=0)),
    "responses": ("/v1/responses", {"input": ASK["messages"][0]["content"], "stream": True,
                                    "max_output_tokens": 64, "temperature": 0}),
}


def stream_error(data: bytes) -> tuple[str, str]:
    """(the last event's name, the message of the error it carries) of an SSE body, in any
    dialect: chat's `data: {"error"}` before [DONE], Anthropic's `event: error`, Responses'
    `response.failed`."""
    payloads = [(name, json.loads(d)) for name, d in sse_events(data) if d != "[DONE]"]
    name, last = payloads[-1]
    error = last.get("error") or last.get("response", {}).get("error") or {}
    return name or "data", error.get("message", "")


def aborting_server(tmp_path, *args):
    return start_server_process(str(tmp_path), *args, main=FAULTY, env={
        "UNSLOTH_MIN_FAULT": "abort", "UNSLOTH_MIN_FAULT_ONCE": str(tmp_path / "aborted")})


@pytest.mark.parametrize("dialect, last_event", [("chat", "data"), ("messages", "error"),
                                                 ("responses", "response.failed")])
def test_an_abort_while_serving_ends_the_answer_then_the_server(tmp_path, dialect, last_event):
    running = aborting_server(tmp_path)
    status, _, data = running.request("POST", *STREAMS[dialect], timeout=60)
    assert status == 200
    assert stream_error(data) == (last_event, "generation failed: llama.cpp stopped (faulty_main.py:1: "
                                  "an injected abort); the server is stopping"), data[-600:]
    code, _, log = ended(running)
    assert code == EXIT_MODEL_GONE, log
    assert "llama.cpp stopped: faulty_main.py:1: an injected abort" in log
    assert "the model is gone" in log and "Traceback" not in log, log


def test_restart_serves_again_after_an_abort(tmp_path):
    running = aborting_server(tmp_path, "--restart", "1")
    try:
        first = running.server_pid
        status, _, data = running.request("POST", *STREAMS["chat"], timeout=60)
        assert status == 200 and "an injected abort" in stream_error(data)[1]
        assert wait_for(lambda: running.proc.poll() is None and healthy(running)
                        and running.server_pid != first, 60), running.log_text()
        status, _, data = running.request("POST", *STREAMS["chat"], timeout=60)
        assert status == 200 and stream_error(data)[1] == "", data[-600:]
    finally:
        assert stop_server_process(running) == 0
    assert "lost its model while serving (its log says why); restarting it (0 restarts left)" \
        in running.log_text()
