"""Chat templates: our messages → the prompt text the model was trained on.

Strategy: render the Jinja template stored in the GGUF (or `--chat-template FILE`) the way
Hugging Face's `apply_chat_template` does (trim_blocks, lstrip_blocks, `tojson`, `raise_exception`,
`strftime_now`, the `{% generation %}` training tag as a no-op), but only inside jinja2's
`ImmutableSandboxedEnvironment`: a GGUF is untrusted input. Messages become HF-style dicts
(`content` a string, `tool_calls` with parsed arguments, `reasoning_content`), and `tools` (left
undefined when there are none, as llama.cpp does), `enable_thinking` and the date (`datetime`, `date_string`, as llama.cpp's extra context) reach the template as variables;
the family may reshape the messages and add variables of its own (`adjust`, `context`). Two checks
that llama.cpp patches out of templates (gpt-oss's refusal of channel tags in content, Mistral's of
an empty assistant turn) are patched out the same way (`SOURCE_PATCHES`), and a list `append` on a
namespace attribute (Kimi's) becomes the assignment it means, so the sandbox stays immutable.

With a vision projector, each image becomes the projector's media marker in its message's text,
where it stood (llama-server does the same); without one, images are left out.

Does not: tokenize (model.py, vision.py), or decide what images mean.
"""
from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Callable

import jinja2
from jinja2.ext import Extension
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ..core import ApiError, ChatRequest, Image, Message, Reasoning, Text, Tool, ToolCall, ToolResult

# Used when the GGUF carries no template: ChatML, the most common format among small models.
CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + (m['content'] or '') + "
    "'<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{% endif %}"
)


# (what, replacement): checks llama.cpp patches out of templates it ships with (common/chat.cpp)
SOURCE_PATCHES = (
    ('{%- if "<|channel|>analysis<|message|>" in message.content or '
     '"<|channel|>final<|message|>" in message.content %}', "{%- if false %}"),
    ("{%- if (message['content'] is none or message['content'] == '' or message['content']|length == 0) "
     "and (message['tool_calls'] is not defined or message['tool_calls'] is none or "
     "message['tool_calls']|length == 0) %}", "{%- if false %}"),
)


class GenerationTag(Extension):
    """`{% generation %}…{% endgeneration %}` marks what a model is trained on (HF's
    `return_assistant_tokens_mask`); rendering prompts, its body is rendered as it stands."""
    tags = {"generation"}

    def parse(self, parser):
        next(parser.stream)
        return parser.parse_statements(("name:endgeneration",), drop_needle=True)


class TemplateError(ApiError):
    """The template refused the conversation: `rule` when by its own `raise_exception` (the
    message quotes the rule), not when it failed on its own (an undefined variable, a type)."""

    def __init__(self, message: str, rule: bool = False):
        super().__init__(400, "invalid_request_error", f"chat template error: {message}")
        self.rule = rule


def _raise(message: str):
    raise TemplateError(message, rule=True)


def _tojson(value, indent=None, separators=None, sort_keys=False, ensure_ascii=False):
    return json.dumps(value, indent=indent, separators=separators, sort_keys=sort_keys,
                      ensure_ascii=ensure_ascii, default=_json_default)


def _json_default(value):
    """What `tojson` makes of values JSON has no word for: `map(…)`'s generators become lists."""
    if isinstance(value, jinja2.Undefined):
        return None
    if hasattr(value, "__iter__"):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


# `{% set _ = ns.items.append(x) %}` and `{% set y = ns.items.pop(0) %}` (Kimi's templates) mutate a
# list, which the immutable sandbox refuses; on a namespace attribute they are assignments.
LIST_EDITS = (
    (re.compile(r"\{%(-?)\s*set\s+\w+\s*=\s*(\w+\.\w+)\.append\((.+?)\)\s*(-?)%\}"),
     r"{%\1 set \2 = \2 + [\3] \4%}"),
    (re.compile(r"\{%(-?)\s*set\s+(\w+)\s*=\s*(\w+\.\w+)\.pop\(0\)\s*(-?)%\}"),
     r"{%\1 set \2 = \3[0] %}{% set \3 = \3[1:] \4%}"),
)


class Lenient(jinja2.Undefined):
    """A missing value added to text is nothing (a tool parameter without a `description`), as in
    llama.cpp's own jinja; anything else done with it still fails, as in jinja2."""

    def __add__(self, other):
        return other

    __radd__ = __add__


