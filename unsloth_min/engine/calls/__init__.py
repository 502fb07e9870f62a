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
`open`/`close`, `signature` (or `detect`: how its chat template is recognised), `begin` (return
a reader for a call, usually a `JsonReader` or one of your own with `feed`/`pieces`/`finish`),
`after` if calls are separated by more than a closing marker, and `call_rule`/`calls_of`/
`preamble` (plus `triggers` if the preamble alone is not a safe trigger). Then give it its place
in `FORMATS` below — the one registry: formats.py detects a template's format by trying them in
this order, the specialised ones first, as llama.cpp's common/chat.cpp does — and add its cases
to tests/engine/test_calls.py (reading, grammar text, triggers), tests/formats/ (llama.cpp's real
outputs through the server's path) and, for the full path, tests/engine/test_output.py and
tests/engine/test_grammar.py. Nothing else changes: the parser, the grammar builder and the
engine take the object as it is.

Does not: detect a template's format (formats.py), emit events or decide which call streams
(output.py), or sample grammars (constrain.py).
"""
from .apertus import APERTUS
from .apriel import APRIEL
from .base import WS, CallFormat, Reader, State, Step, ThinkFormat
from .cohere import COHERE, COMMAND_R_PLUS
from .deepseek import DEEPSEEK_R1, DEEPSEEK_V31
from .dsml import DSML_V4, DSML_V32
from .firefunction import FIREFUNCTION
from .functionary import FUNCTIONARY_V31, FUNCTIONARY_V32
from .gemma4 import GEMMA4
from .gigachat import GIGACHAT_V3, GIGACHAT_V31
from .glm import GLM
from .harmony import HARMONY
from .hermes import HERMES
from .kimi import KIMI_K2
from .kimi_k3 import KIMI_K3
from .lfm2 import LFM2
from .ling import LING
from .llama3 import LLAMA3
from .minicpm5 import MINICPM5
from .granite import GRANITE
from .minimax import MINIMAX_M1, MINIMAX_M2
from .minimax_m3 import MINIMAX_M3
from .mistral import MISTRAL
from .mistral_args import MISTRAL_ARGS
from .muse import MUSE_GLIMMER
from .nemotron import NEMOTRON
from .qwen3_xml import QWEN3_XML
from .seed_oss import SEED_OSS

# Every format, in the order templates are tried against them (the first whose `detect` says
# yes is the template's): the specialised ones first, as llama.cpp's common/chat.cpp does.
FORMATS = (MISTRAL_ARGS, HARMONY, MUSE_GLIMMER, FUNCTIONARY_V32, KIMI_K2, KIMI_K3, LING, COHERE, LFM2, GIGACHAT_V3,
           MINIMAX_M3, DSML_V32, DSML_V4, GEMMA4, MINICPM5, QWEN3_XML, SEED_OSS, DEEPSEEK_R1, DEEPSEEK_V31, GLM,
           MINIMAX_M2, MINIMAX_M1, NEMOTRON, APRIEL, FIREFUNCTION, APERTUS, GIGACHAT_V31, COMMAND_R_PLUS, FUNCTIONARY_V31,
           GRANITE, MISTRAL, HERMES, LLAMA3)

__all__ = ["WS", "CallFormat", "Reader", "State", "Step", "ThinkFormat", "FORMATS", "APERTUS", "APRIEL",
           "COHERE", "COMMAND_R_PLUS", "GIGACHAT_V3", "GIGACHAT_V31", "MUSE_GLIMMER", "FIREFUNCTION", "FUNCTIONARY_V31", "FUNCTIONARY_V32", "MINICPM5", "SEED_OSS", "NEMOTRON", "DEEPSEEK_R1",
           "DEEPSEEK_V31", "DSML_V32", "DSML_V4", "GEMMA4", "GLM", "HARMONY", "HERMES", "KIMI_K2", "KIMI_K3", "LFM2", "LING", "LLAMA3",
           "GRANITE", "MINIMAX_M1", "MINIMAX_M2", "MINIMAX_M3", "MISTRAL", "MISTRAL_ARGS", "QWEN3_XML"]
