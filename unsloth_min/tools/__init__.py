"""Server tools (SPEC "Server tools"): what the model may call, and the registry that runs them.

Strategy: `TOOLS` is a plain table — name → the core `Tool` the model sees (a JSON schema) and the
one argument it needs. `ToolRegistry.execute(name, arguments, session)` parses the model's JSON,
runs the tool (python: a Jupyter kernel per session; bash: a sandboxed subprocess; web_search: an
HTTP search backend) and returns an `Outcome` — text for the model, never an exception: a tool that
fails, times out or is misused is something the model should read about and react to.
A `Session` is a working folder under `$UNSLOTH_MIN_HOME/sessions/` plus, for python, a kernel; a
request without `session_id` gets a throw-away one that `release()` removes after the request;
a named session's folder stays (its files outlive the kernel, which is reaped when idle).

The tools share common.py (options, sessions, outcomes, capped output); this module imports them
and they never import it back.

Does not: decide when to call a tool (agent.py), or render results for a client (dialects/).
Tools run as the server's user (bash drops to `nobody` when the server is root); a key given with
`--api-key` is visible in /proc to the server's user — prefer stored keys when tools are on.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import shutil
from pathlib import Path

from ..core import SERVER_TOOLS, Tool, new_id
from .bash import BashRunner
from .common import Capped, Outcome, Session, ToolOptions, cap
from .python import Kernels
from .web_search import WebSearch

log = logging.getLogger("unsloth_min.tools")

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
__all__ = ["TOOLS", "Capped", "Outcome", "Session", "ToolOptions", "ToolRegistry", "cap",
           "parse_arguments", "session_folder_name"]


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
