"""Pure engine pieces: UTF-8-safe detokenization with stop strings, sandboxed chat templates,
tool/thinking formats read from templates."""
from __future__ import annotations

import asyncio
import inspect
import logging

import pytest

from unsloth_min.config import Config, parse_config
from support.scripted import ScriptedEngine
from unsloth_min.core import (ChatEngine, ChatRequest, Message, Reasoning, Sampling, Text, Tool, ToolCall,
                              ToolResult)
from unsloth_min.engine import Engine, EngineOptions
from unsloth_min.engine.calls import FUNCTIONARY_V31
from unsloth_min.engine.formats import (HERMES, LLAMA3, MISTRAL, MISTRAL_ARGS, QWEN3_XML, ThinkFormat,
                                        detect_think_format, detect_tool_format, prepare_messages,
                                        starts_thinking)
from unsloth_min.engine.scheduler import MAX_QUEUE, Scheduler
from unsloth_min.engine.template import CHATML, ChatTemplate, TemplateError
from unsloth_min.engine.textstream import TextStream


def feed(stream: TextStream, pieces: list[bytes]):
    text, hit = "", None
    for p in pieces:
        out, hit = stream.push(p)
        text += out
        if hit:
            return text, hit
    return text + stream.flush(), None


def test_utf8_split_across_tokens():
    data = "héllo 世界 🙂".encode()
    for size in (1, 2, 3):
        pieces = [data[i:i + size] for i in range(0, len(data), size)]
        assert feed(TextStream(), pieces) == ("héllo 世界 🙂", None)


@pytest.mark.parametrize("size", [1, 2, 3, 5])
def test_stop_string_never_leaks(size):
    data = b"one two END three"
    pieces = [data[i:i + size] for i in range(0, len(data), size)]
    stream = TextStream(("END", "xyz"))
    sent = []
    for p in pieces:
        out, hit = stream.push(p)
        sent.append(out)
        if hit:
            break
    assert "".join(sent) == "one two " and hit == "END"
    assert all("E" not in s for s in sent)


def test_partial_stop_is_released_when_it_does_not_match():
    assert feed(TextStream(("ENDING",)), [b"the EN", b"D is", b" near"]) == ("the END is near", None)


def test_earliest_stop_wins():
    assert feed(TextStream(("b", "a")), [b"xxab"]) == ("xx", "a")


def test_template_renders_roles_tools_and_prefill():
    tpl = ChatTemplate(CHATML)
    req = ChatRequest(messages=[Message("system", [Text("sys")]), Message("user", [Text("hi")]),
                                Message("assistant", [Text("Sure:")])])
    assert tpl.render(req, True) == ("<|im_start|>system\nsys<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
                                     "<|im_start|>assistant\nSure:")


def test_template_sees_tools_thinking_and_tool_messages():
    src = ("{{ enable_thinking }}|{{ tools[0].function.name }}|"
           "{% for m in messages %}{{ m.role }}:{{ m.content }}"
           "{% if m.tool_calls %}{{ m.tool_calls[0].function.arguments.city }}{% endif %}"
           "{% if m.reasoning_content %}[{{ m.reasoning_content }}]{% endif %}"
           "{% if m.tool_call_id %}#{{ m.tool_call_id }}{% endif %};{% endfor %}")
    req = ChatRequest(
        messages=[Message("user", [Text("q")]),
                  Message("assistant", [Reasoning("think"), ToolCall("c1", "w", '{"city": "Oslo"}')]),
                  Message("tool", [ToolResult("c1", "rainy")])],
        tools=[Tool("w", "weather", {"type": "object"})])
    assert ChatTemplate(src).render(req, False) == "False|w|user:q;assistant:Oslo[think];tool:rainy#c1;"


def test_template_is_sandboxed():
    evil = "{{ ''.__class__.__mro__[1].__subclasses__() }}"
    with pytest.raises(TemplateError):
        ChatTemplate(evil).render(ChatRequest(messages=[Message("user", [Text("x")])]), True)
    mutate = "{% set x = [] %}{{ x.append(1) }}"
    with pytest.raises(TemplateError):
        ChatTemplate(mutate).render(ChatRequest(messages=[Message("user", [Text("x")])]), True)


