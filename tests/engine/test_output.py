"""The output parser: every format, fed whole, split at every byte boundary, and byte by byte.

Each case is a model's raw output and what a client must see. The bytes go through `TextStream`
(as the scheduler's tokens do) and then the parser; the events are folded the way a client folds
a stream. Whatever the split, the fold equals the expected answer, which is also what the
non-streaming path (the same parser, the same events) returns.
"""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unsloth_min.core import ReasoningDelta, TextDelta, ToolCallDelta
from unsloth_min.engine.formats import HERMES, LLAMA3, MISTRAL, MISTRAL_ARGS, QWEN3_XML, ThinkFormat
from unsloth_min.engine.output import OutputParser
from unsloth_min.engine.calls.xmlvalues import xml_value
from unsloth_min.engine.textstream import TextStream

WEATHER = '{"city": "Paris", "unit": "celsius"}'
TRICKY = '{"code": "if (a) { b = \\"}\\"; } // ]", "n": [1, {"x": null}], "s": "a,b}"}'
# Qwen3-Coder XML calls: values are raw text, typed by the tool's schema
SCHEMAS = {"get_weather": {"type": "object", "properties": {
               "city": {"type": "string"}, "days": {"type": "integer"}, "metric": {"type": "boolean"},
               "unit": {"enum": ["celsius", "fahrenheit"]}}},
           "write": {"type": "object", "properties": {
               "code": {"type": "string"}, "opts": {"type": "object"}, "tags": {"type": "array"},
               "ratio": {"type": ["number", "null"]}, "id": {"type": "string"}}}}
XML = {"tools": QWEN3_XML, "schemas": SCHEMAS}
CODE = "def f(a, b):\n    if a < b and b > 0:\n        return '</param' + \"</function>\"\n\n"
XML_WEATHER = ("<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n"
               "<parameter=days>\n3\n</parameter>\n<parameter=metric>\nTrue\n</parameter>\n"
               "<parameter=unit>\ncelsius\n</parameter>\n</function>\n</tool_call>")
XML_WEATHER_ARGS = '{"city": "Paris", "days": 3, "metric": true, "unit": "celsius"}'
XML_WRITE = ("<tool_call>\n<function=write>\n<parameter=code>\n" + CODE + "\n</parameter>\n"
             '<parameter=opts>\n{"mode": "w", "nested": {"deep": [1, 2.5, null]}}\n</parameter>\n'
             "<parameter=tags>\n['a', 'b']\n</parameter>\n<parameter=ratio>\nnull\n</parameter>\n"
             "<parameter=id>\n007\n</parameter>\n<parameter=extra>\n42\n</parameter>\n"
             "</function>\n</tool_call>")
XML_WRITE_ARGS = json.dumps({"code": CODE, "opts": {"mode": "w", "nested": {"deep": [1, 2.5, None]}},
                             "tags": ["a", "b"], "ratio": None, "id": "007", "extra": 42})
XML_TIME = "<tool_call>\n<function=get_time>\n</function>\n</tool_call>"
# Mistral v11+ (Small 3.1+, Devstral, Magistral): `[TOOL_CALLS]NAME[ARGS]{…}` per call
MA = {"tools": MISTRAL_ARGS}
MA_WEATHER, MA_TIME = "[TOOL_CALLS]get_weather[ARGS]" + WEATHER, "[TOOL_CALLS]get_time[ARGS]{}"

