"""Load and faults against a running server, and what it costs the server process.

Strategy: `run_soak` fires a seeded mix of requests from a thread pool over raw sockets
(`rawhttp`), across every route in `ROUTES` — adding a dialect is one line there. Each request
is one of `KINDS`: a complete JSON answer, a complete SSE stream, a stream the client drops
after its first event (FIN or RST), a request dropped before its answer, a framing fault, or a
head cut off halfway. Every completed answer is checked for its dialect's shape; anything else
is a failure, kept with its reason. `IdleHolder` keeps connections open meanwhile. `snapshot` reads
the server's open fds, RSS, threads and child processes from /proc, so a test can check that
they come back to their baseline once the clients are gone (`settle`).

Does not: start servers (conftest does), or judge speed; loopback only, bounded by `requests`.
"""
from __future__ import annotations

import json
import os
import random
import socket
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from .servers import sse_events
from .rawhttp import Conn, Malformed

SLOW = "slow"  # a user message a soak engine answers slowly, so that drops land mid-stream


def _chat(text, stream):  # (the same body reads as a Chat or a Messages request)
    return {"model": "m", "messages": [{"role": "user", "content": text}], "max_tokens": 16,
            "stream": stream}


def _responses(text, stream):
    return {"model": "m", "input": text, "max_output_tokens": 16, "stream": stream}


def check_chat(body: dict) -> None:
    choice = body["choices"][0]
    assert body["object"] == "chat.completion" and choice["message"]["role"] == "assistant"
    assert isinstance(choice["message"]["content"], str) and choice["finish_reason"] in ("stop", "length")
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]