def test_template_raise_exception_is_a_400():
    tpl = ChatTemplate("{{ raise_exception('roles must alternate') }}")
    with pytest.raises(TemplateError) as e:
        tpl.render(ChatRequest(messages=[Message("user", [Text("x")])]), True)
    assert e.value.status == 400 and "roles must alternate" in e.value.message


# ---- formats: what the template says about tool calls and thinking -------------------------------
@pytest.mark.parametrize("source, expected", [
    ("{{ '<tool_call>\\n' + tool_call | tojson + '\\n</tool_call>' }}", HERMES),  # Qwen / Hermes
    ("{{ '[TOOL_CALLS]' + tool_calls | tojson }}", MISTRAL),
    ("{{ '[TOOL_CALLS]' + tc.function.name + '[ARGS]' + tc.function.arguments | tojson }}", MISTRAL_ARGS),
    ("[AVAILABLE_TOOLS]…[TOOL_CALLS]{{ name }}[CALL_ID]{{ id }}[ARGS]{{ args }}", MISTRAL_ARGS),  # v11+
    ("{{ '<|python_tag|>' + tool_call.name }}", LLAMA3),
    ('Respond in the format {"name": function name, "parameters": dictionary of argument name', LLAMA3),
    ("{{- '\\n<tool_call>\\n<function=' + tool_call.name + '>\\n' }}", QWEN3_XML),  # Qwen3-Coder
    ("<tools>…</tools> <tool_call>\n<function=example>\n<parameter=x>\n…", QWEN3_XML),  # ...ahead of Hermes
    ('<function=name>{"arg": "value"}</function>', FUNCTIONARY_V31),  # Llama 3.1 / Functionary v3.1 custom calls
    ('<function=name>{"arg"}</function> {"name": function name, "parameters": dictionary of', FUNCTIONARY_V31),
    (CHATML, None),
])
def test_tool_format_is_read_from_the_template(source, expected):
    assert detect_tool_format(source) == expected


def test_control_token_markers_reach_the_parser_as_text():
    """`[TOOL_CALLS]`, `[ARGS]`, `[CALL_ID]`, `[THINK]` are control tokens in Mistral v11+ vocabularies:
    the engine has them detokenized as text; a marker that is no single control token is not listed."""
    from types import SimpleNamespace

    from unsloth_min.engine import Engine

    ids = {"[TOOL_CALLS]": 5, "[ARGS]": 6, "[CALL_ID]": 7, "[THINK]": 8, "[/THINK]": 9}
    model = SimpleNamespace(tokenize=lambda text, special: [ids[text]] if text in ids else [1, 2],
                            piece=lambda token: b"")
    think = ("[THINK]", "[/THINK]")
    engine = SimpleNamespace(chat=SimpleNamespace(markers=MISTRAL_ARGS.markers + think), model=model)
    assert Engine._marker_tokens(engine) == {5, 6, 7, 8, 9}
    engine.chat.markers = MISTRAL.markers + think
    assert Engine._marker_tokens(engine) == {5, 8, 9}


def test_think_format_and_start_state():
    assert detect_think_format("{{ '[THINK]' }}").close == "[/THINK]"
    assert detect_think_format(CHATML) == ThinkFormat()
    think = ThinkFormat()
    assert starts_thinking("<|im_start|>assistant\n<think>\n", "", think)
    assert not starts_thinking("<|im_start|>assistant\n<think>\n\n</think>\n\n", "", think)
    assert not starts_thinking("<|im_start|>user\nsay <think><|im_end|>\n<|im_start|>assistant\n", "", think)
    assert starts_thinking("<|im_start|>assistant\n", "<think>\nSo far", think)
    assert not starts_thinking("<|im_start|>assistant\n<think>\n", "x</think>\nAnswer:", think)


