"""The server tools themselves, called through the registry: real kernels, real bash, a local
stand-in for the search backends (127.0.0.1 only — never the internet)."""
from __future__ import annotations

import ast
import asyncio
import graphlib
import importlib.util
import json
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from support.servers import KEY, free_port, serve_http, wait_for
from support.procs import processes_with
from unsloth_min import tools as tools_package
from unsloth_min.tools import Capped, ToolOptions, ToolRegistry, cap, session_folder_name
from unsloth_min.tools.web_search import MAX_PAGE_BYTES, real_url

SECRET = "sk-unsloth-" + "5" * 32


def execute(registry: ToolRegistry, name: str, session, **args):
    return registry.kernels_loop.run_until_complete(
        registry.execute(name, json.dumps(args), session))


@pytest.fixture
def tools(tmp_path):
    """A registry on its own event loop (kernels belong to the loop that started them)."""
    loop = asyncio.new_event_loop()
    registry = ToolRegistry(ToolOptions(home=tmp_path, timeout=3.0, max_kernels=2, max_processes=64))
    registry.kernels_loop = loop
    yield registry
    loop.run_until_complete(registry.close())
    loop.close()


def sibling_imports(path: Path, siblings: set[str]) -> set[str]:
    """The modules of unsloth_min.tools that `path` imports anywhere, in functions too, however
    written (`from . import x`, `from unsloth_min.tools.x import …`, `import unsloth_min.tools`…);
    `__init__` for the package itself."""
    package, found = "unsloth_min.tools", set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = importlib.util.resolve_name("." * node.level + (node.module or ""), package) \
                if node.level else node.module
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            if name == package:
                found.add("__init__")
            elif name.startswith(package + ".") and name.split(".")[2] in siblings:
                found.add(name.split(".")[2])
    return found


def test_tools_imports_point_one_way():
    """The registry (__init__) imports the tools, the tools import common.py, nothing imports back."""
    folder = Path(tools_package.__file__).parent
    siblings = {p.stem for p in folder.glob("*.py")}
    graph = {p.stem: sibling_imports(p, siblings) for p in folder.glob("*.py")}
    assert graph["common"] == set() and "__init__" not in set().union(*graph.values())
    list(graphlib.TopologicalSorter(graph).static_order())  # raises CycleError on any cycle


def test_capped_keeps_head_and_tail_with_a_marker():
    assert cap("abc", 10) == "abc"
    text = cap("H" * 50 + "x" * 1000 + "T" * 50, 100)
    assert text.startswith("H" * 50) and text.endswith("T" * 50)
    assert "[… 1000 characters truncated …]" in text
    c = Capped(10)
    c.feed_bytes("é".encode()[:1])
    c.feed_bytes("é".encode()[1:], final=True)
    assert c.text() == "é"  # a character split across reads survives


def test_session_folders_are_safe_and_distinct():
    for hostile in ("../../etc", "..", "a/../../b", "\0x"):
        name = session_folder_name(hostile)
        assert "/" not in name and "\0" not in name and name.startswith("s-")  # one plain file name
    assert session_folder_name("a/b") != session_folder_name("a_b")


def test_python_crash_timeout_and_recovery(tools):
    s = tools.open_session("crash")
    assert execute(tools, "python", s, code="x = 41\nprint('set')").content == "set"
    start = time.monotonic()
    out = execute(tools, "python", s, code="while True: pass")
    assert time.monotonic() - start < 3.0 + 3.0 and out.is_error
    assert "KeyboardInterrupt" in out.content and "interrupted" in out.content
    assert execute(tools, "python", s, code="x + 1").content == "42"  # state kept
    died = execute(tools, "python", s, code="import os; os._exit(1)")
    assert died.is_error and "kernel died" in died.content
    after = execute(tools, "python", s, code="'x' in globals(), 6 * 7")
    assert after.content == "(False, 42)" and not after.is_error  # a fresh kernel
    env = execute(tools, "python", s, code="import os; print(sorted(os.environ)); print(os.getcwd())")
    assert "KEY" not in env.content and "TOKEN" not in env.content
    assert env.content.splitlines()[-1] == str(s.folder)
    deaf = execute(tools, "python", s, code="import signal, time\n"
                   "signal.signal(signal.SIGINT, signal.SIG_IGN)\ntime.sleep(60)")
    assert deaf.is_error and "did not stop when interrupted" in deaf.content
    assert execute(tools, "python", s, code="1 + 1").content == "2"  # a fresh kernel again


