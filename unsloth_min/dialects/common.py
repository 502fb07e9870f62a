"""Request pieces that read the same in every dialect: sampling numbers, server-tool fields.

Strategy: ranges follow the OpenAI API (temperature 0–2, penalties −2–2, top_p 0–1); llama.cpp's
extra knobs (`top_k`, `min_p`, `repetition_penalty`) are accepted everywhere, as llama-server does.
"""
from __future__ import annotations

from ..core import (SERVER_TOOLS, TOOL_ALIASES, ChatRequest, Finish, ReasoningDelta, Sampling, Started,
                    TextDelta, ToolCallDelta, ToolExecuted, bad_request, server_tool_name)
from .fields import get_bool, get_number, get_object, get_str, get_str_list

MAX_SEED = 2**63 - 1


class EventStream:
    """Core events → one dialect's wire events, `(event name or None, payload)` pairs. A dialect's
    stream names one method per event type; an event it has no method for gives nothing."""
    METHODS = {Started: "on_started", TextDelta: "on_text", ReasoningDelta: "on_reasoning",
               ToolCallDelta: "on_tool_call", ToolExecuted: "on_tool_executed", Finish: "on_finish"}

    def event(self, ev) -> list[tuple]:
        method = getattr(self, self.METHODS.get(type(ev), ""), None)
        return method(ev) if method else []


def parse_sampling(body: dict, max_keys: tuple[str, ...], stop: tuple[str, ...]) -> Sampling:
    max_tokens = None
    for key in max_keys:  # e.g. chat's max_completion_tokens wins over max_tokens
        max_tokens = get_number(body, key, max_tokens, lo=1, integer=True)
    return Sampling(
        temperature=get_number(body, "temperature", lo=0, hi=2),
        top_p=get_number(body, "top_p", lo=0, hi=1),
        top_k=get_number(body, "top_k", lo=0, integer=True),
        min_p=get_number(body, "min_p", lo=0, hi=1),
        seed=get_number(body, "seed", lo=-MAX_SEED, hi=MAX_SEED, integer=True),
        presence_penalty=get_number(body, "presence_penalty", lo=-2, hi=2),
        frequency_penalty=get_number(body, "frequency_penalty", lo=-2, hi=2),
        repetition_penalty=get_number(body, "repetition_penalty", lo=0.01, hi=10),
        max_tokens=max_tokens,
        stop=stop,
    )


def apply_extensions(body: dict, req: ChatRequest) -> ChatRequest:
    """SPEC's extra fields: enable_thinking (+ chat_template_kwargs), server tools, session_id,
    max_tool_calls (a request may lower the server's cap on server tool calls)."""
    kwargs = body.get("chat_template_kwargs")
    if kwargs is not None:
        if not isinstance(kwargs, dict):
            raise bad_request("Invalid type for 'chat_template_kwargs': expected an object.",
                              param="chat_template_kwargs")
        req.enable_thinking = get_bool(kwargs, "enable_thinking", req.enable_thinking,
                                       path="chat_template_kwargs")
    req.enable_thinking = get_bool(body, "enable_thinking", req.enable_thinking)
    req.enable_tools = get_bool(body, "enable_tools", False)
    names = [TOOL_ALIASES.get(n, n) for n in get_str_list(body, "enabled_tools")]
    unknown = [n for n in names if n not in SERVER_TOOLS]
    if unknown:
        raise bad_request(f"Invalid 'enabled_tools': unknown tool {unknown[0]!r} "
                          f"(known: {', '.join(SERVER_TOOLS)}, terminal).", param="enabled_tools")
    req.enabled_tools = tuple(dict.fromkeys(names)) or (SERVER_TOOLS if req.enable_tools else ())
    req.session_id = get_str(body, "session_id")
    req.max_tool_calls = get_number(body, "max_tool_calls", lo=0, integer=True)
    default_tool_choice(body, req)
    return req


def check_tool_choice(req: ChatRequest) -> None:
    """A named function needs a matching tool: a client tool or a server tool (see SPEC)."""
    if req.tool_choice == "function" and req.tool_name not in {t.name for t in req.tools}:
        if server_tool_name(req.tool_name) is None:
            raise bad_request(f"Invalid 'tool_choice': no tool named {req.tool_name!r} in 'tools'.",
                              param="tool_choice")


def add_server_tools(body: dict, req: ChatRequest, names: tuple[str, ...]) -> None:
    """Server tools a dialect found in its own `tools` list (Anthropic's code execution, the
    Responses code interpreter…) turn the agent on for them; then `tool_choice` must name a tool
    that is offered."""
    if names:
        req.enable_tools = True
        req.enabled_tools = tuple(dict.fromkeys(req.enabled_tools + names))
        default_tool_choice(body, req)
    check_tool_choice(req)


def default_tool_choice(body: dict, req: ChatRequest) -> None:
    """Without a `tool_choice`, server tools let the model choose (`auto`), even when there are
    no client tools (for which each dialect's default is `none`). Call again wherever a dialect
    turns server tools on after `apply_extensions`."""
    if req.enable_tools and body.get("tool_choice") is None:
        req.tool_choice = "auto"


def parse_output_format(fmt: dict | None, path: str, holder: str | None = None) -> dict | None:
    """OpenAI's output formats → core `response_schema`: None (text), {} (any JSON object) or a
    schema. Chat nests the schema in `json_schema` (`holder`); Responses puts it in `fmt` itself."""
    if fmt is None:
        return None
    kind = get_str(fmt, "type", path=path, required=True)
    if kind in ("text", "json_object"):
        return {} if kind == "json_object" else None
    if kind != "json_schema":
        raise bad_request(f"Invalid value for '{path}.type': {kind!r} is not one of text, "
                          "json_object, json_schema.", param=f"{path}.type")
    if holder is not None:
        spec = get_object(fmt, holder, path=path)
        if spec is None:
            raise bad_request(f"Missing required parameter: '{path}.{holder}'.", param=f"{path}.{holder}")
        return get_object(spec, "schema", {}, path=f"{path}.{holder}")
    schema = get_object(fmt, "schema", path=path)
    if schema is None:
        raise bad_request(f"Missing required parameter: '{path}.schema'.", param=f"{path}.schema")
    return schema
