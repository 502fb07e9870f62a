"""Crash containment (supervisor.py) and the warm-up at load, with the real model in real processes:
a broken engine stops the start with its cause; a crash while serving is reported in one line, or
survived with --restart."""
from __future__ import annotations

import os
import signal
import time

import pytest

from support import SUPPORT
from support.servers import (healthy, launch_server_process, start_server_process, stop_server_process,
                             wait_for)

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
