"""The application: routes, keys, JSON vs SSE, and errors in each dialect's shape.

Strategy: a plain route table maps (method, path) to a handler and the dialect that speaks there
(dialects/*: `DIALECT`), so errors, parsing, encoding and the Responses store hooks all come from
the route, never from sniffing the path. A chat route reads the JSON body, lets its dialect parse
it into a `ChatRequest`, pulls the engine's first event (`Started`) before committing to a status
— so a bad request or an over-long prompt is still a clean 4xx — then either replays the events
through the dialect's encoder into one JSON body or streams the encoder's events as SSE
(pacing.py). Whatever ends the response (client gone, error, shutdown) closes the event
iterator, which cancels the generation. Responses are kept in a bounded `ResponseStore` for
`previous_response_id` and `GET /v1/responses/{id}`.

Does not: parse HTTP (http/), translate wire JSON (dialects/), frame SSE (pacing.py), or touch
llama.cpp (engine/).
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import AsyncIterator

from . import agent
from .core import ApiError, Finish
from .dialects import anthropic_messages, openai_chat, openai_responses
from .guard import Guard
from .http import SSE_HEADERS, Request, Response, StreamResponse
from .media import MediaLimits, load_images
from .pacing import ClosingBody, sse_body
from .responses_store import ResponseStore

log = logging.getLogger("unsloth_min")

MAX_JSON_DEPTH = 100  # deeper bodies are a 400, before any recursive code (json.dumps, schema
#   to grammar, Jinja) can hit Python's recursion limit on them and turn into a 500
# the only paths answered without a key: health, and the paths Claude Code probes before its first
# request (HEAD / in 2.1.197, HEAD /api/hello in 2.1.332)
PUBLIC = {"/health", "/", "/api/hello"}
ID_PATHS = ("/v1/models/", "/v1/responses/")  # routes whose last segment is an {id}
HEARTBEAT_S = 15.0  # a stream whose dialect has heartbeat() sends one after this much silence
OPENAI, ANTHROPIC, RESPONSES = openai_chat.DIALECT, anthropic_messages.DIALECT, openai_responses.DIALECT
DIALECTS = (ANTHROPIC, RESPONSES, OPENAI)  # an unknown path: the first whose prefix it has


def json_response(status: int, payload, headers: list | None = None) -> Response:
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
    return Response(status, [("Content-Type", "application/json")] + (headers or []), body)


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def parse_json_body(request: Request) -> dict:
    try:  # RecursionError: `[[[…` deep enough to exhaust the stack inside json.loads
        body = json.loads(request.body, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise ApiError(400, "invalid_request_error",
                       f"We could not parse the JSON body of your request: {e}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_request_error", "The request body must be a JSON object.")
    if json_depth(body) > MAX_JSON_DEPTH:
        raise ApiError(400, "invalid_request_error",
                       f"The JSON body is nested more than {MAX_JSON_DEPTH} levels deep.")
    return body


def json_depth(value) -> int:
    """Nesting depth of a parsed JSON value, stopping past the limit: a depth-first walk with a
    stack of iterators, so neither recursion nor memory grows with anything but the depth."""
    deepest, stack = 0, [iter([value])]
    while stack and deepest <= MAX_JSON_DEPTH:
        for item in stack[-1]:
            if isinstance(item, (dict, list)):
                stack.append(iter(item.values() if isinstance(item, dict) else item))
                deepest = max(deepest, len(stack) - 1)
                break
        else:
            stack.pop()
    return deepest


class App:
    def __init__(self, model_id: str, auth, engine=None, tools=None,
                 max_tool_calls: int = agent.DEFAULT_MAX_CALLS,
                 media: MediaLimits = MediaLimits(), guard: Guard | None = None):
        self.model_id = model_id
        self.auth = auth
        self.guard = guard or Guard()  # Host, CORS and Content-Type checks; loopback by default
        self.engine = engine  # None while the model loads: /health says so, chat routes 503
        self.tools = tools  # a ToolRegistry; None: requests with enable_tools get no server tools
        self.max_tool_calls = max_tool_calls
        self.media = media
        self.created = int(time.time())
        self.heartbeat_s = HEARTBEAT_S
        self.responses = ResponseStore()
        self.routes = {  # (method, path) → (handler, the dialect spoken there)
            ("GET", "/health"): (self.health, OPENAI),
            ("GET", "/"): (self.health, OPENAI),
            ("GET", "/api/hello"): (self.health, OPENAI),
            ("GET", "/v1/models"): (self.models, OPENAI),
            ("GET", "/v1/models/{id}"): (self.model_info, OPENAI),
            ("POST", "/v1/chat/completions"): (self.complete, OPENAI),
            ("POST", "/v1/messages"): (self.complete, ANTHROPIC),
            ("POST", "/v1/messages/count_tokens"): (self.count_tokens, ANTHROPIC),
            ("POST", "/v1/responses"): (self.complete, RESPONSES),
            ("GET", "/v1/responses/{id}"): (self.get_response, RESPONSES),
        }

    # ---- entry point -----------------------------------------------------------------------------
    async def handle(self, request: Request) -> Response | StreamResponse:
        try:
            response = self.guard.check(request) or await self._authorized(request)
        except ApiError as e:
            response = self._error(request, e)
        return self.guard.decorate(request, response)

    def screen(self, request: Request) -> Response | None:
        """A head that asks for `100 Continue`: the guard's or the key's refusal, if any, so the
        client never sends a body that would be refused."""
        try:
            self.guard.check(request)
            self._check_key(request)
        except ApiError as e:
            return self.guard.decorate(request, self._error(request, e))
        return None

    def _error(self, request: Request, e: ApiError) -> Response:
        return json_response(e.status, self._find(request)[1].render_error(e), e.headers)

    def _check_key(self, request: Request) -> None:
        # the key is checked before routing: without one, nothing about the routes leaks
        if request.path not in PUBLIC and not self.auth.check(request.headers):
            raise ApiError(401, "authentication_error", "Invalid or missing API key. Send "
                           "'Authorization: Bearer sk-unsloth-…' or 'x-api-key'.",
                           code="invalid_api_key", headers=[("WWW-Authenticate", "Bearer")])

    async def _authorized(self, request: Request) -> Response | StreamResponse:
        self._check_key(request)
        handler, dialect, allowed, ident = self._find(request)
        if ident is not None:
            request.context["id"] = ident  # the {id} of the route's path
        if handler is None:
            if allowed:
                allow = ", ".join(allowed + (["HEAD"] if "GET" in allowed else []))
                raise ApiError(405, "invalid_request_error", f"Method {request.method} is not "
                               f"allowed on {request.path}.", headers=[("Allow", allow)])
            raise ApiError(404, "not_found_error", f"Unknown path: {request.path}")
        return await handler(request, dialect)

    def _find(self, request: Request):
        """(handler or None, the dialect that answers on this path, the methods it allows, the
        path's {id} or None)."""
        method = "GET" if request.method == "HEAD" else request.method
        path, ident = request.path.rstrip("/") or "/", None
        for prefix in ID_PATHS:
            if path.startswith(prefix) and "/" not in path[len(prefix):]:
                path, ident = prefix + "{id}", path[len(prefix):]
        found = self.routes.get((method, path))
        if found:
            return found[0], found[1], [], ident
        here = {m: d for (m, p), (_, d) in self.routes.items() if p == path}
        dialect = next(iter(here.values()), None) or next(
            (d for d in DIALECTS if request.path.startswith(d.prefix)), OPENAI)
        return None, dialect, sorted(here), ident

    def error_response(self, status: int, message: str) -> Response:
        """HTTP-level errors (bad framing, limits) in the OpenAI shape: no path is known yet."""
        kind = "server_error" if status >= 500 else "invalid_request_error"
        return json_response(status, OPENAI.render_error(ApiError(status, kind, message)))

    # ---- simple routes ---------------------------------------------------------------------------
    async def health(self, request: Request, dialect=None) -> Response:
        if self.engine is None:
            return json_response(503, {"status": "loading"})
        return json_response(200, {"status": "ok"})

    def _model_card(self, request: Request) -> dict:
        card = {"id": self.model_id, "object": "model", "created": self.created, "owned_by": "local"}
        if request.header("anthropic-version"):  # the Anthropic SDK's fields too (a superset)
            created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.created))
            card.update(type="model", display_name=self.model_id, created_at=created)
        return card

    async def models(self, request: Request, dialect=None) -> Response:
        body = {"object": "list", "data": [self._model_card(request)]}
        if request.header("anthropic-version"):
            body.update(has_more=False, first_id=self.model_id, last_id=self.model_id)
        return json_response(200, body)

    async def model_info(self, request: Request, dialect=None) -> Response:
        if request.context["id"] != self.model_id:
            raise ApiError(404, "not_found_error",
                           f"The model '{request.context['id']}' does not exist.", param="model")
        return json_response(200, self._model_card(request))

    async def get_response(self, request: Request, dialect=None) -> Response:
        stored = self.responses.get(request.context["id"])
        if stored is None:
            raise ApiError(404, "not_found_error",
                           f"Response with id '{request.context['id']}' not found.", param="id")
        return json_response(200, stored.response)

    # ---- chat routes -----------------------------------------------------------------------------
    def _engine(self):
        if self.engine is None:
            raise ApiError(503, "overloaded_error", "The model is still loading.",
                           headers=[("Retry-After", "1")])
        return self.engine

    async def _engine_for(self, req):
        """The engine, and `req` with its remote images fetched (only if the model can see them)."""
        engine = self._engine()
        return engine, await load_images(req, self.media, engine.accepts_images)

    async def count_tokens(self, request: Request, dialect) -> Response:
        req = dialect.parse_count(parse_json_body(request))
        engine, req = await self._engine_for(req)
        return json_response(200, {"input_tokens": await asyncio.to_thread(engine.count_tokens, req)})

    async def complete(self, request: Request, dialect):
        """Any dialect: parse → (the store's conversation) → generate → one JSON body replayed by
        the dialect's encoder, or its SSE from the first event on; the answer is kept if the
        dialect keeps answers."""
        req = dialect.parse_request(parse_json_body(request))
        if dialect.prepare:
            req = dialect.prepare(req, self.responses)
        encoder = dialect.encoder(req, self.model_id)

        def finished(ev: Finish) -> None:
            note_usage(request, ev)
            if dialect.keep:
                dialect.keep(req, encoder.final(), self.responses)
        events = await self.generate(req)
        if not req.stream:
            collected = await self.collect(events)
            payload = encoder.replay(collected)
            finish = next((ev for ev in reversed(collected) if isinstance(ev, Finish)), None)
            if finish is not None:
                finished(finish)
            return json_response(200, payload)
        first = await events.__anext__()  # errors up to here are still a clean JSON 4xx
        body = ClosingBody(sse_body(first, events, encoder, self.heartbeat_s, finished), events)
        return StreamResponse(200, list(SSE_HEADERS), body)

    async def generate(self, req):
        """The engine's events (once `req`'s images are loaded); with server tools asked for, the
        agent's loop around the engine."""
        engine, req = await self._engine_for(req)
        if self.tools is not None and agent.wants_tools(req):
            return agent.run(engine, self.tools, req, self.max_tool_calls)
        return engine.generate(req)

    @staticmethod
    async def collect(events: AsyncIterator) -> list:
        out = []
        try:
            async for ev in events:
                out.append(ev)
        finally:
            await events.aclose()
        return out


def note_usage(request: Request, finish: Finish) -> None:
    u = finish.usage
    request.context["log"] = f"tokens={u.prompt_tokens}+{u.completion_tokens} cached={u.cached_tokens}"
