"""A model's chat format: its template with the tool-call family and thinking markers it teaches.

Strategy: one object, built once from the template source (the GGUF's, or `--chat-template`),
holds what the engine needs to turn a request into a prompt and the model's text back into
events: the family (formats.py detects it the way llama.cpp's common/chat.cpp does, the
specialised formats first), the prompt (`render_parts`: system turns placed, tools shown the
template's way or as our Hermes section, the family's own message shapes and call ids, a
refusal retried with system turns folded), the output parser (`parser`, set up exactly as the
server runs it) and the grammar (`grammar`). The Engine holds one; tests and the format scorer
(tests/formats/) build one from a template file, with no model, and so run the server's path.

Does not: tokenize, load models or warn about images (the Engine), parse (output.py) or render
jinja (template.py).
"""
from __future__ import annotations

import functools
import os
from dataclasses import replace

from ..core import ChatRequest, Message, Text, Tool, ToolCall
from .calls import HERMES, CallFormat
from .formats import (ThinkFormat, detect_think_format, detect_tool_format, fit_ids, fold_first_system,
                      fold_into_results, fold_system, prepare_messages, starts_thinking, system_before_user, tools_note,
                      with_system)
from .grammar import Grammar, build_grammar
from .output import OutputParser
from .template import CHATML, ChatTemplate, TemplateError


# How history calls may be shown to a template: (arguments as JSON text, None content), tried in order
CALL_SHAPES = ((False, False), (True, False), (False, True), (True, True))


class ChatFormat:
    """A template and its family: the prompt for a request, the parser and grammar for its answer."""

    def __init__(self, source: str | None, bos_token: str = "", eos_token: str = ""):
        self.template = ChatTemplate(source or CHATML, bos_token, eos_token)
        self.tool_format: CallFormat | None = detect_tool_format(self.template.source)  # None: ours
        self.call_format: CallFormat = self.tool_format or HERMES  # the template's, or the one we describe
        self.think_format: ThinkFormat = detect_think_format(self.template.source, self.call_format)
        self.example = None if self.tool_format is None else self._probe()  # None: it shows tools

    def _probe(self) -> str | None:
        """What the template needs of history calls (the arguments as text, a None content: as
        llama.cpp's template caps), and, when it renders calls but never shows the model its
        tools, a call as it writes one (we then show the tools, with this example)."""
        tpl = self.template
        user = Message("user", [Text("What is the weather in Paris?")])
        call = Message("assistant", [ToolCall("call_0", "get_weather", '{"city": "Paris"}')])
        tool = Tool("get_weather", "The weather in a city", {"type": "object", "properties": {"city": {"type": "string"}}})
        called = None
        for shape in CALL_SHAPES:
            tpl.string_args, tpl.null_content = shape
            try:
                called = self._plain(ChatRequest(messages=[user, call]), generation_prompt=False)
            except TemplateError:
                continue
            if '"Paris"' in called:
                break
        else:
            tpl.string_args = tpl.null_content = False
        try:
            if called is None or "The weather in a city" in self._plain(ChatRequest(messages=[user], tools=[tool])):
                return None
            asked = self._plain(ChatRequest(messages=[user]))
        except TemplateError:
            return None
        lead = len(os.path.commonprefix([asked, called]))
        while lead and called[lead - 1] not in ">\n":  # (not from inside a marker)
            lead -= 1
        example = called[lead:].strip()
        close = self.think_format.close
        return (example[len(close):] if example.startswith(close) else example).strip() or None

    def _plain(self, req: ChatRequest, generation_prompt: bool = True) -> str:
        """`req` rendered as the family renders it, nothing else done (probes)."""
        fmt = self.call_format
        return self.template.render_parts(req, True, adjust=fmt.adjust, context=fmt.context(req, True),
                                          generation_prompt=generation_prompt)[0]

    @property
    def markers(self) -> tuple[str, ...]:
        """Every marker of the format: the ones that are control tokens must be shown as text."""
        think = self.think_format
        return tuple(dict.fromkeys(m for m in self.call_format.markers + (think.open, think.close) if m))

    def render_parts(self, req: ChatRequest, thinking: bool, image_marker: str | None = None) -> tuple[str, str]:
        """(conversation + generation prompt, prefill) with the tools shown the template's way. A
        template that refuses system turns where they stand gets them folded into user turns, one
        that refuses a user turn after tool results gets it folded into the last result; one that
        still refuses the history answers with its own rule (TemplateError, a 400)."""
        offered, messages = req.offered_tools, fit_ids(system_before_user(req.messages), self.call_format)
        if self.tool_format is None:
            shown = replace(req, messages=prepare_messages(messages, offered), tools=[])
        elif self.example is not None and offered:
            shown = replace(req, messages=with_system(messages, tools_note(offered, self.example)), tools=offered)
        else:
            shown = replace(req, messages=messages, tools=offered)
        fmt = self.call_format
        context = fmt.context(shown, thinking)
        if req.reasoning_effort:
            context["reasoning_effort"] = fmt.effort(req.reasoning_effort)
        render = functools.partial(self.template.render_parts, enable_thinking=thinking,
                                   image_marker=image_marker, adjust=fmt.adjust, context=context)
        try:
            return render(shown)
        except TemplateError as refused:
            for fold in (fold_system, fold_first_system, fold_into_results):  # (each on what the last left)
                folded = fold(shown.messages)
                if folded is not None:
                    shown = replace(shown, messages=folded)
                    try:
                        return render(shown)
                    except TemplateError as e:
                        refused = e  # (the rule the history breaks, with system turns folded)
            raise refused

    def parser(self, req: ChatRequest, text: str, prefill: str) -> OutputParser:
        """The output parser for an answer to `req` whose prompt rendered as (text, prefill)."""
        fmt = self.call_format
        thinking = starts_thinking(text, prefill, self.think_format)
        return OutputParser(fmt, self.think_format, thinking, req.parallel_tool_calls,
                            {t.name: t.parameters for t in req.tools}, calling=bool(req.offered_tools),
                            start=None if prefill else fmt.start(text))

    def grammar(self, req: ChatRequest, text: str, prefill: str) -> Grammar | None:
        thinking = starts_thinking(text, prefill, self.think_format)
        return build_grammar(req, self.call_format, self.think_format, thinking)
