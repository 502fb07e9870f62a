"""The Prometheus exposition (metrics.py, ops.py) read back by an independent parser:
prometheus_client's, as a Prometheus server would read it."""
from __future__ import annotations

from types import SimpleNamespace

from prometheus_client.parser import text_string_to_metric_families

from unsloth_min.core import ToolCall, ToolExecuted, ToolResult
from unsloth_min.engine.stats import EngineStats
from unsloth_min.metrics import Counter, Histogram, exposition
from unsloth_min.ops import Ops

LLAMA_NAMES = ("prompt_tokens_total", "prompt_seconds_total", "tokens_predicted_total",
               "tokens_predicted_seconds_total", "n_decode_total", "n_busy_slots_per_decode",
               "requests_processing", "requests_deferred", "prompt_tokens_seconds",
               "predicted_tokens_seconds", "kv_cache_tokens", "kv_cache_usage_ratio", "n_tokens_max")


def parse(text: str) -> dict[str, float]:
    """Every sample as 'name{a="x",b="y"}' (labels sorted) → value, and each family's type."""
    out = {}
    for family in text_string_to_metric_families(text):
        out["TYPE " + family.name] = family.type
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[s.name + ("{" + labels + "}" if labels else "")] = s.value
    return out


class FakeEngine:
    def gauges(self):
        return {"processing": 2, "deferred": 3, "kv_tokens": 500, "kv_capacity": 2000,
                "cache_ram_bytes": 1024, "cache_disk_bytes": 4096}


def scrape(ops: Ops, engine=FakeEngine(), status="ok") -> dict:
    return parse(exposition(ops.families(engine, status)).decode())


def test_llama_server_series_have_its_names_and_our_totals():
    stats = EngineStats(prompt_tokens=1200, prompt_seconds=3.0, predicted_tokens=90,
                        predicted_seconds=1.5, decodes=40, busy_slots=60, max_batch=512)
    stats.cache_hits.update(slot=2, disk=1)
    stats.cache_reused.update(slot=700, disk=1500)
    ops = Ops(stats)
    ops.connections = lambda: 5
    got = scrape(ops)
    for name in LLAMA_NAMES:
        assert "llamacpp:" + name in got, name
    assert got["llamacpp:prompt_tokens_total"] == 1200 and got["llamacpp:tokens_predicted_total"] == 90
    assert got["llamacpp:prompt_seconds_total"] == 3.0 and got["llamacpp:n_decode_total"] == 40
    assert got["llamacpp:n_busy_slots_per_decode"] == 1.5 and got["llamacpp:prompt_tokens_seconds"] == 400
    assert got["llamacpp:requests_processing"] == 2 and got["llamacpp:requests_deferred"] == 3
    assert got["llamacpp:kv_cache_usage_ratio"] == 0.25
    assert got['unsloth_min_prompt_cache_hits_total{source="slot"}'] == 2
    assert got['unsloth_min_prompt_cache_reused_tokens_total{source="disk"}'] == 1500
    assert got['unsloth_min_prompt_cache_hits_total{source="ram"}'] == 0  # every source, always
    assert got['unsloth_min_prompt_cache_bytes{where="disk"}'] == 4096
    assert got["unsloth_min_open_connections"] == 5 and got["unsloth_min_model_loaded"] == 1
    assert got["TYPE llamacpp:prompt_tokens"] == "counter"
    assert got["TYPE llamacpp:requests_processing"] == "gauge"


def test_a_sleeping_model_still_shows_every_series():
    got = scrape(Ops(), engine=None, status="sleeping")
    assert got["llamacpp:requests_processing"] == 0 and got["unsloth_min_model_loaded"] == 0
    assert all("llamacpp:" + name in got for name in LLAMA_NAMES)


def test_histogram_buckets_are_cumulative_and_add_up():
    h = Histogram("t_seconds", "help", ("dialect",), buckets=(0.1, 1, 10))
    for v in (0.05, 0.1, 0.5, 2, 50, 50):
        h.observe(v, "openai")
    h.observe(3, "anthropic")
    got = parse(exposition([h]).decode())
    rows = [got[f't_seconds_bucket{{dialect="openai",le="{le}"}}'] for le in ("0.1", "1.0", "10.0", "+Inf")]
    assert rows == [2, 3, 4, 6]  # (a value on a bound counts in that bucket: le)
    assert got['t_seconds_count{dialect="openai"}'] == 6
    assert got['t_seconds_sum{dialect="openai"}'] == 102.65
    assert got['t_seconds_bucket{dialect="anthropic",le="+Inf"}'] == 1
    assert got["TYPE t_seconds"] == "histogram"


def test_label_values_are_escaped():
    c = Counter("odd_total", "help", ("route",))
    nasty = 'a "quoted" \\ back\nslash'
    c.inc(nasty)
    c.inc(nasty)
    assert parse(exposition([c]).decode())[f'odd_total{{route="{nasty}"}}'] == 2


def test_requests_ttft_and_tool_outcomes_are_counted():
    ops = Ops()
    request = SimpleNamespace(context={"route": "/v1/chat/completions"})
    ops.begin(request)
    watched = ops.watch(None, request, "openai", lambda: None)
    executed = ToolExecuted(ToolCall("c1", "python", "{}"), ToolResult("c1", "boom", "python", True))
    for ev in (executed, executed):
        watched.on_item(ev)
    ops.done(request, "openai", 200)
    got = scrape(ops)
    assert got['unsloth_min_requests_total{dialect="openai",route="/v1/chat/completions",status="200"}'] == 1
    assert got['unsloth_min_time_to_first_token_seconds_count{dialect="openai"}'] == 1  # the first only
    assert got['unsloth_min_server_tool_calls_total{outcome="error",tool="python"}'] == 2
    assert got['unsloth_min_request_duration_seconds_count{route="/v1/chat/completions"}'] == 1
