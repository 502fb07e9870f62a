"""Grammars against llama.cpp itself: text walked token by token through the real grammar sampler.

A walk tokenizes a candidate answer with SmolLM2's vocabulary (loaded vocab-only, no weights) and
offers each token to the grammar the way the scheduler does (`Candidates.allows`, then accept):
what a valid call spells must pass up to end-of-generation, and a wrong enum, a missing required
key or an unknown name must be refused at the token that breaks it. Lazy grammars see free text
until their trigger, which also checks that the trigger's replay never feeds the grammar text it
would reject (llama.cpp aborts on that).
"""
from __future__ import annotations

import logging

import llama_cpp as C
import pytest

from unsloth_min.core import ChatRequest, Tool
from unsloth_min.engine import embedded_model_path
from support.vocab import Vocab
from unsloth_min.engine.constrain import WINDOW, grammar_sampler
from unsloth_min.engine.formats import HERMES, LLAMA3, MISTRAL, MISTRAL_ARGS, QWEN3_XML, ThinkFormat
from unsloth_min.engine.grammar import build_grammar

pytestmark = pytest.mark.model
WEATHER = Tool("get_weather", "Weather in a city", {
    "type": "object", "required": ["city", "unit"],
    "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}})
TIME = Tool("get_time", "The time", {"type": "object", "properties": {}})
GOOD = '{"city": "Paris", "unit": "celsius"}'
HERMES_CALL = '<tool_call>\n{"name": "get_weather", "arguments": ' + GOOD + '}\n</tool_call>'


@pytest.fixture(scope="module")
def vocab():
    v = Vocab(embedded_model_path())
    yield v
    C.llama_model_free(v.model)


def grammar(choice="required", tools=(WEATHER, TIME), fmt=HERMES, thinking=False, **kw):
    req = ChatRequest(messages=[], tools=list(tools), tool_choice=choice, **kw)
    return build_grammar(req, fmt, ThinkFormat(), thinking)


def test_required_accepts_a_valid_call_and_then_only_the_end(vocab):
    g = grammar()
    assert not g.lazy
    assert vocab.walk(g, HERMES_CALL) == "ok"
    assert vocab.walk(g, HERMES_CALL + "\n") == "ok"  # whitespace, then the end
    assert vocab.walk(g, HERMES_CALL[:-3], end=True) == "no end allowed"
    assert vocab.walk(g, HERMES_CALL + "\nThanks").startswith("refused")


@pytest.mark.parametrize("bad", [
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "kelvin"}}\n</tool_call>',
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
    '<tool_call>\n{"name": "get_wether", "arguments": {}}\n</tool_call>',
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": 3, "unit": "celsius"}}\n</tool_call>',
    'The weather is nice.',
])
def test_required_refuses_what_breaks_the_schema(vocab, bad):
    assert vocab.walk(grammar(), bad).startswith("refused")


def test_strings_hold_only_what_json_allows(vocab):
    """A raw newline inside a JSON string is invalid JSON: the grammar must refuse it (the escape
    is fine), also in "any object" arguments."""
    code = Tool("python", "Run code", {"type": "object", "properties": {"code": {"type": "string"}}})
    call = '<tool_call>{"name": "python", "arguments": {"code": "%s"}}</tool_call>'
    assert vocab.walk(grammar(tools=[code]), call % "x = 1\\ny = 2") == "ok"
    assert vocab.walk(grammar(tools=[code]), call % "x = 1\ny = 2").startswith("refused")
    assert vocab.walk(grammar(tools=[code]), call % "tab\there").startswith("refused")
    loose = Tool("f", "any object", None)
    free = '<tool_call>{"name": "f", "arguments": {"a": "%s"}}</tool_call>'
    assert vocab.walk(grammar(tools=[loose]), free % "1\\n2") == "ok"
    assert vocab.walk(grammar(tools=[loose]), free % "1\n2").startswith("refused")


