"""gpt-oss's Harmony format: channels of messages, and calls addressed `to=functions.NAME`.

Strategy: the answer is a run of messages, each `[<|start|>assistant][ to=R]<|channel|>C[ to=R]
[ [<|constrain|>]TYPE]<|message|>BODY` ended by `<|end|>` (or `<|call|>`/`<|return|>`, which end
generation). The prompt ends with `<|start|>assistant`, so the answer starts inside a header
(`start`). `begin` reads a header up to `<|message|>`: the `analysis` channel is thinking (the
think format's close is `<|end|>`); `final` and `commentary` are answer text; a recipient
`functions.NAME` is a call whose body is the JSON arguments (streamed); any other recipient (the
built-in `python`, `container.exec`) is a call we do not offer: its body is dropped. A stray
`<|channel|>commentary to=assistant` before the real header is skipped; every header and `<|end|>`
is silent. History calls carry their reasoning in `thinking`, as the template wants, and a
request's reasoning effort becomes one of the template's three (`Reasoning: low|medium|high`).
Forced calls write ` to=functions.NAME<|channel|>commentary json<|message|>{…}` (the template's
own shape), after an optional analysis message; a response format writes the final channel.

Does not: read the `<|call|>`/`<|return|>` tokens (they end generation; the scheduler stops).
"""
from __future__ import annotations

import re

from ...core import Tool
from ..gbnf import Rules, literal, prefix_regex, regex_escape, text_until
from ..textstream import partial_suffix
from .base import CallFormat, State, Step, ThinkFormat
from .jsoncalls import JsonReader, args_rule

START, CHANNEL, MESSAGE, END = "<|start|>", "<|channel|>", "<|message|>", "<|end|>"
CALL, RETURN, CONSTRAIN = "<|call|>", "<|return|>", "<|constrain|>"
ENDS = (END, CALL, RETURN)
HEADER_LIMIT = 256  # characters a header may take before `<|message|>`: beyond, it was text
RECIPIENT = re.compile(r"\bto=([^\s<]+)")
CHANNEL_NAME = re.compile(re.escape(CHANNEL) + r"(\w+)")


class DropReader:
    """The body of a message addressed to a tool we do not offer: read to its end, dropped."""
    name, text = None, ""

    def feed(self, buf: str) -> Step:
        ends = [i for i in (buf.find(m) for m in ENDS) if i != -1]
        if ends:
            return Step(min(ends), State.AFTER)
        return Step(len(buf) - max(partial_suffix(buf, m) for m in ENDS), State.CALL)

    def pieces(self) -> list[str]:
        return []

    def finish(self, complete: bool, rest: str) -> None:
        return None


class Harmony(CallFormat):
    name, open = "harmony", START
    frames = (START, CHANNEL, END)
    extra_markers = (MESSAGE, CONSTRAIN, CALL, RETURN)
    think = ThinkFormat(CHANNEL + "analysis" + MESSAGE, END)
    signature = (CHANNEL,)

    @property
    def opens(self) -> tuple[str, ...]:
        return ()  # (calls begin at the frames' headers)

    def start(self, rendered: str) -> str | None:
        return START if rendered.rstrip().endswith(START + "assistant") else None

    def effort(self, level: str) -> str:  # (gpt-oss knows three: `Reasoning: low|medium|high`)
        return {"none": "low", "minimal": "low", "xhigh": "high", "max": "high"}.get(level, level)

    def adjust(self, messages: list[dict]) -> list[dict]:
        out = []
        for m in messages:
            if m.get("reasoning_content"):
                m = dict(m, thinking=m["reasoning_content"])
                if m.get("tool_calls"):
                    m.pop("content", None)
            out.append(m)
        return out

    def begin(self, s: str, listed: bool, schemas: dict, marker: str = "") -> Step | None:
        if marker == END:
            return Step(0, State.TEXT, silent=True)
        head = s
        if marker == START:
            if "assistant".startswith(s[:9]) and len(s) < 9:
                return None
            head = s[9:] if s.startswith("assistant") else s
        full = (CHANNEL if marker == CHANNEL else "") + head
        end = full.find(MESSAGE)
        if end == -1:
            return None if len(full) < HEADER_LIMIT else Step(0, State.TEXT)
        take = len(s) - len(full) + end + len(MESSAGE)
        return self._header(full[:end], take)

    def _header(self, header: str, take: int) -> Step:
        recipients = [r for r in RECIPIENT.findall(header) if r != "assistant"]
        channels = CHANNEL_NAME.findall(header)
        if recipients and recipients[-1].startswith("functions."):
            return Step(take, State.CALL, JsonReader(name=recipients[-1][len("functions."):]), silent=True)
        if recipients:
            return Step(take, State.CALL, DropReader(), silent=True)
        if channels and channels[-1] == "analysis":
            return Step(take, State.THINK, silent=True)
        return Step(take, State.TEXT, silent=True)

    def after(self, s: str) -> Step | None:
        for m in ENDS:
            if s.startswith(m):
                return Step(len(m), State.TEXT)
            if m.startswith(s):
                return None
        return Step(0, State.TEXT)

    # ---- grammar -----------------------------------------------------------------------------------
    def call_rule(self, rules: Rules, tool: Tool, i: int) -> str:
        head = literal(f" to=functions.{tool.name}{CHANNEL}commentary json{MESSAGE}")
        return f"{head} {args_rule(rules, tool, i)}"

    def calls_of(self, rules: Rules, call: str, parallel: bool) -> str:
        return call  # one call: `<|call|>` ends generation

    def preamble(self) -> list:
        return [" to=functions."]

    def answer_rule(self, rules: Rules, answer: str) -> str:
        return f"{literal(CHANNEL + 'final json' + MESSAGE)} {answer}"

    def forced_root(self, rules: Rules, body: str) -> str:
        thought = text_until(rules, END, "harmony-analysis")
        analysis = rules.add("x-analysis", f"{literal(self.think.open)} {thought} {literal(END + START + 'assistant')}")
        return f"{analysis}? ({body})"

    def triggers(self, names: list[str]) -> tuple[str, ...]:  # (the recipient, up to what follows it)
        to = "(?:" + "|".join(prefix_regex([" to=functions.", f"{name}{CHANNEL}commentary json{MESSAGE}"])
                              for name in names if name) + ")"
        return (f"^({to})$", f"{regex_escape(START + 'assistant')}({to})$")


HARMONY = Harmony()
