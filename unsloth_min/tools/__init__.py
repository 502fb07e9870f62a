"""Server tools (SPEC "Server tools"): what the model may call, and the registry that runs them.

Strategy: `TOOLS` is a plain table — name → the core `Tool` the model sees (a JSON schema) and the
one argument it needs. `ToolRegistry.execute(name, arguments, session)` parses the model's JSON,
runs the tool (python: a Jupyter kernel per session; bash: a sandboxed subprocess; web_search: an
HTTP search backend) and returns an `Outcome` — text for the model, never an exception: a tool that
fails, times out or is misused is something the model should read about and react to.
A `Session` is a working folder under `$UNSLOTH_MIN_HOME/sessions/` plus, for python, a kernel; a
request without `session_id` gets a throw-away one that `release()` removes after the request;
a named session's folder stays (its files outlive the kernel, which is reaped when idle).

Does not: decide when to call a tool (agent.py), or render results for a client (dialects/).
Tools run as the server's user (bash drops to `nobody` when the server is root); a key given with
`--api-key` is visible in /proc to the server's user — prefer stored keys when tools are on.
"""
from __future__ import annotations

import asyncio
import codecs
import hashlib
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..core import SERVER_TOOLS, Tool, new_id

log = logging.getLogger("unsloth_min.tools")

MAX_OUTPUT_CHARS = 8_000  # what one call feeds back: ~2k tokens, not a small model's whole context
DUCKDUCKGO_URL = "https://html.duckduckgo.com/html/"
# The only variables a tool process inherits: nothing named *KEY*, *TOKEN*, *SECRET* ever passes.
ENV_ALLOW = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TERM")
SESSION_NAME = re.compile(r"[^A-Za-z0-9_.-]")


def _schema(key: str, about: str) -> dict:
    return {"type": "object", "properties": {key: {"type": "string", "description": about}},
            "required": [key]}


TOOLS = {  # name → (what the model sees, the argument the tool reads)
    "python": (Tool("python", "Run Python code in a persistent Jupyter kernel (variables and imports "
                    "persist across calls of this session). Returns stdout, stderr, the value of "
                    "the last expression, or the error.",
                    _schema("code", "Python source to execute")), "code"),
    "bash": (Tool("bash", "Run a shell command with bash in this session's working directory. "
                  "Returns its combined stdout and stderr and the exit code.",
                  _schema("command", "the command line to run with bash -c")), "command"),
    "web_search": (Tool("web_search", "Search the web. Returns titles, URLs and snippets of the "
                        "top results.", _schema("query", "what to search for")), "query"),
}
assert tuple(TOOLS) == SERVER_TOOLS  # the names requests may use (core) are the tools run here


@dataclass(frozen=True)
class Outcome:
    content: str
    is_error: bool = False


TIMEOUT_S = 30.0       # wall clock per call
MAX_KERNELS = 8        # live Python kernels (sessions) at once
SESSION_IDLE_S = 1800.0  # seconds without a call before a session's kernel is shut down


@dataclass
class ToolOptions:
    home: Path
    timeout: float = TIMEOUT_S
    search_url: str | None = None  # a SearXNG base URL; None → DuckDuckGo's HTML endpoint
    duckduckgo_url: str = DUCKDUCKGO_URL
    bash_network: bool = True      # False → `unshare -rn` (no network) or refuse to run
    max_kernels: int = MAX_KERNELS
    session_idle: float = SESSION_IDLE_S
    max_output: int = MAX_OUTPUT_CHARS
    max_processes: int = 256       # bash: tasks a call may add to its user's count (RLIMIT_NPROC)


@dataclass
class Session:
    key: str            # "s:<session_id>" or "r:<hex>" (one request's throw-away session)
    folder: Path
    ephemeral: bool = False


