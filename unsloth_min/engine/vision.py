"""Vision: a multimodal projector (`--mmproj`) through llama.cpp's mtmd, and images in prompts.

Strategy: the chat template puts mtmd's media marker where each image goes; `Vision.tokenize`
decodes the image bytes (mtmd's helper, stb_image inside), lets `mtmd_tokenize` split the prompt
into text chunks and image chunks (it preprocesses each image into the projector's input then), and
flattens them into one list the scheduler already understands: text chunks as their token ids,
each image chunk as `n_tokens` negative *pseudo-tokens* derived from the image's SHA-256 — so the
prefix cache, which compares these lists, treats an image as part of the prefix identity: the same
image at the same place reuses its KV cells, a different image can never match. Each image chunk
becomes a `MediaChunk` (keyed by its start index) that the scheduler evaluates lazily in its worker
thread, outside the shared batch (embeddings cannot share a `llama_batch` with tokens): the
projector encodes it and `mtmd_helper_eval_chunk_single` decodes the embeddings into the sequence's
KV cells. An image whose KV is already cached is never encoded. Positions equal indices, so models
whose projector uses M-RoPE (Qwen2-VL family) are refused at load.

Does not: fetch or validate bytes (media.py does), render templates, or schedule anything.
"""
from __future__ import annotations

import ctypes
import hashlib
import threading
import weakref

import llama_cpp as C
from llama_cpp import mtmd_cpp as M

from ..core import ApiError, Image, bad_request
from .model import Model, _forward_llama_log

CHUNK_TEXT = 0  # MTMD_INPUT_CHUNK_TYPE_TEXT; 1 is an image, 2 audio


def pseudo_tokens(image_id: bytes, n: int) -> list[int]:
    """`n` distinct negative ids for one image chunk: never a real token, equal only for equal images."""
    base = int.from_bytes(hashlib.sha256(image_id).digest()[:8], "big") << 24
    return [-(1 + base + i) for i in range(n)]


class MediaChunk:
    """One image chunk of a prompt; owns its mtmd chunk (the preprocessed image) until evaluated."""

    def __init__(self, vision: "Vision", handle, n_tokens: int):
        self.vision, self.handle, self.n_tokens = vision, handle, n_tokens
        self._free = weakref.finalize(self, M.mtmd_input_chunk_free, handle)

    def evaluate(self, seq_id: int, n_past: int) -> int:
        """Encode the image and decode its embeddings at positions n_past… of sequence `seq_id`:
        0, or llama_decode's error (1: no free KV cells)."""
        if not self._free.alive:
            raise RuntimeError("this image was evaluated already")
        rc = self.vision.evaluate(self.handle, seq_id, n_past, self.n_tokens)
        if rc == 0:
            self._free()  # the KV cells hold it now; the pixels can go
        return rc


