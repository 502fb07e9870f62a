"""The tool-call format objects (engine/calls/) on their own: what each makes of the text after its
marker, its readers fed whole and a character at a time, its grammar rule and its lazy triggers.
The full path (text in, events out; grammars walked through llama.cpp) is test_output.py and
test_grammar.py; the last test here adds a made-up format, to show that it takes one object."""
from __future__ import annotations

import re

import pytest

from unsloth_min.core import ChatRequest, TextDelta, Tool, ToolCallDelta
from unsloth_min.engine import calls as C
from unsloth_min.engine.calls import (FORMATS, HERMES, LLAMA3, MISTRAL, MISTRAL_ARGS, QWEN3_XML,
                                      CallFormat, State, Step)
from unsloth_min.engine.calls.jsoncalls import JsonCalls, JsonReader
from unsloth_min.engine.calls.mistral_args import NamedReader
from unsloth_min.engine.calls.qwen3_xml import XmlReader
from unsloth_min.engine.formats import ThinkFormat
from unsloth_min.engine.gbnf import Rules, literal
from unsloth_min.engine.grammar import build_grammar
from unsloth_min.engine.output import OutputParser

SCHEMAS = {"get_weather": {"type": "object", "properties": {"city": {"type": "string"},
                                                            "days": {"type": "integer"}}},
           "write": {"type": "object", "properties": {"code": {"type": "string"}}}}
TIME = Tool("get_time", "The time", {"type": "object", "properties": {}})
WEATHER = Tool("get_weather", "Weather", SCHEMAS["get_weather"])


def test_every_format_has_its_markers_and_a_unique_name():
    names = [f.name for f in FORMATS]
    assert len(set(names)) == len(names) == 33 and {"hermes", "qwen3_xml", "llama3", "mistral", "mistral_args"} <= set(names)
    assert {f: f.markers for f in (HERMES, QWEN3_XML, LLAMA3, MISTRAL, MISTRAL_ARGS)} == {
        HERMES: ("<tool_call>", "</tool_call>"), QWEN3_XML: ("<tool_call>", "</tool_call>", "<function="),
        LLAMA3: ("<|python_tag|>",), MISTRAL: ("[TOOL_CALLS]",),
        MISTRAL_ARGS: ("[TOOL_CALLS]", "[ARGS]", "[CALL_ID]")}
    assert all(isinstance(f, CallFormat) and f.markers and f.preamble() for f in FORMATS)
    assert all(f.preamble()[0] == f.open for f in (HERMES, QWEN3_XML, LLAMA3, MISTRAL, MISTRAL_ARGS))


# ---- reading: what follows the marker, what follows a call -------------------------------------
def step_of(step: Step | None):
    return None if step is None else (step.take, step.then, type(step.reader).__name__ if step.reader else None)


@pytest.mark.parametrize("fmt, s, listed, expected", [
    (HERMES, '{"name"', False, (0, State.CALL, "JsonReader")),
    (HERMES, "hello", False, (0, State.TEXT, None)),
    (QWEN3_XML, "<function=f>", False, (len("<function="), State.CALL, "XmlReader")),
    (QWEN3_XML, "<func", False, None),  # can't tell yet
    (QWEN3_XML, '{"name"', False, (0, State.CALL, "JsonReader")),  # Hermes JSON inside: lenient
    (QWEN3_XML, "hello", False, (0, State.TEXT, None)),
    (LLAMA3, "{", False, (0, State.CALL, "JsonReader")),
    (MISTRAL, "[{", False, (1, State.LIST, None)),
    (MISTRAL, "{", False, (0, State.TEXT, None)),  # the list must open first
    (MISTRAL, "{", True, (0, State.CALL, "JsonReader")),
    (MISTRAL, "x", True, (0, State.TEXT, None)),
    (MISTRAL_ARGS, "f[ARGS]", False, (0, State.CALL, "NamedReader")),
    (MISTRAL_ARGS, '{"name"', False, (0, State.CALL, "JsonReader")),
])
def test_begin(fmt, s, listed, expected):
    assert step_of(fmt.begin(s, listed, {})) == expected


