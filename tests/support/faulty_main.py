"""`python tests/support/faulty_main.py FLAGS…`: the real CLI, supervisor and server, with a fault injected
into the server as `UNSLOTH_MIN_FAULT` says: `error` (the warm-up's llama_decode fails), `segv`
(the warm-up dies of SIGSEGV, as a crashing llama.cpp kernel does) or `abort` (ggml aborts on a
thread of its own at an answer's 4th token, as when an --rpc server is lost; only in the first
server process that gets there: the file UNSLOTH_MIN_FAULT_ONCE marks it done).
"""
from __future__ import annotations

import os
import signal
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import llama_cpp  # noqa: E402

from unsloth_min import cli  # noqa: E402
from unsloth_min.engine import ggml  # noqa: E402
from unsloth_min.engine.model import Model  # noqa: E402
from unsloth_min.engine.scheduler import Scheduler  # noqa: E402


ABORT_AT = 4


def ggml_abort() -> None:
    fn = ggml.lib().ggml_abort  # variadic: (file, line, fmt, ...)
    fn.argtypes, fn.restype = None, None
    fn(b"faulty_main.py", 1, b"%s", b"an injected abort")


def abort_at_a_token() -> None:
    on_token, marker = Scheduler._on_token, os.environ["UNSLOTH_MIN_FAULT_ONCE"]

    def at_token(self, seq, token):
        on_token(self, seq, token)
        if seq.n_generated == ABORT_AT and not os.path.exists(marker):
            open(marker, "w").close()
            threading.Thread(target=ggml_abort, daemon=True).start()
    Scheduler._on_token = at_token


def inject(fault: str) -> None:
    if fault == "error":
        llama_cpp.llama_decode = lambda ctx, batch: -1
    elif fault == "segv":
        Model.warm_up = lambda self: os.kill(os.getpid(), signal.SIGSEGV)
    elif fault == "abort":
        abort_at_a_token()


if __name__ == "__main__":
    if "--listen-fd" in sys.argv:  # the server: the supervisor's child
        inject(os.environ["UNSLOTH_MIN_FAULT"])
    sys.exit(cli.main(sys.argv[1:], child=[sys.executable, os.path.abspath(__file__)]))
