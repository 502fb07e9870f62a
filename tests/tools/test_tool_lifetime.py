"""No kernel and no bash process outlives the server: the real `cli.serve` in its own process
(over a scripted engine, so that a tool call is certain), stopped by SIGTERM or SIGINT."""
from __future__ import annotations

import os
import signal
import threading

import pytest

from support import SUPPORT
from support.servers import start_server_process, wait_for
from support.procs import alive, processes_with

MAIN = [os.path.join(SUPPORT, "scripted_main.py")]


def chat_ignoring_errors(server, text: str) -> None:
    try:
        chat(server, text)
    except OSError:  # the server goes away under this request: that is the test
        pass


def chat(server, text: str, **extra):
    return server.json("POST", "/v1/chat/completions", {
        "model": "m", "messages": [{"role": "user", "content": text}], "enable_tools": True, **extra})


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_no_tool_process_outlives_the_server(tmp_path, sig):
    server = start_server_process(str(tmp_path), "--tool-timeout", "120", main=MAIN)
    marker = f"sleep 88.{sig.value}"
    try:
        status, body = chat(server, "python:import os; print(os.getpid())", session_id="keep")
        assert status == 200, body
        kernel = int(body["choices"][0]["message"]["tool_results"][0]["content"])
        assert alive(kernel)
        in_flight = threading.Thread(target=chat_ignoring_errors, args=(server, f"bash:{marker}"), daemon=True)
        in_flight.start()
        assert wait_for(lambda: processes_with(marker), 10)
        server.proc.send_signal(sig)
        assert server.proc.wait(30) == 0
        assert wait_for(lambda: not alive(kernel) and not processes_with(marker), 5)
        assert not list((tmp_path / "kernels").glob("*.json"))  # connection files removed too
        log = open(server.log, errors="replace").read()
        assert "Traceback" not in log and "ERROR" not in log, log
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
