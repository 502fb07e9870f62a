"""What every dialect shares on the way in: the `Draft` a reader fills, and the one builder that
makes the frozen `ChatRequest` from it; sampling numbers, output formats, hosted tool types.

Strategy: a dialect's `parse_request` reads only its own wire shapes into a `Draft` (messages,
tools, the client's tool_choice if it gave one, its own thinking switch, the hosted tools its
`tools` named). `build_request` then reads the fields SPEC adds to every dialect (enable_thinking,
chat_template_kwargs, enable_tools, enabled_tools, session_id, max_tool_calls), decides the
defaults once — `tool_choice` is `auto` when there are client tools or server tools, else `none`
— checks that a named tool is offered, and returns the request. Nothing is patched afterwards,
so no result depends on the order of calls. The sampling knobs are read as `core.Sampling`
declares them (names, ranges, per dialect).

Does not: read any dialect's messages or tools (each dialect module does), or render anything.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields
from typing import Callable

from ..core import (SERVER_TOOLS, TOOL_ALIASES, ApiError, ChatRequest, Knob, Message, Sampling, Tool,
                    bad_request, server_tool_name)
from .fields import get_bias, get_bool, get_choice, get_number, get_object, get_stops, get_str, get_str_list

log = logging.getLogger("unsloth_min.dialects")
# the fields SPEC adds to every dialect (build_request reads them)
SPEC_FIELDS = {"enable_thinking", "chat_template_kwargs", "enable_tools", "enabled_tools",
               "session_id", "max_tool_calls", "return_progress"}
_ignored: set[str] = set()
# hosted tool types (Anthropic's without their date suffix, OpenAI's as they are) that we run as
# our server tools (SPEC "Server tools")
HOSTED_TOOLS = {"web_search": "web_search", "web_search_preview": "web_search",
                "code_execution": "python", "code_interpreter": "python"}
OUTPUT_FORMATS = ("text", "json_object", "json_schema")


@dataclass
class Draft:
    """A request as one dialect's reader found it, before the shared fields and defaults; a field
    named as one of ChatRequest's is copied into it as it is (`build_request`)."""
    messages: list[Message]
    sampling: Sampling
    model: str = ""
    stream: bool = False
    include_usage: bool = False
    tools: list[Tool] = field(default_factory=list)
    choice: tuple[str, str | None] | None = None  # (auto|none|required|function, name); None: unsaid
    parallel_tool_calls: bool = True
    response_schema: dict | None = None
    enable_thinking: bool | None = None  # the dialect's own switch (thinking, reasoning.effort)
    reasoning_effort: str | None = None  # the dialect's own effort field, as it was spelled
    hosted: list[str] = field(default_factory=list)  # server tools the dialect's `tools` asked for


REQUEST_FIELDS = {f.name for f in fields(ChatRequest)}


@dataclass(frozen=True)
class Dialect:
    """One wire format, as the route table carries it: how to read a request, encode events and
    render errors; `prepare`/`keep` are the Responses store's hooks (before generating, after),
    `parse_count` reads a token-count body (Anthropic's count_tokens)."""
    name: str
    parse_request: Callable
    encoder: Callable            # (request, model id) → an Encoder
    render_error: Callable[[ApiError], dict]
    prefix: str                  # an unknown path under it is answered in this dialect's shape
    prepare: Callable | None = None
    keep: Callable | None = None
    parse_count: Callable | None = None  # a body → the request whose prompt is counted


def ignored(name: str) -> None:
    """A field that only steers a hosted service: accepted, without effect here, said once."""
    if name not in _ignored:
        _ignored.add(name)
        log.debug("ignoring %r: it has no meaning on a local server (said once)", name)


def ignore_unknown(body: dict, known: set[str]) -> None:
    """Top-level fields a dialect does not read are ignored, each said once at debug (clients
    send their hosted services' fields: client_metadata, prompt_cache_key, service_tier…)."""
    for key in body.keys() - known:
        ignored(key)


# The effort levels the dialects know; each reaches the template as spelled (the model's family
# maps it to its own: engine/calls' `effort`)
EFFORT_LEVELS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")


