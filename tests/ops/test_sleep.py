"""--sleep-idle over the scripted engine (sleep.py): an idle model is unloaded, /health says
`sleeping`, requests that come during the wake-up wait for one load and are answered, a request
in flight keeps the model, and /health or /metrics polls do not."""
from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from support.scripted import ScriptedEngine
from support.servers import KEY, serve_app, wait_for
from unsloth_min.app import App
from unsloth_min.auth import Authenticator
from unsloth_min.sleep import Sleeper

IDLE_S = 0.3
CHAT = ("POST", "/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "hi"}]})


class Engine(ScriptedEngine):
    def __init__(self):
        super().__init__()
        self.closed = 0

    def close(self) -> None:
        self.closed += 1


class Loader:
    """The load --sleep-idle calls to wake the model: held until `gate` is set."""

    def __init__(self, fail: int = 0):
        self.gate, self.started = threading.Event(), threading.Event()
        self.loads, self.fail = 0, fail

    def __call__(self):
        self.started.set()
        assert self.gate.wait(10)
        self.loads += 1
        if self.loads <= self.fail:
            raise RuntimeError("out of memory")
        return Engine()


@contextlib.contextmanager
def sleepy(loader: Loader):
    engine = Engine()
    app = App("scripted", Authenticator(None, [KEY]), engine)
    with serve_app(app, engine) as running:
        app.sleeper = Sleeper(app, loader, IDLE_S, poll_s=0.02)
        running.loop.call_soon_threadsafe(app.sleeper.start)
        try:
            yield running, engine
        finally:
            loader.gate.set()
            asyncio.run_coroutine_threadsafe(app.sleeper.close(), running.loop).result(10)


def health(running) -> str:
    status, body = running.json("GET", "/health", key=False)
    assert status == 200, body  # sleeping is not down: the next request is answered
    return body["status"]


def metric(running, name: str) -> float:
    text = running.request("GET", "/metrics")[2].decode()
    return float(next(line.split()[-1] for line in text.splitlines() if line.startswith(name + " ")))


def test_an_idle_model_is_unloaded_and_requests_during_the_wake_up_are_answered():
    loader = Loader()
    with sleepy(loader) as (running, first):
        assert health(running) == "ok"
        assert wait_for(lambda: health(running) == "sleeping", 5)  # (polling /health: not a use)
        assert first.closed == 1 and running.app.engine is None
        with ThreadPoolExecutor(3) as pool:
            answers = [pool.submit(running.request, *CHAT) for _ in range(3)]
            assert loader.started.wait(5)
            time.sleep(0.1)  # the three wait for the one load
            assert health(running) == "sleeping" and not any(a.done() for a in answers)
            loader.gate.set()
            assert [a.result(10)[0] for a in answers] == [200, 200, 200]
        assert loader.loads == 1 and health(running) == "ok"
        assert len(running.app.engine.history) == 3
        assert metric(running, "unsloth_min_model_unloads_total") >= 1
        assert metric(running, "unsloth_min_model_reloads_total") == 1


def test_a_request_in_flight_keeps_the_model_loaded():
    with sleepy(Loader()) as (running, engine):
        engine.enqueue(["tok"] * 12, delay=0.1)  # 1.2 s of answer: four times the idle time
        with ThreadPoolExecutor(1) as pool:
            answer = pool.submit(running.request, *CHAT[:2], dict(CHAT[2], stream=True))
            assert wait_for(lambda: engine.history, 5)
            while not answer.done():
                assert health(running) == "ok" and engine.closed == 0
                time.sleep(0.05)
            assert answer.result()[0] == 200
        assert wait_for(lambda: health(running) == "sleeping", 5)  # then idle, it sleeps


def test_a_failed_wake_up_is_a_503_and_the_next_request_loads_again():
    loader = Loader(fail=1)
    loader.gate.set()
    with sleepy(loader) as (running, _):
        assert wait_for(lambda: health(running) == "sleeping", 5)
        status, body = running.json(*CHAT)
        assert status == 503 and "could not be loaded again" in body["error"]["message"]
        assert running.json(*CHAT)[0] == 200 and loader.loads == 2
