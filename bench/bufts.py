"""Prompt and decode tok/s of the model under each `--extra-bufts` mode (engine/bufts.py).

    .venv/bin/python bench/bufts.py [--rounds 5] [--threads N] [MODEL.gguf …]

Without models: the embedded SmolLM2-135M Q4_1 and a Q4_0 copy of it (llama.cpp's quantizer, into
a temporary folder), since CPU_REPACK takes Q4_0 on x86 but not Q4_1. Each measurement is its own
process (a mode that crashes, like `on` on AMX machines, is reported as the signal that killed it)
and the modes take turns round by round, so a shared host's drift hits them alike; figures are
medians. Prompt: one 500-token batch into an empty cache; decode: 64 single-token steps after it.
"""
from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

MODES = ("on", "off", "repack")
PROMPT, STEPS = 500, 64
MEASURE = r"""
import sys, time, ctypes, llama_cpp as C
from unsloth_min.engine.model import Model, ModelParams
m = Model(ModelParams(path=sys.argv[1], n_ctx=1024, n_parallel=1, n_threads=int(sys.argv[3]),
                      extra_bufts=sys.argv[2]))
ids = (m.tokenize("The quick brown fox jumps over the lazy dog. " * 80) * 2)[:%d]
arr = (C.llama_token * len(ids))(*ids)
t = time.perf_counter()
assert C.llama_decode(m.ctx, C.llama_batch_get_one(arr, len(ids))) == 0
prompt = len(ids) / (time.perf_counter() - t)
one = (C.llama_token * 1)(ids[0])
t = time.perf_counter()
for _ in range(%d):
    assert C.llama_decode(m.ctx, C.llama_batch_get_one(one, 1)) == 0
print(prompt, %d / (time.perf_counter() - t), len(m.placement.patterns))
""" % (PROMPT, STEPS, STEPS)


def q4_0_copy(folder: str) -> str:
    import llama_cpp as C

    from unsloth_min.engine import embedded_model_path
    out = os.path.join(folder, "smollm2-135m-q4_0.gguf")
    params = C.llama_model_quantize_default_params()
    params.ftype, params.allow_requantize, params.nthread = 2, True, 2  # LLAMA_FTYPE_MOSTLY_Q4_0
    if C.llama_model_quantize(embedded_model_path().encode(), out.encode(), params) != 0:
        raise SystemExit("quantizing to Q4_0 failed")
    return out


def measure(path: str, mode: str, threads: int) -> tuple[float, float, int] | str:
    done = subprocess.run([sys.executable, "-c", MEASURE, path, mode, str(threads)],
                          capture_output=True, text=True, timeout=300)
    if done.returncode < 0:
        return f"crash ({signal.Signals(-done.returncode).name})"
    if done.returncode:
        return "failed: " + done.stderr.strip().splitlines()[-1]
    prompt, decode, patterns = done.stdout.split()
    return float(prompt), float(decode), int(patterns)


def main() -> None:
    from unsloth_min.engine.bufts import cpu_backend
    from unsloth_min.engine.model import usable_cores
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="*")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=usable_cores())
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        from unsloth_min.engine import embedded_model_path
        models = args.models or [embedded_model_path(), q4_0_copy(tmp)]
        features, bufts = cpu_backend()
        cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                    if line.startswith("model name")), "?")
        print(f"CPU: {cpu}; AMX_INT8={features.get('AMX_INT8', '0')}, extra buffer types: "
              f"{', '.join(bufts) or 'none'}; {args.threads} threads, {args.rounds} rounds")
        runs = {(m, mode): [] for m in models for mode in MODES}
        for _ in range(args.rounds):
            for key in runs:
                runs[key].append(measure(*key, args.threads))
        print("| model | mode | prompt tok/s | decode tok/s | weights in CPU_REPACK (roles) |")
        print("|---|---|---|---|---|")
        for (path, mode), results in runs.items():
            ok = [r for r in results if not isinstance(r, str)]
            name = os.path.basename(path)
            if not ok:
                print(f"| {name} | {mode} | {results[0]} | – | – |")
                continue
            print(f"| {name} | {mode} | {statistics.median(r[0] for r in ok):.0f} | "
                  f"{statistics.median(r[1] for r in ok):.1f} | {ok[0][2]} |")


if __name__ == "__main__":
    main()