@pytest.mark.parametrize("fmt, s, expected", [
    (HERMES, "</tool_call> x", (12, State.TEXT)), (HERMES, "</tool", None), (HERMES, "Done.", (0, State.TEXT)),
    (QWEN3_XML, "</tool_call>", (12, State.TEXT)),
    (MISTRAL, ", {", (1, State.LIST)), (MISTRAL, "]", (1, State.TEXT)), (MISTRAL, "x", (0, State.TEXT)),
    (LLAMA3, "; {", (1, State.AFTER)), (LLAMA3, "{", (0, State.OPEN)), (LLAMA3, "x", (0, State.TEXT)),
    (MISTRAL_ARGS, "[TOOL_CALLS]", (0, State.TEXT)),  # the next marker: back to text, which finds it
])
def test_after(fmt, s, expected):
    step = fmt.after(s)
    assert (None if step is None else (step.take, step.then)) == expected


@pytest.mark.parametrize("fmt, s, expected", [
    (LLAMA3, '{"name": "f"', True), (LLAMA3, '{ "name" :', True), (LLAMA3, '{"na', None),
    (LLAMA3, '{ "name"', None), (LLAMA3, '{"answer": 42}', False), (LLAMA3, "Sure", False),
    (HERMES, '{"name": "f"', False), (MISTRAL_ARGS, '{"name": "f"', False),
])
def test_bare_calls_only_where_the_format_has_them(fmt, s, expected):
    assert fmt.maybe_bare_call(s) is expected


# ---- readers, fed as the parser feeds them ---------------------------------------------------------
def read(reader, text: str, size: int | None):
    """Feed `text` whole or `size` characters at a time, keeping what the reader did not take (as
    the parser does); then finish it unless it was no call. (then, name, streamed, call, rest)."""
    chunks = [text] if size is None else [text[i:i + size] for i in range(0, len(text), size)]
    buf, streamed, then, k = "", "", State.CALL, 0
    for k, chunk in enumerate(chunks):
        buf += chunk
        step = reader.feed(buf)
        buf, then = buf[step.take:], step.then
        streamed += "".join(reader.pieces())
        if then is not State.CALL:
            break
    rest = buf + "".join(chunks[k + 1:])
    if then is State.TEXT:
        return then, reader.name, streamed, None, rest
    call = reader.finish(then is State.AFTER, buf)
    return then, reader.name, streamed + "".join(reader.pieces()), call, rest


ARGS = '{"a": [1, "}"], "s": "x,y"}'
READERS = {
    "json": (lambda: JsonReader(), '{"name": "f", "arguments": ' + ARGS + "} tail",
             (State.AFTER, "f", ARGS, ("f", ARGS), " tail")),
    "json-arguments-first": (lambda: JsonReader(), '{"arguments": {"x": 1}, "name": "f"}',
                             (State.AFTER, None, "", ("f", '{"x": 1}'), "")),
    "json-parameters": (lambda: JsonReader("parameters"), '{"parameters": {"b": 2}, "name": "g"}',
                        (State.AFTER, None, "", ("g", '{"b": 2}'), "")),
    "json-no-name": (lambda: JsonReader(), '{"oops": 1}', (State.AFTER, None, "", None, "")),
    "json-cut-off": (lambda: JsonReader(), '{"name": "f", "arguments": {"q": "a b',
                     (State.CALL, "f", '{"q": "a b', ("f", '{"q": "a b'), "")),
    "json-named": (lambda: JsonReader(name="w"), '{"code": "}"} x', (State.AFTER, "w", '{"code": "}"}',
                                                                     ("w", '{"code": "}"}'), " x")),
    "named": (NamedReader, 'get_weather[ARGS]{"city": "Paris"}[TOOL_CALLS]',
              (State.AFTER, "get_weather", '{"city": "Paris"}', ("get_weather", '{"city": "Paris"}'),
               "[TOOL_CALLS]")),
    "named-call-id": (NamedReader, "g[CALL_ID]a1b2[ARGS] {}", (State.AFTER, "g", "{}", ("g", "{}"), "")),
    "named-no-args": (NamedReader, "f {x}", (State.TEXT, None, "", None, "f {x}")),
    "named-no-name": (NamedReader, "[ARGS]{}", (State.TEXT, None, "", None, "[ARGS]{}")),
    "named-cut-in-head": (NamedReader, "get_wea", (State.CALL, None, "", None, "get_wea")),
    "xml": (lambda: XmlReader("</tool_call>", SCHEMAS),
            "get_weather>\n<parameter=city>\nParis\n</parameter>\n<parameter=days>\n3\n</parameter>\n"
            "</function>\n</tool_call>",
            (State.AFTER, "get_weather", '{"city": "Paris", "days": 3}',
             ("get_weather", '{"city": "Paris", "days": 3}'), "\n</tool_call>")),
    "xml-no-parameters": (lambda: XmlReader("</tool_call>", {}), "get_time>\n</function>",
                          (State.AFTER, "get_time", "{}", ("get_time", "{}"), "")),
    "xml-bad-name": (lambda: XmlReader("</tool_call>", {}), "a b>", (State.TEXT, None, "", None, "a b>")),
    "xml-empty-name": (lambda: XmlReader("</tool_call>", {}), ">", (State.TEXT, None, "", None, ">")),
    "xml-cut-off": (lambda: XmlReader("</tool_call>", SCHEMAS), "write>\n<parameter=code>\nprint(1)</param",
                    (State.CALL, "write", '{"code": "print(1)"}', ("write", '{"code": "print(1)"}'),
                     "\nprint(1)</param")),
    "xml-lenient-end": (lambda: XmlReader("</tool_call>", SCHEMAS),
                        "get_weather>\njunk <parameter=days>\n1\n</parameter>\n</tool_call>",
                        (State.AFTER, "get_weather", '{"days": 1}', ("get_weather", '{"days": 1}'),
                         "</tool_call>")),
}


