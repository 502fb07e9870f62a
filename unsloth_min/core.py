"""The internal model: what a request means and what generation yields, as plain value types.

Strategy: every dialect (OpenAI Chat included) parses its wire JSON into `ChatRequest` and renders
the engine's `Event`s back into its own JSON or SSE. The engine sees only these types, and
`ChatEngine` says what the app needs of an engine (the real one and the tests' scripted one). Nothing here
knows HTTP, JSON shapes of any API, or llama.cpp; this module imports only the standard library.

Does not: validate wire input (the dialects do, raising `ApiError`), or hold any state.
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import AsyncIterator, Callable, Protocol, Union, runtime_checkable


class ApiError(Exception):
    """The one error type. `kind` is the OpenAI/Anthropic error type; each dialect renders it."""

    def __init__(self, status: int, kind: str, message: str, *, param: str | None = None,
                 code: str | None = None, headers: list[tuple[str, str]] | None = None):
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message
        self.param, self.code, self.headers = param, code, headers or []


def bad_request(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, "invalid_request_error", message, param=param, code=code)


# The server tools a request may name (SPEC "Server tools"), and the other names they go by.
SERVER_TOOLS = ("python", "bash", "web_search")
TOOL_ALIASES = {"terminal": "bash"}


def server_tool_name(name: str | None) -> str | None:
    """The server tool `name` means (aliases resolved), or None."""
    name = TOOL_ALIASES.get(name, name)
    return name if name in SERVER_TOOLS else None


def new_id(prefix: str, nbytes: int = 12) -> str:
    return prefix + secrets.token_hex(nbytes)


# ---- content parts -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class Image:
    """An image to show the model: raw bytes once fetched/decoded, or a URL still to fetch.
    `where` names the request field it came from (`messages[0].content[1]`), for error messages."""
    data: bytes | None = None
    url: str | None = None
    media_type: str | None = None
    where: str = field(default="", compare=False)


@dataclass(frozen=True)
class Reasoning:
    """Thinking the model produced earlier (sent back in a history)."""
    text: str


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # a JSON text, as the model wrote it (or as the grammar forced it)


@dataclass(frozen=True)
class ToolResult:
    call_id: str
    content: str
    name: str | None = None
    is_error: bool = False


Part = Union[Text, Image, Reasoning, ToolCall, ToolResult]
ROLES = ("system", "user", "assistant", "tool")


@dataclass
class Message:
    role: str  # one of ROLES
    parts: list[Part] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(p.text for p in self.parts if isinstance(p, Text))


# ---- request -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Tool:
    name: str
    description: str = ""
    parameters: dict = field(default_factory=lambda: {"type": "object", "properties": {}})


MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class Knob:
    """How the dialects read one sampling field: its range, and where a dialect spells it or
    bounds it otherwise, that dialect's names (read in order, the last wins) and (lo, hi)."""
    lo: float | None = None
    hi: float | None = None
    integer: bool = False
    names: dict = field(default_factory=dict)   # dialect → its wire names; default: the field's
    ranges: dict = field(default_factory=dict)  # dialect → (lo, hi)
    kind: str = "number"                        # or "stops" (a string or list of strings) or
                                                # "bias" (an object of token id → bias)


def knob(lo=None, hi=None, *, default=None, **how):
    return field(default=default, metadata={"knob": Knob(lo, hi, **how)})


@dataclass
class Sampling:
    """Per-request sampling; None means "use the server default". Each knob is declared once, here:
    dialects/common.parse_sampling reads them and the dialects' known fields come from them. Ranges
    follow the OpenAI API; llama.cpp's extra knobs are accepted everywhere, as llama-server does."""
    temperature: float | None = knob(0, 2, ranges={"anthropic": (0, 1)})
    top_p: float | None = knob(0, 1)
    top_k: int | None = knob(0, integer=True)
    min_p: float | None = knob(0, 1)
    typical_p: float | None = knob(0, 1)  # llama.cpp's locally typical sampling; 1 is off
    seed: int | None = knob(-MAX_SEED, MAX_SEED, integer=True)
    presence_penalty: float | None = knob(-2, 2)
    frequency_penalty: float | None = knob(-2, 2)
    repetition_penalty: float | None = knob(0.01, 10)
    max_tokens: int | None = knob(1, integer=True, names={  # chat's max_completion_tokens wins
        "openai": ("max_tokens", "max_completion_tokens"), "responses": ("max_output_tokens",)})
    stop: tuple[str, ...] = knob(default=(), kind="stops", names={
        "openai": ("stop",), "anthropic": ("stop_sequences",), "responses": ()})
    logit_bias: tuple[tuple[int, float], ...] = knob(-100, 100, default=(), kind="bias", names={
        "anthropic": (), "responses": ()})  # OpenAI Chat's (and llama-server's); sorted (token, bias)

    def merged(self, defaults: "Sampling") -> "Sampling":
        """Fill every unset knob (None, or no stops or biases) from `defaults` (the server's flags)."""
        return Sampling(**{k: getattr(defaults, k) if v is None or v == () else v
                           for k, v in vars(self).items()})


