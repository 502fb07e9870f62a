"""`--rpc`: llama.cpp's RPC backend, remote `ggml-rpc-server`s as devices the model is split across.

Strategy: do what llama-server's `--rpc` does — register each server through the RPC backend's
`ggml_backend_rpc_add_server` — after checking what ggml would otherwise abort the process on:
that this llama-cpp-python was built with the backend (GGML_RPC=ON), and that every server
answers a TCP connect and the RPC HELLO within a few seconds (a closed port, a wrong host, a
server busy with another client). llama.cpp then lists the RPC devices first and splits the
offloaded layers (`-ngl`) across them and the local GPUs by free memory, or by `--tensor-split`;
layers not offloaded stay on the local CPU.

A server lost without a TCP reset (a firewall that drops, a frozen machine, a paused process)
is another matter: ggml's client waits on its socket with no timeout, inside llama.cpp (the
sampling after a decode, which waits for the servers' work), for good. `Watchdog` watches from
outside: when the worker has been inside llama.cpp (a decode and its sampling, an image's, a
prompt state copied to or from the devices) for longer than `--rpc-timeout`, it tells the
engine, which ends every request as after ggml's abort (and the server process is replaced).

Does not: authenticate or encrypt (ggml-rpc-server has neither: private networks only, which is
why a public address gets a warning), reconnect (a server lost while serving ends the model: the
engine's abort handler; a process restarted by `--restart` waits for its servers), tell which
server of several went silent (ggml does not say), watch the load (sending the weights takes as
long as it takes), or take IPv6 (ggml's transport resolves and connects over IPv4 only).
"""
from __future__ import annotations

import ctypes
import ipaddress
import logging
import math
import socket
import struct
import threading
import time
from typing import Callable

from . import ggml

log = logging.getLogger("unsloth_min.engine")

PROBE_TIMEOUT_S = 5.0  # connect + HELLO: a healthy server on a LAN answers in milliseconds
RPC_CMD_HELLO = 14     # fixed across protocol versions (ggml-rpc.cpp static_asserts it)
CONN_CAPS = 24         # RPC_CONN_CAPS_SIZE: transports the client offers (zeros: plain TCP)
# --rpc-timeout's default. One watched call is at most one batch of 512 prompt tokens, or one
# sequence's prompt state copied over the network: a big model's 512 tokens on a CPU server, or
# a 32k-token state of a 70B model (10 GB) over 1 Gbit/s, take a minute or two at worst
RPC_TIMEOUT_S = 120.0
RETRY_S = 2.0          # between HELLOs while a restarted server waits for its servers
BUILD_HINT = ('`make install` builds one, or CMAKE_ARGS="-DGGML_RPC=ON" pip install '
              '--force-reinstall --no-cache-dir llama-cpp-python')


class RpcError(RuntimeError):
    pass


def parse_endpoints(text: str) -> tuple[str, ...]:
    """`HOST:PORT[,HOST:PORT…]` → the endpoints, checked (ValueError names the bad one)."""
    out = []
    for item in (p.strip() for p in text.split(",")):
        host, sep, port = item.rpartition(":")
        if host.startswith("[") or ":" in host:
            raise ValueError(f"{item!r}: IPv6 is not supported: llama.cpp's RPC client resolves "
                             f"and connects over IPv4 only (ggml-rpc.cpp); use an IPv4 address "
                             f"or a host name with one")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{item!r} is not HOST:PORT")
        out.append(f"{host}:{int(port)}")
    if len(set(out)) != len(out):
        raise ValueError("a server is listed twice")
    return tuple(out)


def is_private(host: str) -> bool:
    """Whether every address `host` resolves to is loopback, private or link-local."""
    try:
        infos = socket.getaddrinfo(host, None, socket.AF_INET, proto=socket.IPPROTO_TCP)
    except OSError:
        return False
    addrs = {ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos}
    return all(a.is_loopback or a.is_private or a.is_link_local for a in addrs)