def check_chat_stream(events: list) -> None:
    assert events[-1] == (None, "[DONE]")
    chunks = [json.loads(data) for _, data in events[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"} and len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert [c["choices"][0]["finish_reason"] is not None for c in chunks].count(True) == 1


def check_messages(body: dict) -> None:
    assert body["type"] == "message" and body["role"] == "assistant"
    assert all(block["type"] in ("text", "thinking") for block in body["content"])
    assert body["stop_reason"] in ("end_turn", "max_tokens")


def check_messages_stream(events: list) -> None:
    payloads = [json.loads(data) for _, data in events]
    assert all(name == p["type"] for (name, _), p in zip(events, payloads))
    assert events[0][0] == "message_start" and events[-1][0] == "message_stop"
    assert [n for n, _ in events].count("message_delta") == 1


def check_responses(body: dict) -> None:
    assert body["object"] == "response" and body["status"] in ("completed", "incomplete")
    assert all(item["type"] in ("message", "reasoning") for item in body["output"])


def check_responses_stream(events: list) -> None:
    payloads = [json.loads(data) for _, data in events]
    assert [p["sequence_number"] for p in payloads] == list(range(len(payloads)))
    assert events[0][0] == "response.created"
    assert events[-1][0] in ("response.completed", "response.incomplete")


ROUTES = {  # path: (body(text, stream), check of a JSON answer, check of an SSE answer)
    "/v1/chat/completions": (_chat, check_chat, check_chat_stream),
    "/v1/messages": (_chat, check_messages, check_messages_stream),
    "/v1/responses": (_responses, check_responses, check_responses_stream),
}
KINDS = {"json": 30, "stream": 30, "drop_stream": 20, "drop_wait": 5, "bad_framing": 10,
         "half_head": 5}  # relative weights
DROPS = ("drop_stream", "drop_wait")


@dataclass
class Figures:
    requests: int = 0
    completed: int = 0  # answers read in full and checked
    disconnects: int = 0  # requests the client dropped before the answer was complete (or its head)
    faults: int = 0  # framing faults, each refused as it should be
    failures: list = field(default_factory=list)
    seconds: float = 0.0

    def add(self, kind: str, error: str | None) -> None:
        self.requests += 1
        if error is not None:
            self.failures.append(f"{kind}: {error}")
        elif kind in DROPS or kind == "half_head":
            self.disconnects += 1
        elif kind == "bad_framing":
            self.faults += 1
        else:
            self.completed += 1


def _post(path: str, key: str, body: dict) -> bytes:
    data = json.dumps(body).encode()
    return (f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {key}\r\nContent-Length: {len(data)}\r\n\r\n").encode() + data


def _drop(conn: Conn, rst: bool) -> None:
    if rst:  # an abortive close: the server reads ECONNRESET instead of EOF
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


def one_request(host: str, port: int, key: str, kind: str, path: str, rng: random.Random,
                timeout: float = 60.0) -> None:
    """Run one request of `kind`; raises AssertionError (or Malformed) on a wrong answer."""
    body, check_json, check_sse = ROUTES[path]
    text = SLOW if kind in DROPS else "hi"
    with Conn(host, port, timeout=timeout) as conn:
        if kind == "bad_framing":
            twice = b"Content-Length: 1\r\nContent-Length"  # a smuggling attempt: 400
            conn.send(_post(path, key, body(text, False)).replace(b"Content-Length", twice, 1))
            reply = conn.reply()
            assert reply.status == 400 and reply.headers["connection"] == "close" and conn.closed()
        elif kind == "half_head":
            conn.send(_post(path, key, body(text, False))[: rng.randrange(1, 60)])
            _drop(conn, rng.random() < 0.5)
        elif kind == "drop_wait":
            conn.send(_post(path, key, body(text, False)))
            time.sleep(0.01)
            _drop(conn, rng.random() < 0.5)
        elif kind == "drop_stream":
            conn.send(_post(path, key, body(text, True)))
            assert conn.head()[0] == 200 and next(conn.chunks())
            _drop(conn, rng.random() < 0.5)
        else:
            conn.send(_post(path, key, body(text, kind == "stream")))
            reply = conn.reply()
            assert reply.status == 200, reply.body[:300]
            if kind == "stream":
                check_sse(sse_events(reply.body))
            else:
                check_json(json.loads(reply.body))


def run_soak(host: str, port: int, key: str, requests: int, concurrency: int = 8,
             seed: int = 0, kinds: dict = KINDS, timeout: float = 60.0) -> Figures:
    """`requests` requests of a seeded mix of `kinds` over ROUTES, `concurrency` at a time."""
    rng = random.Random(seed)
    plan = [(rng.choices(list(kinds), list(kinds.values()))[0], rng.choice(list(ROUTES)),
             random.Random(rng.random())) for _ in range(requests)]

    def run(item):
        kind, path, item_rng = item
        try:
            one_request(host, port, key, kind, path, item_rng, timeout)
            return kind, None
        except (AssertionError, Malformed, OSError, KeyError, ValueError, StopIteration) as e:
            return kind, f"{path} {type(e).__name__}: {str(e)[:300]}"

    figures, started = Figures(), time.monotonic()
    with ThreadPoolExecutor(concurrency) as pool:
        for kind, error in pool.map(run, plan):
            figures.add(kind, error)
    figures.seconds = time.monotonic() - started
    return figures


def timed_request(host: str, port: int, key: str, runs: int = 3, timeout: float = 60.0):
    """Median seconds for a complete, checked chat completion on a fresh connection, and for a
    `GET /v1/models` (the event loop's own latency, whatever the model's speed)."""
    chats, lists = [], []
    get = f"GET /v1/models HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {key}\r\n\r\n"
    for _ in range(runs):
        started = time.monotonic()
        one_request(host, port, key, "json", "/v1/chat/completions", random.Random(0), timeout)
        chats.append(time.monotonic() - started)
        started = time.monotonic()
        with Conn(host, port, timeout) as conn:
            conn.send(get.encode())
            assert conn.reply().status == 200
        lists.append(time.monotonic() - started)
    return sorted(chats)[runs // 2], sorted(lists)[runs // 2]


def _idle_conn(host: str, port: int, keep_alive: bool) -> Conn:
    """A connection that never sent a byte, or one left open after a complete request."""
    conn = Conn(host, port, timeout=30)
    if keep_alive:
        conn.send(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert conn.reply().status == 200
    return conn


def _state(conn: Conn) -> str:
    """'open', 'closed' (clean EOF, nothing sent), or 'spoke' (bytes an idle client never asked for)."""
    conn.sock.setblocking(False)
    try:
        return "closed" if conn.sock.recv(1, socket.MSG_PEEK) == b"" else "spoke"
    except BlockingIOError:
        return "open"
    except OSError:
        return "closed"
    finally:
        conn.sock.setblocking(True)


class IdleHolder:
    """Keeps `n` idle connections open from a thread; one the server closes (its keep-alive
    timeout) is checked for a silent close and replaced, so `n` stay held however long a run is."""

    def __init__(self, host: str, port: int, n: int, check_every: float = 0.5):
        self.host, self.port, self.every = host, port, check_every
        self.conns = [_idle_conn(host, port, i % 2 == 1) for i in range(n)]
        self.replaced = self.spoke = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            for i, conn in enumerate(self.conns):
                state = _state(conn)
                if state != "open":
                    self.spoke += state == "spoke"
                    conn.close()
                    self.conns[i] = _idle_conn(self.host, self.port, False)
                    self.replaced += 1

    def close(self) -> int:
        """Stop, close everything; returns how many were still open at the end."""
        self._stop.set()
        self._thread.join()
        alive = sum(_state(conn) == "open" for conn in self.conns)
        for conn in self.conns:
            conn.close()
        return alive


@dataclass(frozen=True)
class Snapshot:
    fds: int
    rss_kb: int
    threads: int
    children: frozenset


def snapshot(pid: int) -> Snapshot:
    status = open(f"/proc/{pid}/status").read()
    rss = int(status.split("VmRSS:")[1].split()[0])
    tasks = os.listdir(f"/proc/{pid}/task")
    children = set()
    for tid in tasks:
        try:
            children |= set(open(f"/proc/{pid}/task/{tid}/children").read().split())
        except OSError:
            pass  # a thread that just ended
    return Snapshot(len(os.listdir(f"/proc/{pid}/fd")), rss, len(tasks), frozenset(children))


def quiet(pid: int, timeout: float = 5.0) -> Snapshot:
    """A snapshot once fds and threads have stopped changing (lingering closes are done)."""
    last, deadline = snapshot(pid), time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.3)
        now = snapshot(pid)
        if (now.fds, now.threads) == (last.fds, last.threads):
            return now
        last = now
    return last


def settle(pid: int, baseline: Snapshot, rss_slack_kb: int, timeout: float = 10.0) -> Snapshot:
    """Poll until fds, threads and children are back to `baseline` and RSS within the slack;
    the last snapshot either way (the caller asserts on it)."""
    deadline = time.monotonic() + timeout
    while True:
        now = snapshot(pid)
        if (now.fds <= baseline.fds and now.threads <= baseline.threads
                and now.children <= baseline.children and now.rss_kb <= baseline.rss_kb + rss_slack_kb):
            return now
        if time.monotonic() > deadline:
            return now
        time.sleep(0.1)
