"""`--rpc` without remote machines (engine/rpc.py, config): endpoints and --tensor-split read and
refused by name, the HELLO probe against stand-in servers (a version, a closed port, silence, a
foreign protocol, a hang-up), private addresses, and a build without the RPC backend named with
its fix. The split model itself: tests/e2e/test_e2e_rpc.py."""
from __future__ import annotations

import contextlib
import socket
import struct
import threading

import pytest

from unsloth_min.config import parse_config
from unsloth_min.engine import rpc
from support.servers import free_port


def test_endpoints_are_read_and_checked():
    assert rpc.parse_endpoints("10.0.0.2:50052, gpu-box:50053") == ("10.0.0.2:50052", "gpu-box:50053")
    for bad in ("host", ":50052", "host:", "host:0", "host:65536", "host:5x", "::1:50052", "a:1,a:1"):
        with pytest.raises(ValueError):
            rpc.parse_endpoints(bad)


@pytest.mark.parametrize("flag, value, says", [
    ("--rpc", "localhost", "is not HOST:PORT"),
    ("--rpc", "[::1]:50052", "IPv6"),
    ("--tensor-split", "3,x", "is not a list of numbers"),
    ("--tensor-split", "0,0", "not all 0"),
    ("--tensor-split", "1,-1", "proportions are >= 0"),
    ("--tensor-split", "nan", "proportions are >= 0"),
])
def test_bad_flags_stop_at_parse_naming_the_flag(capsys, flag, value, says):
    with pytest.raises(SystemExit) as stop:
        parse_config([flag, value])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert f"{flag}: " in err and says in err, err


def test_good_flags_reach_the_config():
    cfg = parse_config(["--rpc", "127.0.0.1:50052,127.0.0.1:50053", "-ts", "3,1"])
    assert cfg.rpc == ("127.0.0.1:50052", "127.0.0.1:50053") and cfg.tensor_split == (3.0, 1.0)
    assert parse_config([]).rpc == () and parse_config([]).tensor_split == ()


@contextlib.contextmanager
def stand_in(answer):
    """A one-connection TCP server on loopback that runs `answer(conn)`; yields its endpoint."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    got = {}

    def serve():
        with contextlib.suppress(OSError):
            conn, _ = listener.accept()
            with conn:
                got["request"] = conn.recv(64)
                answer(conn)
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{listener.getsockname()[1]}", got
    finally:
        listener.close()
        thread.join(5)


def test_hello_reads_the_servers_protocol_version():
    reply = struct.pack("<Q", 28) + bytes([3, 1, 4, 0]) + bytes(24)
    with stand_in(lambda conn: conn.sendall(reply)) as (endpoint, got):
        assert rpc.hello(endpoint) == "3.1.4"
    # | cmd 14 | size 24 (LE) | 24 zero bytes of transport caps |
    assert got["request"] == bytes([14]) + struct.pack("<Q", 24) + bytes(24)


@pytest.mark.parametrize("answer, says", [
    (lambda conn: None, "cannot reach a ggml-rpc-server there (it closed the connection"),
    (lambda conn: conn.sendall(struct.pack("<Q", 3) + b"\x02\x00\x00"), "speaks another RPC protocol"),
])
def test_hello_says_what_is_wrong(answer, says):
    with stand_in(answer) as (endpoint, _):
        with pytest.raises(rpc.RpcError, match=r"--rpc 127\.0\.0\.1:\d+: ") as err:
            rpc.hello(endpoint)
    assert says in str(err.value)


def test_hello_to_a_closed_port_or_a_silent_server():
    with pytest.raises(rpc.RpcError, match="cannot reach a ggml-rpc-server there .*refused"):
        rpc.hello(f"127.0.0.1:{free_port()}")
    silent = threading.Event()
    with stand_in(lambda conn: silent.wait(5)) as (endpoint, _):
        with pytest.raises(rpc.RpcError, match=r"\(no answer\)"):
            rpc.hello(endpoint, timeout=0.5)
        silent.set()


def test_private_addresses():
    for host in ("127.0.0.1", "localhost", "10.1.2.3", "192.168.0.7", "172.16.0.1", "169.254.1.1"):
        assert rpc.is_private(host), host
    for host in ("8.8.8.8", "1.1.1.1"):
        assert not rpc.is_private(host), host


def test_a_build_without_rpc_is_named_with_its_fix(monkeypatch):
    class NoRpc:  # ggml as a build without GGML_RPC answers
        @staticmethod
        def ggml_backend_reg_by_name(name):
            return None
    monkeypatch.setattr(rpc.ggml, "lib", lambda: NoRpc)
    with pytest.raises(rpc.RpcError, match="built without it: `make install-rpc`"):
        rpc.add_servers(("127.0.0.1:50052",))
