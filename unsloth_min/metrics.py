"""Prometheus metrics: counters, gauges and histograms with labels, and their text exposition
(format 0.0.4: `# HELP`, `# TYPE`, then `name{label="value"} number` lines).

Strategy: a `Family` is one metric name, its type and help, and its samples by label values.
`ServerMetrics` holds the families the server counts as requests go by (ours, under the one
prefix `unsloth_min_`); the figures that live elsewhere (the engine's token totals, the slots,
open connections) are made into families at scrape time by ops.py, so there is one copy of each
number. Histograms keep cumulative bucket counts, `_sum` and `_count`, as Prometheus reads them.
Everything runs on the event loop: no locks.

Does not: serve HTTP or check keys (app.py, ops.py), or know what the engine is.
"""
from __future__ import annotations

import bisect
import math

PREFIX = "unsloth_min_"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# seconds: from a short answer on a GPU to a 12k-token prompt on a 2-core CPU (minutes)
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _escape(value) -> str:
    return str(value).replace("\\", "\\\\").replace("\"", "\\\"").replace("\n", "\\n")


def _labels(pairs) -> str:
    text = ",".join(f'{k}="{_escape(v)}"' for k, v in pairs)
    return "{" + text + "}" if text else ""


class Family:
    """One metric: `kind` is counter or gauge; samples by their label values (in `labels` order)."""
    kind = "gauge"

    def __init__(self, name: str, help: str, labels: tuple[str, ...] = (), kind: str | None = None):
        self.name, self.help, self.labels = name, help, labels
        self.kind = kind or self.kind
        self.samples: dict[tuple, float] = {}

    def set(self, value: float, *values) -> "Family":
        self.samples[tuple(str(v) for v in values)] = value
        return self

    def inc(self, *values, by: float = 1) -> None:
        key = tuple(str(v) for v in values)
        self.samples[key] = self.samples.get(key, 0) + by

    def lines(self) -> list[str]:
        return [f"{self.name}{_labels(zip(self.labels, key))} {_number(v)}"
                for key, v in sorted(self.samples.items())]

    def render(self) -> str:
        head = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]
        return "\n".join(head + self.lines()) + "\n"


class Counter(Family):
    kind = "counter"


class Histogram(Family):
    kind = "histogram"

    def __init__(self, name: str, help: str, labels: tuple[str, ...] = (),
                 buckets: tuple[float, ...] = LATENCY_BUCKETS):
        super().__init__(name, help, labels)
        self.buckets = tuple(buckets)
        self.series: dict[tuple, list] = {}  # label values → [counts per bucket…, +Inf, sum]

    def observe(self, value: float, *values) -> None:
        key = tuple(str(v) for v in values)
        row = self.series.setdefault(key, [0] * (len(self.buckets) + 1) + [0.0])
        row[bisect.bisect_left(self.buckets, value)] += 1  # (le: a value on a bound counts there)
        row[-1] += value

    def lines(self) -> list[str]:
        out = []
        for key, row in sorted(self.series.items()):
            pairs = list(zip(self.labels, key))
            total = 0
            for bound, n in zip(self.buckets + (math.inf,), row[:-1]):
                total += n
                out.append(f"{self.name}_bucket{_labels(pairs + [('le', _number(float(bound)))])} {total}")
            out.append(f"{self.name}_sum{_labels(pairs)} {_number(row[-1])}")
            out.append(f"{self.name}_count{_labels(pairs)} {total}")
        return out


class ServerMetrics:
    """What the server counts as requests go by (ops.py adds the rest at scrape time)."""

    def __init__(self):
        p = PREFIX
        self.requests = Counter(p + "requests_total", "HTTP requests answered, by route, dialect "
                                "and status (499: the client left first).", ("route", "dialect", "status"))
        self.duration = Histogram(p + "request_duration_seconds", "From a request's arrival to its "
                                  "response's last byte, by route.", ("route",))
        self.ttft = Histogram(p + "time_to_first_token_seconds", "From a chat request's arrival to "
                              "its first output (text, thinking or a tool call), by dialect.", ("dialect",))
        self.tool_calls = Counter(p + "server_tool_calls_total", "Server tool calls run, by tool "
                                  "and outcome (ok, error).", ("tool", "outcome"))
        self.sleeps = Counter(p + "model_unloads_total", "Times --sleep-idle unloaded the model.")
        self.wakes = Counter(p + "model_reloads_total", "Times a request loaded a sleeping model again.")
        self.sleeps.set(0)
        self.wakes.set(0)

    def families(self) -> list[Family]:
        return [self.requests, self.duration, self.ttft, self.tool_calls, self.sleeps, self.wakes]


def exposition(families: list[Family]) -> bytes:
    return "".join(f.render() for f in families).encode()
