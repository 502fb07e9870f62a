"""What the scheduler schedules: a request's `Sequence`, the `Slot` (llama.cpp sequence id) it
runs in, and the worker's own time account.

Strategy: plain dataclasses shared by the scheduler (scheduler.py) and the prompt cache
(prompt_cache.py), so that neither imports the other's internals; `common_prefix` is the one
comparison both use to find reusable KV cells.

Does not: decode, sample or touch llama.cpp.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..core import Sampling
from .grammar import Grammar
from .textstream import TextStream


@dataclass(eq=False)
class Sequence:
    prompt: list[int]
    sampling: Sampling           # complete: merged with the server defaults
    max_tokens: int
    emit: Callable[[object], None]
    grammar: Grammar | None = None  # constrains the answer (eager, or lazy with triggers)
    special: frozenset = frozenset()  # control tokens shown as text (format markers)
    media: dict = field(default_factory=dict)  # prompt index → image chunk (n_tokens, evaluate())
    cancelled: bool = False
    stop: bool = False           # set by the consumer: finish ("stop") instead of the next token
    # scheduler state
    n_done: int = 0              # prompt tokens already in the KV cache
    cached: int = 0              # of which reused from an earlier request
    n_generated: int = 0
    last: int = -1               # the sampled token still to be decoded
    sampler: object = None
    constraint: object = None    # the grammar, kept out of the chain (constrain.Constraint)
    text: TextStream = field(default=None)
    slot: "Slot" = None
    # for /slots, /metrics and prompt progress (stats.py)
    return_progress: bool = False  # emit PromptProgress events
    request_id: str = ""
    dialect: str = ""
    t_start: float = 0.0         # (monotonic) when it took its slot
    t_prompt: float = 0.0        # when its prompt was all computed
    reported: int = 0            # n_done when progress was last reported

    @property
    def prefilling(self) -> bool:
        return self.n_done < len(self.prompt)


@dataclass(eq=False)
class Slot:
    seq_id: int
    tokens: list[int] = field(default_factory=list)  # exactly the tokens whose KV this slot holds
    seq: Sequence | None = None
    used: int = 0  # when a sequence last took it (a count): the least recently used goes first


@dataclass
class StepTimes:
    """Where the worker's time goes, summed over the server's life and logged at shutdown (the
    Python per token against the decode). `python` is the step's own work: building the batch,
    detokenizing, stop strings, handing events over; `sample` is sampling, mostly llama.cpp's."""
    steps: int = 0
    tokens: int = 0      # sampled
    decode: float = 0.0  # seconds inside llama_decode (prompt chunks included)
    sample: float = 0.0
    python: float = 0.0

    def add(self, tokens: int, decode: float, sample: float, total: float) -> None:
        self.steps += 1
        self.tokens += tokens
        self.decode += decode
        self.sample += sample
        self.python += total - decode - sample

    def summary(self) -> str:
        per = 1000 / max(self.tokens, 1)
        return (f"{self.tokens} tokens in {self.steps} steps; per sampled token: llama_decode "
                f"{self.decode * per:.2f} ms, sampling {self.sample * per:.3f} ms, "
                f"scheduler Python {self.python * per:.3f} ms")


def common_prefix(a: list[int], b: list[int]) -> int:
    """How many leading tokens two lists share: slices compared in C, halving the unknown part
    (a 12k-token agent prompt against a slot or a cached prefix: microseconds, not milliseconds)."""
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    lo, hi = 0, n  # a[:lo] == b[:lo], a[:hi] != b[:hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid
    return lo