def hello(endpoint: str, timeout: float = PROBE_TIMEOUT_S) -> str:
    """The server's RPC protocol version ("3.0.0"), from a HELLO of our own; RpcError saying why not."""
    host, _, port = endpoint.rpartition(":")
    try:
        # IPv4, as ggml's client connects (gethostbyname): a name's IPv6 address would not do
        address = socket.getaddrinfo(host, int(port), socket.AF_INET, socket.SOCK_STREAM)[0][4]
        with socket.create_connection(address, timeout=timeout) as sock:
            # request: | cmd (1 byte) | size (8 bytes, LE) | conn_caps |; response: | size | version, caps |
            sock.sendall(struct.pack("<BQ", RPC_CMD_HELLO, CONN_CAPS) + bytes(CONN_CAPS))
            head = _recv(sock, 8)
            (size,) = struct.unpack("<Q", head)
            if size != 4 + CONN_CAPS:
                raise RpcError(f"--rpc {endpoint}: its ggml-rpc-server speaks another RPC protocol "
                               f"(a HELLO of {size} bytes): build it from this llama-cpp-python's "
                               f"llama.cpp source ({BUILD_HINT} does)")
            major, minor, patch = _recv(sock, size)[:3]
    except (OSError, ConnectionError) as e:
        reason = "no answer" if isinstance(e, TimeoutError) else (e.strerror or str(e))
        raise RpcError(f"--rpc {endpoint}: cannot reach a ggml-rpc-server there ({reason}); start "
                       f"one on that host (ggml-rpc-server -H ADDRESS -p PORT) or drop it from --rpc") from e
    return f"{major}.{minor}.{patch}"


def _recv(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("it closed the connection during the HELLO")
        data += chunk
    return data


def wait_for(endpoint: str, wait_s: float) -> str:
    """`hello`, tried again every RETRY_S for up to `wait_s` seconds (a restart after a server
    went silent: it may be back soon), saying so at most once a minute."""
    deadline, said = time.monotonic() + wait_s, -math.inf
    while True:
        try:
            return hello(endpoint)
        except RpcError as e:
            if time.monotonic() >= deadline:
                raise
            if time.monotonic() - said >= 60:
                log.warning("%s: trying again every %g s", e, RETRY_S)
                said = time.monotonic()
        time.sleep(RETRY_S)


def add_servers(endpoints: tuple[str, ...], wait_s: float = 0.0) -> None:
    """Register each server's devices with ggml, as llama-server's --rpc does (call before
    loading), waiting up to `wait_s` seconds for any that does not answer."""
    reg = ggml.lib().ggml_backend_reg_by_name(b"RPC")
    add = ggml.proc(reg, "ggml_backend_rpc_add_server",
                    ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_char_p)) if reg else None
    if add is None:
        raise RpcError(f"--rpc needs llama-cpp-python built with llama.cpp's RPC backend "
                       f"(GGML_RPC=ON), and this one was built without it: {BUILD_HINT}")
    for endpoint in endpoints:
        host = endpoint.rpartition(":")[0]
        if not is_private(host):
            log.warning("--rpc %s is not a loopback or private address: ggml-rpc-server has no "
                        "authentication or encryption, so anyone who reaches it can use that "
                        "machine; keep it on a private network", endpoint)
        version = wait_for(endpoint, wait_s)
        ggml.lib().ggml_backend_register(add(endpoint.encode()))
        log.info("--rpc %s: ggml-rpc-server (RPC protocol %s) added", endpoint, version)


class Watchdog:
    """Calls `on_stuck(message)` once, from a thread of its own, when `since()` (the time the
    decoding thread entered llama.cpp, None while it is outside) is more than `timeout_s` ago."""

    def __init__(self, endpoints: tuple[str, ...], timeout_s: float, since: Callable[[], float | None],
                 on_stuck: Callable[[str], None], tick_s: float = 1.0):
        self.endpoints, self.timeout_s, self.since, self.on_stuck = endpoints, timeout_s, since, on_stuck
        self.tick_s = min(tick_s, timeout_s / 4)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="unsloth-rpc-watchdog", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.tick_s):
            start = self.since()
            if start is not None and time.monotonic() - start > self.timeout_s:
                servers = ", ".join(self.endpoints)
                one = "its --rpc server" if len(self.endpoints) == 1 else "one of its --rpc servers"
                self.on_stuck(f"no answer from {one} ({servers}) for {self.timeout_s:g} s "
                              f"(--rpc-timeout): that host is unreachable, frozen or paused")
                return

    def stop(self) -> None:
        self._stop.set()
