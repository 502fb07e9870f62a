"""Operating the server: what GET /metrics, /slots and /props show, and what the app notes about
each request for them.

Strategy: the app calls `begin`/`done` around every request (done once its response's last byte
is out: a stream's body is `Watched`), and passes a chat request's events through `watch`, which
notes the first output (time to first token) and each server tool's outcome as they go by. A
scrape then builds the families that live elsewhere — the engine's token and time totals under
llama-server's `llamacpp:` names (the same meaning, so its dashboards work), the slots, the
prompt cache, open connections — next to `ServerMetrics`' own. /slots shows what each slot holds
and does (sizes, ids, rates: never a prompt's text); /props the model, its template, the build
and the effective defaults, kept from the last load while the model sleeps.

Does not: route, check keys or shape errors (app.py), or count inside the engine (engine/stats.py).
"""
from __future__ import annotations

import time
from typing import AsyncIterator, Callable

from .core import ReasoningDelta, TextDelta, ToolCallDelta, ToolExecuted
from .engine.stats import SOURCES, EngineStats
from .metrics import PREFIX, Counter, Family, ServerMetrics

LLAMA = "llamacpp:"  # llama-server's prefix
OUTPUTS = (TextDelta, ReasoningDelta, ToolCallDelta, ToolExecuted)  # what ends the wait for a first token


class Watched:
    """An async iterator passed through: `on_item(item)` for each item, `on_close()` once,
    however it ends (exhausted, failed, closed, never started)."""

    def __init__(self, source: AsyncIterator, on_close: Callable[[], None],
                 on_item: Callable[[object], None] | None = None):
        self.source, self.on_close, self.on_item = source, on_close, on_item
        self.closed = False

    def __aiter__(self):
        return self

    async def __anext__(self):
        try:
            item = await self.source.__anext__()
        except BaseException:
            await self.aclose()
            raise
        if self.on_item is not None:
            self.on_item(item)
        return item

    async def aclose(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            aclose = getattr(self.source, "aclose", None)
            if aclose is not None:
                await aclose()
        finally:
            self.on_close()


class Ops:
    def __init__(self, stats: EngineStats | None = None):
        self.stats = stats or EngineStats()  # the engines' (cli.py gives the same one to each)
        self.metrics = ServerMetrics()
        self.connections: Callable[[], int] = lambda: 0  # open connections (set by cli.py)
        self.last_props: dict = {}  # the loaded model's, kept while it sleeps

    # ---- per request -----------------------------------------------------------------------------
    @staticmethod
    def begin(request) -> None:
        request.context["t0"] = time.monotonic()

    def done(self, request, dialect: str, status: int) -> None:
        route = request.context.get("route", "other")
        self.metrics.requests.inc(route, dialect, status)
        self.metrics.duration.observe(time.monotonic() - request.context["t0"], route)

    def watch(self, events: AsyncIterator, request, dialect: str, on_close: Callable[[], None]) -> Watched:
        first = [True]

        def saw(ev) -> None:
            if first[0] and isinstance(ev, OUTPUTS):
                first[0] = False
                self.metrics.ttft.observe(time.monotonic() - request.context["t0"], dialect)
            if isinstance(ev, ToolExecuted):
                self.metrics.tool_calls.inc(ev.call.name, "error" if ev.result.is_error else "ok")
        return Watched(events, on_close, saw)

    # ---- the routes' bodies ----------------------------------------------------------------------
    def families(self, engine, status: str) -> list[Family]:
        gauges = engine.gauges() if engine is not None else {}
        g = lambda name, help, value: Family(name, help).set(value)  # noqa: E731
        return engine_families(self.stats, gauges) + cache_families(self.stats, gauges) + [
            g(PREFIX + "open_connections", "Client connections open now.", self.connections()),
            g(PREFIX + "model_loaded", "1 while the model is loaded, 0 while it loads or sleeps.",
              int(status == "ok")),
        ] + self.metrics.families()

    def props(self, engine, status: str) -> dict:
        if engine is not None:
            self.last_props = engine.props()
        return {**self.last_props, "status": status}

    @staticmethod
    def slots(engine) -> list[dict]:
        return engine.slots() if engine is not None else []


def engine_families(s: EngineStats, gauges: dict) -> list[Family]:
    """llama-server's series, from the engines' totals and the loaded one's gauges."""
    c = lambda name, help, value: Counter(LLAMA + name, help).set(value)  # noqa: E731
    g = lambda name, help, value: Family(LLAMA + name, help).set(value)  # noqa: E731
    per = lambda n, d: n / d if d else 0.0  # noqa: E731
    capacity = gauges.get("kv_capacity", 0)
    return [
        c("prompt_tokens_total", "Number of prompt tokens processed.", s.prompt_tokens),
        c("prompt_seconds_total", "Prompt process time", float(s.prompt_seconds)),
        c("tokens_predicted_total", "Number of generation tokens processed.", s.predicted_tokens),
        c("tokens_predicted_seconds_total", "Predict process time", float(s.predicted_seconds)),
        c("n_decode_total", "Total number of llama_decode() calls", s.decodes),
        g("n_busy_slots_per_decode", "Average number of busy slots per llama_decode() call",
          per(s.busy_slots, s.decodes)),
        g("n_tokens_max", "Largest observed n_tokens.", s.max_batch),
        g("prompt_tokens_seconds", "Average prompt throughput in tokens/s.",
          per(s.prompt_tokens, s.prompt_seconds)),
        g("predicted_tokens_seconds", "Average generation throughput in tokens/s.",
          per(s.predicted_tokens, s.predicted_seconds)),
        g("requests_processing", "Number of requests processing.", gauges.get("processing", 0)),
        g("requests_deferred", "Number of requests deferred.", gauges.get("deferred", 0)),
        g("kv_cache_tokens", "KV-cache tokens.", gauges.get("kv_tokens", 0)),
        g("kv_cache_usage_ratio", "KV-cache usage. 1 means 100 percent usage.",
          per(gauges.get("kv_tokens", 0), capacity)),
    ]


def cache_families(s: EngineStats, gauges: dict) -> list[Family]:
    """The prompt cache (engine/prompt_cache.py): hits and reused tokens by source, its size."""
    hits = Counter(PREFIX + "prompt_cache_hits_total", "Requests that reused a cached prompt "
                   "prefix, by where it came from (slot: the slot's own cells; copy: a busy "
                   "slot's; ram, disk: a saved state).", ("source",))
    reused = Counter(PREFIX + "prompt_cache_reused_tokens_total", "Prompt tokens reused instead "
                     "of computed, by source.", ("source",))
    size = Family(PREFIX + "prompt_cache_bytes", "Saved prompt states held now, by where.", ("where",))
    for source in SOURCES:
        hits.set(s.cache_hits[source], source)
        reused.set(s.cache_reused[source], source)
    for where in ("ram", "disk"):
        size.set(gauges.get(f"cache_{where}_bytes", 0), where)
    return [hits, reused, size]
