"""Weight placement (engine/bufts.py, engine/gguf.py): the GGUF tensor table, CPU_REPACK's x86 rules
as override patterns, and each `--extra-bufts` mode loading and decoding the real model — in a
subprocess, since a wrong placement aborts or segfaults inside llama.cpp."""
from __future__ import annotations

import re
import subprocess
import sys

import gguf
import pytest

from unsloth_min.engine import embedded_model_path
from unsloth_min.engine.bufts import choose, cpu_backend, repack_patterns
from unsloth_min.engine.gguf import TensorInfo, read_tensors

Q4_0, Q4_1, Q4_K, Q6_K, Q2_K = 2, 3, 12, 14, 10
X86 = {"AVX2": "1", "AVX512": "1"}


def names_matched(patterns, tensors) -> set[str]:
    return {t.name for t in tensors if any(re.search(p, t.name) for p in patterns)}


def test_the_tensor_table_is_the_gguf_packages():
    path = embedded_model_path()
    ours = read_tensors(path)
    theirs = gguf.GGUFReader(path).tensors
    assert [(t.name, t.shape, t.type) for t in ours] == \
        [(t.name, tuple(int(n) for n in t.shape), int(t.tensor_type)) for t in theirs]
    assert len(ours) == 272 and {t.type for t in ours} == {0, Q4_1, 8}  # f32, q4_1, q8_0


def test_a_truncated_or_foreign_file_is_refused(tmp_path):
    data = open(embedded_model_path(), "rb").read(4096)
    (tmp_path / "cut.gguf").write_bytes(data)
    (tmp_path / "not.gguf").write_bytes(b"GGML" + data[4:])
    with pytest.raises(ValueError, match="truncated"):
        read_tensors(str(tmp_path / "cut.gguf"))
    with pytest.raises(ValueError, match="is not a GGUF file"):
        read_tensors(str(tmp_path / "not.gguf"))


def test_repack_takes_the_matmul_weights_it_supports():
    tensors = [TensorInfo("blk.0.attn_q.weight", (576, 576), Q4_0),
               TensorInfo("blk.1.attn_q.weight", (576, 576), Q4_0),
               TensorInfo("blk.0.ffn_down.weight", (1536, 576), Q6_K),   # no x86 repack for Q6_K
               TensorInfo("blk.1.ffn_down.weight", (1536, 576), Q4_K),
               TensorInfo("blk.0.attn_k.weight", (576, 196), Q4_0),      # rows not a multiple of 8
               TensorInfo("blk.0.ffn_up.weight", (576, 1536), Q4_1),     # not repacked on x86
               TensorInfo("blk.0.ffn_up_exps.weight", (576, 1536, 8), Q4_0),  # MoE: MUL_MAT_ID
               TensorInfo("token_embd.weight", (576, 49152), Q4_0),      # GET_ROWS
               TensorInfo("output.weight", (576, 49152), Q4_0),
               TensorInfo("blk.2.ffn_gate.weight", (576, 1536), Q2_K)]   # needs AVX512
    patterns = repack_patterns(tensors, X86)
    assert names_matched(patterns, tensors) == {"blk.0.attn_q.weight", "blk.1.attn_q.weight",
                                                "blk.1.ffn_down.weight", "output.weight",
                                                "blk.2.ffn_gate.weight"}
    assert r"^blk\.(0|1)\.attn_q\.weight$" in patterns  # one pattern per role
    avx2_only = names_matched(repack_patterns(tensors, {"AVX2": "1"}), tensors)
    assert "blk.2.ffn_gate.weight" not in avx2_only and "output.weight" in avx2_only
    assert repack_patterns(tensors, {}) == ()  # not x86 (or no AVX2): nothing forced


@pytest.mark.parametrize("features, extra, offloading, mode, patterns", [
    ({"AMX_INT8": "1", "AVX2": "1"}, ("AMX", "CPU_REPACK"), False, "repack", 7),
    ({"AMX_INT8": "1", "AVX2": "1"}, ("AMX", "CPU_REPACK"), True, "off", 0),  # a GPU takes layers
    ({"AMX_INT8": "1", "AVX2": "1"}, ("AMX",), False, "repack", 0),  # a build without CPU_REPACK
    ({"AMX_INT8": "1", "AVX2": "1"}, ("CPU_REPACK",), False, "on", 0),  # AMX not built in
    ({"AVX2": "1"}, ("CPU_REPACK",), False, "on", 0),  # no AMX: llama.cpp's own choice
])
def test_the_automatic_choice(monkeypatch, q4_0_model, features, extra, offloading, mode, patterns):
    from unsloth_min.engine import bufts
    monkeypatch.setattr(bufts, "cpu_backend", lambda: (features, {name: 1 for name in extra}))
    got = choose("auto", q4_0_model, offloading)
    assert (got.mode, len(got.patterns)) == (mode, patterns)
    assert got.use_extra_bufts == (mode == "on")
    if patterns:
        assert got.buft == 1  # CPU_REPACK's buffer type, for every pattern


def test_the_forced_modes_and_this_machine():
    path = embedded_model_path()
    assert choose("on", path, False).use_extra_bufts
    assert not choose("off", path, False).use_extra_bufts
    features, bufts = cpu_backend()  # what ggml says here, as llama.cpp prints it
    assert features.get("AVX2") in ("0", "1", None) and all(bufts.values())


LOAD = """
import sys
from unsloth_min.engine.model import Model, ModelParams
m = Model(ModelParams(path=sys.argv[1], n_ctx=256, n_parallel=1, extra_bufts=sys.argv[2]))
m.warm_up()  # (the server's worker does this at start)
prompt = m.tokenize("The capital of France is", add_bos=m.add_bos)
print(m.placement.mode, len(m.placement.patterns), len(prompt))
"""


@pytest.fixture(scope="module")
def q4_0_model(tmp_path_factory):
    """The embedded model requantized to Q4_0, a type CPU_REPACK takes on x86 (llama.cpp's own
    quantizer: nothing is downloaded)."""
    import llama_cpp as C
    out = str(tmp_path_factory.mktemp("models") / "smollm2-q4_0.gguf")
    params = C.llama_model_quantize_default_params()
    params.ftype, params.allow_requantize, params.nthread = 2, True, 2  # LLAMA_FTYPE_MOSTLY_Q4_0
    assert C.llama_model_quantize(embedded_model_path().encode(), out.encode(), params) == 0
    return out


@pytest.mark.model
@pytest.mark.parametrize("mode", ["auto", "off", "repack"])
def test_each_safe_mode_loads_warms_up_and_decodes(q4_0_model, mode):
    """The warm-up decodes a batch and a token; on an AMX machine `on` dies there."""
    for path in (embedded_model_path(), q4_0_model):
        want = choose(mode, path, False)  # (reads the header only)
        done = subprocess.run([sys.executable, "-c", LOAD, path, mode], capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.split()[:2] == [want.mode, str(len(want.patterns))]
