"""DeepSeek V3.2 and V4 (DSML): `<｜DSML｜function_calls>` (V4: `tool_calls`) blocks of
`<｜DSML｜invoke name="NAME">` calls with `<｜DSML｜parameter name="k" string="true|false">v</…>`.

Strategy: a block of tagged calls (minimax.py's `TaggedList`, tagged.py's reader); each value is
typed by the kind the model declares — `string="true"` is the text as written, `string="false"`
JSON, read by the tool's schema as Qwen3-Coder values are. Either block name is read whatever the
template's (V3.2 and V4 differ only in it); a call ends the thinking block if `</think>` never
came. `｜DSML｜` is one special token in DeepSeek's vocabulary (the engine shows it as text).

Does not: read R1/V3.1's `<｜tool▁calls▁begin｜>` calls (deepseek.py).
"""
from __future__ import annotations

import re

from ...core import Tool
from ..gbnf import Rules
from .minimax import TaggedList
from .tagged import Tags, tagged_call
from .xmlvalues import schema_types

DSML = "｜DSML｜"
TAGS = Tags(head=re.compile(rf'<{DSML}invoke\s+name="(?P<name>[^"]{{1,256}})"\s*>'), head_ends=(">",),
            param=re.compile(rf'<{DSML}parameter\s+name="(?P<key>[^"]{{1,256}})"(?:\s+string="(?P<kind>\w+)")?\s*>'),
            param_start=f"<{DSML}parameter", value_end=f"</{DSML}parameter>", call_end=(f"</{DSML}invoke>",),
            kinds={"true": {"type": "string"}})


class Dsml(TaggedList):
    """V3.2's blocks (`function_calls`); V4's (`tool_calls`) are `DSML_V4`."""
    name, block, other = "dsml", "function_calls", "tool_calls"
    item, tags, extra_markers = f"<{DSML}invoke", TAGS, (DSML,)
    calls_end_thinking, gap_before_calls = True, True  # (the template writes "\n\n" before a block)

    @property
    def open(self) -> str:
        return f"<{DSML}{self.block}>"

    @property
    def close(self) -> str:
        return f"</{DSML}{self.block}>"

    @property
    def more_opens(self) -> tuple[str, ...]:
        return (f"<{DSML}{self.other}>",)

    def detect(self, source: str) -> bool:
        return "dsml_token" in source and "DSML" in source and f"{self.block}>" in source

    @property
    def closes(self) -> tuple[str, ...]:
        return (self.close, f"</{DSML}{self.other}>")

    def call_rule(self, rules: Rules, tool: Tool, i: int) -> str:
        params = tool.parameters.get("properties") if isinstance(tool.parameters, dict) else None
        strings = {k for k, v in (params or {}).items() if schema_types(v) == {"string"}}

        def param(key: str) -> str:
            return f'<{DSML}parameter name="{key}" string="{"true" if key in strings else "false"}">'

        return tagged_call(rules, tool, i, f'<{DSML}invoke name="{tool.name}">', param,
                           f"</{DSML}parameter>", f"</{DSML}invoke>")


class DsmlV4(Dsml):
    name, block, other = "dsml_v4", "tool_calls", "function_calls"


DSML_V32, DSML_V4 = Dsml(), DsmlV4()
