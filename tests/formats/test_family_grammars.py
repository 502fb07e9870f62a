"""Forced calls in each family's own syntax, against llama.cpp's grammar sampler (the embedded
model's vocabulary, as test_grammar.py walks it): the call as the family writes it passes up to
end-of-generation, a value outside the schema is refused, the lazy (auto) grammar starts at the
family's trigger and lets prose pass before it, and what the grammar writes the parser reads back
as the same call. Every family's grammar, in every mode, is one llama.cpp accepts.
"""
from __future__ import annotations

import json

import llama_cpp as C
import pytest

from support.vocab import Vocab
from unsloth_min.core import ChatRequest, TextDelta, Tool, ToolCallDelta
from unsloth_min.engine import calls as F
from unsloth_min.engine import embedded_model_path
from unsloth_min.engine.calls import ThinkFormat
from unsloth_min.engine.constrain import grammar_sampler
from unsloth_min.engine.grammar import build_grammar
from unsloth_min.engine.output import OutputParser

pytestmark = pytest.mark.model
WEATHER = Tool("get_weather", "Weather in a city", {
    "type": "object", "required": ["city", "unit"],
    "properties": {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}}})
TIME = Tool("get_time", "The time", {"type": "object", "properties": {}})
ARGS = '{"city": "Paris", "unit": "celsius"}'
M3 = "]<]minimax[>["

# each family's call of get_weather(city=Paris, unit=celsius), as its forced grammar writes it
CALLS = {
    F.HARMONY: " to=functions.get_weather<|channel|>commentary json<|message|>" + ARGS,
    F.FUNCTIONARY_V32: "get_weather\n" + ARGS,
    F.KIMI_K2: ("<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0<|tool_call_argument_begin|>"
                + ARGS + "<|tool_call_end|><|tool_calls_section_end|>"),
    F.KIMI_K3: ('<|open|>tools<|sep|><|open|>call tool="get_weather" index="1"<|sep|><|open|>argument key="city" '
                'type="string"<|sep|>Paris<|close|>argument<|sep|><|open|>argument key="unit" type="string"<|sep|>'
                "celsius<|close|>argument<|sep|><|close|>call<|sep|><|close|>tools<|sep|>"),
    F.LING: "<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Paris</arg_value>\n<arg_key>unit</arg_key>\n"
            "<arg_value>celsius</arg_value>\n</tool_call>",
    F.COHERE: '<|START_ACTION|>[{"tool_name": "get_weather", "parameters": ' + ARGS + "}]<|END_ACTION|>",
    F.LFM2: '<|tool_call_start|>[get_weather(city="Paris", unit="celsius")]<|tool_call_end|>',
    F.GIGACHAT_V3: '<|message_sep|>\n\nfunction call<|role_sep|>\n{"name": "get_weather", "arguments": ' + ARGS + "}",
    F.MINIMAX_M3: (f'{M3}<tool_call>\n{M3}<invoke name="get_weather">{M3}<city>Paris{M3}</city>{M3}<unit>celsius'
                   f"{M3}</unit>{M3}</invoke>\n{M3}</tool_call>"),
    F.DSML_V32: ('<｜DSML｜function_calls>\n<｜DSML｜invoke name="get_weather">\n<｜DSML｜parameter name="city" '
                 'string="true">Paris</｜DSML｜parameter>\n<｜DSML｜parameter name="unit" string="true">celsius'
                 "</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜function_calls>"),
    F.DSML_V4: ('<｜DSML｜tool_calls>\n<｜DSML｜invoke name="get_weather">\n<｜DSML｜parameter name="city" '
                'string="true">Paris</｜DSML｜parameter>\n<｜DSML｜parameter name="unit" string="true">celsius'
                "</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>"),
    F.GEMMA4: '<|tool_call>call:get_weather{city:<|"|>Paris<|"|>,unit:"celsius"}<tool_call|>',
    F.MINICPM5: '<function name="get_weather"><param name="city">Paris</param><param name="unit">celsius</param></function>',
    F.QWEN3_XML: ("<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n<parameter=unit>\n"
                  "celsius\n</parameter>\n</function>\n</tool_call>"),
    F.SEED_OSS: ("<seed:tool_call>\n<function=get_weather>\n<parameter=city>Paris</parameter>\n<parameter=unit>"
                 "celsius</parameter>\n</function>\n</seed:tool_call>"),
    F.DEEPSEEK_R1: ("<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n" + ARGS +
                    "\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>"),
    F.DEEPSEEK_V31: ("<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>" + ARGS +
                     "<｜tool▁call▁end｜><｜tool▁calls▁end｜>"),
    F.GLM: "<tool_call>get_weather<arg_key>city</arg_key><arg_value>Paris</arg_value><arg_key>unit</arg_key>"
           "<arg_value>celsius</arg_value></tool_call>",
    F.MINIMAX_M2: ('<minimax:tool_call>\n<invoke name="get_weather">\n<parameter name="city">Paris</parameter>\n'
                   '<parameter name="unit">celsius</parameter>\n</invoke>\n</minimax:tool_call>'),
    F.MINIMAX_M1: '<tool_calls>\n{"name": "get_weather", "arguments": ' + ARGS + "}\n</tool_calls>",
    F.NEMOTRON: '<TOOLCALL>[{"name": "get_weather", "arguments": ' + ARGS + "}]</TOOLCALL>",
    F.APRIEL: '<tool_calls>[{"name": "get_weather", "arguments": ' + ARGS + "}]</tool_calls>",
    F.FIREFUNCTION: 'functools[{"name": "get_weather", "arguments": ' + ARGS + "}]",
    F.APERTUS: '<|tools_prefix|>[{"get_weather": ' + ARGS + "}]<|tools_suffix|>",
    F.GIGACHAT_V31: '<|function_call|>{"name": "get_weather", "arguments": ' + ARGS + "}",
    F.COMMAND_R_PLUS: 'Action:\n```json\n[{"tool_name": "get_weather", "parameters": ' + ARGS + "}]\n```",
    F.FUNCTIONARY_V31: "<function=get_weather>" + ARGS + "</function>",
    F.GRANITE: '<|tool_call|>[{"name": "get_weather", "arguments": ' + ARGS + "}]",
    F.MUSE_GLIMMER: (' to=get_weather<|message|><atem:function_calls>\n<atem:invoke name="get_weather">\n'
                     '<atem:parameter name="city">Paris</atem:parameter>\n<atem:parameter name="unit">celsius'
                     "</atem:parameter>\n</atem:invoke>\n</atem:function_calls>"),
    F.MISTRAL_ARGS: "[TOOL_CALLS]get_weather[ARGS]" + ARGS,
    F.MISTRAL: '[TOOL_CALLS][{"name": "get_weather", "arguments": ' + ARGS + "}]",
    F.HERMES: '<tool_call>\n{"name": "get_weather", "arguments": ' + ARGS + "}\n</tool_call>",
    F.LLAMA3: '{"name": "get_weather", "parameters": ' + ARGS + "}",
}
FAMILIES = [f for f in F.FORMATS]


