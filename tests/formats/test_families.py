"""Each model family end to end through the server's own path: the family's real chat template (a
fixture) picks the format, `ChatFormat` renders the prompt and sets the parser up, and a raw answer
written the way that family writes one is fed whole, in 3-character pieces, in token-sized pieces
and a character at a time; every feed must give the same thinking, text and calls (written by us,
from the formats; llama.cpp's own cases are test_llama_cases.py).
"""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

import scorer
from unsloth_min.core import ChatRequest, Message, Text, Tool
from unsloth_min.engine import calls as C
from unsloth_min.engine.calls.mistral import ID_RULE

WEATHER = Tool("get_weather", "Weather in a city", {
    "type": "object", "required": ["city", "unit"],
    "properties": {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}, "days": {"type": "integer"}}})
TIME = Tool("get_time", "The time", {"type": "object", "properties": {}})
PARIS = {"city": "Paris", "unit": "celsius"}

# template, raw answer, expected (reasoning, content, calls as (name, arguments[, id]))
FAMILIES = {
    "gpt-oss": ("openai-gpt-oss-120b.jinja",
                "<|channel|>analysis<|message|>Need the weather.<|end|><|start|>assistant<|channel|>commentary"
                ' to=functions.get_weather <|constrain|>json<|message|>{"city": "Paris", "unit": "celsius"}',
                ("Need the weather.", "", [("get_weather", PARIS)])),
    "gpt-oss-answer": ("openai-gpt-oss-120b.jinja",
                       "<|channel|>analysis<|message|>Easy.<|end|><|start|>assistant<|channel|>final<|message|>"
                       "It is 2 < 3, <b>bold</b>.", ("Easy.", "It is 2 < 3, <b>bold</b>.", [])),
    "qwen3.5": ("Qwen3.5-4B.jinja", "Paris it is.\n</think>\n\nChecking.\n<tool_call>\n<function=get_weather>\n"
                "<parameter=city>\nParis\n</parameter>\n<parameter=unit>\ncelsius\n</parameter>\n"
                "<parameter=days>\n3\n</parameter>\n</function>\n</tool_call>",
                ("Paris it is.", "Checking.\n", [("get_weather", dict(PARIS, days=3))])),
    "qwen3.5-call-in-thinking": ("Qwen3.5-4B.jinja", "Let me look.\n<tool_call>\n<function=get_time>\n</function>\n"
                                 "</tool_call>", ("Let me look.", "", [("get_time", {})])),
    "deepseek-r1": ("deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja",
                    "Weather first.</think><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n"
                    '```json\n{"city": "Paris", "unit": "celsius"}\n```<｜tool▁call▁end｜>\n<｜tool▁call▁begin｜>'
                    "function<｜tool▁sep｜>get_time\n```json\n{}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
                    ("Weather first.", "", [("get_weather", PARIS), ("get_time", {})])),
    "deepseek-v3.1": ("deepseek-ai-DeepSeek-V3.1.jinja",
                      'Sure.</think>On it.<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>'
                      '{"city": "Paris", "unit": "celsius"}<｜tool▁call▁end｜><｜tool▁calls▁end｜>',
                      ("Sure.", "On it.", [("get_weather", PARIS)])),
    "deepseek-v3.2": ("deepseek-ai-DeepSeek-V3.2.jinja",
                      'Hmm.</think>Looking.\n\n<｜DSML｜function_calls>\n<｜DSML｜invoke name="get_weather">\n'
                      '<｜DSML｜parameter name="city" string="true">Paris</｜DSML｜parameter>\n'
                      '<｜DSML｜parameter name="unit" string="true">celsius</｜DSML｜parameter>\n'
                      '<｜DSML｜parameter name="days" string="false">3</｜DSML｜parameter>\n'
                      "</｜DSML｜invoke>\n</｜DSML｜function_calls>",
                      ("Hmm.", "Looking.", [("get_weather", dict(PARIS, days=3))])),
    "glm-4.7": ("GLM-4.7-Flash.jinja", "Weather.</think><tool_call>get_weather<arg_key>city</arg_key><arg_value>Paris"
                "</arg_value><arg_key>unit</arg_key><arg_value>celsius</arg_value></tool_call>",
                ("Weather.", "", [("get_weather", PARIS)])),
    "glm-4.6": ("GLM-4.6.jinja", "<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Paris</arg_value>\n"
                "<arg_key>days</arg_key>\n<arg_value>2</arg_value>\n</tool_call>",
                ("", "", [("get_weather", {"city": "Paris", "days": 2})])),
    "kimi-k2": ("Kimi-K2-Thinking.jinja", "<think>Two calls.</think><|tool_calls_section_begin|><|tool_call_begin|>"
                'functions.get_weather:0<|tool_call_argument_begin|>{"city": "Paris", "unit": "celsius"}'
                "<|tool_call_end|><|tool_call_begin|>functions.get_time:1<|tool_call_argument_begin|>{}"
                "<|tool_call_end|><|tool_calls_section_end|>",
                ("Two calls.", "", [("get_weather", PARIS, "functions.get_weather:0"),
                                    ("get_time", {}, "functions.get_time:1")])),
    "minimax-m2": ("MiniMax-M2.jinja", 'Weather.\n</think>\n\n<minimax:tool_call>\n<invoke name="get_weather">\n'
                   '<parameter name="city">Paris</parameter>\n<parameter name="days">4</parameter>\n</invoke>\n'
                   "</minimax:tool_call>", ("Weather.", "", [("get_weather", {"city": "Paris", "days": 4})])),
    "minimax-m3": ("MiniMax-M3.jinja", "Go.</mm:think>]<]minimax[>[<tool_call>\n]<]minimax[>[<invoke name=\"get_weather\">"
                   "]<]minimax[>[<city>Paris]<]minimax[>[</city>]<]minimax[>[<days>5]<]minimax[>[</days>"
                   "]<]minimax[>[</invoke>\n]<]minimax[>[</tool_call>",
                   ("Go.", "", [("get_weather", {"city": "Paris", "days": 5})])),
    "gemma-4": ("google-gemma-4-31B-it.jinja", '<|channel>thought\nThink.<channel|>Sure.<|tool_call>call:get_weather'
                '{city:<|"|>Paris<|"|>,unit:<|"|>celsius<|"|>,days:2}<tool_call|>',
                ("Think.", "Sure.", [("get_weather", dict(PARIS, days=2))])),
    "lfm2": ("LFM2-8B-A1B.jinja", '<|tool_call_start|>[get_weather(city="Paris", unit="celsius"), get_time()]'
             "<|tool_call_end|>Done.", ("", "Done.", [("get_weather", PARIS), ("get_time", {})])),
    "mistral-small-3.2": ("Mistral-Small-3.2-24B-Instruct-2506.jinja",
                          '[TOOL_CALLS]get_weather[CALL_ID]a1b2c3d4e[ARGS]{"city": "Paris", "unit": "celsius"}',
                          ("", "", [("get_weather", PARIS, "a1b2c3d4e")])),
    "mistral-nemo": ("mistralai-Mistral-Nemo-Instruct-2407.jinja",
                     '[TOOL_CALLS][{"name": "get_time", "arguments": {}, "id": "Zz9Zz9Zz9"}]',
                     ("", "", [("get_time", {}, "Zz9Zz9Zz9")])),
    "nemotron-v2": ("NVIDIA-Nemotron-Nano-v2.jinja", 'Hm.\n</think>\n<TOOLCALL>[{"name": "get_time", "arguments": {}}]'
                    "</TOOLCALL>", ("Hm.", "", [("get_time", {})])),
    "functionary-v3.2": ("meetkai-functionary-medium-v3.2.jinja", 'all\nLet me see.>>>get_time\n{}',
                         ("", "Let me see.", [("get_time", {})])),
    "command-r7b": ("CohereForAI-c4ai-command-r7b-12-2024-tool_use.jinja",
                    '<|START_THINKING|>Plan.<|END_THINKING|><|START_ACTION|>[{"tool_call_id": "0", "tool_name": '
                    '"get_time", "parameters": {}}]<|END_ACTION|>', ("Plan.", "", [("get_time", {}, "0")])),
    "kimi-k3": ("Kimi-K3.jinja", 'Think.<|close|>think<|sep|><|open|>response<|sep|>OK.<|close|>response<|sep|>'
                '<|open|>tools<|sep|><|open|>call tool="get_weather" index="1"<|sep|><|open|>argument key="city" '
                'type="string"<|sep|>Paris<|close|>argument<|sep|><|close|>call<|sep|><|close|>tools<|sep|>'
                "<|close|>message<|sep|>", ("Think.", "OK.", [("get_weather", {"city": "Paris"})])),
}