@pytest.mark.parametrize("size", [None, 1, 3])
@pytest.mark.parametrize("name", READERS)
def test_readers(name, size):
    make, text, expected = READERS[name]
    then, got_name, streamed, call, rest = read(make(), text, size)
    assert (then, got_name, streamed, call, rest) == expected  # (cut off: what it had not taken)


def test_xml_reader_gives_each_parameter_as_it_completes():
    reader = XmlReader("</tool_call>", SCHEMAS)
    reader.feed("get_weather>\n<parameter=city>\nParis\n</parameter>\n<parameter=days>\n")
    assert reader.name == "get_weather" and reader.pieces() == ['{"city": "Paris"']
    assert reader.pieces() == []  # each piece once


# ---- grammar: rules and triggers -------------------------------------------------------------------
@pytest.mark.parametrize("fmt, spelled", [
    (HERMES, literal('"get_time"')), (QWEN3_XML, literal("<function=get_time>\n")),
    (LLAMA3, literal('"parameters"')), (MISTRAL, literal('"get_time"')),
    (MISTRAL_ARGS, literal("[TOOL_CALLS]get_time[ARGS]")),
])
def test_calls_rule_spells_the_format(fmt, spelled):
    rules = Rules()
    top = fmt.calls_rule(rules, [TIME], parallel=True)
    assert spelled in rules.rules["x-call0"] and rules.rules["x-call"] == "x-call0" and top == "x-calls"
    assert literal(fmt.open)[:-1] in rules.text()  # the marker: a literal of its own, or the call's start


