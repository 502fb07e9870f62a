"""Tool-call formats: one object per format, holding all the engine knows about it.

Strategy: each format is a `CallFormat` (base.py) in a module of its own — its markers, `begin`
and `after` (what follows its marker and each call), the `Reader` it creates per call (the
call's scanning state lives there, not in the parser), its grammar rule for forced calls
(`calls_rule`) and its lazy triggers for auto mode (`triggers`). The output parser (output.py)
and the grammar builder (grammar.py) only call these methods; neither branches on which format
it has. Formats that write JSON call objects share `JsonCalls` and `JsonReader` (jsoncalls.py):
  hermes.py        `<tool_call>{"name": …, "arguments": …}</tool_call>`
  qwen3_xml.py     `<tool_call><function=NAME><parameter=K>\nV\n</parameter></function></tool_call>`
  llama3.py        `<|python_tag|>{"name": …, "parameters": …}`, or the object bare at the start
  mistral.py       `[TOOL_CALLS][{…}, {…}]`
  mistral_args.py  `[TOOL_CALLS]NAME[ARGS]{…}` (Mistral v11+)

Adding a format: write one module here with a `CallFormat` subclass and its instance — `name`,
`open`/`close`, `begin` (return a reader for a call, usually a `JsonReader` or one of your own
with `feed`/`pieces`/`finish`), `after` if calls are separated by more than a closing marker,
and `call_rule`/`calls_of`/`preamble` (plus `triggers` if the preamble alone is not a safe
trigger). Then give formats.py's `TOOL_MARKERS` one row (the template markers that announce it)
and add its cases to tests/test_calls.py (reading, grammar text, triggers) and, for the full
path, tests/test_output.py and tests/test_grammar.py. Nothing else changes: the parser, the
grammar builder and the engine take the object as it is.

Does not: detect a template's format (formats.py), emit events or decide which call streams
(output.py), or sample grammars (constrain.py).
"""
from .base import WS, CallFormat, Reader, State, Step
from .hermes import HERMES
from .llama3 import LLAMA3
from .mistral import MISTRAL
from .mistral_args import MISTRAL_ARGS
from .qwen3_xml import QWEN3_XML

FORMATS = (HERMES, QWEN3_XML, LLAMA3, MISTRAL, MISTRAL_ARGS)

__all__ = ["WS", "CallFormat", "Reader", "State", "Step", "FORMATS",
           "HERMES", "LLAMA3", "MISTRAL", "MISTRAL_ARGS", "QWEN3_XML"]
