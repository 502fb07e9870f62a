"""Shared fixtures: an in-process server over a scripted engine (`scripted_server`), the same with
the real server tools (`tool_server`), and the real server as a process, once per session
(`real_server`). The helpers behind them are in support/servers.py.
"""
from __future__ import annotations

import pytest

from support.scripted import ScriptedEngine
from support.servers import KEY, serve_app, serve_scripted, start_server_process, stop_server_process
from unsloth_min.app import App
from unsloth_min.auth import Authenticator
from unsloth_min.tools import ToolOptions, ToolRegistry


@pytest.fixture
def scripted_server():
    with serve_scripted() as running:
        yield running


@pytest.fixture
def tool_server(tmp_path):
    """The scripted server with the real server tools (short timeout) under a temporary home."""
    engine = ScriptedEngine()
    tools = ToolRegistry(ToolOptions(home=tmp_path, timeout=3.0, max_kernels=4))
    with serve_app(App("scripted", Authenticator(None, [KEY]), engine, tools=tools), engine) as running:
        yield running


@pytest.fixture(scope="session")
def real_server(tmp_path_factory):
    # a server default cap keeps open-ended prompts (the seed page has some) short in tests
    running = start_server_process(str(tmp_path_factory.mktemp("home")), "--max-tokens", "200")
    yield running
    assert stop_server_process(running) == 0
