"""Load and faults (tests/soak.py) against the in-process scripted server, and — behind `make soak`
(UNSLOTH_MIN_SOAK=<requests>) — against the real model in its own process.

Strategy: both run one scenario (`soak_and_check`): warm up, time a request, take a baseline of
the server's fds, RSS, threads and children, hold idle connections open, time a request among
them, fire 100 concurrent requests, then the seeded mix with its disconnects and faults. Every
completed answer must be well-formed, the idle connections still open, the request among them not
slower than three times alone plus a second (GET /v1/models: a quarter second), and the process
back to its baseline; with the scripted engine, every
generation is accounted for (finished for each answer read, cancelled for each drop).
"""
from __future__ import annotations

import asyncio
import collections
import os

import pytest
from prometheus_client.parser import text_string_to_metric_families

from support.servers import serve_scripted, start_server_process, stop_server_process, wait_for
from support.soak import SLOW, IdleHolder, quiet, run_soak, settle, timed_request
from unsloth_min.core import Finish, Started, TextDelta, Usage
from unsloth_min.http import Limits

SOAK_ENV = "UNSLOTH_MIN_SOAK"  # requests in the real-model soak; unset: skipped


class SoakEngine:
    """Answers "slow" with 2000 tokens a millisecond apart (so a drop lands mid-stream), anything
    else at once; counts generations that finished and those closed before their end."""
    model_id, n_ctx, accepts_images = "scripted", 4096, False

    def __init__(self):
        self.started = self.finished = self.cancelled = 0

    def count_tokens(self, req) -> int:
        return 3

    def close(self) -> None:
        pass

    def gauges(self) -> dict:
        return {}

    async def generate(self, req):
        self.started += 1
        slow = req.messages[-1].text == SLOW
        done = False
        try:
            yield Started(3)
            for _ in range(2000 if slow else 2):
                if slow:
                    await asyncio.sleep(0.001)
                yield TextDelta("tok ")
            done = True
            yield Finish("stop", Usage(3, 2000 if slow else 2, 0))
        finally:
            self.finished += done
            self.cancelled += not done


def soak_and_check(server, pid: int, idle: int, requests: int, rss_slack_kb: int,
                   timeout: float = 60.0):
    """The whole scenario; returns the mix's figures and how many answers were read in all."""
    addr = server.host, server.port, server.key
    warm = run_soak(*addr, 30, seed=0, timeout=timeout)  # lazy imports, caches, the KV cache
    alone = timed_request(*addr, timeout=timeout)
    base = quiet(pid)
    held = IdleHolder(server.host, server.port, idle)
    among = timed_request(*addr, timeout=timeout)
    burst = run_soak(*addr, 100, concurrency=100, seed=1, kinds={"json": 1, "stream": 1},
                     timeout=timeout)
    figures = run_soak(*addr, requests, seed=1, timeout=timeout)
    alive = held.close()
    after = settle(pid, base, rss_slack_kb)
    print(f"\nsoak: {figures.requests} requests ({figures.completed} answered and checked, "
          f"{figures.disconnects} disconnects, {figures.faults} faults refused) in "
          f"{figures.seconds:.1f}s; 100 concurrent: {burst.completed} ok in {burst.seconds:.1f}s; "
          f"chat {alone[0] * 1000:.0f} ms alone, {among[0] * 1000:.0f} ms among {idle} idle "
          f"connections (GET /v1/models {alone[1] * 1000:.0f} -> {among[1] * 1000:.0f} ms; "
          f"{held.replaced} idled out and replaced, {alive} open at the end); fds {base.fds}->"
          f"{after.fds}, RSS {base.rss_kb // 1024}->{after.rss_kb // 1024} MiB, threads "
          f"{base.threads}->{after.threads}, children {len(base.children)}->{len(after.children)}; "
          f"failures {len(figures.failures) + len(burst.failures)} {(figures.failures + burst.failures)[:3]}")
    assert figures.failures == [] and burst.failures == [] and burst.completed == 100
    assert held.spoke == 0 and alive >= idle - 20  # closed only by the keep-alive timeout, silently
    assert among[0] <= 3 * alone[0] + 1.0 and among[1] <= alone[1] + 0.25  # idle costs nothing
    assert after.fds <= base.fds and after.threads <= base.threads
    assert after.children <= base.children, "a child process was left behind"
    assert after.rss_kb <= base.rss_kb + rss_slack_kb
    return figures, held.replaced, warm.completed + burst.completed + figures.completed + 6


def test_soak_scripted():
    with serve_scripted(Limits(header_timeout=2, keepalive_timeout=60)) as server:
        engine = server.app.engine = SoakEngine()
        figures, replaced, answered = soak_and_check(server, os.getpid(), idle=200, requests=500,
                                                     rss_slack_kb=24 * 1024)
        assert replaced == 0  # the run is far shorter than the keep-alive timeout
        assert wait_for(lambda: engine.started == engine.finished + engine.cancelled, 10)
        assert engine.finished == answered, "a completed request's generation was not finished"
        assert 0 < engine.cancelled and engine.started == answered + engine.cancelled
        check_metrics(server, engine)


def check_metrics(server, engine: SoakEngine) -> None:
    """After the soak, /metrics agrees with itself and with the engine: every request counted
    once in both the counter and the duration histogram, a first token for each finished
    generation (and none for one that never started), nothing left open or in use."""
    status, _, data = server.request("GET", "/metrics")
    assert status == 200
    sums = collections.Counter()
    for family in text_string_to_metric_families(data.decode()):
        for s in family.samples:
            sums[s.name] += s.value if "le" not in s.labels else 0
            if s.name.endswith("_bucket") and s.labels["le"] == "+Inf":
                sums[s.name + "_inf"] += s.value
    assert sums["unsloth_min_requests_total"] == sums["unsloth_min_request_duration_seconds_count"]
    assert sums["unsloth_min_request_duration_seconds_bucket_inf"] == sums["unsloth_min_request_duration_seconds_count"]
    assert engine.finished <= sums["unsloth_min_time_to_first_token_seconds_count"] <= engine.started
    assert server.app.in_use == 0, "a request still holds the engine (it would never sleep)"
    assert wait_for(lambda: server.app.ops.connections() == 0, 10)




@pytest.mark.model
@pytest.mark.skipif(not os.environ.get(SOAK_ENV), reason=f"set {SOAK_ENV}=<requests> (make soak)")
def test_soak_real_model(tmp_path):
    running = start_server_process(str(tmp_path), "--max-tokens", "16")  # default flags
    try:
        figures, _, _ = soak_and_check(running, running.server_pid, idle=200, timeout=900,
                                       requests=int(os.environ[SOAK_ENV]), rss_slack_kb=64 * 1024)
        assert figures.requests == int(os.environ[SOAK_ENV])
    finally:
        assert stop_server_process(running) == 0
    log = open(running.log, errors="replace").read()
    assert "Traceback" not in log and " ERROR " not in log
