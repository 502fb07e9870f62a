"""The scheduler with the real model: what a slot keeps for the next request."""
from __future__ import annotations

import threading

import pytest

from unsloth_min.core import ApiError, Finish, Sampling
from unsloth_min.engine import LLAMA_DEFAULTS, embedded_model_path
from unsloth_min.engine.model import Model, ModelParams
from unsloth_min.engine import scheduler as scheduler_module
from unsloth_min.engine.scheduler import Scheduler, Sequence
from support.models import embedded
from support.servers import wait_for

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def model():
    yield from embedded(4096, 2, 256)


def sequence(prompt: list[int]) -> tuple[Sequence, list, threading.Event]:
    """A greedy one-token sequence, the events it emits, and an Event set at its Finish."""
    events, done = [], threading.Event()

    def emit(ev):
        events.append(ev)
        if isinstance(ev, Finish):
            done.set()
    return Sequence(prompt, Sampling(temperature=0).merged(LLAMA_DEFAULTS), 1, emit), events, done


def test_a_retry_resumes_the_prefill_its_cancelled_request_left(model):
    """A client that gives up during a long prefill and sends the same request again (Claude Code
    after its stream watchdog) gets the prefix the abandoned request left in its slot, even when
    both reach the worker in one step: the abandoned slot is freed before the retry is placed."""
    prompt = model.tokenize("The river runs to the sea. " * 200, add_bos=True)[:1500]
    scheduler = Scheduler(model)
    try:
        first, _, _ = sequence(prompt)
        scheduler.submit(first)
        assert wait_for(lambda: first.n_done >= 512, 120)
        retry, events, done = sequence(prompt)
        with scheduler._cv:  # the worker sees the cancel and the retry together
            scheduler.cancel(first)
            scheduler.submit(retry)
        assert done.wait(300)
        finish = events[-1]
        assert finish.usage.cached_tokens >= 512, finish.usage
        assert retry.slot is first.slot
    finally:
        scheduler.close()


def test_fail_all_does_not_wait_for_a_worker_stuck_holding_the_lock(model, monkeypatch):
    """The --rpc watchdog's fail_all, while the worker waits on a silent server inside llama.cpp
    with the scheduler's lock held (restoring a prompt state as it admits a request)."""
    monkeypatch.setattr(scheduler_module, "FAIL_ALL_LOCK_S", 0.2)
    scheduler = Scheduler(model)
    gone = ApiError(500, "server_error", "gone")
    try:
        queued, events, _ = sequence([1, 2, 3])
        with scheduler._cv:  # (the stuck worker's hold)
            scheduler._waiting.append(queued)
            failing = threading.Thread(target=scheduler.fail_all, args=(gone,))
            failing.start()
            failing.join(10)
            assert not failing.is_alive() and events == [gone] and queued.cancelled
    finally:
        scheduler.close()


def test_every_decode_runs_on_the_worker_thread_the_warm_up_included(monkeypatch):
    """llama.cpp's CPU backend keeps an OpenMP thread team per thread that calls llama_decode;
    a second team (a warm-up on the loading thread) throttled every later decode to half speed or
    less. The server loads on a pool thread (asyncio.to_thread): so does this test."""
    import llama_cpp as C
    callers: list[int] = []
    decode = C.llama_decode
    monkeypatch.setattr(C, "llama_decode", lambda ctx, b: callers.append(threading.get_ident())
                        or decode(ctx, b))
    built: list = []
    loader = threading.Thread(target=lambda: built.append(Scheduler(Model(ModelParams(
        embedded_model_path(), n_ctx=512, n_parallel=1)))))
    loader.start()
    loader.join()
    scheduler = built[0]
    try:
        assert len(callers) >= 2  # the warm-up: a batch, then one token
        seq, events, done = sequence(scheduler.model.tokenize("Hello there", add_bos=True))
        scheduler.submit(seq)
        assert done.wait(60) and isinstance(events[-1], Finish)
        assert set(callers) == {scheduler._thread.ident}
    finally:
        scheduler.close()
        scheduler.model.close()