def feeds(text: str) -> dict[str, list[str]]:
    return {"whole": [text], "3 chars": scorer.char_pieces(text), "tokens": scorer.token_pieces(text),
            "1 char": list(text)}


@pytest.mark.parametrize("family", FAMILIES)
def test_every_feed_gives_the_family_s_answer(family):
    template, text, (reasoning, content, calls) = FAMILIES[family]
    case = {"template": template, "input": text, "messages": None, "tools": [], "json_schema": "",
            "tool_choice": "COMMON_CHAT_TOOL_CHOICE_AUTO", "parallel_tool_calls": True, "enable_thinking": True}
    case["tools"] = [{"name": t.name, "description": t.description, "parameters": json.dumps(t.parameters)}
                     for t in (WEATHER, TIME)]
    for how, pieces in feeds(text).items():
        got = scorer.feed(case, pieces)
        assert (got.reasoning, got.content) == (reasoning, content), how
        assert [(name, json.loads(args)) for _, name, args in got.calls] == [c[:2] for c in calls], how
        for expected, (call_id, _, _) in zip(calls, got.calls):
            assert call_id == expected[2] if len(expected) > 2 else call_id, how  # the model's own id


def test_a_call_written_without_tools_offered_is_not_a_call():
    """gpt-oss may address a tool nobody offered (its built-in `python`): nothing of it reaches the
    answer, whatever the tools."""
    text = ("<|channel|>analysis<|message|>Run it.<|end|><|start|>assistant<|channel|>commentary to=python "
            "<|constrain|>code<|message|>print(1)")
    case = {"template": "openai-gpt-oss-120b.jinja", "input": text, "messages": None, "tools": [],
            "json_schema": "", "tool_choice": "COMMON_CHAT_TOOL_CHOICE_AUTO", "parallel_tool_calls": True,
            "enable_thinking": True}
    for pieces in feeds(text).values():
        assert scorer.feed(case, pieces) == scorer.Parsed("", "Run it.", [])