def test_empty_parameters_still_mean_an_object(vocab):
    """`"parameters": {}` is a schema that allows any JSON value; arguments must be an object."""
    empty = Tool("f", "no parameters", {})
    call = '<tool_call>{"name": "f", "arguments": %s}</tool_call>'
    assert vocab.walk(grammar(tools=[empty]), call % '{"a": 1}') == "ok"
    for value in ("1", '"x"', "[1]"):
        assert vocab.walk(grammar(tools=[empty]), call % value).startswith("refused"), value


def test_a_schema_of_only_annotations_allows_any_value(vocab):
    """Claude Code's `{"description": …}` (no type): any JSON value, as JSON Schema says."""
    run = Tool("run", "Run", {"type": "object", "required": ["n", "args"], "properties": {
        "n": {"type": "integer"}, "args": {"description": "any"}}})
    call = '<tool_call>{"name": "run", "arguments": {"n": %s, "args": %s}}</tool_call>'
    for value in ('[1, "a"]', '{"k": null}', '"x"', "3", "true"):
        assert vocab.walk(grammar(tools=[run]), call % ("1", value)) == "ok", value
    # the rest of the schema still holds (it once fell back to any object, with a warning)
    assert vocab.walk(grammar(tools=[run]), call % ('"1"', "3")).startswith("refused")
    assert vocab.walk(grammar(tools=[run]), call % ("1", "nope")).startswith("refused")


def test_integer_bounds_are_enforced(vocab):
    """llama-cpp-python's converter reads an integer's type only; ours adds its bounds."""
    pick = Tool("pick", "Pick", {"type": "object", "required": ["n", "k"], "properties": {
        "n": {"type": "integer", "minimum": 1, "maximum": 12},
        "k": {"type": "integer", "exclusiveMinimum": -3, "exclusiveMaximum": 0}}})
    call = '<tool_call>{"name": "pick", "arguments": {"n": %s, "k": %s}}</tool_call>'
    for n, k in (("1", "-1"), ("9", "-2"), ("12", "-1"), ("10", "-2")):
        assert vocab.walk(grammar(tools=[pick]), call % (n, k)) == "ok", (n, k)
    for n, k in (("0", "-1"), ("13", "-1"), ("-1", "-1"), ("01", "-1"), ("5", "0"), ("5", "-3")):
        assert vocab.walk(grammar(tools=[pick]), call % (n, k)).startswith("refused"), (n, k)


def test_named_function_and_parallel_calls(vocab):
    named = grammar("function", tool_name="get_time")
    assert vocab.walk(named, '<tool_call>{"name": "get_time", "arguments": {}}</tool_call>') == "ok"
    assert vocab.walk(named, HERMES_CALL).startswith("refused")
    two = HERMES_CALL + '\n<tool_call>{"name": "get_time", "arguments": {}}</tool_call>'
    assert vocab.walk(grammar(), two) == "ok"
    assert vocab.walk(grammar(parallel_tool_calls=False), two).startswith("refused")


@pytest.mark.parametrize("fmt, text", [
    (MISTRAL, '[TOOL_CALLS][{"name": "get_weather", "arguments": ' + GOOD + '}, '
              '{"name": "get_time", "arguments": {}}]'),
    (LLAMA3, '{"name": "get_weather", "parameters": ' + GOOD + '}'),
    (LLAMA3, '<|python_tag|>{"name": "get_time", "parameters": {}}'),
])
def test_other_formats(vocab, fmt, text):
    assert vocab.walk(grammar(fmt=fmt), text) == "ok"
    assert vocab.walk(grammar(fmt=fmt), text.replace("celsius", "kelvin").replace("{}", "{\"x\": 1}")
                      ).startswith("refused")