def test_python_output_is_capped_and_images_named(tools):
    s = tools.open_session(None)
    out = execute(tools, "python", s, code="print('a' * 100000)")
    assert len(out.content) < tools.options.max_output + 100 and "characters truncated" in out.content
    img = execute(tools, "python", s, code="from IPython.display import Image, display\n"
                  "display(Image(data=b'\\x89PNG\\r\\n\\x1a\\n' + b'0' * 50, format='png'))")
    assert "[image/png output not shown to the model]" in img.content
    err = execute(tools, "python", s, code="1/0")
    assert err.is_error and "ZeroDivisionError" in err.content and "\x1b[" not in err.content


def test_kernel_cap_evicts_the_least_recently_used(tools):
    a, b, c = (tools.open_session(n) for n in "abc")
    execute(tools, "python", a, code="v = 'a'")
    execute(tools, "python", b, code="v = 'b'")
    execute(tools, "python", c, code="v = 'c'")  # max_kernels=2: a's kernel goes
    assert len(tools.kernels.live) == 2 and "s:a" not in tools.kernels.live
    again = execute(tools, "python", a, code="'v' in globals()")
    assert "kernel was shut down" in again.content and again.content.endswith("False")


def test_a_live_kernel_does_not_wait_behind_another_start(tools):
    """Starting a kernel holds the registry's guard for seconds; a session whose kernel is
    already up must not queue behind it."""
    a = tools.open_session("a")
    execute(tools, "python", a, code="x = 41")

    async def while_another_starts():
        async with tools.kernels.guard:  # as a cold start of another session does
            return await asyncio.wait_for(tools.execute("python", json.dumps({"code": "x + 1"}), a), 10)

    assert tools.kernels_loop.run_until_complete(while_another_starts()).content == "42"


def test_idle_sessions_are_reaped(tools):
    s = tools.open_session("idle")
    execute(tools, "python", s, code="1")
    tools.options.session_idle = 0.0
    tools.kernels_loop.run_until_complete(tools.kernels.reap())
    assert not tools.kernels.live