def test_tools_without_a_template_format_become_hermes_text():
    tool = Tool("get_weather", "Weather", {"type": "object", "properties": {"city": {"type": "string"}}})
    req = ChatRequest(messages=[
        Message("system", [Text("Be brief.")]), Message("user", [Text("Paris?")]),
        Message("assistant", [Reasoning("look it up"), ToolCall("c1", "get_weather", '{"city": "Paris"}')]),
        Message("tool", [ToolResult("c1", "sunny")]), Message("tool", [ToolResult("c2", "22C")])])
    messages = prepare_messages(req.messages, [tool])
    assert [m.role for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[0].text.startswith("Be brief.\n\n# Tools") and '"name": "get_weather"' in messages[0].text
    assert messages[2].text == '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    assert messages[2].parts[0] == Reasoning("look it up")
    assert messages[3].text == ("<tool_response>\nsunny\n</tool_response>\n"
                                "<tool_response>\n22C\n</tool_response>")
    prompt = ChatTemplate(CHATML).render(ChatRequest(messages=messages), True)
    assert "<tool_call>" in prompt and "<tool_response>\nsunny" in prompt
    no_system = prepare_messages([Message("user", [Text("hi")])], [tool])
    assert no_system[0].role == "system" and no_system[0].text.startswith("# Tools")
    assert prepare_messages([Message("user", [Text("hi")])], []) == [Message("user", [Text("hi")])]


def test_mailbox_carries_worker_events_into_the_loop_in_order():
    """The worker's way into the event loop: events posted from another thread, in bursts, all
    arrive, in order, each in its own queue; a closed mailbox stops writing (its fds are gone)."""
    import threading

    from unsloth_min.engine.mailbox import Inbox, Mailbox

    async def main():
        loop = asyncio.get_running_loop()
        box = Mailbox(loop)
        a, b = Inbox(), Inbox()

        def worker():
            for i in range(500):
                box.post(a, i)
                if i % 7 == 0:
                    box.post(b, -i)

        t = threading.Thread(target=worker)
        t.start()
        got_a = [await asyncio.wait_for(a.get(), 5) for _ in range(500)]
        got_b = [await asyncio.wait_for(b.get(), 5) for _ in range(len(range(0, 500, 7)))]
        t.join()
        box.close()
        box.post(a, "after close")  # no write to a closed (maybe reused) descriptor
        return got_a, got_b, box.pending

    got_a, got_b, pending = asyncio.run(main())
    assert got_a == list(range(500)) and got_b == [-i for i in range(0, 500, 7)]
    assert list(pending) and pending[-1][1] == "after close"


def test_an_inbox_survives_a_cancelled_get():
    """A request's consumer cancelled while it waits (the client left): an event put after that
    is kept for a later get, not set on the cancelled waiter."""
    from unsloth_min.engine.mailbox import Inbox

    async def main():
        box = Inbox()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(box.get(), 0.05)
        box.put_nowait("a")
        box.put_nowait("b")
        return [await box.get(), await box.get()]
    assert asyncio.run(main()) == ["a", "b"]


@pytest.mark.model
def test_default_context_shrinks_to_the_memory_an_explicit_one_is_kept(monkeypatch, caplog):
    """The default context (the training context, at least 32k for coding agents' prompts) x
    slots must not ask for a KV cache beyond half the free memory (a big model's 128k x 4 is
    tens of GiB); an explicit -c stays, with a warning."""
    from unsloth_min.engine import embedded_model_path
    from unsloth_min.engine import model as M

    path = embedded_model_path()
    roomy = M.Model(M.ModelParams(path))
    per_token = roomy.kv_bytes_per_token()
    assert roomy.n_ctx == max(roomy.n_ctx_train, M.MIN_DEFAULT_CTX) and per_token > 0
    roomy.close()
    monkeypatch.setattr(M, "available_memory", lambda: per_token * 4 * 6000)  # half: 3000 per slot
    tight = M.Model(M.ModelParams(path))
    assert tight.n_ctx == 2816  # 3000, down to a multiple of 256
    tight.close()
    caplog.clear()
    explicit = M.Model(M.ModelParams(path, n_ctx=8192))
    assert explicit.n_ctx == 8192 and "more than the" in caplog.text
    explicit.close()


@pytest.mark.model
def test_with_layers_on_a_gpu_the_default_context_fits_its_memory(monkeypatch, caplog):
    """-ngl puts the KV cache in VRAM: the GPUs' free memory decides, not the RAM (a GPU build
    is stood in for: this machine has none)."""
    from unsloth_min.engine import embedded_model_path
    from unsloth_min.engine import model as M

    path = embedded_model_path()
    probe = M.Model(M.ModelParams(path, n_ctx=512))
    per_token = probe.kv_bytes_per_token()
    probe.close()
    monkeypatch.setattr(M.bufts, "gpu_free_memory", lambda: per_token * 4 * 2000)  # 1000 a slot
    gpu = M.Model(M.ModelParams(path))
    assert gpu.offloading and gpu.n_ctx == 768 and "of free GPU memory" in caplog.text
    gpu.close()
    cpu = M.Model(M.ModelParams(path, n_gpu_layers=0))  # -ngl 0: the cache is in RAM
    assert not cpu.offloading and cpu.n_ctx == max(cpu.n_ctx_train, M.MIN_DEFAULT_CTX)
    cpu.close()


def test_integer_ranges_match_exactly_their_numbers():
    """The GBNF digit runs for a..b, read as a regex, match a number iff it is within a..b."""
    import random
    import re

    from unsloth_min.engine.gbnf import digit_runs, integer_range

    def regex(gbnf: str) -> re.Pattern:
        text = re.sub(r'"([^"]*)"', lambda m: re.escape(m.group(1)), gbnf.replace(" ", ""))
        return re.compile(text)

    rng = random.Random(7)
    for _ in range(2000):
        a = rng.randint(0, 10 ** rng.randint(0, 6))
        b = a + rng.randint(0, 10 ** rng.randint(0, 6))
        pattern = regex("(" + "|".join(digit_runs(a, b)) + ")")
        for x in {a, b, a - 1, b + 1, rng.randint(max(0, a - 50), b + 50), 0, 10 ** len(str(b))}:
            if x >= 0:
                assert bool(pattern.fullmatch(str(x))) == (a <= x <= b), (a, b, x)
    bounded = regex(integer_range({"minimum": -12, "exclusiveMaximum": 7.5}))
    assert [x for x in range(-40, 40) if bounded.fullmatch(str(x))] == list(range(-12, 8))
    assert integer_range({"type": "integer"}) is None and integer_range({"minimum": 3, "maximum": 2}) is None


@pytest.mark.model
def test_n_predict_caps_what_a_request_asks_for():
    """-n N: a coding agent's max_tokens 64000 still ends after N tokens, with `length`."""
    from unsloth_min.core import Finish, Sampling
    from unsloth_min.engine import Engine, EngineOptions, embedded_model_path
    from unsloth_min.engine.model import ModelParams

    path = embedded_model_path()
    engine = Engine(EngineOptions(path, "m", ModelParams(path, n_ctx=512, n_parallel=1),
                                  Sampling(temperature=0), n_predict=5))
    req = ChatRequest([Message("user", [Text("Write a long story about a dragon and a knight.")])],
                      Sampling(max_tokens=64000))

    async def finish():
        return [ev async for ev in engine.generate(req) if isinstance(ev, Finish)][0]
    try:
        done = asyncio.run(finish())
    finally:
        engine.close()
    assert (done.reason, done.usage.completion_tokens) == ("length", 5)


@pytest.mark.model
def test_the_prompt_ends_with_the_user_turn_a_system_turn_followed():
    from unsloth_min.engine import embedded_model_path
    from unsloth_min.engine.model import ModelParams

    path = embedded_model_path()
    engine = Engine(EngineOptions(path, "m", ModelParams(path, n_ctx=512, n_parallel=1), Sampling()))
    try:
        text, _ = engine.render_parts(ChatRequest([Message("user", [Text("Say hello")]),
                                                   Message("system", [Text("Platform: linux")])]))
    finally:
        engine.close()
    assert text.index("Platform: linux") < text.index("Say hello")
    assert text.endswith("Say hello<|im_end|>\n<|im_start|>assistant\n")


@pytest.mark.model
def test_flash_attention_modes_reach_llama_cpp():
    import llama_cpp as C

    from unsloth_min.engine import embedded_model_path
    from unsloth_min.engine import model as M
    assert parse_config([]).flash_attn == "auto" and parse_config(["-fa", "off"]).flash_attn == "off"
    want = {"auto": C.LLAMA_FLASH_ATTN_TYPE_AUTO, "on": C.LLAMA_FLASH_ATTN_TYPE_ENABLED,
            "off": C.LLAMA_FLASH_ATTN_TYPE_DISABLED}
    for mode, kind in want.items():
        m = M.Model(M.ModelParams(embedded_model_path(), n_ctx=512, n_parallel=1, flash_attn=mode))
        try:
            assert m._context_params().flash_attn_type == kind
        finally:
            m.close()


def test_rope_scaling_choice():
    from unsloth_min.engine.model import rope_scaling
    assert rope_scaling("auto", 32768, 8192) is None  # the model's own (llama.cpp's default)
    assert rope_scaling("none", 32768, 8192) == ("none", 1.0)
    assert rope_scaling("yarn", 32768, 8192) == ("yarn", 0.25)
    assert rope_scaling("linear", 16384, 8192) == ("linear", 0.5)
    assert rope_scaling("yarn", 4096, 8192) == ("yarn", 1.0)
    assert parse_config([]).rope_scaling == "auto"
    assert parse_config(["--rope-scaling", "yarn"]).rope_scaling == "yarn"


@pytest.mark.model
def test_rope_scaling_reaches_llama_cpp(caplog):
    import llama_cpp as C

    from unsloth_min.engine import embedded_model_path
    from unsloth_min.engine import model as M
    cases = [("yarn", 16384, C.LLAMA_ROPE_SCALING_TYPE_YARN, 0.5,
              "yarn rope scaling stretches its positions x2"),
             ("auto", 16384, C.LLAMA_ROPE_SCALING_TYPE_UNSPECIFIED, 0.0,  # llama.cpp's own
              "its positions past that are untrained"),
             ("auto", 512, C.LLAMA_ROPE_SCALING_TYPE_UNSPECIFIED, 0.0, None)]
    for mode, n_ctx, kind, scale, said in cases:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="unsloth_min.engine"):
            m = M.Model(M.ModelParams(embedded_model_path(), n_ctx=n_ctx, n_parallel=1,
                                      rope_scaling=mode))
        try:
            cp = m._context_params()
            assert (cp.rope_scaling_type, cp.rope_freq_scale) == (kind, scale)
            assert (said is None) == ("training context" not in caplog.text)
            assert said is None or said in caplog.text
        finally:
            m.close()


