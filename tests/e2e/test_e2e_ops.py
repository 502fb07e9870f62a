"""Operating the real server (embedded SmolLM2-135M): a scrape that matches what a scripted run of
requests did (tokens, cache hits), /slots while a request runs (never its text), /props, a long
prompt's progress (log lines and `return_progress` events), and --sleep-idle (memory freed, the
next request answered)."""
from __future__ import annotations

import http.client
import json

import pytest
from prometheus_client.parser import text_string_to_metric_families

from support.servers import start_server_process, stop_server_process, wait_for
from support.soak import snapshot
from support.vocab import Vocab
from unsloth_min.engine import embedded_model_path

pytestmark = pytest.mark.model
CHAT = "/v1/chat/completions"
SOURCES = ("slot", "copy", "ram", "disk")
# about 330 tokens: long enough for the prompt cache to keep (it counts prefixes from 64 tokens)
STORY = " ".join(f"Line {i}: the lighthouse keeper counted {i} ships passing the harbour." for i in range(24))


def scrape(server) -> dict:
    status, _, data = server.request("GET", "/metrics")
    assert status == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(data.decode()) for s in family.samples}


def ask(server, content: str, path: str = CHAT, **extra) -> dict:
    body = {"model": "m", "max_tokens": 8, "temperature": 0,
            "messages": [{"role": "user", "content": content}], **extra}
    status, answer = server.json("POST", path, body)
    assert status == 200, answer
    return answer


def test_a_scrape_matches_what_the_requests_did(real_server):
    before = scrape(real_server)
    usages = [ask(real_server, STORY + f" Question {i}: how many ships?")["usage"] for i in range(3)]
    messages = ask(real_server, STORY + " Question 3: how many ships?", "/v1/messages")["usage"]
    after = scrape(real_server)
    grew = lambda name, *labels: after[(name, labels)] - before.get((name, labels), 0)  # noqa: E731
    cached = [u["prompt_tokens_details"]["cached_tokens"] for u in usages] + [messages["cache_read_input_tokens"]]
    computed = [u["prompt_tokens"] - c for u, c in zip(usages, cached)] + [messages["input_tokens"]]
    generated = [u["completion_tokens"] for u in usages] + [messages["output_tokens"]]
    assert cached[1] > 300 and cached[2] > 300 and cached[3] > 300  # the story, from its slot
    assert grew("llamacpp:prompt_tokens_total") == sum(computed)
    assert grew("llamacpp:tokens_predicted_total") == sum(generated)
    assert grew("llamacpp:n_decode_total") >= sum(generated)
    assert sum(grew("unsloth_min_prompt_cache_reused_tokens_total", ("source", s)) for s in SOURCES) == sum(cached)
    assert sum(grew("unsloth_min_prompt_cache_hits_total", ("source", s)) for s in SOURCES) == sum(
        1 for c in cached if c)
    chat = (("dialect", "openai"), ("route", CHAT), ("status", "200"))
    assert grew("unsloth_min_requests_total", *chat) == 3
    assert grew("unsloth_min_time_to_first_token_seconds_count", ("dialect", "openai")) == 3
    assert grew("unsloth_min_time_to_first_token_seconds_count", ("dialect", "anthropic")) == 1
    assert after[("llamacpp:requests_processing", ())] == 0 and after[("llamacpp:kv_cache_tokens", ())] > 300