class Vision:
    def __init__(self, path: str, model: Model):
        self.model = model
        M.mtmd_helper_log_set(_forward_llama_log, ctypes.c_void_p(0))
        params = M.mtmd_context_params_default()
        params.use_gpu = model.params.n_gpu_layers != 0
        params.n_threads = model.n_threads
        params.print_timings = False
        self.ctx = M.mtmd_init_from_file(path.encode(), model.model, params)
        if not self.ctx:
            raise RuntimeError(f"could not load the vision projector {path} (the log above says why)")
        if not M.mtmd_support_vision(self.ctx):
            self.close()
            raise RuntimeError(f"{path} is not a vision projector")
        if M.mtmd_decode_use_mrope(self.ctx):
            self.close()
            raise RuntimeError(f"{path} uses M-RoPE positions (Qwen2-VL family): not supported yet")
        self.marker = M.mtmd_default_marker().decode()
        self._lock = threading.Lock()  # one mtmd context: tokenize (request threads) vs encode (worker)

    def close(self) -> None:
        if getattr(self, "ctx", None):
            M.mtmd_free(self.ctx)
            self.ctx = None

    # ---- request side (any thread) ---------------------------------------------------------------
    def tokenize(self, text: str, images: list[Image], add_special: bool
                 ) -> tuple[list[int], dict[int, MediaChunk]]:
        """The prompt as token ids and pseudo-tokens, and its image chunks by start index."""
        if text.count(self.marker) != len(images):
            raise bad_request(f"The prompt holds {text.count(self.marker)} image markers "
                              f"({self.marker}) for {len(images)} images: a message's text may not "
                              "contain the marker itself.")
        with self._lock:
            bitmaps = [self._bitmap(image) for image in images]
            try:
                chunks = self._tokenize(text, bitmaps, add_special)
            finally:
                for bitmap in bitmaps:
                    M.mtmd_bitmap_free(bitmap)
            try:
                return self._flatten(chunks)
            finally:
                M.mtmd_input_chunks_free(chunks)

    def _bitmap(self, image: Image):
        if image.data is None:
            raise bad_request(f"The image in '{image.where}' was not loaded.", param=image.where or None)
        buf = (ctypes.c_uint8 * len(image.data)).from_buffer_copy(image.data)
        bitmap = M.mtmd_helper_bitmap_init_from_buf(self.ctx, buf, len(image.data), False)
        if not bitmap:
            raise bad_request(f"Invalid '{image.where}': the image could not be decoded "
                              f"({image.media_type or 'unknown type'}).", param=image.where or None,
                              code="invalid_image")
        # the chunk id: what the prefix cache compares, so exactly the bytes we were given
        M.mtmd_bitmap_set_id(bitmap, hashlib.sha256(image.data).hexdigest().encode())
        return bitmap

    def _tokenize(self, text: str, bitmaps: list, add_special: bool):
        data = text.encode("utf-8")
        inp = M.mtmd_input_text(data, len(data), add_special, True)
        chunks = M.mtmd_input_chunks_init()
        array = (M.mtmd_bitmap_p_ctypes * max(1, len(bitmaps)))(*bitmaps)
        rc = M.mtmd_tokenize(self.ctx, chunks, ctypes.byref(inp), array, len(bitmaps))
        if rc != 0:
            M.mtmd_input_chunks_free(chunks)
            raise ApiError(500, "server_error", f"the projector could not tokenize the prompt (mtmd {rc})")
        return chunks

    def _flatten(self, chunks) -> tuple[list[int], dict[int, MediaChunk]]:
        tokens: list[int] = []
        media: dict[int, MediaChunk] = {}
        for i in range(M.mtmd_input_chunks_size(chunks)):
            chunk = M.mtmd_input_chunks_get(chunks, i)
            if M.mtmd_input_chunk_get_type(chunk) == CHUNK_TEXT:
                tokens += self._text_tokens(chunk)
                continue
            n = M.mtmd_input_chunk_get_n_tokens(chunk)
            media[len(tokens)] = MediaChunk(self, M.mtmd_input_chunk_copy(chunk), n)
            tokens += pseudo_tokens(M.mtmd_input_chunk_get_id(chunk) or b"%d" % id(chunk), n)
        return tokens, media

    def _text_tokens(self, chunk) -> list[int]:
        n = ctypes.c_size_t()
        ptr = M.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(n))
        tokens = [ptr[j] for j in range(n.value)]
        if any(t < 0 or t >= self.model.n_vocab for t in tokens):
            # e.g. a projector whose image wrapper tokens (SmolVLM's <global-img>) the model lacks
            raise ApiError(500, "server_error", "the projector wraps images in special tokens this "
                           "model's vocabulary does not have: is --mmproj the model's own projector?")
        return tokens

    # ---- worker side -----------------------------------------------------------------------------
    def evaluate(self, handle, seq_id: int, n_past: int, n_tokens: int) -> int:
        new_n_past = C.llama_pos(0)
        with self._lock:
            rc = M.mtmd_helper_eval_chunk_single(self.ctx, self.model.ctx, handle, n_past, seq_id,
                                                 self.model.params.n_batch, False,
                                                 ctypes.byref(new_n_past))
        if rc == 0 and new_n_past.value != n_past + n_tokens:  # would break positions == indices
            raise RuntimeError(f"image used {new_n_past.value - n_past} positions for {n_tokens} tokens")
        return rc
