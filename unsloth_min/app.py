"""The application: routes, keys, JSON vs SSE, and errors in each dialect's shape.

Strategy: a plain route table maps (method, path) to a handler. A chat route reads the JSON body,
lets its dialect parse it into a `ChatRequest`, pulls the engine's first event (`Started`) before
committing to a status — so a bad request or an over-long prompt is still a clean 4xx — then either
collects the events into one JSON body or streams them as SSE. Whatever ends the response (client
gone, error, shutdown) closes the event iterator, which cancels the generation. A stream whose
dialect has `heartbeat()` (Anthropic's ping) gets one after `heartbeat_s` of silence. Responses
are kept in a bounded `ResponseStore` for `previous_response_id` and `GET /v1/responses/{id}`.

Does not: parse HTTP (http/), translate wire JSON (dialects/), or touch llama.cpp (engine/).
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
from .http import SSE_HEADERS, Request, Response, StreamResponse, sse_event
from .media import MediaLimits, load_images
from .responses_store import ResponseStore

log = logging.getLogger("unsloth_min")

MAX_JSON_DEPTH = 100  # deeper bodies are a 400, before any recursive code (json.dumps, schema
#   to grammar, Jinja) can hit Python's recursion limit on them and turn into a 500
PUBLIC = {"/health"}  # the only path answered without a key
ID_PATHS = ("/v1/models/", "/v1/responses/")  # routes whose last segment is an {id}
HEARTBEAT_S = 15.0  # a stream whose dialect has heartbeat() sends one after this much silence

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


def error_shape(path: str):
    """Which dialect answers errors on this path (Anthropic clients expect their own shape)."""
    return anthropic_messages.render_error if path.startswith("/v1/messages") else openai_chat.render_error


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
        self.routes = {
            ("GET", "/health"): self.health,
            ("GET", "/v1/models"): self.models,
            ("GET", "/v1/models/{id}"): self.model_info,
            ("POST", "/v1/chat/completions"): self.chat,
            ("POST", "/v1/messages"): self.messages,
            ("POST", "/v1/messages/count_tokens"): self.count_tokens,
            ("POST", "/v1/responses"): self.create_response,
            ("GET", "/v1/responses/{id}"): self.get_response,
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

    @staticmethod
    def _error(request: Request, e: ApiError) -> Response:
        return json_response(e.status, error_shape(request.path)(e), e.headers)

    def _check_key(self, request: Request) -> None:
        # the key is checked before routing: without one, nothing about the routes leaks
        if request.path not in PUBLIC and not self.auth.check(request.headers):
            raise ApiError(401, "authentication_error", "Invalid or missing API key. Send "
                           "'Authorization: Bearer sk-unsloth-…' or 'x-api-key'.",
                           code="invalid_api_key", headers=[("WWW-Authenticate", "Bearer")])

    async def _authorized(self, request: Request) -> Response | StreamResponse:
        self._check_key(request)
        return await self._route(request)(request)

    def _route(self, request: Request):
        method = "GET" if request.method == "HEAD" else request.method
        path = request.path.rstrip("/") or "/"
        for prefix in ID_PATHS:
            if path.startswith(prefix) and "/" not in path[len(prefix):]:
                path, request.context["id"] = prefix + "{id}", path[len(prefix):]
        found = self.routes.get((method, path))
        if found:
            return found
        allowed = sorted({m for m, p in self.routes if p == path})
        if allowed:
            allow = ", ".join(allowed + (["HEAD"] if "GET" in allowed else []))
            raise ApiError(405, "invalid_request_error", f"Method {request.method} is not allowed "
                           f"on {request.path}.", headers=[("Allow", allow)])
        raise ApiError(404, "not_found_error", f"Unknown path: {request.path}")

    def error_response(self, status: int, message: str) -> Response:
        """HTTP-level errors (bad framing, limits) in the OpenAI shape: no path is known yet."""
        kind = "server_error" if status >= 500 else "invalid_request_error"
        return json_response(status, openai_chat.render_error(ApiError(status, kind, message)))

    # ---- simple routes ---------------------------------------------------------------------------
    async def health(self, request: Request) -> Response:
        if self.engine is None:
            return json_response(503, {"status": "loading"})
        return json_response(200, {"status": "ok"})

    def _model_card(self, request: Request) -> dict:
        card = {"id": self.model_id, "object": "model", "created": self.created, "owned_by": "local"}
        if request.header("anthropic-version"):  # the Anthropic SDK's fields too (a superset)
            created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.created))
            card.update(type="model", display_name=self.model_id, created_at=created)
        return card

    async def models(self, request: Request) -> Response:
        body = {"object": "list", "data": [self._model_card(request)]}
        if request.header("anthropic-version"):
            body.update(has_more=False, first_id=self.model_id, last_id=self.model_id)
        return json_response(200, body)

    async def model_info(self, request: Request) -> Response:
        if request.context["id"] != self.model_id:
            raise ApiError(404, "not_found_error",
                           f"The model '{request.context['id']}' does not exist.", param="model")
        return json_response(200, self._model_card(request))

    # ---- chat routes -----------------------------------------------------------------------------
    def _engine(self):
        if self.engine is None:
            raise ApiError(503, "overloaded_error", "The model is still loading.",
                           headers=[("Retry-After", "1")])
        return self.engine

    async def _engine_for(self, req):
        """The engine, and `req` with its remote images fetched (only if the model can see them)."""
        engine = self._engine()
        return engine, await load_images(req, self.media, getattr(engine, "accepts_images", False))

    async def chat(self, request: Request):
        return await self.complete(request, openai_chat)

    async def messages(self, request: Request):
        return await self.complete(request, anthropic_messages)

    async def count_tokens(self, request: Request) -> Response:
        req = anthropic_messages.parse_count_request(parse_json_body(request))
        engine, req = await self._engine_for(req)
        return json_response(200, {"input_tokens": await asyncio.to_thread(engine.count_tokens, req)})

    async def create_response(self, request: Request):
        """Responses: the stored conversation goes first; the answer is stored unless store=false."""
        req = openai_responses.parse_request(parse_json_body(request))
        if req.previous_response_id:
            previous = self.responses.get(req.previous_response_id)
            if previous is None:
                raise ApiError(404, "not_found_error", f"Previous response with id "
                               f"'{req.previous_response_id}' not found.", param="previous_response_id")
            openai_responses.continue_from(req, previous.conversation)
        stream = openai_responses.Stream(req, self.model_id) if req.stream else None

        def render(events: list) -> dict:
            return openai_responses.render_response(events, self.model_id, req)

        def keep(response: dict) -> None:
            if req.store and response["status"] in ("completed", "incomplete"):
                self.responses.put(response, openai_responses.conversation(req, response))
        return await self.answer(request, req, stream, render, keep)

    async def get_response(self, request: Request) -> Response:
        stored = self.responses.get(request.context["id"])
        if stored is None:
            raise ApiError(404, "not_found_error",
                           f"Response with id '{request.context['id']}' not found.", param="id")
        return json_response(200, stored.response)

    async def complete(self, request: Request, dialect):
        """Any dialect: parse → generate → one JSON body, or SSE from the first event on."""
        req = dialect.parse_request(parse_json_body(request))
        stream = dialect.Stream(req, self.model_id) if req.stream else None
        return await self.answer(request, req, stream,
                                 lambda events: dialect.render_response(events, self.model_id))

    async def answer(self, request: Request, req, stream, render, keep=None):
        """Generate `req`: `render(events)` as one JSON body, or `stream`'s SSE events; `keep`
        gets the final JSON (the stream's `response`) once it is complete."""
        events = await self.generate(req)
        if not req.stream:
            payload = render(await self.collect(request, events))
            if keep:
                keep(payload)
            return json_response(200, payload)
        first = await events.__anext__()  # errors up to here are still a clean JSON 4xx
        on_finish = (lambda: keep(stream.response)) if keep else None
        body = ClosingBody(self.sse(request, first, events, stream, on_finish), events)
        return StreamResponse(200, list(SSE_HEADERS), body)

    async def generate(self, req):
        """The engine's events (once `req`'s images are loaded); with server tools asked for, the
        agent's loop around the engine."""
        engine, req = await self._engine_for(req)
        if self.tools is not None and agent.wants_tools(req):
            return agent.run(engine, self.tools, req, self.max_tool_calls)
        return engine.generate(req)

    async def collect(self, request: Request, events: AsyncIterator) -> list:
        out = []
        try:
            async for ev in events:
                out.append(ev)
                if isinstance(ev, Finish):
                    note_usage(request, ev)
        finally:
            await events.aclose()
        return out

    async def sse(self, request: Request, first, events: AsyncIterator, stream,
                  on_finish=None) -> AsyncIterator[bytes]:
        """Frame a dialect stream as SSE; a failure after the first byte becomes its error event.
        `on_finish` runs after the last event is rendered, before it is sent."""
        beat = getattr(stream, "heartbeat", None)
        ticks = paced(events, self.heartbeat_s if beat else None)
        try:
            for name, data in stream.event(first):
                yield sse_event(data, name)
            async for ev in ticks:
                if isinstance(ev, Finish):
                    note_usage(request, ev)
                frames = beat() if ev is None else stream.event(ev)
                if isinstance(ev, Finish) and on_finish:
                    on_finish()
                for name, data in frames:
                    yield sse_event(data, name)
        except ApiError as e:
            for name, data in stream.error(e):
                yield sse_event(data, name)
        except Exception:
            log.exception("stream failed")
            for name, data in stream.error(ApiError(500, "server_error", "generation failed")):
                yield sse_event(data, name)
        finally:
            await ticks.aclose()  # first: it may hold a pending step of `events`
            await events.aclose()


async def paced(events: AsyncIterator, interval: float | None) -> AsyncIterator:
    """`events`, plus a None after each `interval` seconds without one (no interval: plain).
    The pending `__anext__` runs as a task that a timeout leaves running; `wait_for` on the
    generator itself would cancel it, and with it the generation."""
    if interval is None:
        async for ev in events:
            yield ev
        return
    pending = None
    try:
        while True:
            pending = pending or asyncio.ensure_future(events.__anext__())
            done, _ = await asyncio.wait({pending}, timeout=interval)
            if not done:
                yield None
                continue
            task, pending = pending, None
            try:
                ev = task.result()
            except StopAsyncIteration:
                return
            yield ev
    finally:
        if pending is not None:  # closed while waiting: stop the step, so aclose() can run
            pending.cancel()
            await asyncio.gather(pending, return_exceptions=True)


class ClosingBody:
    """An SSE body whose aclose() also closes the events, even if the body never started
    (closing a never-started async generator skips its `finally`)."""

    def __init__(self, body: AsyncIterator[bytes], events: AsyncIterator):
        self.body, self.events = body, events

    def __aiter__(self):
        return self

    async def __anext__(self) -> bytes:
        return await self.body.__anext__()

    async def aclose(self) -> None:
        try:
            await self.body.aclose()
        finally:
            await self.events.aclose()


def note_usage(request: Request, finish: Finish) -> None:
    u = finish.usage
    request.context["log"] = f"tokens={u.prompt_tokens}+{u.completion_tokens} cached={u.cached_tokens}"