def test_ids_we_mint_fit_the_template_and_history_ids_are_fitted():
    """Mistral's templates require 9 alphanumeric ids (ours too); Kimi's are functions.NAME:N; a
    conversation's own ids are mapped to such, the call and its result alike, and render."""
    from unsloth_min.core import ToolCall, ToolResult

    assert ID_RULE.fullmatch(C.MISTRAL.mint_id("f", 0)) and ID_RULE.fullmatch(C.MISTRAL_ARGS.mint_id("f", 3))
    assert C.KIMI_K2.mint_id("get_time", 2) == "functions.get_time:2"
    history = [Message("user", [Text("Weather?")]),
               Message("assistant", [ToolCall("call_abc", "get_weather", json.dumps(PARIS))]),
               Message("tool", [ToolResult("call_abc", "sunny", "get_weather")]),
               Message("assistant", [Text("Sunny.")]), Message("user", [Text("Thanks")])]
    for template, wanted in (("mistralai-Mistral-Nemo-Instruct-2407.jinja", None),
                             ("Kimi-K2-Instruct.jinja", "functions.get_weather:0")):
        text, _ = scorer.chat_format(template).render_parts(ChatRequest(messages=history, tools=[WEATHER]), True)
        assert "call_abc" not in text and (wanted is None or wanted in text)