def build_request(draft: Draft, body: dict, cls: type = ChatRequest, **extra) -> ChatRequest:
    """The frozen request: `draft` plus SPEC's extension fields and the defaults (module doc)."""
    enable_thinking = draft.enable_thinking
    kwargs = body.get("chat_template_kwargs")
    if kwargs is not None:
        if not isinstance(kwargs, dict):
            raise bad_request("Invalid type for 'chat_template_kwargs': expected an object.",
                              param="chat_template_kwargs")
        enable_thinking = get_bool(kwargs, "enable_thinking", enable_thinking,
                                   path="chat_template_kwargs")
    enable_thinking = get_bool(body, "enable_thinking", enable_thinking)
    enabled, enable_tools = enabled_tools(body, draft.hosted)
    choice, name = draft.choice or ("auto" if draft.tools or enable_tools else "none", None)
    same = {f.name: getattr(draft, f.name) for f in fields(Draft) if f.name in REQUEST_FIELDS}
    req = cls(**same | dict(  # the draft's own switch, as SPEC's fields left it
        enable_thinking=enable_thinking, tool_choice=choice, tool_name=name, enable_tools=enable_tools,
        enabled_tools=enabled, session_id=get_str(body, "session_id"),
        max_tool_calls=get_number(body, "max_tool_calls", lo=0, integer=True),
        return_progress=get_bool(body, "return_progress", False)), **extra)
    check_tool_choice(req)
    return req


def enabled_tools(body: dict, hosted: list[str]) -> tuple[tuple[str, ...], bool]:
    """(the server tools on offer, whether the agent runs): `enabled_tools` (aliases resolved),
    else all of them with `enable_tools`; plus those the dialect's hosted tool types name."""
    enable = get_bool(body, "enable_tools", False)
    names = [TOOL_ALIASES.get(n, n) for n in get_str_list(body, "enabled_tools")]
    unknown = [n for n in names if n not in SERVER_TOOLS]
    if unknown:
        raise bad_request(f"Invalid 'enabled_tools': unknown tool {unknown[0]!r} "
                          f"(known: {', '.join(SERVER_TOOLS)}, terminal).", param="enabled_tools")
    on = tuple(dict.fromkeys(names)) or (SERVER_TOOLS if enable else ())
    if hosted:
        return tuple(dict.fromkeys(on + tuple(hosted))), True
    return on, enable


def check_tool_choice(req: ChatRequest) -> None:
    """A named function needs a matching tool: a client tool or a server tool (see SPEC)."""
    if req.tool_choice == "function" and req.tool_name not in {t.name for t in req.tools}:
        if server_tool_name(req.tool_name) is None:
            raise bad_request(f"Invalid 'tool_choice': no tool named {req.tool_name!r} in 'tools'.",
                              param="tool_choice")


def hosted_tool(kind: str, dated: bool = False) -> str | None:
    """The server tool a hosted tool type asks for (`web_search_20250305` when `dated`), or None."""
    return HOSTED_TOOLS.get(kind.rsplit("_", 1)[0] if dated else kind)


def parse_sampling(body: dict, dialect: str) -> Sampling:
    """Every knob `Sampling` declares, as `dialect` spells and bounds it."""
    values = {}
    for f in fields(Sampling):
        k: Knob = f.metadata["knob"]
        names = k.names.get(dialect, (f.name,))
        lo, hi = k.ranges.get(dialect, (k.lo, k.hi))
        if k.kind == "stops":
            values[f.name] = get_stops(body, names[0]) if names else ()
        elif k.kind == "bias":
            values[f.name] = get_bias(body, names[0], lo=lo, hi=hi) if names else ()
        else:
            for name in names:
                values[f.name] = get_number(body, name, values.get(f.name), lo=lo, hi=hi,
                                            integer=k.integer)
    return Sampling(**values)


def sampling_fields(dialect: str) -> set[str]:
    """The top-level fields `parse_sampling` reads for `dialect` (part of its known fields)."""
    return {n for f in fields(Sampling) for n in f.metadata["knob"].names.get(dialect, (f.name,))}


def parse_output_format(fmt: dict | None, path: str, holder: str | None = None) -> dict | None:
    """OpenAI's output formats → core `response_schema`: None (text), {} (any JSON object) or a
    schema. Chat nests the schema in `json_schema` (`holder`); Responses puts it in `fmt` itself."""
    if fmt is None:
        return None
    kind = get_choice(fmt, "type", OUTPUT_FORMATS, path=path, required=True)
    if kind != "json_schema":
        return {} if kind == "json_object" else None
    if holder is not None:
        spec = get_object(fmt, holder, path=path)
        if spec is None:
            raise bad_request(f"Missing required parameter: '{path}.{holder}'.", param=f"{path}.{holder}")
        return get_object(spec, "schema", {}, path=f"{path}.{holder}")
    schema = get_object(fmt, "schema", path=path)
    if schema is None:
        raise bad_request(f"Missing required parameter: '{path}.schema'.", param=f"{path}.schema")
    return schema
