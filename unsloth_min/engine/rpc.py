"""`--rpc`: llama.cpp's RPC backend, remote `ggml-rpc-server`s as devices the model is split across.

Strategy: do what llama-server's `--rpc` does — register each server through the RPC backend's
`ggml_backend_rpc_add_server` — after checking what ggml would otherwise abort the process on:
that this llama-cpp-python was built with the backend (GGML_RPC=ON), and that every server
answers a TCP connect and the RPC HELLO within a few seconds (a closed port, a wrong host, a
server busy with another client). llama.cpp then lists the RPC devices first and splits the
offloaded layers (`-ngl`) across them and the local GPUs by free memory, or by `--tensor-split`;
layers not offloaded stay on the local CPU.

Does not: authenticate or encrypt (ggml-rpc-server has neither: private networks only, which is
why a public address gets a warning), reconnect (a server lost while serving ends the model: the
engine's abort handler), or take IPv6 literals (ggml's endpoint parser splits at the first ':').
"""
from __future__ import annotations

import ctypes
import ipaddress
import logging
import socket
import struct

from . import ggml

log = logging.getLogger("unsloth_min.engine")

PROBE_TIMEOUT_S = 5.0  # connect + HELLO: a healthy server on a LAN answers in milliseconds
RPC_CMD_HELLO = 14     # fixed across protocol versions (ggml-rpc.cpp static_asserts it)
CONN_CAPS = 24         # RPC_CONN_CAPS_SIZE: transports the client offers (zeros: plain TCP)
BUILD_HINT = ('`make install-rpc`, or CMAKE_ARGS="-DGGML_RPC=ON" pip install --force-reinstall '
              '--no-cache-dir llama-cpp-python')


class RpcError(RuntimeError):
    pass


def parse_endpoints(text: str) -> tuple[str, ...]:
    """`HOST:PORT[,HOST:PORT…]` → the endpoints, checked (ValueError names the bad one)."""
    out = []
    for item in (p.strip() for p in text.split(",")):
        host, sep, port = item.partition(":")
        if not sep or not host or ":" in port or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{item!r} is not HOST:PORT (IPv6 literals: use a host name)")
        out.append(f"{host}:{int(port)}")
    if len(set(out)) != len(out):
        raise ValueError("a server is listed twice")
    return tuple(out)


def is_private(host: str) -> bool:
    """Whether every address `host` resolves to is loopback, private or link-local."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return False
    addrs = {ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos}
    return all(a.is_loopback or a.is_private or a.is_link_local for a in addrs)


def hello(endpoint: str, timeout: float = PROBE_TIMEOUT_S) -> str:
    """The server's RPC protocol version ("3.0.0"), from a HELLO of our own; RpcError saying why not."""
    host, _, port = endpoint.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as sock:
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


def add_servers(endpoints: tuple[str, ...]) -> None:
    """Register each server's devices with ggml, as llama-server's --rpc does (call before loading)."""
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
        version = hello(endpoint)
        ggml.lib().ggml_backend_register(add(endpoint.encode()))
        log.info("--rpc %s: ggml-rpc-server (RPC protocol %s) added", endpoint, version)
