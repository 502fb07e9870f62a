"""Grammars that force tool calls and JSON answers: a request → llama.cpp GBNF (+ lazy triggers).

Strategy: the tools' rules come from the call format's object (engine/calls/: each format writes
its calls' exact text, as the output parser reads it, with one alternative per allowed name and
each tool's JSON Schema as the arguments' rule, gbnf.py); an answer schema goes through the same
converter. The grammar ends where the calls (or the answer) end, so llama.cpp lets only
end-of-generation follow.
  required / a named function → the whole answer is calls;
  auto                       → lazy: the grammar starts only once the model has written the
                               opening of a call (the format's `triggers`), so it may still
                               answer in text;
  response_schema            → the whole answer is that JSON (json_object: any object);
  a prompt that opened thinking → lazy from the closing marker (then the format's `preamble`),
                               so the model thinks freely first.
Lazy triggers are regexes (read alike by llama.cpp's std::regex and Python's `re`, which watches
them in constrain.py) that match only when the text written so far *ends inside* a known prefix
of the grammar: llama.cpp replays that text into the grammar, and text it rejects would abort the
process, so a trigger that is not sure does not fire (the call is then parsed without
enforcement). A schema the converter cannot handle gets "any JSON object" arguments and a
warning; an answer schema it cannot handle gets no grammar.

Does not: talk to llama.cpp (the scheduler builds the sampler), parse output (output.py), or
know any format's text (engine/calls/).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..core import ChatRequest, Tool
from .calls import CallFormat
from .calls import ThinkFormat
from .gbnf import GAP, WS_SET, Rules, literal, prefix_regex


@dataclass(frozen=True)
class Grammar:
    gbnf: str
    triggers: tuple[str, ...] = ()  # non-empty → lazy: constrain from the first match on
    after: str = ""  # lazy: triggers count only once this (the thinking's end) has been written

    @property
    def lazy(self) -> bool:
        return bool(self.triggers)


def allowed_tools(req: ChatRequest) -> list[Tool]:
    if req.tool_choice == "function":
        return [t for t in req.tools if t.name == req.tool_name]
    return list(req.tools)


def build_grammar(req: ChatRequest, fmt: CallFormat, think: ThinkFormat,
                  thinking: bool) -> Grammar | None:
    """The grammar for `req` (None: decode freely). `fmt` is the format calls are written in."""
    rules, alts, preambles = Rules(), [], []
    calling = bool(req.offered_tools)
    forced = calling and req.tool_choice in ("required", "function")
    if calling and allowed_tools(req):
        alts.append(fmt.calls_rule(rules, allowed_tools(req), req.parallel_tool_calls))
        preambles.append(fmt.preamble())
    if req.response_schema is not None and not forced:
        answer = rules.schema(req.response_schema, "answer")
        if answer is not None:
            alts.append(fmt.answer_rule(rules, answer))
            preambles.append(["{"] if answer_is_object(req.response_schema) else [])
    if not alts:
        return None
    rules.add("x-ws", WS_SET)
    lazy = calling and not forced and req.response_schema is None
    body = " | ".join(alts)
    if thinking and not lazy:  # think freely, then the grammar from the closing marker on
        rules.add("root", f"{literal(think.close)} x-ws ({body}) x-ws")
        return Grammar(rules.text(), tuple(f"({prefix_regex([think.close, GAP] + p)})$"
                                           for p in preambles))
    if not lazy:  # (whitespace after, then only end-of-generation)
        rules.add("root", fmt.forced_root(rules, body))
        return Grammar(rules.text())
    triggers = lazy_triggers(fmt, [t.name for t in allowed_tools(req)])
    if not triggers:  # (a format with no safe trigger: auto calls are parsed, not enforced)
        return None
    rules.add("root", f"({body}) x-ws")
    return Grammar(rules.text(), triggers, after=think.close if thinking else "")


def lazy_triggers(fmt: CallFormat, names: list[str] = ()) -> tuple[str, ...]:
    """Auto mode: enforce once the model has begun a call (the format writes the patterns).

    Every pattern matches at most a few dozen characters at the end of the text: libstdc++'s
    std::regex recurses once per character a `*` consumes, so a `[\\s\\S]*` over a long answer
    could overflow the worker's stack. Hence no "after `</think>`, anywhere" pattern: the
    Constraint itself waits for `Grammar.after`, and watches only the text that follows it
    (`^` then means the start of the answer).
    """
    return fmt.triggers(list(names))


def answer_is_object(schema: dict) -> bool:
    return not schema or schema.get("type") == "object" or "properties" in schema
