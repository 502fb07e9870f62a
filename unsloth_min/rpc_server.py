"""`ggml-rpc-server`: llama.cpp's RPC server, run from this llama-cpp-python's own build.

Strategy: llama.cpp's `rpc-server` tool is a thin `main` over one function of its RPC backend,
`ggml_backend_rpc_start_server(endpoint, cache_dir, n_threads, n_devices, devices)`, which the
backend's registry hands out by name (as engine/rpc.py gets `ggml_backend_rpc_add_server`). This
is that `main` in Python: the same flags and defaults (tools/rpc/rpc-server.cpp), the same
devices (the GPUs if any, else the CPU), then that function, which serves until the process is
killed. So `make install`'s one build of llama-cpp-python (GGML_RPC=ON) gives both ends of
`--rpc`, speaking the same protocol version, with no second C++ build.

Does not: authenticate or encrypt (ggml's server has neither: it binds 127.0.0.1 unless told,
and warns on any other address), take IPv6 (ggml's transport is IPv4 only: an IPv6 -H is refused
here with that reason), or serve two clients at once (ggml serves one connection at a time).
"""
from __future__ import annotations

import argparse
import ctypes
import ipaddress
import os
import signal
import socket
import sys

DEFAULT_PORT = 50052
WARNING = """
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
WARNING: Host ('{host}') is != '127.0.0.1'
         Never expose the RPC server to an open network!
         It has no authentication or encryption: anyone who
         reaches this port can use this machine.
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
"""


def default_threads() -> int:
    return max(1, (os.cpu_count() or 1) // 2)  # rpc-server.cpp: hardware_concurrency() / 2


def _host(text: str) -> str:
    """-H as ggml's server binds it: an IPv4 address (a name is resolved here, ggml takes none)."""
    try:
        if ipaddress.ip_address(text.strip("[]")).version == 6:
            raise argparse.ArgumentTypeError(
                f"{text!r}: IPv6 is not supported: llama.cpp's RPC transport listens and connects "
                "over IPv4 only (ggml-rpc.cpp); use an IPv4 address such as 127.0.0.1")
        return text
    except ValueError:
        pass
    try:
        return socket.getaddrinfo(text, None, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
    except OSError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IPv4 address or a host name "
                                         "with one") from None


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"{text} is not a port (1-65535)")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ggml-rpc-server", description="llama.cpp's RPC server: "
                                "lends this machine's devices to a `--rpc` client.")
    a = p.add_argument
    a("-H", "--host", type=_host, default="127.0.0.1",
      help="IPv4 address to bind (default %(default)s: this machine only; no authentication, "
           "so private networks only)")
    a("-p", "--port", type=_port, default=DEFAULT_PORT, help="port (default %(default)s)")
    a("-t", "--threads", type=_positive, default=default_threads(),
      help="threads for the CPU device (default %(default)s: half the cores)")
    a("-d", "--device", default="", metavar="DEV1,DEV2,...",
      help="devices to serve, by ggml name (default: every GPU, else the CPU)")
    a("-c", "--cache", action="store_true",
      help="keep tensors in a local file cache ($LLAMA_CACHE or ~/.cache/llama.cpp, /rpc), so "
           "a client's next load sends only their hashes")
    return p


def cache_dir() -> str:
    """rpc-server.cpp's fs_get_cache_directory() / "rpc"."""
    base = os.environ.get("LLAMA_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "llama.cpp")
    return os.path.join(base, "rpc")


def pick_devices(names: list[str], devices: list[tuple[str, int, int]]) -> list[int]:
    """(name, ggml device type, handle) of every device → the handles to serve: `names` in order
    (KeyError: an unknown one), else every GPU, else the CPU (rpc-server.cpp's get_devices)."""
    from .engine.ggml import CPU_DEVICE, GPU_DEVICES
    if names:
        by_name = {name: handle for name, _, handle in devices}
        return [by_name[n] for n in names]
    gpus = [handle for _, kind, handle in devices if kind in GPU_DEVICES]
    return gpus or [handle for _, kind, handle in devices if kind == CPU_DEVICE][:1]


def local_devices() -> list[tuple[str, int, int]]:
    from .engine import ggml
    g = ggml.lib()
    return [(g.ggml_backend_dev_name(h).decode(), g.ggml_backend_dev_type(h), h)
            for h in (g.ggml_backend_dev_get(i) for i in range(g.ggml_backend_dev_count()))]


def start_server_fn():
    """The RPC backend's `ggml_backend_rpc_start_server`, or None in a build without it."""
    from .engine import ggml
    reg = ggml.lib().ggml_backend_reg_by_name(b"RPC")
    sig = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t,
                           ctypes.c_size_t, ctypes.POINTER(ctypes.c_void_p))
    return ggml.proc(reg, "ggml_backend_rpc_start_server", sig) if reg else None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.host != "127.0.0.1":
        print(WARNING.format(host=args.host), file=sys.stderr)
    start = start_server_fn()
    if start is None:
        print("ggml-rpc-server: this llama-cpp-python was built without llama.cpp's RPC backend "
              "(GGML_RPC=ON): `make install` builds it with one", file=sys.stderr)
        return 1
    devices = local_devices()
    try:
        chosen = pick_devices([n for n in args.device.replace("/", ",").split(",") if n], devices)
    except KeyError as e:
        names = ", ".join(name for name, _, _ in devices)
        print(f"ggml-rpc-server: unknown device {e}; this machine has: {names}", file=sys.stderr)
        return 1
    folder = None
    if args.cache:
        folder = cache_dir()
        os.makedirs(folder, exist_ok=True)
    # the C call never returns: Ctrl-C must end the process, not wait for Python's handler
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    handles = (ctypes.c_void_p * len(chosen))(*chosen)
    start(f"{args.host}:{args.port}".encode(), folder.encode() if folder else None, args.threads,
          len(chosen), handles)
    return 1  # it returned: it could not bind or start (ggml said why on stderr)


if __name__ == "__main__":
    sys.exit(main())