def test_bash_output_capped_env_scrubbed_and_jobs_killed(tools, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("UNSLOTH_MIN_API_KEY", KEY)
    s = tools.open_session("sh")
    out = execute(tools, "bash", s, command="yes | head -c 10000000")
    assert "characters truncated" in out.content and len(out.content) < tools.options.max_output + 100
    assert out.content.endswith("[exit code 0]")
    env = execute(tools, "bash", s, command="env; pwd")
    assert SECRET not in env.content and KEY not in env.content and "PATH=" in env.content
    assert env.content.splitlines()[-2] == str(s.folder)
    start = time.monotonic()
    bg = execute(tools, "bash", s, command="sleep 77.5 & echo started")
    assert time.monotonic() - start < 2 and bg.content.startswith("started")
    assert not processes_with("sleep 77.5")  # no background job outlives its call
    fail = execute(tools, "bash", s, command="echo oops >&2; exit 3")
    assert fail.is_error and fail.content == "oops\n[exit code 3]"


def test_bash_fork_bomb_is_contained(tools):
    s = tools.open_session(None)
    start = time.monotonic()
    out = execute(tools, "bash", s, command="bomb_x9(){ bomb_x9 | bomb_x9 & }; bomb_x9; sleep 9")
    assert time.monotonic() - start < 3.0 + 5 and out.is_error
    assert wait_for(lambda: not processes_with("bomb_x9"))


def test_bash_timeout_kills_the_group(tools):
    s = tools.open_session(None)
    start = time.monotonic()
    out = execute(tools, "bash", s, command="sleep 66.5; echo never")
    assert 2.9 < time.monotonic() - start < 6 and "ran past the 3 s limit" in out.content
    assert not processes_with("sleep 66.5")


# ---- web_search against a local stand-in -------------------------------------------------------
DDG_PAGE = """<html><body>
<div class="result results_links"><h2 class="result__title">
<a rel="nofollow" class="result__a" href="//duckduckgo.com/l/?uddg=https%3A%2F%2Fdocs.python.org%2F3.13%2Fwhatsnew%2F3.13.html&amp;rut=x">What&#x27;s New In <b>Python 3.13</b></a></h2>
<a class="result__snippet" href="x">A new <b>interactive</b> interpreter &amp; more.</a></div>
<div class="result result--ad"><a class="result__a" href="https://duckduckgo.com/y.js?ad_domain=x">Ad</a></div>
<div class="result"><a class="result__a" href="https://example.org/b">Second</a>
<div class="result__snippet">Plain snippet</div></div>
</body></html>"""


class StandIn(BaseHTTPRequestHandler):
    """/html/ (DuckDuckGo), /search?format=json (SearXNG), /trickle/ (a byte every 50 ms for 10 s),
    /huge/ (a 3 MiB page without a Content-Length)."""

    def do_GET(self):
        if self.path.startswith(("/trickle/", "/huge/")):
            return self.stream(self.path.startswith("/trickle/"))
        if self.path.startswith("/html/"):
            body, kind = DDG_PAGE.encode(), "text/html; charset=utf-8"
        elif self.path.startswith("/search?") and "format=json" in self.path:
            body = json.dumps({"results": [{"title": "S", "url": "https://s.example/", "content": "c"}]
                               }).encode()
            kind = "application/json"
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def stream(self, trickle: bool) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        try:
            for _ in range(200 if trickle else 48):
                self.wfile.write(b"x" if trickle else b"x" * 65536)
                time.sleep(0.05 if trickle else 0)
        except (BrokenPipeError, ConnectionResetError):  # the search gave up: as it should
            pass

    def log_message(self, *args):
        pass


@pytest.fixture
def stand_in():
    with serve_http(StandIn) as url:
        yield url


def test_web_search_duckduckgo_and_searxng(tools, stand_in):
    s = tools.open_session(None)
    tools.options.duckduckgo_url = stand_in + "/html/"
    out = execute(tools, "web_search", s, query="python 3.13")
    assert not out.is_error
    assert out.content == ("1. What's New In Python 3.13\n   https://docs.python.org/3.13/whatsnew/3.13.html\n"
                           "   A new interactive interpreter & more.\n"
                           "2. Second\n   https://example.org/b\n   Plain snippet")
    tools.options.search_url = stand_in
    out = execute(tools, "web_search", s, query="q")
    assert out.content == "1. S\n   https://s.example/\n   c"


def test_web_search_offline_is_an_error_text(tools):
    s = tools.open_session(None)
    tools.options.duckduckgo_url = f"http://127.0.0.1:{free_port()}/html/"  # nothing listens
    out = execute(tools, "web_search", s, query="anything")
    assert out.is_error and out.content.startswith("error: the web search failed")
    assert execute(tools, "web_search", s, query="").is_error


def test_web_search_has_one_deadline_and_a_stated_cap(tools, stand_in):
    s = tools.open_session(None)
    tools.options.timeout = 1.0  # --tool-timeout: for the whole search, however slow each byte
    tools.options.duckduckgo_url = stand_in + "/trickle/"
    started = time.monotonic()
    out = execute(tools, "web_search", s, query="q")
    assert 0.9 < time.monotonic() - started < 3.0  # (the stand-in trickles for 10 s)
    assert out.is_error and "took longer than 1 s" in out.content
    tools.options.duckduckgo_url = stand_in + "/huge/"  # no silent cut to a page that parses
    out = execute(tools, "web_search", s, query="q")
    assert out.is_error and f"larger than {MAX_PAGE_BYTES} bytes" in out.content


def test_real_url():
    assert real_url("//duckduckgo.com/l/?uddg=https%3A%2F%2Fa.b%2Fc") == "https://a.b/c"
    assert real_url("//a.b/c") == "https://a.b/c" and real_url("https://x/") == "https://x/"


def test_bad_arguments_reach_the_model(tools):
    s = tools.open_session(None)
    out = tools.kernels_loop.run_until_complete(tools.execute("bash", "{not json", s))
    assert out.is_error and "not valid JSON" in out.content
    out = tools.kernels_loop.run_until_complete(tools.execute("bash", '{"cmd": "ls"}', s))
    assert out.is_error and "'command'" in out.content
