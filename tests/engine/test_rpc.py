"""`--rpc` without remote machines (engine/rpc.py, config, rpc_server.py): endpoints and
--tensor-split read and refused by name (IPv6 with its reason), the HELLO probe against stand-in
servers (a version, a closed port, silence, a foreign protocol, a hang-up) and the wait for one
that comes back, private addresses, a build without the RPC backend named with its fix, the
watchdog over a decode that never returns, and ggml-rpc-server's flags and devices. The split
model itself: tests/e2e/test_e2e_rpc.py."""
from __future__ import annotations

import contextlib
import os
import socket
import struct
import threading
import time

import pytest

from unsloth_min import rpc_server
from unsloth_min.config import parse_config
from unsloth_min.engine import rpc
from unsloth_min.engine.ggml import CPU_DEVICE
from support.servers import free_port, wait_for


def test_endpoints_are_read_and_checked():
    assert rpc.parse_endpoints("10.0.0.2:50052, gpu-box:50053") == ("10.0.0.2:50052", "gpu-box:50053")
    for bad in ("host", ":50052", "host:", "host:0", "host:65536", "host:5x", "::1:50052", "a:1,a:1"):
        with pytest.raises(ValueError):
            rpc.parse_endpoints(bad)


@pytest.mark.parametrize("flag, value, says", [
    ("--rpc", "localhost", "is not HOST:PORT"),
    ("--rpc", "[::1]:50052", "IPv6 is not supported: llama.cpp's RPC client resolves and "
                             "connects over IPv4 only"),
    ("--rpc", "10.0.0.2:1,::1:50052", "IPv6 is not supported"),
    ("--rpc-timeout", "-1", "must be >= 0"),
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
    assert parse_config([]).rpc_timeout == rpc.RPC_TIMEOUT_S >= 60  # a slow network does not trip it
    assert parse_config(["--rpc-timeout", "2.5"]).rpc_timeout == 2.5


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
    with pytest.raises(rpc.RpcError, match="built without it: `make install` builds one"):
        rpc.add_servers(("127.0.0.1:50052",))


def test_a_restarted_server_waits_for_a_server_that_comes_back(monkeypatch, caplog):
    monkeypatch.setattr(rpc, "RETRY_S", 0.05)
    endpoint = f"127.0.0.1:{free_port()}"
    with pytest.raises(rpc.RpcError, match="refused"):  # a first start: no wait
        rpc.wait_for(endpoint, 0)
    tries = []

    def hello(e):  # refused twice, then answers
        tries.append(e)
        if len(tries) < 3:
            raise rpc.RpcError(f"--rpc {e}: cannot reach a ggml-rpc-server there (refused)")
        return "7.0.0"
    monkeypatch.setattr(rpc, "hello", hello)
    assert rpc.wait_for(endpoint, float("inf")) == "7.0.0" and len(tries) == 3
    assert caplog.text.count("trying again every") == 1  # (said once a minute)


def test_the_watchdog_fires_once_on_a_call_that_does_not_return():
    fired, since = [], [None]
    dog = rpc.Watchdog(("127.0.0.1:1", "10.0.0.2:2"), 0.2, lambda: since[0], fired.append, tick_s=0.01)
    time.sleep(0.3)  # outside llama.cpp: nothing to watch
    since[0] = time.monotonic()  # a call that goes on
    assert wait_for(lambda: fired, 5)
    dog._thread.join(5)  # (it ends once it has fired)
    assert len(fired) == 1 and not dog._thread.is_alive()
    assert fired[0] == ("no answer from one of its --rpc servers (127.0.0.1:1, 10.0.0.2:2) for "
                        "0.2 s (--rpc-timeout): that host is unreachable, frozen or paused")


def test_the_watchdog_leaves_calls_that_return_alone():
    fired, since = [], [None]
    dog = rpc.Watchdog(("127.0.0.1:1",), 0.2, lambda: since[0], fired.append, tick_s=0.01)
    for _ in range(20):  # calls of 0.05 s, for longer than the timeout in all
        since[0] = time.monotonic()
        time.sleep(0.05)
        since[0] = None
    dog.stop()
    dog._thread.join(5)
    assert fired == [] and not dog._thread.is_alive()


def test_ggml_rpc_server_flags_are_rpc_servers(capsys):
    args = rpc_server.build_parser().parse_args([])
    assert (args.host, args.port, args.cache, args.device) == ("127.0.0.1", 50052, False, "")
    assert args.threads == max(1, (os.cpu_count() or 1) // 2)
    args = rpc_server.build_parser().parse_args(["-H", "localhost", "-p", "50100", "-t", "3", "-c"])
    assert (args.host, args.port, args.threads, args.cache) == ("127.0.0.1", 50100, 3, True)
    for bad, says in ((["-H", "::1"], "IPv6 is not supported"), (["-H", "[::1]"], "IPv6"),
                      (["-p", "0"], "not a port"), (["-t", "0"], "must be above 0")):
        with pytest.raises(SystemExit):
            rpc_server.build_parser().parse_args(bad)
        assert says in capsys.readouterr().err


def test_ggml_rpc_server_serves_the_gpus_else_the_cpu():
    cpu, gpu0, gpu1, accel = ("CPU", CPU_DEVICE, 10), ("CUDA0", 1, 11), ("CUDA1", 1, 12), ("BLAS", 3, 13)
    assert rpc_server.pick_devices([], [cpu, accel]) == [10]
    assert rpc_server.pick_devices([], [cpu, gpu0, accel, gpu1]) == [11, 12]
    assert rpc_server.pick_devices(["CUDA1", "CPU"], [cpu, gpu0, gpu1]) == [12, 10]
    with pytest.raises(KeyError):
        rpc_server.pick_devices(["Vulkan0"], [cpu])


def test_ggml_rpc_server_warns_off_loopback_and_names_a_missing_backend(monkeypatch, capsys):
    monkeypatch.setattr(rpc_server, "start_server_fn", lambda: None)
    assert rpc_server.main(["-H", "10.0.0.2"]) == 1
    err = capsys.readouterr().err
    assert "WARNING: Host ('10.0.0.2') is != '127.0.0.1'" in err
    assert "built without llama.cpp's RPC backend (GGML_RPC=ON): `make install`" in err