@pytest.mark.parametrize("fmt, call", [
    (HERMES, HERMES_CALL),
    (MISTRAL, '[TOOL_CALLS] [{"name": "get_weather", "arguments": ' + GOOD + '}]'),
    (LLAMA3, '{"name": "get_weather", "parameters": ' + GOOD + '}'),
])
def test_auto_is_free_until_a_call_begins(vocab, fmt, call):
    g = grammar("auto", fmt=fmt)
    assert g.lazy
    assert vocab.walk(g, "Sure! It is sunny in {Paris} today.") == "ok"
    lead = "" if fmt is LLAMA3 else "Let me check. "
    assert vocab.walk(g, lead + call) == "ok"
    assert vocab.walk(g, lead + call.replace("celsius", "kelvin")).startswith("refused")


def test_thinking_comes_first_then_the_grammar(vocab):
    g = grammar(thinking=True)
    assert vocab.walk(g, "I should call get_weather. {not json}</think>\n\n" + HERMES_CALL) == "ok"
    bad = "hmm</think>\n\n" + HERMES_CALL.replace("celsius", "kelvin")
    assert vocab.walk(g, bad).startswith("refused")
    # auto: the Constraint waits for the thinking's end; only the answer after it can trigger
    auto = grammar("auto", thinking=True)
    assert auto.after == "</think>"
    watched = vocab.walk_watched
    assert watched(auto, "no call here {}</think>\nPlain answer.")[0] == "ok"
    assert watched(auto, "hmm</think>\n" + HERMES_CALL)[0] == "ok"
    assert watched(auto, "hmm</think>\n" + HERMES_CALL.replace("celsius", "kelvin"))[0].startswith("refused")
    mention = "I could write <tool_call> {maybe} here.</think>\n"  # a marker inside the thinking
    assert watched(auto, mention + "Plain answer.")[0] == "ok"  # started there, `{maybe}` is refused
    assert watched(auto, mention + HERMES_CALL.replace("celsius", "kelvin"))[0].startswith("refused")
    llama = grammar("auto", fmt=LLAMA3, thinking=True)
    bare = '{"name": "get_weather", "parameters": ' + GOOD + '}'
    assert watched(llama, 'x {"name": 1}</think>\n' + bare)[0] == "ok"
    assert watched(llama, "x</think>\n" + bare.replace("celsius", "kelvin"))[0].startswith("refused")


def test_response_schema(vocab):
    schema = {"type": "object", "required": ["name", "age", "tags"], "properties": {
        "name": {"type": "string"}, "age": {"type": "integer"},
        "tags": {"type": "array", "items": {"enum": ["a", "b"]}}}}
    g = grammar("none", tools=(), response_schema=schema)
    assert vocab.walk(g, '{"name": "Ann", "age": 31, "tags": ["a", "b"]}') == "ok"
    assert vocab.walk(g, '{"name": "Ann", "age": 3.5, "tags": []}').startswith("refused")
    assert vocab.walk(g, '{"name": "Ann", "tags": []}').startswith("refused")
    any_object = grammar("none", tools=(), response_schema={})
    assert vocab.walk(any_object, '{"x": [1, {"y": null}]}') == "ok"
    assert vocab.walk(any_object, "[1]").startswith("refused")
    assert grammar("none", tools=()) is None


def test_unsupported_schema_degrades_with_a_warning(vocab, caplog):
    odd = Tool("odd", "", {"type": "object", "properties": {"x": {"type": "no-such-type"}}})
    with caplog.at_level(logging.WARNING, "unsloth_min.engine"):
        g = grammar("function", tools=(odd,), tool_name="odd")
    assert "cannot build a grammar" in caplog.text
    assert vocab.walk(g, '<tool_call>{"name": "odd", "arguments": {"x": "anything", "y": [1]}}</tool_call>') == "ok"
    with caplog.at_level(logging.WARNING, "unsloth_min.engine"):
        assert grammar("none", tools=(), response_schema={"type": "no-such-type"}) is None


