"""`python tests/support/faulty_main.py FLAGS…`: the real CLI, supervisor and server, with a fault injected
into the server's model warm-up as `UNSLOTH_MIN_FAULT` says: `error` (llama_decode fails) or
`segv` (the process dies of SIGSEGV, as a crashing llama.cpp kernel does).
"""
from __future__ import annotations

import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import llama_cpp  # noqa: E402

from unsloth_min import cli  # noqa: E402
from unsloth_min.engine.model import Model  # noqa: E402


def inject(fault: str) -> None:
    if fault == "error":
        llama_cpp.llama_decode = lambda ctx, batch: -1
    elif fault == "segv":
        Model.warm_up = lambda self: os.kill(os.getpid(), signal.SIGSEGV)


if __name__ == "__main__":
    if "--listen-fd" in sys.argv:  # the server: the supervisor's child
        inject(os.environ["UNSLOTH_MIN_FAULT"])
    sys.exit(cli.main(sys.argv[1:], child=[sys.executable, os.path.abspath(__file__)]))