class Capped:
    """Text that keeps its head and tail within `limit` characters, with a visible marker."""

    def __init__(self, limit: int):
        self.limit, self.head, self.tail, self.dropped = limit, [], "", 0
        self.size = 0
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed_bytes(self, data: bytes, final: bool = False) -> None:
        self.feed(self.decoder.decode(data, final))

    def feed(self, text: str) -> None:
        half = self.limit // 2
        if self.size < half:
            take = text[:half - self.size]
            self.head.append(take)
            self.size += len(take)
            text = text[len(take):]
        if text:
            joined = self.tail + text
            self.dropped += max(0, len(joined) - half)
            self.tail = joined[-half:] if half else ""

    def text(self) -> str:
        head = "".join(self.head)
        if not self.dropped:
            return head + self.tail
        return f"{head}\n[… {self.dropped} characters truncated …]\n{self.tail}"


def cap(text: str, limit: int) -> str:
    c = Capped(limit)
    c.feed(text)
    return c.text()


def tool_env(home: Path) -> dict[str, str]:
    """The whole environment of a tool process: an allow-list, plus HOME at its session folder."""
    env = {k: os.environ[k] for k in ENV_ALLOW if k in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.update(HOME=str(home), PYTHONUNBUFFERED="1", MPLBACKEND="Agg")
    return env


def session_folder_name(session_id: str) -> str:
    """A safe, stable folder name: readable prefix + a hash (no `..`, no `/`, no collisions)."""
    digest = hashlib.sha256(session_id.encode()).hexdigest()[:12]
    return f"s-{SESSION_NAME.sub('_', session_id)[:40]}-{digest}"


def parse_arguments(arguments: str, key: str) -> str | Outcome:
    """The one string argument a tool needs, or an Outcome telling the model what was wrong."""
    try:
        args = json.loads(arguments or "{}")
    except ValueError as e:
        return Outcome(f"error: the arguments are not valid JSON ({e}); send {{\"{key}\": \"…\"}}",
                       True)
    value = args.get(key) if isinstance(args, dict) else None
    if not isinstance(value, str):
        return Outcome(f"error: missing string argument '{key}'; send {{\"{key}\": \"…\"}}", True)
    return value


class ToolRegistry:
    """The three tools of one server: `execute` a call, `release` a request's session, `close`."""

    def __init__(self, options: ToolOptions):
        from .bash import BashRunner  # the tools import this module's helpers
        from .python import Kernels
        from .web_search import WebSearch
        self.options = options
        self.kernels = Kernels(self.options)
        self.runners = {"python": self.kernels.run, "bash": BashRunner(self.options).run,
                        "web_search": WebSearch(self.options).run}
        self.root = Path(self.options.home) / "sessions"
        self._cleanups: set[asyncio.Task] = set()

    @staticmethod
    def definitions(names) -> list[Tool]:
        return [TOOLS[n][0] for n in names if n in TOOLS]

    def open_session(self, session_id: str | None) -> Session:
        if session_id is None:
            hexid = new_id("", 8)
            return Session("r:" + hexid, self.root / f"r-{hexid}", ephemeral=True)
        return Session("s:" + session_id, self.root / session_folder_name(session_id))

    async def execute(self, name: str, arguments: str, session: Session) -> Outcome:
        if name not in self.runners:
            return Outcome(f"error: no tool named {name!r} (available: {', '.join(TOOLS)})", True)
        value = parse_arguments(arguments, TOOLS[name][1])
        if isinstance(value, Outcome):
            return value
        session.folder.mkdir(parents=True, exist_ok=True)
        try:
            return await self.runners[name](value, session)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a bug or an OS limit: the model reads it, the request goes on
            log.exception("tool %s failed", name)
            return Outcome(f"error: the {name} tool failed: {type(e).__name__}: {e}", True)

    def release(self, session: Session) -> None:
        """After a request: a throw-away session's kernel and folder go, in the background."""
        if session.ephemeral:
            task = asyncio.ensure_future(self._drop(session))
            self._cleanups.add(task)
            task.add_done_callback(self._cleanups.discard)

    async def _drop(self, session: Session) -> None:
        await self.kernels.drop(session.key)
        await asyncio.to_thread(shutil.rmtree, session.folder, True)

    async def close(self) -> None:
        """Server exit: every kernel shut down, every pending cleanup finished."""
        if self._cleanups:
            await asyncio.gather(*self._cleanups, return_exceptions=True)
        await self.kernels.close()
