"""Servers for the tests: an in-process server over a scripted engine, and the real server as a process.

`scripted_server` runs App + HttpServer on 127.0.0.1:0 in a thread with its own event loop;
`tool_server` is the same with the real server tools (kernels, bash, web_search) behind it.
`real_server` starts `python -m unsloth_min` on the embedded SmolLM2-135M once per session, exactly
as a user would (flags, key, SIGTERM at the end).
"""
from __future__ import annotations

import asyncio
import contextlib
import http.client
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

from .procs import children
from .scripted import ScriptedEngine
from unsloth_min.app import App
from unsloth_min.auth import Authenticator
from unsloth_min.http import HttpServer, Limits
from unsloth_min.tools import ToolOptions, ToolRegistry

KEY = "sk-unsloth-" + "0123456789abcdef" * 2
TEST_CACHE_BOUNDS = (("--cache-ram", "1024"), ("--cache-disk", "2"))


@dataclass
class Running:
    host: str
    port: int
    key: str
    engine: object = None
    app: object = None
    loop: object = None
    proc: object = None
    log: str | None = None

    @property
    def server_pid(self) -> int:
        """The server process itself: the supervisor's child (`proc` is the supervisor)."""
        kids = children(self.proc.pid)
        assert len(kids) == 1, f"the supervisor {self.proc.pid} has children {kids}"
        return kids[0]

    def log_size(self) -> int:
        return os.path.getsize(self.log)

    def log_text(self, since: int = 0) -> str:
        """The server's log from byte `since` on (a session-wide server's log holds every test's)."""
        with open(self.log, errors="replace") as f:
            f.seek(since)
            return f.read()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def request(self, method: str, path: str, body=None, headers=None, key=True, timeout=300):
        """(status, headers dict with lower-case names, body bytes)."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        hdrs = {"Content-Type": "application/json"} if body is not None else {}
        if key:
            hdrs["Authorization"] = f"Bearer {self.key}"
        hdrs.update(headers or {})
        data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        out = resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        conn.close()
        return out

    def json(self, method: str, path: str, body=None, **kw):
        status, headers, data = self.request(method, path, body, **kw)
        return status, json.loads(data) if data else None


def sse_events(data: bytes) -> list[tuple[str | None, str]]:
    """Split an SSE body into (event, data) pairs."""
    out = []
    for block in data.decode().split("\n\n"):
        if not block.strip():
            continue
        event, lines = None, []
        for line in block.split("\n"):
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                lines.append(line[6:])
        out.append((event, "\n".join(lines)))
    return out


SCRIPTED_LIMITS = Limits(header_timeout=2, keepalive_timeout=5)


@contextlib.contextmanager
def serve_app(app, engine, limits: Limits = SCRIPTED_LIMITS):
    """Run `app` on 127.0.0.1:0 in a thread with its own loop; yields the Running handle."""
    loop = asyncio.new_event_loop()
    server = HttpServer(app.handle, error_response=app.error_response, limits=limits,
                        screen=app.screen)
    app.ops.connections = lambda: server.open_connections  # (as cli.serve does)
    started = threading.Event()

    def run():
        asyncio.set_event_loop(loop)
        loop.run_until_complete(server.start("127.0.0.1", 0))
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    started.wait(10)
    try:
        yield Running("127.0.0.1", server.port, KEY, engine, app, loop)
    finally:
        asyncio.run_coroutine_threadsafe(server.shutdown(1.0), loop).result(10)
        if app.tools is not None:
            asyncio.run_coroutine_threadsafe(app.tools.close(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@contextlib.contextmanager
def serve_scripted(limits: Limits = SCRIPTED_LIMITS, guard=None):
    """App + HttpServer over a ScriptedEngine."""
    engine = ScriptedEngine()
    with serve_app(App("scripted", Authenticator(None, [KEY]), engine, guard=guard), engine, limits) as running:
        yield running


@contextlib.contextmanager
def serve_http(handler: type[http.server.BaseHTTPRequestHandler]):
    """A local stand-in web server on 127.0.0.1 (an image host, a search engine): its base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def wait_for(predicate, timeout: float = 5.0) -> bool:
    """Poll `predicate` until it holds or `timeout` seconds pass; its last answer."""
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.02)
    return bool(predicate())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def die_with_parent() -> None:
    """In the child: SIGTERM when the test process dies, so no server outlives a killed run."""
    import ctypes
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def launch_server_process(tmp_home: str, *args: str, main: list[str] | None = None,
                          env: dict | None = None) -> Running:
    """`python -m unsloth_min ARGS` (or `python MAIN… ARGS`) on a free port, started, not waited for."""
    port = free_port()
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this checkout, first
    env = dict(os.environ, UNSLOTH_MIN_HOME=tmp_home, PYTHONUNBUFFERED="1", **(env or {}),
               PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    # a file, not a pipe: nobody reads a pipe while tests run, and a full one would block the server
    log = open(os.path.join(tmp_home, "server.log"), "wb")
    # the prompt cache's defaults (a quarter of the free RAM, 8 GiB of disk) are for one server on
    # a machine: test servers, several at once, keep to less unless a test says otherwise
    bounds = [flag for flag in TEST_CACHE_BOUNDS if flag[0] not in args]
    proc = subprocess.Popen([sys.executable, *(main or ["-m", "unsloth_min"]), "-p", str(port),
                             "--api-key", KEY, *[x for flag in bounds for x in flag], *args],
                            env=env, stdout=log,
                            stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
    return Running("127.0.0.1", port, KEY, proc=proc, log=log.name)


def healthy(running: Running) -> bool:
    try:
        return running.request("GET", "/health", key=False, timeout=2)[0] == 200
    except OSError:
        return False


def start_server_process(tmp_home: str, *args: str, main: list[str] | None = None,
                         env: dict | None = None) -> Running:
    """`launch_server_process`, once healthy."""
    running = launch_server_process(tmp_home, *args, main=main, env=env)
    deadline = time.time() + 120
    while time.time() < deadline:
        if running.proc.poll() is not None:
            raise RuntimeError(f"server exited: {open(running.log, errors='replace').read()}")
        if healthy(running):
            return running
        time.sleep(0.2)
    running.proc.kill()
    raise RuntimeError("server did not become healthy")


def stop_server_process(running: Running) -> int:
    running.proc.send_signal(signal.SIGTERM)
    try:
        return running.proc.wait(30)
    finally:
        if running.proc.poll() is None:
            running.proc.kill()