CASES = {
    "plain": ({}, "Hello <b>world</b> 🙂", [("text", "Hello <b>world</b> 🙂")]),
    "leading-space": ({}, "  hi", [("text", "  hi")]),
    "think": ({}, "<think>\nhmm, 2 < 3\n</think>\n\nThe answer.",
              [("reasoning", "hmm, 2 < 3"), ("text", "The answer.")]),
    "think-opened-by-prompt": ({"thinking": True}, "a </b> b\n</think>\n\nYes, 世界.",
                               [("reasoning", "a </b> b"), ("text", "Yes, 世界.")]),
    "think-cut-off": ({"thinking": True}, "still thinking </thi", [("reasoning", "still thinking </thi")]),
    "think-only-at-start": ({}, "I <think> so", [("text", "I <think> so")]),
    "think-brackets": ({"think": ThinkFormat("[THINK]", "[/THINK]")}, "[THINK]x[/THINK]y",
                       [("reasoning", "x"), ("text", "y")]),
    "hermes": ({"tools": HERMES},
               f'Let me check.\n<tool_call>\n{{"name": "get_weather", "arguments": {WEATHER}}}\n</tool_call>\n'
               '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>',
               [("text", "Let me check.\n"), ("call", "get_weather", WEATHER), ("call", "get_time", "{}")]),
    "hermes-after-thinking": ({"tools": HERMES, "thinking": True},
                              f'call it</think>\n\n<tool_call>{{"name": "f", "arguments": {TRICKY}}}</tool_call>',
                              [("reasoning", "call it"), ("call", "f", TRICKY)]),
    "hermes-text-after-call": ({"tools": HERMES},
                               '<tool_call>{"name": "f", "arguments": {}}</tool_call>\n\nDone.',
                               [("call", "f", "{}"), ("text", "Done.")]),
    "hermes-arguments-first": ({"tools": HERMES}, '<tool_call>{"arguments": {"x": 1}, "name": "f"}</tool_call>',
                               [("call", "f", '{"x": 1}')]),
    "hermes-no-arguments": ({"tools": HERMES}, '<tool_call>{"name": "f"}</tool_call>', [("call", "f", "{}")]),
    "hermes-not-a-call": ({"tools": HERMES}, "Wrap calls in <tool_call> tags.",
                          [("text", "Wrap calls in <tool_call> tags.")]),
    "hermes-not-json": ({"tools": HERMES}, "<tool_call>{oops}</tool_call>",
                        [("text", "<tool_call>{oops}</tool_call>")]),
    "hermes-partial-marker": ({"tools": HERMES}, "a <tool_c", [("text", "a <tool_c")]),
    "hermes-cut-off": ({"tools": HERMES}, '<tool_call>{"name": "f", "arguments": {"q": "a b',
                       [("call", "f", '{"q": "a b')]),
    "hermes-later-call-cut-off": ({"tools": HERMES},
                                  '<tool_call>{"name": "f", "arguments": {}}</tool_call>'
                                  '<tool_call>{"name": "g", "arguments": {"q": ',
                                  [("call", "f", "{}")]),
    "hermes-one-call-only": ({"tools": HERMES, "parallel": False},
                             '<tool_call>{"name": "f", "arguments": {}}</tool_call>'
                             '<tool_call>{"name": "g", "arguments": {}}</tool_call>', [("call", "f", "{}")]),
    "hermes-repeat-dropped": ({"tools": HERMES},
                              '<tool_call>{"name": "f", "arguments": {"a": 1}}</tool_call>\n'
                              '<tool_call>{"name": "f", "arguments": {"a":1}}</tool_call>', [("call", "f", '{"a": 1}')]),
    "xml": (XML, "Let me check.\n" + XML_WEATHER + "\n" + XML_WRITE + "\n" + XML_TIME,
            [("text", "Let me check.\n"), ("call", "get_weather", XML_WEATHER_ARGS),
             ("call", "write", XML_WRITE_ARGS), ("call", "get_time", "{}")]),
    "xml-after-thinking": ({**XML, "thinking": True}, "I need <tool_call> weather.\n</think>\n\n" + XML_WEATHER,
                           [("reasoning", "I need <tool_call> weather."), ("call", "get_weather", XML_WEATHER_ARGS)]),
    "xml-text-after-call": (XML, XML_TIME + "\n\nDone.", [("call", "get_time", "{}"), ("text", "Done.")]),
    "xml-not-a-call": (XML, "Wrap calls in <tool_call> tags.", [("text", "Wrap calls in <tool_call> tags.")]),
    "xml-no-function": (XML, "<tool_call>\nhello\n</tool_call> x", [("text", "<tool_call>\nhello\n</tool_call> x")]),
    "xml-bad-name": (XML, "<tool_call>\n<function=a b>\n</function>\n</tool_call>",
                     [("text", "<tool_call>\n<function=a b>\n</function>\n</tool_call>")]),
    "xml-partial-marker": (XML, "a <tool_call>\n<funct", [("text", "a <tool_call>\n<funct")]),
    "xml-cut-before-name-end": (XML, "<tool_call>\n<function=get_wea", [("text", "<tool_call>\n<function=get_wea")]),
    "xml-cut-off": (XML, "<tool_call>\n<function=write>\n<parameter=opts>\n{}\n</parameter>\n"
                         "<parameter=code>\nprint(1)\nprint(2)</param",
                    [("call", "write", '{"opts": {}, "code": "print(1)\\nprint(2)"}')]),
    "xml-cut-between-parameters": (XML, "<tool_call>\n<function=get_weather>\n<parameter=days>\n2\n</parameter>\n<para",
                                   [("call", "get_weather", '{"days": 2}')]),
    "xml-later-call-cut-off": (XML, XML_TIME + XML_WEATHER[:60], [("call", "get_time", "{}")]),
    "xml-one-call-only": ({**XML, "parallel": False}, XML_TIME + XML_WEATHER, [("call", "get_time", "{}")]),
    "xml-repeat-dropped": (XML, XML_WEATHER + XML_WEATHER.replace("\n3\n", "\n 3\n"),
                           [("call", "get_weather", XML_WEATHER_ARGS)]),
    "xml-types-that-do-not-parse": (XML, "<tool_call><function=get_weather><parameter=days>\nsoon\n</parameter>"
                                         "<parameter=metric>\nyes\n</parameter><parameter=city>\n\n 42 \n\n</parameter>"
                                         "</function></tool_call>",
                                    [("call", "get_weather", '{"days": "soon", "metric": "yes", "city": "\\n 42 \\n"}')]),
    "xml-lenient": (XML, "<tool_call>\n<function=get_weather>\njunk <parameter=days>\n1\n</parameter>\n"
                         "</tool_call>\nok", [("call", "get_weather", '{"days": 1}'), ("text", "ok")]),
    "xml-hermes-json-inside": (XML, '<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n</tool_call>',
                               [("call", "f", '{"a": 1}')]),
    "markers-without-tools": ({}, '<tool_call>{"name": "f"}</tool_call>',
                              [("text", '<tool_call>{"name": "f"}</tool_call>')]),
    "mistral": ({"tools": MISTRAL},
                '[TOOL_CALLS] [{"name": "f", "arguments": {"a": 1}}, {"name": "g", "arguments": ' + TRICKY + "}]",
                [("call", "f", '{"a": 1}'), ("call", "g", TRICKY)]),
    "mistral-text-first": ({"tools": MISTRAL}, 'OK [TOOL_CALLS][{"name": "f", "arguments": {}}]',
                           [("text", "OK "), ("call", "f", "{}")]),
    "mistral-args": (MA, "Let me check.\n" + MA_WEATHER + "[TOOL_CALLS]write[ARGS]" + TRICKY + "\n" + MA_TIME,
                     [("text", "Let me check.\n"), ("call", "get_weather", WEATHER), ("call", "write", TRICKY),
                      ("call", "get_time", "{}")]),
    "mistral-args-call-id": (MA, "[TOOL_CALLS]get_weather[CALL_ID]a1b2c3d4e[ARGS] " + WEATHER + MA_TIME,
                             [("call", "get_weather", WEATHER), ("call", "get_time", "{}")]),
    "mistral-args-after-thinking": ({**MA, "think": ThinkFormat("[THINK]", "[/THINK]")},
                                    "[THINK]I need [TOOL_CALLS] weather.[/THINK]\n" + MA_WEATHER,
                                    [("reasoning", "I need [TOOL_CALLS] weather."), ("call", "get_weather", WEATHER)]),
    "mistral-args-text-after-call": (MA, MA_TIME + "\n\nDone.", [("call", "get_time", "{}"), ("text", "Done.")]),
    "mistral-args-not-a-call": (MA, "Use [TOOL_CALLS] to call, e.g. [TOOL_CALLS]f {x} or [TOOL_CALLS][ARGS]{}.",
                                [("text", "Use [TOOL_CALLS] to call, e.g. [TOOL_CALLS]f {x} or [TOOL_CALLS][ARGS]{}.")]),
    "mistral-args-no-object": (MA, "[TOOL_CALLS]f[ARGS] oops [TOOL_CALLS]g[CALL_ID]x y[ARGS]{}",
                               [("text", "[TOOL_CALLS]f[ARGS] oops [TOOL_CALLS]g[CALL_ID]x y[ARGS]{}")]),
    "mistral-args-old-list-is-text": (MA, '[TOOL_CALLS][{"name": "f", "arguments": {}}]',
                                      [("text", '[TOOL_CALLS][{"name": "f", "arguments": {}}]')]),
    "mistral-args-json-object": (MA, '[TOOL_CALLS]{"name": "f", "arguments": {"a": 1}}', [("call", "f", '{"a": 1}')]),
    "mistral-args-partial-marker": (MA, "a [TOOL_CA", [("text", "a [TOOL_CA")]),
    "mistral-args-cut-before-args": (MA, "[TOOL_CALLS]get_weather[AR", [("text", "[TOOL_CALLS]get_weather[AR")]),
    "mistral-args-cut-off": (MA, '[TOOL_CALLS]write[ARGS]{"code": "a {", "n": [1, ',
                             [("call", "write", '{"code": "a {", "n": [1,')]),
    "mistral-args-later-call-cut-off": (MA, MA_TIME + MA_WEATHER[:40], [("call", "get_time", "{}")]),
    "mistral-args-later-name-cut-off": (MA, MA_TIME + "[TOOL_CALLS]get_wea", [("call", "get_time", "{}")]),
    "mistral-args-one-call-only": ({**MA, "parallel": False}, MA_TIME + MA_WEATHER, [("call", "get_time", "{}")]),
    "mistral-args-repeat-dropped": (MA, MA_WEATHER + "\n" + MA_WEATHER.replace(", ", ","),
                                    [("call", "get_weather", WEATHER)]),
    "llama3-bare": ({"tools": LLAMA3}, ' {"name": "f", "parameters": {"a": "x"}}', [("call", "f", '{"a": "x"}')]),
    "llama3-python-tag": ({"tools": LLAMA3}, 'Sure.<|python_tag|>{"name": "f", "parameters": {}}; '
                                             '{"name": "g", "parameters": {"b": 2}}',
                          [("text", "Sure."), ("call", "f", "{}"), ("call", "g", '{"b": 2}')]),
    "llama3-json-answer": ({"tools": LLAMA3}, '{"answer": 42}', [("text", '{"answer": 42}')]),
    "llama3-bare-only-at-start": ({"tools": LLAMA3}, 'x {"name": "f", "parameters": {}}',
                                  [("text", 'x {"name": "f", "parameters": {}}')]),
}


