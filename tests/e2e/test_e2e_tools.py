"""Tools, structured output and thinking end to end on the real SmolLM2-135M, through the SDK.

SmolLM2's template has no tool format: the server describes the tools in a Hermes section and the
grammar makes the calls. A 135M model cannot be trusted to call anything correctly, so every
call below is valid only because of the grammar: that is what these tests check, with a tiny
JSON-Schema validator. A second server with a `--chat-template` whose generation prompt opens
`<think>` checks that thinking goes to `reasoning_content` and never into `content`.
"""
from __future__ import annotations

import json

import openai
import pytest

from support.servers import KEY, sse_events, start_server_process, stop_server_process

pytestmark = pytest.mark.model
CHAT = "/v1/chat/completions"

WEATHER = {"type": "object", "required": ["city", "unit"], "properties": {
    "city": {"type": "string", "maxLength": 40},  # (bounded: a sampled call cannot ramble in it)
    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}}
TIME = {"type": "object", "required": ["zone"], "properties": {"zone": {"enum": ["UTC", "CET", "PST"]}}}
SCHEMAS = {"get_weather": WEATHER, "get_time": TIME}
TOOLS = [{"type": "function", "function": {"name": name, "description": f"{name.replace('_', ' ')}",
                                           "parameters": schema}} for name, schema in SCHEMAS.items()]
ASK = [{"role": "user", "content": "What is the weather in Paris, and the time there?"}]
PERSON = {"type": "object", "required": ["name", "age", "mood"], "properties": {
    "name": {"type": "string", "maxLength": 20}, "age": {"type": "integer"},
    "mood": {"type": "string", "enum": ["happy", "sad"]}}}


def validate(value, schema: dict, path: str = "$") -> None:
    """Just enough JSON Schema for these tests: type (object, string, integer, boolean), enum,
    required, properties, maxLength."""
    if "enum" in schema:
        assert value in schema["enum"], f"{path}: {value!r} not in {schema['enum']}"
    kind = schema.get("type")
    if kind == "object":
        assert isinstance(value, dict), path
        for key in schema.get("required", []):
            assert key in value, f"{path}.{key} is missing"
        for key, v in value.items():
            assert key in schema.get("properties", {}), f"{path}.{key} is not allowed"
            validate(v, schema["properties"][key], f"{path}.{key}")
    elif kind == "string":
        assert isinstance(value, str) and len(value) <= schema.get("maxLength", len(value)), path
    elif kind == "integer":
        assert isinstance(value, int) and not isinstance(value, bool), path
    elif kind == "boolean":
        assert isinstance(value, bool), path
    else:
        assert kind is None, f"{path}: validate() does not know the type {kind!r}"


def check_calls(calls) -> None:
    assert calls
    for call in calls:
        assert call.id.startswith("call_") and call.type == "function"
        validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])


@pytest.fixture(scope="module")
def client(real_server):
    return openai.OpenAI(base_url=real_server.base_url + "/v1", api_key=KEY, max_retries=0, timeout=300)


def test_required_calls_satisfy_the_schema(client):
    r = client.chat.completions.create(model="m", messages=ASK, tools=TOOLS, tool_choice="required",
                                       max_tokens=200, seed=7)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls" and not choice.message.content
    check_calls(choice.message.tool_calls)


def test_named_function_streamed_equals_plain(client):
    kw = dict(model="m", messages=ASK, tools=TOOLS, parallel_tool_calls=False, temperature=0,
              tool_choice={"type": "function", "function": {"name": "get_time"}})
    plain = client.chat.completions.create(**kw).choices[0]
    assert plain.finish_reason == "tool_calls" and len(plain.message.tool_calls) == 1
    check_calls(plain.message.tool_calls)
    assert plain.message.tool_calls[0].function.name == "get_time"
    deltas, finish = [], None
    for chunk in client.chat.completions.create(stream=True, **kw):
        delta = chunk.choices[0].delta
        deltas += delta.tool_calls or []
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls" and {d.index for d in deltas} == {0}
    assert deltas[0].id.startswith("call_") and deltas[0].function.name == "get_time"
    assert all(d.id is None for d in deltas[1:]) and len(deltas) > 2  # arguments in fragments
    assert "".join(d.function.arguments or "" for d in deltas) == plain.message.tool_calls[0].function.arguments


