"""Crash containment: the server runs in a child process; the parent holds the port and reports.

Strategy: a fault inside llama.cpp (a segfault in a CPU kernel, an abort in a GPU driver) kills
the process with a signal that Python cannot catch. So `python -m unsloth_min` binds the port
itself and runs the real server as a child that inherits the listening socket; the child says
"ready" on a pipe once the model is loaded and warmed up. When the child dies of a signal, the
parent logs one line (the signal, loading or serving, the flag to try) and exits with 128 + the
signal number — or, with `--restart N`, serves on with a new child, up to N times. The socket
stays bound meanwhile: new connections wait in its backlog and then get 503 "loading" from the new
child until it is warm, never "connection refused". SIGINT and SIGTERM are passed to the child;
the parent exits with its status. A child whose llama.cpp stopped under it while serving (a lost
`--rpc` server: ggml's abort, caught; or one silent past --rpc-timeout) answers its requests with
errors and exits with EXIT_MODEL_GONE, which `--restart` treats as a crash. A restarted child is
told so (`--restarted`): it waits for its --rpc servers to answer instead of failing its start.

Does not: restart a child that ended by itself otherwise (a clean stop, a failed start that
printed its reason) or that crashed before it was ready (it would crash again); keep in-flight
requests of a crashed child (their connections break).
"""
from __future__ import annotations

import logging
import os
import select
import signal
import socket
import subprocess
import sys
import time

log = logging.getLogger("unsloth_min")
LISTEN_BACKLOG = 128
RESTART_PAUSE_S = 1.0  # between a crash and the next child (a fault loop must not spin)
# the child's status when llama.cpp stopped under it while serving (e.g. an --rpc server was lost):
# its requests were answered with errors; --restart starts a new one, as after a crash
EXIT_MODEL_GONE = 3
CRASH_HINT = ("a fault inside llama.cpp: try --extra-bufts off (the CPU's weight buffers), "
              "-ngl 0 (no GPU), or a smaller -c")


def listen(host: str, port: int) -> socket.socket:
    """The server's listening socket, bound here so that it outlives any one child."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(LISTEN_BACKLOG)
    sock.set_inheritable(True)
    return sock


def _die_with_parent() -> None:  # in the child, before exec: no server outlives its supervisor
    if sys.platform.startswith("linux"):
        import ctypes
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Supervisor:
    def __init__(self, argv: list[str], sock: socket.socket, restarts: int,
                 command: list[str] | None = None):
        self.argv, self.sock, self.restarts_left = argv, sock, restarts
        self.command = command or [sys.executable, "-m", "unsloth_min"]  # tests inject faults
        self.child: subprocess.Popen | None = None
        self.stopping = False
        self.restarted = False

    def run(self) -> int:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._forward)
        while True:
            ready, code = self._run_child()
            if self.stopping or (code >= 0 and code != EXIT_MODEL_GONE):
                return code if code >= 0 else 128 - code
            gone = code == EXIT_MODEL_GONE
            what = "lost its model" if gone else f"died of {signal.Signals(-code).name}"
            phase = "serving" if ready else "loading the model"
            if not ready or self.restarts_left <= 0:
                if not gone:
                    log.error("the server process %s while %s (%s)", what, phase, CRASH_HINT)
                return code if gone else 128 - code
            self.restarts_left -= 1
            log.error("the server process %s while serving (%s); restarting it (%d restarts left)",
                      what, "its log says why" if gone else CRASH_HINT, self.restarts_left)
            self.restarted = True
            time.sleep(RESTART_PAUSE_S)

    def _run_child(self) -> tuple[bool, int]:
        """Start one child and wait for it: (whether it said ready, its return code)."""
        r, w = os.pipe()
        fd = self.sock.fileno()
        args = self.argv + ["--listen-fd", str(fd), "--ready-fd", str(w)] + (
            ["--restarted"] if self.restarted else [])
        self.child = subprocess.Popen(self.command + args, pass_fds=(fd, w),
                                      preexec_fn=_die_with_parent)
        os.close(w)
        ready = False
        try:
            while True:  # until the pipe closes: the child said ready, or died
                if select.select([r], [], [], 0.5)[0]:
                    data = os.read(r, 16)
                    if not data:
                        break
                    ready = True
                elif self.child.poll() is not None:
                    break
            return ready, self.child.wait()
        finally:
            os.close(r)

    def _forward(self, signum, _frame) -> None:
        self.stopping = True
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signum)


def say_ready(fd: int | None) -> None:
    """In the child: tell the supervisor the model is loaded and warm."""
    if fd is not None:
        os.write(fd, b"ready\n")
        os.close(fd)