@pytest.fixture(scope="module")
def vocab():
    v = Vocab(embedded_model_path())
    yield v
    C.llama_model_free(v.model)


def grammar(fmt, choice="required", **kw):
    req = ChatRequest(messages=[], tools=[WEATHER, TIME], tool_choice=choice, **kw)
    return build_grammar(req, fmt, ThinkFormat(), False)


def test_every_family_has_its_call():
    assert set(CALLS) == set(F.FORMATS)


@pytest.mark.parametrize("fmt", FAMILIES, ids=lambda f: f.name)
def test_forced_calls_are_written_in_the_family_s_syntax(vocab, fmt):
    call = CALLS[fmt]
    assert vocab.walk(grammar(fmt), call) == "ok"
    assert vocab.walk(grammar(fmt), call.replace("celsius", "kelvin")).startswith("refused")
    assert vocab.walk(grammar(fmt, "function", tool_name="get_time"), call).startswith("refused")
    parser = OutputParser(fmt, schemas={"get_weather": WEATHER.parameters}, start=fmt.start("<|start|>assistant") or fmt.start(">>>"))
    events = parser.push(call) + parser.close()
    calls = [ev for ev in events if isinstance(ev, ToolCallDelta)]
    assert calls[0].name == "get_weather" and json.loads("".join(c.arguments for c in calls)) == json.loads(ARGS)
    assert not "".join(ev.text for ev in events if isinstance(ev, TextDelta)).strip()


@pytest.mark.parametrize("fmt", [f for f in FAMILIES if f.triggers(["get_weather"])], ids=lambda f: f.name)
def test_auto_starts_at_the_family_s_trigger(vocab, fmt):
    g = grammar(fmt, "auto")
    assert g.lazy
    assert vocab.walk_watched(g, "It is {sunny} <b>in</b> Paris [today].")[0] == "ok"
    lead = "" if fmt in (F.LLAMA3, F.HARMONY) else "Let me check. "
    assert vocab.walk_watched(g, lead + CALLS[fmt])[0] == "ok"
    assert vocab.walk_watched(g, lead + CALLS[fmt].replace("celsius", "kelvin"))[0].startswith("refused")


@pytest.mark.parametrize("fmt", FAMILIES, ids=lambda f: f.name)
@pytest.mark.parametrize("choice", ["auto", "required", "function"])
def test_every_mode_is_a_grammar_llama_cpp_accepts(vocab, fmt, choice):
    for g in (grammar(fmt, choice, tool_name="get_time"), grammar(fmt, choice, response_schema={"type": "object"})):
        if g is None:
            continue
        smpl = grammar_sampler(vocab.vocab, g.gbnf, g.triggers)
        assert smpl, g.gbnf
        C.llama_sampler_free(smpl)