def test_slots_show_the_running_request_but_never_its_text(real_server):
    marker = "quokka-zebra-7731"
    conn = http.client.HTTPConnection(real_server.host, real_server.port, timeout=300)
    conn.request("POST", CHAT, json.dumps({
        "model": "m", "stream": True, "max_tokens": 2000, "temperature": 0,
        "logit_bias": Vocab(embedded_model_path()).endless(),  # still running when /slots answers
        "messages": [{"role": "user", "content": f"Write a poem about the {marker}."}]}),
        {"Authorization": f"Bearer {real_server.key}", "Content-Type": "application/json"})
    resp = conn.getresponse()
    first = json.loads(resp.readline().decode()[len("data: "):])  # the role: sent before the prompt is in
    for line in resp:
        if line.startswith(b"data: ") and json.loads(line[6:])["choices"][0]["delta"].get("content"):
            break  # the first text: the prompt is in, it generates
    status, _, data = real_server.request("GET", "/slots")
    conn.close()
    assert status == 200 and marker not in data.decode()
    busy = [s for s in json.loads(data) if s["state"] == "busy"]
    assert len(busy) == 1 and busy[0]["request_id"] == first["id"] and busy[0]["dialect"] == "openai"
    assert busy[0]["n_prompt"] > 10 and busy[0]["n_tokens"] >= busy[0]["n_prompt"]
    assert set(busy[0]) >= {"id", "n_cached", "n_generated", "tokens_per_second", "phase"}
    status, props = real_server.json("GET", "/props")
    assert status == 200 and props["slots"] == len(json.loads(data)) and props["status"] == "ok"
    assert "<|im_start|>" in props["chat_template"] and props["n_ctx"] > 0
    assert props["build"]["llama_cpp_python"] and props["defaults"]["temperature"] == 0.8


def test_a_long_prompt_reports_its_progress(real_server):
    since = real_server.log_size()
    prompt = " ".join(f"Item {i} is a {['red', 'green', 'blue'][i % 3]} box." for i in range(260))
    status, _, data = real_server.request("POST", CHAT, {
        "model": "m", "stream": True, "max_tokens": 4, "return_progress": True,
        "stream_options": {"include_usage": True}, "messages": [{"role": "user", "content": prompt}]})
    chunks = [json.loads(line[6:]) for line in data.decode().splitlines()
              if line.startswith("data: {")]
    progress = [c["prompt_progress"] for c in chunks if "prompt_progress" in c]
    total = chunks[-1]["usage"]["prompt_tokens"]
    assert status == 200 and total > 2048 and len(progress) >= 4
    assert [p["processed"] for p in progress] == sorted({p["processed"] for p in progress})
    assert progress[-1]["processed"] == total and all(p["total"] == total for p in progress)
    assert all(p["processed"] - progress[0]["cache"] <= 512 * (i + 1) for i, p in enumerate(progress))
    lines = [line for line in real_server.log_text(since).splitlines() if f"/{total} tokens" in line]
    chunks = [line for line in lines if "computing" not in line]  # (the rest: every 3 s within one)
    assert len(chunks) == len(progress) and all("tok/s, ETA" in line for line in lines)


def test_sleep_idle_frees_memory_and_the_next_request_is_answered(tmp_path):
    server = start_server_process(str(tmp_path), "--sleep-idle", "2", "--max-tokens", "8")
    try:
        ask(server, STORY)
        loaded = snapshot(server.server_pid).rss_kb
        assert wait_for(lambda: server.json("GET", "/health", key=False)[1]["status"] == "sleeping", 30)
        # the weights (~100 MiB file) and the KV cells at least (the unload ends after /health says so)
        assert wait_for(lambda: snapshot(server.server_pid).rss_kb < loaded - 100 * 1024, 30)
        asleep = snapshot(server.server_pid).rss_kb
        answer = ask(server, STORY)  # during the wake-up: it waits for the load, then is answered
        woken = snapshot(server.server_pid).rss_kb
        print(f"\n--sleep-idle 2: RSS {loaded // 1024} MiB loaded, {asleep // 1024} MiB asleep, "
              f"{woken // 1024} MiB woken")
        assert answer["choices"][0]["message"]["content"]
        assert server.json("GET", "/health", key=False)[1]["status"] == "ok"
    finally:
        assert stop_server_process(server) == 0
    log = server.log_text()
    assert "the model is unloaded" in log and "the model is loaded again" in log
    assert "Traceback" not in log
