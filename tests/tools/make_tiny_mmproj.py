"""Write a tiny random-weight vision projector (mmproj GGUF) for the embedded SmolLM2-135M.

Usage: python tests/tools/make_tiny_mmproj.py OUT.gguf [--seed N]

Strategy: the projector type is `mlp` — LLaVA-1.5's: a CLIP-style ViT (patch conv, learned
positions, pre-norm, pre-LN blocks with quick-GELU MLPs) whose patch features go through a two-layer
MLP (`mm.0` → GELU → `mm.2`) to the text model's width, 576. It is the oldest projector llama.cpp's
mtmd supports and the plainest: one image is resized to IMAGE_SIZE² and becomes exactly
(IMAGE_SIZE / PATCH_SIZE)² = 64 embeddings, with no slicing and no wrapper tokens. The tensor names
and metadata keys are the ones clip.cpp's loader reads (`v.*` encoder, `mm.0`/`mm.2` projector,
`clip.vision.*` hyper-parameters); everything is F32 and the file is under 1 MB.

Why not `idefics3`, SmolVLM's connector (SmolVLM's text model *is* SmolLM2)? mtmd wraps idefics3
images in SmolVLM's added tokens (`<fake_token_around_image>`, `<global-img>`, `<row_1_col_1>`),
which SmolLM2-135M-Instruct's vocabulary lacks: mtmd then emits token id -1 (the engine refuses
such a projector with a clear error). `gemma3`, `lfm2` or `internvl` would work too, but add pooling
or pixel shuffle and fixed token counts that test nothing more.

Does not: produce a model that sees anything — the weights are seeded noise. It exists so the whole
image path (decode, preprocess, encode, embed into the KV cache) runs in seconds with no download.
The output scale (OUT_STD) is chosen so that images clearly move the text model: two different
images give different answers at temperature 0 within a few tokens.
"""
from __future__ import annotations

import argparse

import numpy as np
from gguf import GGUFWriter

TEXT_N_EMBD = 576   # SmolLM2-135M's hidden size: the projector's output width must match it
IMAGE_SIZE = 32     # pixels per side after preprocessing
PATCH_SIZE = 4
N_TOKENS = (IMAGE_SIZE // PATCH_SIZE) ** 2  # embeddings per image: 64
N_EMBD = 64         # ViT width
N_HEAD = 4
N_FF = 128
N_LAYER = 2
N_MLP = 128         # the projector's hidden width
# The spread of the image embeddings. SmolLM2's token embeddings have a standard deviation of about
# 0.14; trained projectors, LLaVA's included, emit image embeddings several times larger than the
# text ones. Measured with this file's weights, asking "What is in this picture?" at temperature 0:
# at 0.15 a gradient and its inverse first change the answer after ~10 tokens, at 1.0 after 2.
OUT_STD = 1.0


def tensors(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """name → array, numpy shapes being ggml's `ne` reversed (a Linear is (out, in))."""
    def w(*shape, std=0.02):
        return (rng.standard_normal(shape) * std).astype(np.float32)

    def ones(n):
        return np.ones(n, np.float32)

    def zeros(n):
        return np.zeros(n, np.float32)

    t = {
        "v.patch_embd.weight": w(N_EMBD, 3, PATCH_SIZE, PATCH_SIZE, std=0.1),
        "v.position_embd.weight": w(N_TOKENS, N_EMBD),
        "v.pre_ln.weight": ones(N_EMBD), "v.pre_ln.bias": zeros(N_EMBD),
        "mm.0.weight": w(N_MLP, N_EMBD, std=1 / np.sqrt(N_EMBD)), "mm.0.bias": zeros(N_MLP),
        "mm.2.weight": w(TEXT_N_EMBD, N_MLP, std=1 / np.sqrt(N_MLP)), "mm.2.bias": zeros(TEXT_N_EMBD),
    }
    for i in range(N_LAYER):
        p = f"v.blk.{i}"
        for name in ("attn_q", "attn_k", "attn_v", "attn_out"):
            t[f"{p}.{name}.weight"], t[f"{p}.{name}.bias"] = w(N_EMBD, N_EMBD), zeros(N_EMBD)
        t[f"{p}.ffn_up.weight"], t[f"{p}.ffn_up.bias"] = w(N_FF, N_EMBD), zeros(N_FF)
        t[f"{p}.ffn_down.weight"], t[f"{p}.ffn_down.bias"] = w(N_EMBD, N_FF), zeros(N_EMBD)
        for ln in ("ln1", "ln2"):
            t[f"{p}.{ln}.weight"], t[f"{p}.{ln}.bias"] = ones(N_EMBD), zeros(N_EMBD)
    return t


def metadata(out: GGUFWriter) -> None:
    out.add_string("general.name", "tiny-llava-mlp-test-projector")
    out.add_uint32("general.file_type", 0)  # all F32
    out.add_bool("clip.has_vision_encoder", True)
    out.add_bool("clip.has_audio_encoder", False)
    out.add_bool("clip.has_llava_projector", True)
    out.add_string("clip.projector_type", "mlp")
    out.add_bool("clip.use_gelu", False)  # CLIP's quick GELU in the ViT
    for key, value in (("image_size", IMAGE_SIZE), ("patch_size", PATCH_SIZE),
                       ("embedding_length", N_EMBD), ("feed_forward_length", N_FF),
                       ("projection_dim", TEXT_N_EMBD), ("block_count", N_LAYER),
                       ("attention.head_count", N_HEAD)):
        out.add_uint32(f"clip.vision.{key}", value)
    out.add_float32("clip.vision.attention.layer_norm_epsilon", 1e-5)
    out.add_array("clip.vision.image_mean", [0.5, 0.5, 0.5])
    out.add_array("clip.vision.image_std", [0.5, 0.5, 0.5])


def write(path: str, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    weights = tensors(rng)
    weights["mm.2.weight"] *= OUT_STD / output_std(weights)
    out = GGUFWriter(path, "clip")
    metadata(out)
    for name, array in weights.items():
        out.add_tensor(name, array)
    out.write_header_to_file()
    out.write_kv_data_to_file()
    out.write_tensors_to_file()
    out.close()


def output_std(weights: dict[str, np.ndarray]) -> float:
    """The projector's output spread for unit-variance features (what a pre-LN'd ViT gives)."""
    x = np.random.default_rng(1).standard_normal((256, N_EMBD)).astype(np.float32)
    h = x @ weights["mm.0.weight"].T
    h = 0.5 * h * (1 + np.tanh(0.7978845608 * (h + 0.044715 * h ** 3)))  # GELU
    return float((h @ weights["mm.2.weight"].T).std())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="where to write the .gguf")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    write(args.out, args.seed)


if __name__ == "__main__":
    main()