def test_stream_helper_accumulates_tool_calls(client):
    with client.chat.completions.stream(model="m", messages=ASK, tools=TOOLS, tool_choice="required",
                                        max_tokens=200, seed=11) as stream:
        kinds = {event.type for event in stream}
        final = stream.get_final_completion()
    assert "tool_calls.function.arguments.delta" in kinds and "tool_calls.function.arguments.done" in kinds
    assert final.choices[0].finish_reason == "tool_calls"
    check_calls(final.choices[0].message.tool_calls)


def test_tool_choice_none_answers_in_text(client):
    r = client.chat.completions.create(model="m", messages=ASK, tools=TOOLS, tool_choice="none",
                                       max_tokens=16, temperature=0)
    assert r.choices[0].message.content and not r.choices[0].message.tool_calls
    assert r.choices[0].finish_reason in ("stop", "length")


def test_auto_answers_text_or_valid_calls(client):
    r = client.chat.completions.create(model="m", messages=ASK, tools=TOOLS, max_tokens=40, temperature=0)
    choice = r.choices[0]
    if choice.message.tool_calls:
        assert choice.finish_reason == "tool_calls"
        check_calls(choice.message.tool_calls)
    else:
        assert choice.message.content and choice.finish_reason in ("stop", "length")


def test_tool_results_go_back_to_the_model(client):
    history = ASK + [
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "celsius"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "Sunny, 22 degrees"}]
    first = client.chat.completions.create(model="m", messages=ASK, tools=TOOLS, tool_choice="none", max_tokens=1)
    r = client.chat.completions.create(model="m", messages=history, tools=TOOLS, tool_choice="none",
                                       max_tokens=12, temperature=0)
    assert r.choices[0].message.content
    assert r.usage.prompt_tokens > first.usage.prompt_tokens + 30  # the call and its result are in it


def test_response_format_json_schema_validates(client):
    r = client.chat.completions.create(
        model="m", max_tokens=120, seed=3, messages=[{"role": "user", "content": "Invent a person."}],
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}})
    assert r.choices[0].finish_reason == "stop"
    validate(json.loads(r.choices[0].message.content), PERSON)


def test_response_format_streamed_and_json_object(client):
    pet = {"type": "object", "required": ["animal", "legs", "cute"], "properties": {
        "animal": {"enum": ["cat", "dog"]}, "legs": {"type": "integer"}, "cute": {"type": "boolean"}}}
    text, finish = "", None
    for chunk in client.chat.completions.create(
            model="m", max_tokens=120, seed=5, stream=True, messages=[{"role": "user", "content": "A pet?"}],
            response_format={"type": "json_schema", "json_schema": {"name": "pet", "schema": pet}}):
        text += chunk.choices[0].delta.content or ""
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "stop"
    validate(json.loads(text), pet)
    # any object: the grammar guarantees JSON, not brevity, so ask for a short one
    r = client.chat.completions.create(
        model="m", max_tokens=100, temperature=0, response_format={"type": "json_object"},
        messages=[{"role": "user", "content": "Give me a JSON object with the keys name and age of a cat."}])
    assert r.choices[0].finish_reason == "stop" and isinstance(json.loads(r.choices[0].message.content), dict)


# ---- thinking ------------------------------------------------------------------------------------
THINK_TEMPLATE = """\
{%- for m in messages -%}
{{ '<|im_start|>' + m.role + '\\n' }}
{%- if m.reasoning_content %}{{ '<think>\\n' + m.reasoning_content + '\\n</think>\\n\\n' }}{% endif -%}
{{ m.content + '<|im_end|>\\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
{{ '<|im_start|>assistant\\n' }}
{%- if enable_thinking %}{{ '<think>\\n' }}{% else %}{{ '<think>\\n\\n</think>\\n\\n' }}{% endif -%}
{%- endif -%}
"""


@pytest.fixture(scope="module")
def thinking_server(tmp_path_factory):
    home = tmp_path_factory.mktemp("thinking")
    template = home / "think.jinja"
    template.write_text(THINK_TEMPLATE)
    running = start_server_process(str(home), "--chat-template", str(template), "--max-tokens", "24")
    yield running
    assert stop_server_process(running) == 0


def test_thinking_goes_to_reasoning_content(thinking_server):
    body = {"model": "m", "temperature": 0, "messages": [{"role": "user", "content": "Is 7 prime?"}]}
    status, r = thinking_server.json("POST", CHAT, body, timeout=300)
    assert status == 200
    message = r["choices"][0]["message"]
    assert message["reasoning_content"].strip()
    assert not message["content"] or message["reasoning_content"] not in message["content"]
    assert r["usage"]["completion_tokens_details"]["reasoning_tokens"] > 0
    status, _, data = thinking_server.request("POST", CHAT, dict(body, stream=True), timeout=300)
    deltas = [json.loads(d)["choices"][0]["delta"] for _, d in sse_events(data)[:-1]]
    assert "".join(d.get("reasoning_content", "") for d in deltas) == message["reasoning_content"]
    assert "".join(d.get("content") or "" for d in deltas) == message["content"]