def run(kwargs: dict, pieces: list[bytes]) -> tuple[list, OutputParser]:
    parser, stream, events = OutputParser(**kwargs), TextStream(), []
    for piece in pieces:
        events += parser.push(stream.push(piece)[0])
    events += parser.push(stream.flush())
    return events + parser.close(), parser


def minted(fmt, call_id: str, name: str) -> bool:
    """An id we minted: `call_…`, or one of the format's own shape where it has one (Mistral's
    9 letters and digits)."""
    own_rule = fmt is not None and fmt.fit_id("call_x", 0, name) != "call_x"
    return call_id.startswith("call_") if not own_rule else fmt.fit_id(call_id, 0, name) == call_id


def fold(events: list, fmt=None) -> list:
    """What a client assembles: runs of text/reasoning joined, calls by index (ids checked)."""
    out, calls = [], {}
    for ev in events:
        if isinstance(ev, ToolCallDelta):
            if ev.index not in calls:
                assert ev.index == len(calls) and minted(fmt, ev.id, ev.name) and ev.name
                calls[ev.index] = ["call", ev.name, ""]
                out.append(calls[ev.index])
            else:
                assert ev.id is None and ev.name is None
            calls[ev.index][2] += ev.arguments
            continue
        kind = "text" if isinstance(ev, TextDelta) else "reasoning"
        assert isinstance(ev, (TextDelta, ReasoningDelta)) and ev.text
        if out and out[-1][0] == kind:
            out[-1][1] += ev.text
        else:
            out.append([kind, ev.text])
    return [tuple(x) for x in out]


