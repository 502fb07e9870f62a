"""How well our chat path handles llama.cpp's template collection and its parser cases.

Strategy: the measure issue 21 was judged by, run on our side. Every template in
tests/fixtures/templates/ (llama.cpp's `models/templates/`) goes through `ChatFormat` — the
object the Engine renders and parses with — and:
  * renders a matrix of conversations (tools; call → result → user; call → result → assistant
    → user; thinking on and off): each cell renders, or is refused with a 400 (`TemplateError`)
    that quotes the template's own rule, or fails (anything else);
  * parses llama.cpp's cases (tests/fixtures/formats/cases.json, from tests/test-chat.cpp by
    extract_cases.py): the prompt is rendered for the case's request, the parser is set up from
    it, and the raw output is fed whole, in 3-character pieces and in token-sized pieces (control
    markers whole, words and punctuation runs). A tool-call case (one expecting calls, not cut
    off) passes when every feed gives llama.cpp's calls (names, arguments as JSON, and the id
    where llama.cpp keeps the model's); a reasoning case (expecting reasoning, not cut off, not a
    continuation, no response format) passes when every feed gives its reasoning and content.
Run as a script for the figures and the failures: `python tests/formats/scorer.py [-v] [FILTER]`.

Does not: load a model, sample or check grammars (test_grammar.py and the e2e tests do).
"""
from __future__ import annotations

import functools
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from unsloth_min.core import (ChatRequest, Message, Reasoning, ReasoningDelta, Text, TextDelta, Tool, ToolCall,
                              ToolCallDelta, ToolResult)
from unsloth_min.engine.chatformat import ChatFormat
from unsloth_min.engine.template import TemplateError

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
TEMPLATES = FIXTURES / "templates"
CASES = FIXTURES / "formats" / "cases.json"
# control markers (`<|channel|>`, `<｜tool▁sep｜>`, `[TOOL_CALLS]`, `<tool_call>`) whole, then words
TOKEN = re.compile(r"<[|｜][^<>]{0,40}?[|｜]>|<\|[a-z_]{1,20}>|<[a-z_]{1,20}\|>|\[[A-Z_]{2,20}\]"
                   r"|</?[A-Za-z_:]{1,24}>|\s?\w+|\s?[^\w\s]+|\s+")


def token_pieces(text: str) -> list[str]:
    return TOKEN.findall(text)


def char_pieces(text: str, n: int = 3) -> list[str]:
    return [text[i:i + n] for i in range(0, len(text), n)]


@functools.lru_cache(maxsize=None)
def chat_format(template: str) -> ChatFormat:
    return ChatFormat((TEMPLATES / template).read_text(), "<s>", "</s>")


# ---- the render matrix -------------------------------------------------------------------------------
WEATHER = Tool("get_weather", "Get the weather in a city",
               {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})


def conversations() -> dict[str, list[Message]]:
    system, user = Message("system", [Text("Be brief.")]), Message("user", [Text("Weather in Paris?")])
    call = Message("assistant", [ToolCall("call_1", "get_weather", '{"city": "Paris"}')])
    result = Message("tool", [ToolResult("call_1", "sunny, 21 C", "get_weather")])
    answer = Message("assistant", [Text("It is sunny in Paris.")])
    again = Message("user", [Text("Thanks. And Oslo?")])
    return {"plain": [system, user], "tools": [system, user],
            "call-result-user": [system, user, call, result, again],
            "call-result-assistant-user": [system, user, call, result, answer, again]}


def render_cell(fmt: ChatFormat, name: str, messages: list[Message], thinking: bool) -> str:
    """'ok', 'refused: <the template's message>' or 'error: <what went wrong>'."""
    req = ChatRequest(messages=messages, tools=[] if name == "plain" else [WEATHER])
    try:
        text, _ = fmt.render_parts(req, thinking)
    except TemplateError as e:
        return f"{'refused' if e.rule else 'error'}: {e.message}"
    except Exception as e:  # noqa: BLE001 - what the matrix reports
        return f"error: {type(e).__name__}: {e}"
    if name != "plain" and "get_weather" not in text:
        return "error: the tools are not in the prompt"
    return "ok"


def render_matrix(names: list[str]) -> dict[str, dict[str, str]]:
    out = {}
    for name in names:
        try:
            fmt = chat_format(name)
        except Exception as e:  # noqa: BLE001
            out[name] = {"load": f"error: {type(e).__name__}: {e}"}
            continue
        out[name] = {f"{conv}/{'think' if t else 'nothink'}": render_cell(fmt, conv, msgs, t)
                     for conv, msgs in conversations().items() for t in (True, False)}
    return out


# ---- the parser cases --------------------------------------------------------------------------------
@dataclass
class Parsed:
    content: str = ""
    reasoning: str = ""
    calls: list = field(default_factory=list)  # [id, name, arguments]


def case_message(m: dict) -> Message:
    parts: list = []
    if m.get("reasoning_content"):
        parts.append(Reasoning(m["reasoning_content"]))
    if m["role"] == "tool":
        return Message("tool", [ToolResult(m.get("tool_call_id") or "", m["content"], m.get("tool_name") or None)])
    if m.get("content"):
        parts.append(Text(m["content"]))
    parts += [ToolCall(c["id"] or f"call{i}", c["name"], c["arguments"]) for i, c in enumerate(m["tool_calls"])]
    return Message(m["role"], parts)