# (format, a call, what follows where its trigger must fire first, prose that must not fire it)
FAMILY_CALLS = [
    (C.HARMONY, " to=functions.get_time<|channel|>commentary json<|message|>{}", "get_time<|channel|>commentary json<|message|>{}",
     "Send it to=functions please."),
    (C.KIMI_K2, "<|tool_calls_section_begin|><|tool_call_begin|>functions.get_time:0<|tool_call_argument_begin|>{}"
                "<|tool_call_end|><|tool_calls_section_end|>", "<|tool_call_begin|>functions.get_time:0"
     "<|tool_call_argument_begin|>{}<|tool_call_end|><|tool_calls_section_end|>", "Use the tool_calls_section."),
    (C.KIMI_K3, '<|open|>tools<|sep|><|open|>call tool="get_time" index="1"<|sep|><|close|>call<|sep|><|close|>tools<|sep|>',
     '<|open|>call tool="get_time" index="1"<|sep|><|close|>call<|sep|><|close|>tools<|sep|>',
     "Open the tools, call them."),
    (C.LING, "<tool_call>get_time</tool_call>", "</tool_call>", "Write <tool_call> tags, <tool_call>{x}."),
    (C.COHERE, '<|START_ACTION|>[{"tool_call_id": "0", "tool_name": "get_time", "parameters": {}}]<|END_ACTION|>',
     '[{"tool_call_id": "0", "tool_name": "get_time", "parameters": {}}]<|END_ACTION|>', "Use START_ACTION."),
    (C.LFM2, "<|tool_call_start|>[get_time()]<|tool_call_end|>", "()]<|tool_call_end|>", "Say tool_call_start [x]."),
    (C.MINIMAX_M3, ']<]minimax[>[<tool_call>\n]<]minimax[>[<invoke name="get_time">]<]minimax[>[</invoke>\n'
                   "]<]minimax[>[</tool_call>", '\n]<]minimax[>[<invoke name="get_time">]<]minimax[>[</invoke>\n'
                   "]<]minimax[>[</tool_call>", "Use <tool_call> and <invoke name=x>."),
    (C.DSML_V32, '<｜DSML｜function_calls>\n<｜DSML｜invoke name="get_time">\n</｜DSML｜invoke>\n</｜DSML｜function_calls>',
     '\n<｜DSML｜invoke name="get_time">\n</｜DSML｜invoke>\n</｜DSML｜function_calls>', "Use function_calls blocks."),
    (C.DSML_V4, '<｜DSML｜tool_calls>\n<｜DSML｜invoke name="get_time">\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>',
     '\n<｜DSML｜invoke name="get_time">\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>', "Use tool_calls blocks."),
    (C.GEMMA4, "<|tool_call>call:get_time{}<tool_call|>", "call:get_time{}<tool_call|>", "A tool_call: call it."),
    (C.MINICPM5, '<function name="get_time"></function>', 'get_time"></function>', "A function name here."),
    (C.SEED_OSS, "<seed:tool_call>\n<function=get_time>\n</function>\n</seed:tool_call>",
     "\n<function=get_time>\n</function>\n</seed:tool_call>", "Use seed:tool_call blocks."),
    (C.DEEPSEEK_R1, "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_time\n```json\n{}\n```"
                    "<｜tool▁call▁end｜><｜tool▁calls▁end｜>", "<｜tool▁call▁begin｜>function<｜tool▁sep｜>get_time\n```json\n{}\n```"
     "<｜tool▁call▁end｜><｜tool▁calls▁end｜>", "Use tool calls."),
    (C.DEEPSEEK_V31, "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_time<｜tool▁sep｜>{}<｜tool▁call▁end｜>"
                     "<｜tool▁calls▁end｜>", "<｜tool▁call▁begin｜>get_time<｜tool▁sep｜>{}<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
     "Use tool calls."),
    (C.GLM, "<tool_call>get_time</tool_call>", "</tool_call>", "Write <tool_call> tags, <tool_call>{x}."),
    (C.MINIMAX_M2, '<minimax:tool_call>\n<invoke name="get_time">\n</invoke>\n</minimax:tool_call>',
     '\n<invoke name="get_time">\n</invoke>\n</minimax:tool_call>', "Use minimax:tool_call blocks."),
    (C.NEMOTRON, '<TOOLCALL>[{"name": "get_time", "arguments": {}}]</TOOLCALL>',
     '[{"name": "get_time", "arguments": {}}]</TOOLCALL>', "Use TOOLCALL lists."),
    (C.APRIEL, '<tool_calls>[{"name": "get_time", "arguments": {}}]</tool_calls>',
     '[{"name": "get_time", "arguments": {}}]</tool_calls>', "Use tool_calls lists."),
    (C.FIREFUNCTION, ' functools[{"name": "get_time", "arguments": {}}]', '{"name": "get_time", "arguments": {}}]',
     "Import functools now."),
    (C.APERTUS, '<|tools_prefix|>[{"get_time": {}}]<|tools_suffix|>', '[{"get_time": {}}]<|tools_suffix|>',
     "Use tools_prefix."),
    (C.GIGACHAT_V3, '<|message_sep|>\n\nfunction call<|role_sep|>\n{"name": "get_time", "arguments": {}}',
     '\n{"name": "get_time", "arguments": {}}', "Split at message_sep."),
    (C.GIGACHAT_V31, '<|function_call|>{"name": "get_time", "arguments": {}}', '{"name": "get_time", "arguments": {}}',
     "A function_call, {like this}."),
    (C.COMMAND_R_PLUS, 'Action:\n```json\n[{"tool_name": "get_time", "parameters": {}}]\n```',
     '\n```json\n[{"tool_name": "get_time", "parameters": {}}]\n```', "Take no action."),
    (C.FUNCTIONARY_V31, '<function=get_time>{}</function>', "get_time>{}</function>", "Use function tags."),
    (C.FUNCTIONARY_V32, "get_time\n{}", None, "all\nHello."),
    (C.MINIMAX_M1, '<tool_calls>\n{"name": "get_time", "arguments": {}}\n</tool_calls>',
     '\n{"name": "get_time", "arguments": {}}\n</tool_calls>', "Use tool_calls tags."),
    (C.GRANITE, '<|tool_call|>[{"name": "get_time", "arguments": {}}]', '[{"name": "get_time", "arguments": {}}]',
     "A tool_call, [maybe]."),
    (C.MUSE_GLIMMER, ' to=get_time<|message|><atem:function_calls>\n<atem:invoke name="get_time">\n</atem:invoke>\n'
                     "</atem:function_calls>", '<atem:function_calls>\n<atem:invoke name="get_time">\n'
                     "</atem:invoke>\n</atem:function_calls>", "Send it to=user<|message|>, to=get_time."),
]

