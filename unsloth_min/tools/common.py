"""What every server tool shares: its options, the session it runs in, its outcome, capped output.

Strategy: plain values and two helpers, so that each tool (bash.py, python.py, web_search.py) and
the registry (__init__.py) import from here and nothing here imports them: the imports point one
way. `Capped` keeps the head and tail of a long output with a visible marker between them;
`tool_env` is the whole environment a tool process gets.

Does not: run anything, or know which tools exist (the registry's `TOOLS`).
"""
from __future__ import annotations

import codecs
import os
from dataclasses import dataclass
from pathlib import Path

MAX_OUTPUT_CHARS = 8_000  # what one call feeds back: ~2k tokens, not a small model's whole context
DUCKDUCKGO_URL = "https://html.duckduckgo.com/html/"
# The only variables a tool process inherits: nothing named *KEY*, *TOKEN*, *SECRET* ever passes.
ENV_ALLOW = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TERM")


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
