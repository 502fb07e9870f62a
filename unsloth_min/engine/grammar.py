"""Grammars that force tool calls and JSON answers: a request → llama.cpp GBNF (+ lazy triggers).

Strategy: each tool's JSON Schema goes through llama-cpp-python's own JSON-Schema → GBNF converter
(gbnf.py); our rules wrap the
arguments in the exact text the output parser reads (`<tool_call>{"name": "f", "arguments": …}
</tool_call>` for Hermes, `[TOOL_CALLS][…]` for Mistral, `[TOOL_CALLS]f[ARGS]{…}` for Mistral
v11+ (no `[CALL_ID]`), `{"name": "f", "parameters": …}` for Llama 3), with one alternative per
allowed name. Qwen3-Coder's XML calls get their own rules
(`xml_call`): `<function=f>\n`, then the schema's properties in its order as
`<parameter=k>\nVALUE\n</parameter>\n` (the required ones present), then `</function>`; a VALUE
is an enum's literals, raw text that cannot contain `</parameter>` for a string (or untyped)
property, and the converter's JSON for the other types. A tool whose schema this cannot spell
(not an object, a key no tag can hold, a property the converter fails on) gets free-form
parameters and a warning; one without `properties` gets free-form parameters. The grammar ends where the calls (or the answer)
end, so llama.cpp lets only end-of-generation follow.
  required / a named function → the whole answer is calls;
  auto                       → lazy: the grammar starts only once the model has written the
                               opening of a call, so it may still answer in text;
  response_schema            → the whole answer is that JSON (json_object: any object);
  a prompt that opened thinking → lazy from the closing marker, so the model thinks freely first.
Lazy triggers are regexes (read alike by llama.cpp's std::regex and Python's `re`, which watches
them in constrain.py) that match only when the text written so far *ends inside* a known prefix
of the grammar: llama.cpp replays that text into the grammar, and text it rejects would abort the
process, so a trigger that is not sure does not fire (the call is then parsed without enforcement). An XML call's trigger waits for
`<tool_call>` + `<function=` (then a prefix of an allowed name), so a `<tool_call>` mentioned in
prose stays prose; a Mistral v11+ call's trigger waits for `[TOOL_CALLS]` + the start of an
allowed name. A schema the converter cannot handle gets "any JSON object" arguments and a
warning; an answer schema it cannot handle gets no grammar.

Does not: talk to llama.cpp (the scheduler builds the sampler), or parse output (output.py).
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from ..core import ChatRequest, Tool
from .formats import ARGS, ThinkFormat, ToolFormat
from .gbnf import GAP, WS_SET, Rules, literal, log, prefix_regex, regex_escape, tool_schema
from .xmlcalls import FUNC, FUNC_END, PARAM, PARAM_END, XML_NAME
from .xmlvalues import schema_types, schema_values


@dataclass(frozen=True)
class Grammar:
    gbnf: str
    triggers: tuple[str, ...] = ()  # non-empty → lazy: constrain from the first match on
    after: str = ""  # lazy: triggers count only once this (the thinking's end) has been written

    @property
    def lazy(self) -> bool:
        return bool(self.triggers)


def call_preamble(fmt: ToolFormat) -> list:
    if fmt.xml:
        return [fmt.open, GAP, FUNC]
    if fmt.named:
        return [fmt.open]
    head = [fmt.open, GAP] + (["[", GAP] if fmt.listed else [])
    return head + ["{", GAP, '"name"', GAP, ":", GAP, '"']


# ---- Qwen3-Coder XML calls -----------------------------------------------------------------------
TAG_END, VALUE_END = ">\n", "\n" + PARAM_END + "\n"  # `<function=f>⏎`, `⏎</parameter>⏎`


def xml_text(rules: Rules) -> str:
    """Raw text that never contains `</parameter>`: a matcher for that marker, one rule per state
    (xml-tK: the text so far ends in the marker's first K characters), any state may end."""
    m = PARAM_END  # `<` occurs only first in it: a mismatch restarts at `<` (xml-t1) or at nothing
    for k, c in enumerate(m):
        alts = ['"<" xml-t1', f"[^<{c}] xml-t0" if k else "[^<] xml-t0"]
        if 0 < k < len(m) - 1:  # the marker's last character is the one never allowed
            alts.insert(0, f"{literal(c)} xml-t{k + 1}")
        rules.add(f"xml-t{k}", "( " + " | ".join(alts) + " )?")
    return "xml-t0"


def xml_value_rule(rules: Rules, schema, name: str) -> str | None:
    values = schema_values(schema)
    if values:  # written raw, as the parser reads them back
        return "(" + " | ".join(literal(v if isinstance(v, str) else json.dumps(v)) for v in values) + ")"
    kinds = schema_types(schema)
    if not kinds or "string" in kinds:
        return xml_text(rules)
    return rules.schema(schema, name)  # JSON for a number, boolean, null, object or array


def xml_params(rules: Rules, schema, i: int) -> str | None:
    """The parameters of tool `i` in schema order; None: the schema cannot be spelled."""
    if not isinstance(schema, dict) or schema.get("type", "object") != "object":
        return None
    props, required = schema.get("properties"), schema.get("required") or []
    if not isinstance(props, dict):
        return xml_free(rules) if props is None else None
    parts = []
    for j, (key, sub) in enumerate(props.items()):
        value = xml_value_rule(rules, sub, f"tool{i}-p{j}") if XML_NAME.fullmatch(key) and key else None
        if value is None:
            return None
        one = f"{literal(PARAM + key + TAG_END)} {value} {literal(VALUE_END)}"
        parts.append(one if key in required else f"( {one} )?")
    return " ".join(parts) or '""'


def xml_free(rules: Rules) -> str:
    text = xml_text(rules)
    return rules.add("xml-free", f'( {literal(PARAM)} [^<> \\t\\r\\n]{{1,128}} {literal(TAG_END)} {text} '
                                 f'{literal(VALUE_END)} )*')


def xml_call(rules: Rules, tool: Tool, i: int) -> str:
    params = xml_params(rules, tool_schema(tool), i)
    if params is None:
        log.warning("cannot build an XML call grammar for tool %r: its parameters are free-form", tool.name)
        params = xml_free(rules)
    return f"{literal(FUNC + tool.name + TAG_END)} {params} {literal(FUNC_END)}"


def calls_rule(rules: Rules, tools: list[Tool], fmt: ToolFormat, parallel: bool) -> str:
    alts = []
    for i, tool in enumerate(tools):
        if fmt.xml:
            alts.append(rules.add(f"x-call{i}", xml_call(rules, tool, i)))
            continue
        args = rules.schema(tool_schema(tool), f"tool{i}-args") or rules.any_object()
        if fmt.named:
            alts.append(rules.add(f"x-call{i}", f"{literal(fmt.open + tool.name + ARGS)} {args}"))
            continue
        alts.append(rules.add(
            f"x-call{i}", f'"{{" x-ws "\\"name\\"" x-ws ":" x-ws {literal(json.dumps(tool.name))} '
                          f'x-ws "," x-ws {literal(json.dumps(fmt.args_key))} x-ws ":" x-ws {args} x-ws "}}"'))
    call = rules.add("x-call", " | ".join(alts))
    if fmt.listed:
        more = f' (x-ws "," x-ws {call})*' if parallel else ""
        return rules.add("x-calls", f'{literal(fmt.open)} x-ws "[" x-ws {call}{more} x-ws "]"')
    if fmt.named:
        return rules.add("x-calls", f"{call} (x-ws {call})*" if parallel else call)
    if fmt.bare_json:
        more = f' (x-ws ";"? x-ws {call})*' if parallel else ""
        return rules.add("x-calls", f"({literal(fmt.open)} x-ws)? {call}{more}")
    one = rules.add("x-one", f"{literal(fmt.open)} x-ws {call} x-ws {literal(fmt.close)}")
    return rules.add("x-calls", f"{one} (x-ws {one})*" if parallel else one)


def allowed_tools(req: ChatRequest) -> list[Tool]:
    if req.tool_choice == "function":
        return [t for t in req.tools if t.name == req.tool_name]
    return list(req.tools)


def build_grammar(req: ChatRequest, fmt: ToolFormat, think: ThinkFormat,
                  thinking: bool) -> Grammar | None:
    """The grammar for `req` (None: decode freely). `fmt` is the format calls are written in."""
    rules, alts, preambles = Rules(), [], []
    calling = bool(req.offered_tools)
    forced = calling and req.tool_choice in ("required", "function")
    if calling and allowed_tools(req):
        alts.append(calls_rule(rules, allowed_tools(req), fmt, req.parallel_tool_calls))
        preambles.append(call_preamble(fmt))
    if req.response_schema is not None and not forced:
        answer = rules.schema(req.response_schema, "answer")
        if answer is not None:
            alts.append(answer)
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
    rules.add("root", f"({body}) x-ws")  # whitespace, then only end-of-generation
    if not lazy:
        return Grammar(rules.text())
    return Grammar(rules.text(), lazy_triggers(fmt, [t.name for t in allowed_tools(req)]),
                   after=think.close if thinking else "")


def lazy_triggers(fmt: ToolFormat, names: list[str] = ()) -> tuple[str, ...]:
    """Auto mode: enforce once the model has begun a call.

    Every pattern matches at most a few dozen characters at the end of the text: libstdc++'s
    std::regex recurses once per character a `*` consumes, so a `[\\s\\S]*` over a long answer
    could overflow the worker's stack. Hence no "after `</think>`, anywhere" pattern: the
    Constraint itself waits for `Grammar.after`, and watches only the text that follows it
    (`^` then means the start of the answer).
    """
    preamble = call_preamble(fmt)
    if fmt.xml:  # `<tool_call>` alone may be prose: wait for `<function=`, then an allowed name
        names = "|".join(prefix_regex(["", name + ">\n"]) for name in names)
        return (f"({regex_escape(fmt.open)}{WS_SET}{regex_escape(FUNC)}(?:{names}))$",)
    if fmt.named:  # `[TOOL_CALLS]` alone may be prose: wait for the start of an allowed name
        names = "|".join(prefix_regex([name[0], name[1:] + ARGS]) for name in names if name)
        return (f"({regex_escape(fmt.open)}(?:{names}))$",)
    out = [f"({prefix_regex(preamble)})$"]
    if fmt.bare_json:  # a bare `{"name": …` only at the start of the answer
        bare = prefix_regex(preamble[preamble.index("{"):])
        out.append(f"^{WS_SET}({bare})$")
    return tuple(out)


def answer_is_object(schema: dict) -> bool:
    return not schema or schema.get("type") == "object" or "properties" in schema