@pytest.mark.parametrize("fmt", [HERMES, MISTRAL, MISTRAL_ARGS, LLAMA3, QWEN3_XML])
@pytest.mark.parametrize("choice", ["auto", "required", "function"])
@pytest.mark.parametrize("thinking", [False, True])
def test_every_combination_is_accepted_by_llama_cpp(vocab, fmt, choice, thinking):
    g = grammar(choice, fmt=fmt, thinking=thinking, tool_name="get_time", response_schema={"type": "object"})
    smpl = grammar_sampler(vocab.vocab, g.gbnf, g.triggers)
    assert smpl
    C.llama_sampler_free(smpl)


@pytest.mark.parametrize("fmt, call", [
    (HERMES, HERMES_CALL),
    (MISTRAL, '[TOOL_CALLS][{"name": "get_weather", "arguments": ' + GOOD + '}]'),
    (MISTRAL_ARGS, "[TOOL_CALLS]get_weather[ARGS]" + GOOD),
    (QWEN3_XML, "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n"
                "<parameter=unit>\ncelsius\n</parameter>\n</function>\n</tool_call>"),
])
def test_watched_triggers_start_the_grammar_late_in_a_long_answer(vocab, fmt, call):
    g = grammar("auto", fmt=fmt)
    prose = "Some thoughts about the weather, {braces} and <tags>. " * 60
    result, c = vocab.walk_watched(g, prose)
    assert result == "ok" and c.waiting and c.size < WINDOW + 64  # bounded, however long the text
    assert vocab.walk_watched(g, prose + call)[0] == "ok"
    assert vocab.walk_watched(g, prose + call.replace("celsius", "kelvin"))[0].startswith("refused")


def test_watched_bare_call_only_at_the_start(vocab):
    g = grammar("auto", fmt=LLAMA3)
    bad = '{"name": "get_weather", "parameters": {"city": "Paris", "unit": "kelvin"}}'
    assert vocab.walk_watched(g, bad)[0].startswith("refused")
    assert vocab.walk_watched(g, "x " * 120 + bad)[0] == "ok"  # mid-answer JSON is just text
    thinking = grammar(thinking=True)
    assert vocab.walk_watched(thinking, "long thought " * 50 + "</think>\n" + HERMES_CALL)[0] == "ok"
    assert vocab.walk_watched(thinking, "t</think>\n" + bad)[0].startswith("refused")


# ---- Qwen3-Coder XML calls -----------------------------------------------------------------------
CODE = Tool("write", "Write a file", {
    "type": "object", "required": ["path", "content"],
    "properties": {"path": {"type": "string"}, "content": {"type": "string"}, "mode": {"type": "integer"},
                   "opts": {"type": "object", "properties": {"force": {"type": "boolean"}}},
                   "tags": {"type": "array", "items": {"type": "string"}}}})


def xml_call(name: str, **params) -> str:
    body = "".join(f"<parameter={k}>\n{v}\n</parameter>\n" for k, v in params.items())
    return f"<tool_call>\n<function={name}>\n{body}</function>\n</tool_call>"


XML_CALL = xml_call("get_weather", city="Paris", unit="celsius")


def xml(choice="required", tools=(WEATHER, TIME, CODE), **kw):
    return grammar(choice, tools=tools, fmt=QWEN3_XML, **kw)


def test_xml_required_accepts_a_valid_call_and_then_only_the_end(vocab):
    g = xml()
    assert not g.lazy
    assert vocab.walk(g, XML_CALL) == "ok"
    assert vocab.walk(g, XML_CALL + "\n") == "ok"
    assert vocab.walk(g, xml_call("get_time")) == "ok"
    assert vocab.walk(g, XML_CALL[:-3]) == "no end allowed"
    assert vocab.walk(g, XML_CALL + "\nThanks").startswith("refused")