def test_family_markers_that_are_control_tokens_are_shown_as_text():
    """Every marker a family writes (gpt-oss's channel tokens, DeepSeek's tool tokens, Kimi's
    section tokens) is one the engine asks the scheduler to detokenize as text."""
    from unsloth_min.engine import Engine

    for template, markers in (("openai-gpt-oss-120b.jinja", ("<|channel|>", "<|message|>", "<|start|>", "<|end|>",
                                                             "<|constrain|>")),
                              ("deepseek-ai-DeepSeek-V3.1.jinja", ("<｜tool▁calls▁begin｜>", "<｜tool▁sep｜>",
                                                                   "<｜tool▁call▁end｜>")),
                              ("Kimi-K2-Thinking.jinja", ("<|tool_calls_section_begin|>", "<|tool_call_argument_begin|>")),
                              ("deepseek-ai-DeepSeek-V3.2.jinja", ("｜DSML｜",))):
        chat = scorer.chat_format(template)
        ids = {m: i for i, m in enumerate(chat.markers, start=10)}
        model = SimpleNamespace(tokenize=lambda text, special: [ids[text]] if text in ids else [1, 2],
                                piece=lambda token: b"")
        special = Engine._marker_tokens(SimpleNamespace(chat=chat, model=model))
        assert {ids[m] for m in markers} <= special, template


def test_headers_are_never_given_back_as_text():
    """The engine gives back, as text, a call that opened and never became one; a family's
    headers and message ends (gpt-oss's) are no call: an answer of nothing but them is empty."""
    import asyncio

    from unsloth_min.core import Finish, TextDelta, Usage
    from unsloth_min.engine import parsed
    from unsloth_min.engine.output import OutputParser

    async def answer(tokens: list[str]) -> list:
        queue = asyncio.Queue()
        for t in tokens + [Finish("stop", Usage(5, len(tokens)))]:
            queue.put_nowait(TextDelta(t) if isinstance(t, str) else t)
        parser = OutputParser(C.HARMONY, C.HARMONY.think, start="<|start|>")
        return [ev async for ev in parsed(queue, parser, SimpleNamespace(stop=False))]

    events = asyncio.run(answer(["<|channel|>", "final", "<|message|>", "<|end|>"]))
    assert [type(e).__name__ for e in events] == ["Finish"]


def test_a_template_s_own_rule_is_kept_and_quoted_after_what_can_be_folded():
    """Mistral's templates let only an assistant turn follow tool results: a user turn there is
    folded into the last result (Claude Code sends reminders beside its results); two user turns in
    a row break the rule whatever is folded, and the 400 quotes it."""
    from unsloth_min.core import ToolCall, ToolResult
    from unsloth_min.engine.template import TemplateError

    fmt = scorer.chat_format("mistralai-Mistral-Nemo-Instruct-2407.jinja")
    history = [Message("user", [Text("Weather?")]),
               Message("assistant", [ToolCall("a1b2c3d4e", "get_weather", json.dumps(PARIS))]),
               Message("tool", [ToolResult("a1b2c3d4e", "sunny", "get_weather")]),
               Message("user", [Text("<reminder>be brief</reminder>")])]
    text, _ = fmt.render_parts(ChatRequest(messages=history, tools=[WEATHER]), True)
    assert "sunny\n\n<reminder>be brief</reminder>" in text
    with pytest.raises(TemplateError) as refused:
        fmt.render_parts(ChatRequest(messages=[Message("user", [Text("a")]), Message("user", [Text("b")])]), True)
    assert refused.value.rule and refused.value.status == 400 and "must alternate" in refused.value.message