def test_thinking_sent_back_and_turned_off(thinking_server):
    body = {"model": "m", "temperature": 0, "chat_template_kwargs": {"enable_thinking": False},
            "messages": [{"role": "user", "content": "Is 7 prime?"},
                         {"role": "assistant", "content": "Yes.", "reasoning_content": "7 has no divisors."},
                         {"role": "user", "content": "And 9?"}]}
    status, r = thinking_server.json("POST", CHAT, body, timeout=300)
    assert status == 200
    message = r["choices"][0]["message"]
    assert message["content"] and "reasoning_content" not in message
    forgotten = [dict(m) for m in body["messages"]]
    del forgotten[1]["reasoning_content"]  # the same history without the earlier thinking
    _, without = thinking_server.json("POST", CHAT, dict(body, messages=forgotten, max_tokens=1))
    assert r["usage"]["prompt_tokens"] > without["usage"]["prompt_tokens"]  # it reached the template
    status, r = thinking_server.json("POST", CHAT, dict(body, chat_template_kwargs=None,
                                                        enable_thinking=False), timeout=300)
    assert status == 200 and "reasoning_content" not in r["choices"][0]["message"]


# ---- Qwen3-Coder XML calls, in process -----------------------------------------------------------
QWEN3_CODER_TEMPLATE = """\
{%- if tools %}
{{- '<|im_start|>system\\n# Tools\\n\\nYou have access to the following functions:\\n\\n<tools>' }}
{%- for tool in tools %}
{{- '\\n<function>\\n<name>' + tool.function.name + '</name>\\n<parameters>' }}
{%- for name, p in tool.function.parameters.properties|items %}
{{- '\\n<parameter>\\n<name>' + name + '</name>\\n<type>' + (p.type or 'enum') + '</type>\\n</parameter>' }}
{%- endfor %}
{{- '\\n</parameters>\\n</function>' }}
{%- endfor %}
{{- '\\n</tools>\\n\\nIf you choose to call a function ONLY reply in the following format:\\n\\n<tool_call>\\n'
    '<function=example_function_name>\\n<parameter=example_parameter_1>\\nvalue_1\\n</parameter>\\n'
    '</function>\\n</tool_call><|im_end|>\\n' }}
{%- endif %}
{%- for m in messages %}
{%- if m.role == 'assistant' and m.tool_calls %}
{{- '<|im_start|>assistant' }}
{%- for tool_call in m.tool_calls %}
{%- set tool_call = tool_call.function %}
{{- '\\n<tool_call>\\n<function=' + tool_call.name + '>\\n' }}
{%- for args_name, args_value in tool_call.arguments|items %}
{{- '<parameter=' + args_name + '>\\n' }}
{{- args_value | tojson if args_value is mapping or (args_value is sequence and args_value is not string)
    else args_value | string }}
{{- '\\n</parameter>\\n' }}
{%- endfor %}
{{- '</function>\\n</tool_call>' }}
{%- endfor %}
{{- '<|im_end|>\\n' }}
{%- elif m.role == 'tool' %}
{{- '<|im_start|>user\\n<tool_response>\\n' + m.content + '\\n</tool_response><|im_end|>\\n' }}
{%- else %}
{{- '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}
{%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{% endif %}
"""
ALARM = {"type": "object", "required": ["hour", "loud"], "properties": {
    "hour": {"type": "integer"}, "loud": {"type": "boolean"}, "label": {"type": "string"}}}


def template_engine(template: str):
    """The embedded model behind another chat template (one slot, a short context), for a
    fixture to `yield from`: it is closed after the module."""
    from unsloth_min.core import Sampling
    from unsloth_min.engine import Engine, EngineOptions, embedded_model_path
    from unsloth_min.engine.model import ModelParams

    path = embedded_model_path()
    engine = Engine(EngineOptions(path, "m", ModelParams(path, n_ctx=2048, n_parallel=1), Sampling(),
                                  chat_template=template))
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def xml_engine():
    yield from template_engine(QWEN3_CODER_TEMPLATE)


