"""web_search: a search backend over HTTP — DuckDuckGo's HTML page, or a SearXNG instance.

Strategy: the standard library only. media.py's `fetch` gets the page (in a thread, so the event
loop never waits) under one deadline for the whole search — `--tool-timeout`, as for every tool,
however slowly the backend trickles its answer — and a cap: a page over `MAX_PAGE_BYTES` is an
error, never silently cut (a cut JSON answer would not parse, a cut HTML page would look like
fewer results). `html.parser` reads DuckDuckGo's result page (`a.result__a` = title and link,
whose real target hides in the `uddg` parameter of a redirect; `.result__snippet` = the snippet),
and SearXNG answers JSON (`/search?q=…&format=json`, flag `--search-url`). Results become a short
numbered list of title / URL / snippet, capped. Any failure — offline, DNS, timeout, HTTP error,
an unexpected page — becomes an error text for the model, never an exception for the client.

Does not: fetch the result pages themselves, cache, retry, or use an HTTP proxy.
"""
from __future__ import annotations

import asyncio
import http.client
import json
import urllib.parse
from dataclasses import dataclass
from html.parser import HTMLParser

from ..media import FetchError, MediaLimits, fetch
from .common import Outcome, Session, ToolOptions, cap

MAX_RESULTS = 5
TITLE_CHARS, SNIPPET_CHARS = 200, 400
MAX_PAGE_BYTES = 2 * 1024 * 1024  # a result page is ~50 KB: anything near this is not one
HEADERS = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) unsloth_min web_search", "Accept": "*/*"}


@dataclass
class Result:
    title: str
    url: str
    snippet: str = ""


class DuckDuckGoPage(HTMLParser):
    """Collects results from html.duckduckgo.com: each `result__a` link opens a new one."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.results: list[Result] = []
        self.field: str | None = None  # "title" | "snippet" while inside one
        self.tag, self.depth, self.text = "", 0, []

    def handle_starttag(self, tag, attrs):
        if self.field:
            self.depth += tag == self.tag
            return
        attrs = dict(attrs)
        classes = (attrs.get("class") or "").split()
        if "result__a" in classes:
            self.results.append(Result("", real_url(attrs.get("href") or "")))
            self._open("title", tag)
        elif "result__snippet" in classes and self.results:
            self._open("snippet", tag)

    def _open(self, name: str, tag: str) -> None:
        self.field, self.tag, self.depth, self.text = name, tag, 1, []

    def handle_endtag(self, tag):
        if self.field and tag == self.tag:
            self.depth -= 1
            if self.depth == 0:
                setattr(self.results[-1], self.field, " ".join("".join(self.text).split()))
                self.field = None

    def handle_data(self, data):
        if self.field:
            self.text.append(data)


def real_url(href: str) -> str:
    """DuckDuckGo links go through `//duckduckgo.com/l/?uddg=<target>`: return the target."""
    parts = urllib.parse.urlsplit(href)
    target = urllib.parse.parse_qs(parts.query).get("uddg")
    if parts.path.startswith("/l/") and target:
        return target[0]
    return "https:" + href if href.startswith("//") else href


def search_duckduckgo(base: str, query: str, limits: MediaLimits) -> list[Result]:
    page = DuckDuckGoPage()
    url = base + "?" + urllib.parse.urlencode({"q": query})
    page.feed(fetch(url, limits, HEADERS).decode("utf-8", "replace"))
    return [r for r in page.results if r.url and "duckduckgo.com/y.js" not in r.url]  # no ads


def search_searxng(base: str, query: str, limits: MediaLimits) -> list[Result]:
    url = base.rstrip("/") + "/search?" + urllib.parse.urlencode({"q": query, "format": "json"})
    data = json.loads(fetch(url, limits, HEADERS))
    if not isinstance(data, dict) or not isinstance(data.get("results", []), list):
        raise ValueError("unexpected SearXNG answer")
    return [Result(str(r.get("title", "")), str(r.get("url", "")), str(r.get("content") or ""))
            for r in data.get("results", []) if isinstance(r, dict) and r.get("url")]


def render(query: str, results: list[Result]) -> str:
    if not results:
        return f"No results for {query!r}."
    lines = []
    for i, r in enumerate(results[:MAX_RESULTS], 1):
        lines.append(f"{i}. {r.title[:TITLE_CHARS] or r.url}\n   {r.url}")
        if r.snippet:
            lines.append(f"   {r.snippet[:SNIPPET_CHARS]}")
    return "\n".join(lines)


class WebSearch:
    def __init__(self, options: ToolOptions):
        self.options = options

    def search(self, query: str) -> list[Result]:
        limits = MediaLimits(max_bytes=MAX_PAGE_BYTES, timeout_s=self.options.timeout)
        if self.options.search_url:
            return search_searxng(self.options.search_url, query, limits)
        return search_duckduckgo(self.options.duckduckgo_url, query, limits)

    async def run(self, query: str, session: Session) -> Outcome:
        if not query.strip():
            return Outcome("error: the query is empty", True)
        try:
            results = await asyncio.to_thread(self.search, query)
        except FetchError as e:  # "it took longer than 30 s", "it is larger than … bytes", …
            return failed(f"the search page could not be fetched: {e}")
        except (OSError, ValueError, http.client.HTTPException) as e:  # refused, TLS, bad JSON
            return failed(f"{type(e).__name__}: {e}")
        return Outcome(cap(render(query, results), self.options.max_output))


def failed(reason: str) -> Outcome:
    return Outcome(f"error: the web search failed ({reason}); answer without it, or try again "
                   "later", True)