@pytest.mark.parametrize("name", CASES)
def test_whole_and_every_split(name):
    kwargs, text, expected = CASES[name]
    data, fmt = text.encode(), kwargs.get("tools")
    assert fold(run(kwargs, [data])[0], fmt) == expected
    for i in range(1, len(data)):
        assert fold(run(kwargs, [data[:i], data[i:]])[0], fmt) == expected, f"split at byte {i}"
    assert fold(run(kwargs, [data[i:i + 1] for i in range(len(data))])[0], fmt) == expected


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(sorted(CASES)), cuts=st.lists(st.integers(min_value=0, max_value=400)))
def test_random_splits(name, cuts):
    kwargs, text, expected = CASES[name]
    data = text.encode()
    edges = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    pieces = [data[a:b] for a, b in zip(edges, edges[1:])]
    assert fold(run(kwargs, pieces)[0], kwargs.get("tools")) == expected


def test_arguments_stream_in_fragments_and_parse():
    text = f'<tool_call>{{"name": "get_weather", "arguments": {WEATHER}}}</tool_call>'
    events, parser = run({"tools": HERMES}, [text[i:i + 3].encode() for i in range(0, len(text), 3)])
    args = [ev.arguments for ev in events if isinstance(ev, ToolCallDelta)]
    assert args[0] == "" and len(args) > 5  # name first, then the arguments as they arrive
    assert json.loads("".join(args)) == json.loads(WEATHER)
    assert parser.calls == 1 and not parser.cut