@dataclass(frozen=True)
class ChatRequest:
    messages: list[Message]
    sampling: Sampling = field(default_factory=Sampling)
    model: str = ""
    stream: bool = False
    include_usage: bool = False
    tools: list[Tool] = field(default_factory=list)
    tool_choice: str = "auto"  # auto | none | required | function (then tool_name is set)
    tool_name: str | None = None
    parallel_tool_calls: bool = True
    response_schema: dict | None = None  # json_object → {} ; json_schema → the schema
    enable_thinking: bool | None = None  # None → server default
    reasoning_effort: str | None = None  # the dialect's effort level, for templates that read one (gpt-oss)
    # server tools (SPEC "Server tools"); the dialects pass them through unchanged
    enable_tools: bool = False
    enabled_tools: tuple[str, ...] = ()
    session_id: str | None = None
    max_tool_calls: int | None = None  # None → the server's --max-tool-calls
    return_progress: bool = False  # stream `PromptProgress` while the prompt is computed
    # who asked, for /slots (set by the app: the id the client sees, the dialect's name; not
    # what the client asked for, so not in repr, which the recorded wire compares)
    request_id: str = field(default="", repr=False)
    dialect: str = field(default="", repr=False)

    @property
    def offered_tools(self) -> list[Tool]:
        """The client tools the model is shown and may call (`tool_choice: none` hides them)."""
        return self.tools if self.tool_choice != "none" else []


# ---- events --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0  # of prompt_tokens, reused from the KV cache
    reasoning_tokens: int = 0  # of completion_tokens, spent thinking (0 when not counted)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class Started:
    """The prompt is tokenized and queued: its size is known before the first token."""
    prompt_tokens: int
    cached_tokens: int = 0


@dataclass(frozen=True)
class PromptProgress:
    """The prompt is being computed (llama-server's `prompt_progress`): `processed` of `total`
    tokens are in the KV cache, `cache` of them reused; `time_ms` since its computing began."""
    total: int
    cache: int
    processed: int
    time_ms: int


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class ReasoningDelta:
    text: str


@dataclass(frozen=True)
class ToolCallDelta:
    """A streamed piece of tool call `index`: the first piece carries id and name."""
    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(frozen=True)
class ToolExecuted:
    """A server tool ran (SPEC "Server tools"): what to report to the client."""
    call: ToolCall
    result: ToolResult


FINISH_REASONS = ("stop", "length", "stop_sequence", "tool_calls")


@dataclass(frozen=True)
class Finish:
    reason: str  # one of FINISH_REASONS
    usage: Usage
    stop_sequence: str | None = None


Event = Union[Started, PromptProgress, TextDelta, ReasoningDelta, ToolCallDelta, ToolExecuted, Finish]


@runtime_checkable
class ChatEngine(Protocol):
    """What the app needs of an engine: engine.Engine over llama.cpp, or a scripted one in tests."""
    model_id: str
    n_ctx: int
    accepts_images: bool  # True: URL images are fetched before generate() (a vision projector)
    # set by the server: called once, from any thread, when the engine can generate no more
    on_gone: Callable[[str], None] | None

    def generate(self, req: ChatRequest) -> AsyncIterator[Event]:
        """`Started`, then the answer's events, then `Finish`; closing the iterator cancels."""
        ...

    def count_tokens(self, req: ChatRequest) -> int:
        """The prompt's size (blocking: the app calls it in a thread)."""
        ...

    def close(self) -> None:
        """Free the model (blocking); no generate() after it."""
        ...

    # what /slots, /props and /metrics show (engine/stats.py, ops.py)
    def slots(self) -> list[dict]:
        """Per slot: busy or idle, tokens held, the request's id and dialect, rates; no text."""
        ...

    def props(self) -> dict:
        """The model, context, slots, chat template, build and effective defaults."""
        ...

    def gauges(self) -> dict:
        """Now: processing, deferred, kv_tokens, kv_capacity, cache_ram_bytes, cache_disk_bytes."""
        ...