@pytest.mark.parametrize("bad", [
    xml_call("get_weather", city="Paris", unit="kelvin"),
    xml_call("get_weather", city="Paris"),  # a required parameter missing
    xml_call("get_weather", unit="celsius", city="Paris"),  # the schema's order
    xml_call("get_wether", city="Paris", unit="celsius"),
    xml_call("get_weather", city="Pa</parameter>ris", unit="celsius"),  # text cannot hold the end tag
    xml_call("get_time", zone="UTC"),  # no such property
    xml_call("write", path="a", content="b", mode="fast"),
    xml_call("write", path="a", content="b", opts='{"force": "yes"}'),
    '<tool_call>\n{"name": "get_weather", "arguments": ' + GOOD + '}\n</tool_call>',
    "The weather is nice.",
])
def test_xml_required_refuses_what_breaks_the_schema(vocab, bad):
    assert vocab.walk(xml(), bad).startswith("refused")


def test_xml_values_are_raw_text_or_json_by_type(vocab):
    source = "def f(a, b):\n    if a < b and '</param' != \"</function>\":\n        return {'x': [1]}\n"
    call = xml_call("write", path="src/app.py", content=source, mode="420",
                    opts='{"force": true}', tags='["a", "b"]')
    assert vocab.walk(xml(), call) == "ok"
    assert vocab.walk(xml(), xml_call("write", path="a", content="")) == "ok"  # optional ones left out
    assert vocab.walk(xml(), xml_call("write", path="a << b </pa</p></parameter", content="<")) == "ok"
    assert vocab.walk(xml(), xml_call("write", path="a <</parameter>", content="b")).startswith("refused")


def test_xml_named_function_and_parallel_calls(vocab):
    named = xml("function", tool_name="get_time")
    assert vocab.walk(named, xml_call("get_time")) == "ok"
    assert vocab.walk(named, XML_CALL).startswith("refused")
    two = XML_CALL + "\n" + xml_call("get_time")
    assert vocab.walk(xml(), two) == "ok"
    assert vocab.walk(xml(parallel_tool_calls=False), two).startswith("refused")


def test_xml_auto_waits_for_function_tag(vocab):
    g = xml("auto")
    assert g.lazy and all("<function=" in t for t in g.triggers)
    assert vocab.walk(g, "Wrap calls in <tool_call> tags, like <tool_call>{json}</tool_call>.") == "ok"
    assert vocab.walk(g, "Let me check.\n" + XML_CALL) == "ok"
    assert vocab.walk(g, "Let me check.\n" + XML_CALL.replace("celsius", "kelvin")).startswith("refused")
    result, c = vocab.walk_watched(g, "Use <tool_call> tags. " * 30)
    assert result == "ok" and c.waiting
    assert vocab.walk_watched(g, "x " * 100 + XML_CALL.replace("celsius", "kelvin"))[0].startswith("refused")


def test_xml_thinking_comes_first_then_the_grammar(vocab):
    g = xml(thinking=True)
    assert vocab.walk(g, "I think <tool_call> {x}</think>\n\n" + XML_CALL) == "ok"
    assert vocab.walk(g, "hmm</think>\n" + XML_CALL.replace("celsius", "kelvin")).startswith("refused")
    auto = xml("auto", thinking=True)
    assert vocab.walk(auto, "no call</think>\nPlain answer.") == "ok"
    assert vocab.walk(auto, "hmm</think>\n" + XML_CALL.replace("celsius", "kelvin")).startswith("refused")


def test_xml_unexpressible_schema_gets_free_parameters_with_a_warning(vocab, caplog):
    odd = Tool("odd", "", {"type": "object", "properties": {"x": {"type": "no-such-type"}}})
    loose = Tool("loose", "no properties", None)
    with caplog.at_level(logging.WARNING, "unsloth_min.engine"):
        g = xml(tools=(odd, loose))
    assert "free-form" in caplog.text and "'odd'" in caplog.text and "'loose'" not in caplog.text
    assert vocab.walk(g, xml_call("odd", x="anything", y="[1]")) == "ok"
    assert vocab.walk(g, xml_call("loose", a="1", b="multi\nline <b>")) == "ok"
    assert vocab.walk(g, xml_call("loose", a="x</parameter>y")).startswith("refused")