def test_cut_off_and_repeat_flags():
    _, parser = run({"tools": HERMES}, [b'<tool_call>{"name": "f", "arguments": {"q": "a'])
    assert parser.cut
    two = b'<tool_call>{"name": "f", "arguments": {}}</tool_call><tool_call>{"name": "f", "arguments": {}}'
    _, parser = run({"tools": HERMES}, [two + b"</tool_call>"])
    assert parser.repeating and parser.calls == 1


def test_xml_calls_stream_parameter_by_parameter_and_flag_cuts():
    events, parser = run(XML, [XML_WEATHER.encode()])
    args = [ev.arguments for ev in events if isinstance(ev, ToolCallDelta)]
    assert args == ["", '{"city": "Paris"', ', "days": 3', ', "metric": true', ', "unit": "celsius"', "}"]
    assert parser.calls == 1 and not parser.cut
    _, parser = run(XML, [XML_WEATHER[:90].encode()])
    assert parser.cut and parser.calls == 1
    _, parser = run(XML, [(XML_TIME * 2).encode()])
    assert parser.repeating and parser.calls == 1


@pytest.mark.parametrize("raw, schema, value", [
    ("\n  two\n\nlines  \n", {"type": "string"}, "  two\n\nlines  "),  # exactly one newline each side
    ("\n-12\n", {"type": "integer"}, -12), ("\n2.0\n", {"type": "integer"}, 2), ("\n2.5\n", {"type": "integer"}, "2.5"),
    ("\n1e3\n", {"type": "number"}, 1000.0), ("\nNaN\n", {"type": "number"}, "NaN"),
    ("\n007\n", {"type": "integer"}, 7), ("\n.5\n", {"type": "number"}, 0.5), ("\n1 2\n", {"type": "integer"}, "1 2"),
    ("\nfalse\n", {"type": "boolean"}, False), ("\nTrue\n", {"type": "boolean"}, True),
    ('\n{"a": [1]}\n', {"type": "object"}, {"a": [1]}), ("\n{'a': None}\n", {"type": "object"}, {"a": None}),
    ("\n[1, 2]\n", {"type": "object"}, "[1, 2]"), ("\n{1, 2}\n", {"type": "array"}, "{1, 2}"),
    ("\nNone\n", {"type": ["string", "null"]}, None), ("\n7\n", {"enum": [7, 8]}, 7),
    ("\n7\n", {"enum": ["7", "8"]}, "7"), ("\n7\n", {"anyOf": [{"type": "integer"}, {"type": "null"}]}, 7),
    ("\n7\n", None, 7), ("\nParis\n", None, "Paris"), ("\n[1]\n", {}, [1]),
])
def test_xml_values_are_typed_by_the_schema(raw, schema, value):
    assert xml_value(raw, schema) == value and type(xml_value(raw, schema)) is type(value)