def case_request(case: dict) -> ChatRequest:
    messages = [case_message(m) for m in case["messages"]] if case["messages"] else \
        [Message("user", [Text("Hey there!")])]
    tools = [Tool(t["name"], t["description"], json.loads(t["parameters"])) for t in case["tools"]]
    schema = json.loads(case["json_schema"]) if case["json_schema"] else None
    choice = "required" if case["tool_choice"].endswith("REQUIRED") else "auto"
    return ChatRequest(messages=messages, tools=tools, tool_choice=choice, response_schema=schema,
                       parallel_tool_calls=case["parallel_tool_calls"], enable_thinking=case["enable_thinking"])


def feed(case: dict, pieces: list[str]) -> Parsed:
    fmt, req = chat_format(case["template"]), case_request(case)
    text, prefill = fmt.render_parts(req, case["enable_thinking"])
    parser = fmt.parser(req, text, prefill)
    events = [ev for p in pieces for ev in parser.push(p)] + parser.close()
    out = Parsed()
    for ev in events:
        if isinstance(ev, TextDelta):
            out.content += ev.text
        elif isinstance(ev, ReasoningDelta):
            out.reasoning += ev.text
        elif isinstance(ev, ToolCallDelta):
            if ev.index == len(out.calls):
                out.calls.append([ev.id, ev.name, ""])
            out.calls[ev.index][2] += ev.arguments
    return out


def same_json(a: str, b: str) -> bool:
    try:
        return json.loads(a or "{}") == json.loads(b or "{}")
    except ValueError:
        return a == b


def calls_match(expected: list[dict], got: list) -> bool:
    return len(expected) == len(got) and all(
        e["name"] == g[1] and same_json(e["arguments"], g[2]) and (not e["id"] or e["id"] == g[0])
        for e, g in zip(expected, got))


def kinds(case: dict) -> tuple[bool, bool]:
    """(a tool-call case, a reasoning case), as issue 21 counted them."""
    exp, whole = case["expect"], not case["is_partial"]
    calls = bool(exp["tool_calls"]) and whole
    cont = case["continue_final_message"] != "COMMON_CHAT_CONTINUATION_NONE"
    reasoning = bool(exp["reasoning_content"]) and whole and not cont and not case["json_schema"]
    return calls, reasoning


def judge(case: dict) -> dict:
    """The case fed three ways: each kind passes only when all three pass; `same`: they agree."""
    exp = case["expect"]
    try:
        runs = [feed(case, [case["input"]]), feed(case, char_pieces(case["input"])),
                feed(case, token_pieces(case["input"]))]
    except Exception as e:  # noqa: BLE001 - a failure of the case, reported
        return {"error": f"{type(e).__name__}: {e}", "calls": False, "reasoning": False, "same": False}
    strip = [Parsed(r.content, r.reasoning, [c[1:] for c in r.calls]) for r in runs]
    return {"calls": all(calls_match(exp["tool_calls"], r.calls) for r in runs),
            "reasoning": all(r.reasoning == exp["reasoning_content"] and r.content == exp["content"]
                             for r in runs),
            "same": strip[0] == strip[1] == strip[2], "got": runs[0]}


def score(cases: list[dict]) -> dict:
    n_calls = n_reason = ok_calls = ok_reason = same = 0
    failures = []
    for case in cases:
        is_call, is_reason = kinds(case)
        if not (is_call or is_reason):
            continue
        verdict = judge(case)
        same += verdict["same"]
        n_calls, n_reason = n_calls + is_call, n_reason + is_reason
        ok_calls += is_call and verdict["calls"]
        ok_reason += is_reason and verdict["reasoning"]
        if (is_call and not verdict["calls"]) or (is_reason and not verdict["reasoning"]) or not verdict["same"]:
            failures.append((case, verdict))
    return {"calls": (ok_calls, n_calls), "reasoning": (ok_reason, n_reason),
            "same": (same, len([c for c in cases if any(kinds(c))])), "failures": failures}


def load_cases() -> list[dict]:
    return json.loads(CASES.read_text())


def main(argv: list[str]) -> None:
    verbose = "-v" in argv
    pattern = next((a for a in argv if not a.startswith("-")), "")
    names = sorted(p.name for p in TEMPLATES.glob("*.jinja") if pattern.lower() in p.name.lower())
    matrix = render_matrix(names)
    rendered = [n for n, cells in matrix.items() if all(not v.startswith("error") for v in cells.values())]
    for n, cells in matrix.items():
        bad = {k: v for k, v in cells.items() if not v.startswith("ok")}
        if bad and (verbose or n not in rendered):
            print(f"render {n}: {len(bad)} cells: {next(iter(bad.items()))}")
    result = score([c for c in load_cases() if c["template"] in names])
    for case, verdict in result["failures"]:
        print(f"FAIL {case['template']}: {case['input'][:90]!r}")
        if verbose:
            print(f"    expected {case['expect']}\n    got {verdict.get('got') or verdict.get('error')}")
    print(f"templates rendered {len(rendered)}/{len(matrix)}; tool-call cases {'%d/%d' % result['calls']}; "
          f"reasoning cases {'%d/%d' % result['reasoning']}; streamed == whole {'%d/%d' % result['same']}")


if __name__ == "__main__":
    main(sys.argv[1:])