def test_the_embedded_model_gets_a_token_cap_and_a_repeat_penalty_of_its_own():
    from unsloth_min.cli import engine_options
    embedded = engine_options(parse_config([]))
    assert (embedded.n_predict, embedded.defaults.repetition_penalty) == (1024, 1.1)
    theirs = engine_options(parse_config(["--model", "/models/big.gguf"]))
    assert (theirs.n_predict, theirs.defaults.repetition_penalty) == (None, None)  # llama.cpp's 1.0
    chosen = engine_options(parse_config(["--repeat-penalty", "1.3", "-n", "64"]))
    assert (chosen.n_predict, chosen.defaults.repetition_penalty) == (64, 1.3)


@pytest.mark.parametrize("typical_p, used", [(0.5, [0.5]), (1.0, []), (None, [])])
def test_typical_p_reaches_the_sampler_chain_only_below_1(monkeypatch, typical_p, used):
    from unsloth_min.engine import sampling
    seen = []
    real = sampling.C.llama_sampler_init_typical
    monkeypatch.setattr(sampling.C, "llama_sampler_init_typical",
                        lambda p, keep: seen.append(p) or real(p, keep))
    chain = sampling.chain(Sampling(temperature=0.7, top_k=40, typical_p=typical_p))
    sampling.C.llama_sampler_free(chain)
    assert seen == used