def test_mistral_args_stream_as_they_arrive_and_flag_cuts_and_repeats():
    events, parser = run(MA, [MA_WEATHER[i:i + 3].encode() for i in range(0, len(MA_WEATHER), 3)])
    args = [ev.arguments for ev in events if isinstance(ev, ToolCallDelta)]
    assert args[0] == "" and len(args) > 5 and "".join(args) == WEATHER  # name first, then the object
    assert events[0].name == "get_weather" and parser.calls == 1 and not parser.cut
    _, parser = run(MA, [MA_WEATHER[:-5].encode()])
    assert parser.cut and parser.calls == 1
    _, parser = run(MA, [(MA_TIME * 2).encode()])
    assert parser.repeating and parser.calls == 1


def test_passthrough_once_plain_text_has_started():
    parser = OutputParser()
    assert not parser.passthrough  # `<think>` could still open
    assert parser.push("Hi") == [TextDelta("Hi")]
    assert parser.passthrough
    assert not OutputParser(HERMES).passthrough


# ---- the engine's loop over the parser: finish reasons, repeat stop, reasoning tokens -------------
def engine_events(kwargs: dict, tokens: list[str], reason: str = "stop"):
    import asyncio
    from types import SimpleNamespace

    from unsloth_min.core import Finish, Usage
    from unsloth_min.engine import parsed

    async def go():
        queue, seq = asyncio.Queue(), SimpleNamespace(stop=False)
        for t in tokens:
            queue.put_nowait(TextDelta(t))
        queue.put_nowait(Finish(reason, Usage(5, len(tokens))))
        return [ev async for ev in parsed(queue, OutputParser(**kwargs), seq)], seq
    return asyncio.run(go())


def test_output_the_parser_kept_whole_is_given_back_as_text():
    """Output tokens counted are output delivered: an opened call list cut off before any call
    (an input the parser keeps whole) comes back as text; plain text is untouched."""
    events, _ = engine_events({"tools": MISTRAL}, ["[TOOL_CALLS]", "["], "length")
    assert events[:-1] == [TextDelta("[TOOL_CALLS][")] and events[-1].reason == "length"
    events, _ = engine_events({"tools": MISTRAL}, ["Hello", " there"])
    assert "".join(ev.text for ev in events[:-1]) == "Hello there"
    events, _ = engine_events({"tools": HERMES}, ["<think>", "</think>", "\n"])
    assert events[:-1] == []  # an empty thinking block is markup, not an answer to give back


def test_engine_finish_reasons():
    call = ['<tool_call>{"name": "f", ', '"arguments": {"a": 1}}', "</tool_call>"]
    events, seq = engine_events({"tools": HERMES}, call)
    assert events[-1].reason == "tool_calls" and not seq.stop
    events, _ = engine_events({"tools": HERMES}, call[:2] + ['<tool_call>{"name": "g"'], "length")
    assert events[-1].reason == "tool_calls"  # the cut-off second call was dropped
    events, _ = engine_events({"tools": HERMES}, call[:1] + ['"arguments": {"a": '], "length")
    assert events[-1].reason == "length"  # the only call is cut: say so
    events, _ = engine_events({"tools": HERMES}, ["Just text."])
    assert events[-1].reason == "stop"


def test_engine_stops_a_repeating_model_and_counts_thinking():
    _, seq = engine_events({"tools": HERMES}, ['<tool_call>{"name": "f", "arguments": {}}</tool_call>'] * 2)
    assert seq.stop
    events, _ = engine_events({"thinking": True}, ["a", " b", "</think>", "c"])
    assert events[-1].usage.reasoning_tokens == 3  # the closing marker is a thinking token too
    assert [type(e).__name__ for e in events] == ["ReasoningDelta", "ReasoningDelta", "TextDelta", "Finish"]