# ---- Mistral v11+: [TOOL_CALLS]NAME[ARGS]{…} -----------------------------------------------------
MA_CALL, MA_TIME = "[TOOL_CALLS]get_weather[ARGS]" + GOOD, "[TOOL_CALLS]get_time[ARGS]{}"


def test_mistral_args_required_named_and_parallel(vocab):
    g = grammar(fmt=MISTRAL_ARGS)
    assert not g.lazy
    for ok in (MA_CALL, MA_CALL + "\n", MA_TIME, MA_CALL + MA_TIME, MA_TIME + "\n" + MA_CALL):
        assert vocab.walk(g, ok) == "ok", ok
    assert vocab.walk(g, MA_CALL[:-3]) == "no end allowed"
    assert vocab.walk(g, MA_CALL + "\nThanks").startswith("refused")
    assert vocab.walk(grammar(fmt=MISTRAL_ARGS, parallel_tool_calls=False), MA_CALL + MA_TIME).startswith("refused")
    named = grammar("function", fmt=MISTRAL_ARGS, tool_name="get_time")
    assert vocab.walk(named, MA_TIME) == "ok"
    assert vocab.walk(named, MA_CALL).startswith("refused")


@pytest.mark.parametrize("bad", [
    MA_CALL.replace("celsius", "kelvin"),
    '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}',  # a required key missing
    "[TOOL_CALLS]get_wether[ARGS]" + GOOD,
    "[TOOL_CALLS]get_weather[CALL_ID]a1b2c3d4e[ARGS]" + GOOD,  # read, never generated
    "[TOOL_CALLS] get_weather[ARGS]" + GOOD,
    '[TOOL_CALLS][{"name": "get_weather", "arguments": ' + GOOD + '}]',  # the older format
    "The weather is nice.",
])
def test_mistral_args_required_refuses_what_breaks_the_schema(vocab, bad):
    assert vocab.walk(grammar(fmt=MISTRAL_ARGS), bad).startswith("refused")


def test_mistral_args_auto_waits_for_an_allowed_name(vocab):
    g = grammar("auto", fmt=MISTRAL_ARGS)
    assert g.lazy
    assert vocab.walk(g, "Calls begin with [TOOL_CALLS] then a name, as in [TOOL_CALLS]foo[ARGS]{x}.") == "ok"
    assert vocab.walk(g, "Let me check.\n" + MA_CALL) == "ok"
    assert vocab.walk(g, "Let me check.\n" + MA_CALL + MA_TIME) == "ok"
    assert vocab.walk(g, "Let me check.\n" + MA_CALL.replace("celsius", "kelvin")).startswith("refused")
    result, c = vocab.walk_watched(g, "Use [TOOL_CALLS] markers. " * 30)
    assert result == "ok" and c.waiting
    assert vocab.walk_watched(g, "x " * 100 + MA_CALL.replace("celsius", "kelvin"))[0].startswith("refused")
    named = grammar("auto", fmt=MISTRAL_ARGS, tools=(TIME,))
    assert vocab.walk(named, "See [TOOL_CALLS]lookup[ARGS]{oops}") == "ok"  # not an allowed name
    assert vocab.walk(named, "See [TOOL_CALLS]get_weather[ARGS]{}").startswith("refused")  # get_ was


def test_mistral_args_thinking_comes_first_then_the_grammar(vocab):
    g = grammar(fmt=MISTRAL_ARGS, thinking=True)
    assert vocab.walk(g, "I think [TOOL_CALLS]x {y}</think>\n\n" + MA_CALL) == "ok"
    assert vocab.walk(g, "hmm</think>\n" + MA_CALL.replace("celsius", "kelvin")).startswith("refused")
    auto = grammar("auto", fmt=MISTRAL_ARGS, thinking=True)
    assert vocab.walk(auto, "no call</think>\nPlain answer.") == "ok"
    assert vocab.walk(auto, "hmm</think>\n" + MA_CALL.replace("celsius", "kelvin")).startswith("refused")
