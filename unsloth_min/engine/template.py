"""Chat templates: our messages → the prompt text the model was trained on.

Strategy: render the Jinja template stored in the GGUF (or `--chat-template FILE`) the way
Hugging Face's `apply_chat_template` does (trim_blocks, lstrip_blocks, `tojson`, `raise_exception`,
`strftime_now`), but only inside jinja2's `ImmutableSandboxedEnvironment`: a GGUF is untrusted input.
Messages become HF-style dicts (`content` a string, `tool_calls` with parsed arguments,
`reasoning_content`), and `tools` / `enable_thinking` reach the template as variables.

With a vision projector, each image becomes the projector's media marker in its message's text,
where it stood (llama-server does the same); without one, images are left out.

Does not: tokenize (model.py, vision.py), or decide what images mean.
"""
from __future__ import annotations

import json
from datetime import datetime

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ..core import ApiError, ChatRequest, Image, Message, Reasoning, Text, Tool, ToolCall, ToolResult

# Used when the GGUF carries no template: ChatML, the most common format among small models.
CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + (m['content'] or '') + "
    "'<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{% endif %}"
)


class TemplateError(ApiError):
    def __init__(self, message: str):
        super().__init__(400, "invalid_request_error", f"chat template error: {message}")


def _raise(message: str):
    raise TemplateError(message)


def _tojson(value, indent=None, separators=None, sort_keys=False, ensure_ascii=False):
    return json.dumps(value, indent=indent, separators=separators, sort_keys=sort_keys,
                      ensure_ascii=ensure_ascii)


class ChatTemplate:
    def __init__(self, source: str, bos_token: str = "", eos_token: str = ""):
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                            extensions=["jinja2.ext.loopcontrols"])
        env.filters["tojson"] = _tojson
        env.globals.update(raise_exception=_raise,
                           strftime_now=lambda fmt: datetime.now().strftime(fmt))
        self.source = source
        self.template = env.from_string(source)
        self.bos_token, self.eos_token = bos_token, eos_token

    def render(self, req: ChatRequest, enable_thinking: bool, image_marker: str | None = None) -> str:
        """The prompt for `req`. A trailing assistant message is a prefill the answer continues."""
        return "".join(self.render_parts(req, enable_thinking, image_marker))

    def render_parts(self, req: ChatRequest, enable_thinking: bool,
                     image_marker: str | None = None) -> tuple[str, str]:
        """(the rendered conversation with its generation prompt, the prefill after it).
        Images become `image_marker`, or nothing when it is None."""
        messages = [message_dict(m, image_marker) for m in req.messages]
        prefill = ""
        if messages and messages[-1]["role"] == "assistant" and not messages[-1].get("tool_calls"):
            prefill = messages.pop()["content"] or ""
        return self._render(messages, tools_dicts(req.tools), enable_thinking), prefill

    def _render(self, messages: list[dict], tools: list[dict] | None, enable_thinking: bool) -> str:
        try:
            return self.template.render(
                messages=messages, tools=tools, add_generation_prompt=True,
                enable_thinking=enable_thinking, bos_token=self.bos_token,
                eos_token=self.eos_token)
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


def message_dict(m: Message, image_marker: str | None = None) -> dict:
    """One message in the shape Hugging Face chat templates expect."""
    content = m.text
    if image_marker is not None and any(isinstance(p, Image) for p in m.parts):
        content = "".join(p.text if isinstance(p, Text) else image_marker
                          for p in m.parts if isinstance(p, (Text, Image)))
    d: dict = {"role": m.role, "content": content}
    calls = [p for p in m.parts if isinstance(p, ToolCall)]
    if calls:
        d["tool_calls"] = [{"id": c.id, "type": "function",
                            "function": {"name": c.name, "arguments": arguments_value(c.arguments)}}
                           for c in calls]
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
