"""GigaChat 3 (`<|message_sep|>\n\nfunction call<|role_sep|>\n{…}`) and 3.1 (`<|function_call|>{…}`).

Strategy: a call is a JSON object `{"name": …, "arguments": …}` (jsoncalls.py) after GigaChat's
own opening: 3 starts a new message whose role is `function call`, 3.1 writes one marker. Text
after `<|message_sep|>` that is no function-call role gives the marker back as text.

Does not: read GigaChat's other roles (they stay text).
"""
from __future__ import annotations

from ..gbnf import GAP, WS_SET, Rules, literal, regex_escape
from .base import State, Step
from .jsoncalls import JsonCalls, JsonReader

MESSAGE, ROLE = "<|message_sep|>", "<|role_sep|>"
FUNCTION_ROLE = "function call" + ROLE


class GigaChatV3(JsonCalls):
    name, open = "gigachat_v3", MESSAGE
    extra_markers = (ROLE,)

    def detect(self, source: str) -> bool:
        return ROLE in source and MESSAGE in source and "<|function_call|>" not in source

    def begin(self, s: str, listed: bool, schemas: dict, marker: str = "") -> Step | None:
        if s.startswith(FUNCTION_ROLE):
            rest = s[len(FUNCTION_ROLE):].lstrip(" \n")
            if not rest:
                return None
            return Step(len(s) - len(rest), State.CALL, JsonReader()) if rest[0] == "{" else Step(0, State.TEXT)
        return None if FUNCTION_ROLE.startswith(s) else Step(0, State.TEXT)

    def calls_of(self, rules: Rules, call: str, parallel: bool) -> str:
        one = rules.add("x-one", f'{literal(MESSAGE + chr(10) + chr(10) + FUNCTION_ROLE + chr(10))} {call}')
        return rules.add("x-calls", one)

    def preamble(self) -> list:
        return [MESSAGE, GAP, FUNCTION_ROLE]

    def triggers(self, names: list[str]) -> tuple[str, ...]:  # (the separator alone starts any message)
        return (f"({regex_escape(MESSAGE)}{WS_SET}{regex_escape(FUNCTION_ROLE)})$",)


class GigaChatV31(JsonCalls):
    name, open = "gigachat_v3_1", "<|function_call|>"
    signature = ("<|function_call|>", ROLE)

    def calls_of(self, rules: Rules, call: str, parallel: bool) -> str:
        one = rules.add("x-one", f"{literal(self.open)} {call}")
        return rules.add("x-calls", f"{one} (x-ws {one})*" if parallel else one)


GIGACHAT_V3, GIGACHAT_V31 = GigaChatV3(), GigaChatV31()