class ChatTemplate:
    def __init__(self, source: str, bos_token: str = "", eos_token: str = ""):
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, undefined=Lenient,
                                            extensions=["jinja2.ext.loopcontrols", GenerationTag])
        env.filters["tojson"] = _tojson
        env.globals.update(raise_exception=_raise,
                           strftime_now=lambda fmt: datetime.now().strftime(fmt))
        self.source = source
        for old, new in SOURCE_PATCHES:
            source = source.replace(old, new)
        for edit, into in LIST_EDITS:
            source = edit.sub(into, source)
        self.template = env.from_string(source)
        self.bos_token, self.eos_token = bos_token, eos_token
        self.string_args = self.null_content = False  # what history calls need (ChatFormat finds out)

    def render(self, req: ChatRequest, enable_thinking: bool, image_marker: str | None = None) -> str:
        """The prompt for `req`. A trailing assistant message is a prefill the answer continues."""
        return "".join(self.render_parts(req, enable_thinking, image_marker))

    def render_parts(self, req: ChatRequest, enable_thinking: bool, image_marker: str | None = None,
                     adjust: Callable[[list[dict]], list[dict]] | None = None,
                     context: dict | None = None, generation_prompt: bool = True) -> tuple[str, str]:
        """(the rendered conversation with its generation prompt, the prefill after it).
        Images become `image_marker`, or nothing when it is None; `adjust` reshapes the message
        dicts, `context` adds variables."""
        messages = [message_dict(m, image_marker, self.string_args, self.null_content) for m in req.messages]
        prefill = ""
        if generation_prompt and messages and messages[-1]["role"] == "assistant" and not messages[-1].get("tool_calls"):
            prefill = messages.pop()["content"] or ""
        if adjust is not None:
            messages = adjust(messages)
        variables = dict(context or {}, enable_thinking=enable_thinking)
        if req.tools:
            variables["tools"] = tools_dicts(req.tools)
        return self._render(messages, variables, generation_prompt), prefill

    def _render(self, messages: list[dict], variables: dict, generation_prompt: bool = True) -> str:
        now = datetime.now()
        variables = dict(variables, messages=messages, add_generation_prompt=generation_prompt,
                         bos_token=self.bos_token, eos_token=self.eos_token)
        try:
            return self.template.render(
                dict(datetime=now.strftime("%b %d %Y"), date_string=now.strftime("%d %b %Y")), **variables)
        except TemplateError:
            raise
        except (jinja2.TemplateError, TypeError, ValueError, KeyError, IndexError) as e:
            # the template rejected this conversation's shape (e.g. roles not alternating)
            raise TemplateError(str(e)) from e


def tools_dicts(tools: list[Tool]) -> list[dict] | None:
    if not tools:
        return None
    return [{"type": "function", "function": {"name": t.name, "description": t.description,
                                              "parameters": t.parameters}} for t in tools]


def arguments_value(text: str):
    """A call's arguments as the template sees them: the parsed JSON, or the text as it came."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def message_dict(m: Message, image_marker: str | None = None, string_args: bool = False,
                 null_content: bool = False) -> dict:
    """One message in the shape Hugging Face chat templates expect (`string_args`: arguments as
    the JSON text, for templates that concatenate them; `null_content`: a call-only assistant
    message's content is None, for templates that test for that)."""
    content = m.text
    if image_marker is not None and any(isinstance(p, Image) for p in m.parts):
        content = "".join(p.text if isinstance(p, Text) else image_marker
                          for p in m.parts if isinstance(p, (Text, Image)))
    d: dict = {"role": m.role, "content": content}
    calls = [p for p in m.parts if isinstance(p, ToolCall)]
    if calls:
        d["tool_calls"] = [{"id": c.id, "type": "function", "function": {
            "name": c.name, "arguments": c.arguments if string_args else arguments_value(c.arguments)}}
            for c in calls]
        if null_content and not content:
            d["content"] = None
    thinking = "".join(p.text for p in m.parts if isinstance(p, Reasoning))
    if thinking:
        d["reasoning_content"] = thinking
    results = [p for p in m.parts if isinstance(p, ToolResult)]
    if results:
        d["tool_call_id"] = results[0].call_id
        if results[0].name:
            d["name"] = results[0].name
        d["content"] = "".join(r.content for r in results) + d["content"]
    return d


def is_text_only(m: Message) -> bool:
    return all(isinstance(p, Text) for p in m.parts)