CALLS = {  # a call in each format, where its trigger must fire first, and prose that must not fire it
    HERMES: ('<tool_call>\n{"name": "get_time", "arguments": {}}</tool_call>', len("<tool_call>"),
             "Write calls in tool_call tags, {like this}."),
    QWEN3_XML: ("<tool_call>\n<function=get_time>\n</function>\n</tool_call>", len("<tool_call>\n<function="),
                "Write calls in <tool_call> tags, like <tool_call>{json}</tool_call>."),
    LLAMA3: ('{"name": "get_time", "parameters": {}}', 1, 'The answer is {"name": "x"}.'),
    MISTRAL: ('[TOOL_CALLS] [{"name": "get_time", "arguments": {}}]', len("[TOOL_CALLS]"), "Use TOOL_CALLS."),
    MISTRAL_ARGS: ("[TOOL_CALLS]get_time[ARGS]{}", len("[TOOL_CALLS]g"), "Write [TOOL_CALLS]lookup[ARGS]{x}."),
    **{fmt: (call, None if rest is None else len(call) - len(rest), prose) for fmt, call, rest, prose in FAMILY_CALLS},
}


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
def test_triggers_fire_where_a_call_begins_and_not_in_prose(fmt):
    call, first, prose = CALLS[fmt]
    triggers = [re.compile(t) for t in fmt.triggers(["get_time"])]
    fired = [i for i in range(len(call) + 1) if any(t.search(call[:i]) for t in triggers)]
    assert (fired and fired[0] == first) if first is not None else not triggers  # (None: no safe trigger)
    assert not any(t.search(prose[:i]) for t in triggers for i in range(len(prose) + 1))


# ---- a new format is one object --------------------------------------------------------------------
class Bracket(JsonCalls):
    """A made-up format, `<<{"name": …, "arguments": …}>>`: everything the engine needs to know."""
    name, open, close = "bracket", "<<", ">>"

    def calls_of(self, rules: Rules, call: str, parallel: bool) -> str:
        one = rules.add("x-one", f"{literal(self.open)} {call} {literal(self.close)}")
        return rules.add("x-calls", f"{one} (x-ws {one})*" if parallel else one)


def test_a_new_format_needs_no_change_to_the_parser_or_the_grammar():
    fmt, text = Bracket(), 'Sure. <<{"name": "get_time", "arguments": {"tz": "UTC"}}>> Done. a << b'
    parser = OutputParser(fmt)
    events = [ev for i in range(len(text)) for ev in parser.push(text[i])] + parser.close()
    calls = [ev for ev in events if isinstance(ev, ToolCallDelta)]
    assert calls[0].name == "get_time" and "".join(c.arguments for c in calls) == '{"tz": "UTC"}'
    assert "".join(ev.text for ev in events if isinstance(ev, TextDelta)) == "Sure. Done. a << b"
    req = ChatRequest(messages=[], tools=[TIME, WEATHER], tool_choice="auto")
    grammar = build_grammar(req, fmt, ThinkFormat(), False)
    assert 'x-one ::= "<<" x-call ">>"' in grammar.gbnf and grammar.lazy
    assert re.search(grammar.triggers[0], 'Sure. <<{"name": "')