def xml_request(**kw):
    from unsloth_min.core import ChatRequest, Message, Sampling, Text, Tool, ToolCall, ToolResult

    tools = [Tool(n, n, s) for n, s in (("get_time", TIME), ("set_alarm", ALARM), ("get_weather", WEATHER))]
    history = [Message("user", [Text("Wake me at 7, loudly. Then the weather in Paris?")]),
               Message("assistant", [ToolCall("c1", "set_alarm", '{"hour": 7, "loud": true}')]),
               Message("tool", [ToolResult("c1", "alarm set")])]
    return ChatRequest(messages=history, tools=tools, sampling=Sampling(temperature=0.0, max_tokens=120), **kw)


def test_the_real_engine_is_a_chat_engine(xml_engine):
    from unsloth_min.core import ChatEngine
    assert isinstance(xml_engine, ChatEngine)  # what the app needs of it (test_engine_parts: the class)


def test_qwen3_coder_template_shows_tools_and_history_as_xml(xml_engine):
    from unsloth_min.engine.formats import QWEN3_XML

    assert xml_engine.tool_format == QWEN3_XML
    prompt = xml_engine.render(xml_request())
    assert "<name>set_alarm</name>" in prompt and "# Tools" in prompt  # the template's own tool list
    assert ("<tool_call>\n<function=set_alarm>\n<parameter=hour>\n7\n</parameter>\n"
            "<parameter=loud>\nTrue\n</parameter>\n</function>\n</tool_call>") in prompt


def forced_calls(engine, **choice) -> None:
    """A forced-call request through the real engine must end with tool_calls, each call valid
    against its tool's schema, and only the named tool when one is named."""
    import asyncio

    from unsloth_min.core import Finish, ToolCallDelta

    async def collect():
        return [ev async for ev in engine.generate(xml_request(**choice))]

    events = asyncio.run(collect())
    calls: dict = {}
    for ev in events:
        if isinstance(ev, ToolCallDelta):
            name, args = calls.get(ev.index, (ev.name, ""))
            calls[ev.index] = (name, args + ev.arguments)
    assert isinstance(events[-1], Finish) and events[-1].reason == "tool_calls", events
    assert calls
    for name, args in calls.values():
        validate(json.loads(args), {"get_time": TIME, "set_alarm": ALARM, "get_weather": WEATHER}[name])
    if choice.get("tool_choice") == "function":  # a named function: only that one
        assert {name for name, _ in calls.values()} == {choice["tool_name"]}


@pytest.mark.parametrize("choice", [dict(tool_choice="required"),
                                    dict(tool_choice="function", tool_name="set_alarm")])
def test_qwen3_coder_forced_calls_parse_with_typed_arguments(xml_engine, choice):
    forced_calls(xml_engine, **choice)


# ---- Mistral v11+ calls ([TOOL_CALLS]NAME[ARGS]{…}), in process --------------------------------------
MISTRAL_V11_TEMPLATE = """\
{{- bos_token }}
{%- if tools %}[AVAILABLE_TOOLS]{{ tools | tojson }}[/AVAILABLE_TOOLS]{% endif %}
{%- for m in messages %}
{%- if m.role == 'user' %}[INST]{{ m.content }}[/INST]
{%- elif m.role == 'assistant' and m.tool_calls %}
{%- for tc in m.tool_calls %}[TOOL_CALLS]{{ tc.function.name }}[ARGS]{{ tc.function.arguments | tojson }}{% endfor %}
{{- eos_token }}
{%- elif m.role == 'tool' %}[TOOL_RESULTS]{{ m.content }}[/TOOL_RESULTS]
{%- else %}{{ m.content }}{{ eos_token }}
{%- endif %}
{%- endfor %}
"""


@pytest.fixture(scope="module")
def mistral_engine():
    yield from template_engine(MISTRAL_V11_TEMPLATE)


def test_mistral_v11_template_shows_tools_and_history_calls(mistral_engine):
    from unsloth_min.engine.formats import MISTRAL_ARGS

    assert mistral_engine.tool_format == MISTRAL_ARGS
    prompt = mistral_engine.render(xml_request())
    assert prompt.count("[AVAILABLE_TOOLS]") == 1 and '"name": "set_alarm"' in prompt
    assert '[TOOL_CALLS]set_alarm[ARGS]{"hour": 7, "loud": true}' in prompt  # from the arguments dict
    assert prompt.endswith("[TOOL_RESULTS]alarm set[/TOOL_RESULTS]")


@pytest.mark.parametrize("choice", [dict(tool_choice="required"),
                                    dict(tool_choice="function", tool_name="get_weather")])
def test_mistral_v11_forced_calls_parse_with_valid_arguments(mistral_engine, choice):
    forced_calls(mistral_engine, **choice)
