"""An agent's sessions against the prompt cache: ours and llama-server's, in one run.

Usage:
  .venv/bin/python bench/agent.py [--llama-server PATH] [--threads N]
                                  [--fixture tests/fixtures/clients/claude-code-2.1.332-2.json]

Replays a recorded Claude Code request (its system text and tools: ~12.5k tokens with the embedded
model's tokenizer) as a coding agent's sessions over /v1/messages, and prints each step's time to
the first token for each server (a request for one token, start to end: the prompt's work, whatever
the model would write first; the next turn appends that token as the answer, as an agent would):
  A1 session A, turn 1, cold          A2 its turn 2 (its answer and a new question appended)
  B1 a new session (another billing line and question: the client prompt is the same)
  X0-X3 four other ~2k-token conversations (each takes a slot: with 4 slots, A's is gone)
  A3 session A, turn 3                R: both servers restarted (same home / cache folders)
  C1 a new session after the restart
Our server runs with its defaults (4 slots, the RAM and disk prompt caches); llama-server with
`-np 4 --no-kv-unified -c 4x32k` (our layout) and its own defaults (`--cache-ram` 8 GiB). The
steps alternate between the servers, which are up at once. Also printed: cached tokens per step,
our RAM cache and disk folder at the end, and both servers' peak RSS. Nothing is asserted.
"""
from __future__ import annotations

import argparse
import copy
import http.client
import json
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from bench import KEY, Server, free_port  # noqa: E402
from unsloth_min.engine import embedded_model_path  # noqa: E402
from unsloth_min.engine.model import usable_cores  # noqa: E402

FIXTURE = os.path.join(os.path.dirname(HERE), "tests", "fixtures", "clients", "claude-code-2.1.332-2.json")
CTX = 32768


def session(fixture: dict, tag: str) -> dict:
    """The recorded first request of a new session: its own billing line and question."""
    body = copy.deepcopy(fixture["body"])
    body["system"][0]["text"] = body["system"][0]["text"].replace(".1c9;", f".{tag};")
    body["messages"][0]["content"][-1]["text"] = f"(session {tag}) Say hello."
    return body


def other(i: int) -> dict:
    facts = " ".join(f"Note {i}.{j}: the tide table for harbour {j} lists {j * 7 % 24}:00 as high "
                     f"water." for j in range(110))  # about 2k tokens
    return {"model": "m", "max_tokens": 16, "messages": [{"role": "user", "content": facts + "\nSummarize."}]}


def step(port: int, body: dict) -> tuple[float, int, str]:
    """(seconds to the first token, cached prompt tokens, the answer) of a one-token request."""
    body = dict(body, stream=False, max_tokens=1, temperature=0)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=3600)
    t0 = time.perf_counter()
    conn.request("POST", "/v1/messages", body=json.dumps(body),
                 headers={"Content-Type": "application/json", "x-api-key": KEY,
                          "anthropic-version": "2023-06-01"})
    resp = conn.getresponse()
    data = resp.read()
    seconds = time.perf_counter() - t0
    conn.close()
    if resp.status != 200:
        raise RuntimeError(f"{resp.status}: {data[:300]!r}")
    reply = json.loads(data)
    text = "".join(b.get("text", "") for b in reply["content"] if b.get("type") == "text")
    return seconds, reply["usage"].get("cache_read_input_tokens") or 0, text


def turn(body: dict, answer: str, question: str) -> dict:
    body = copy.deepcopy(body)
    body["messages"] += [{"role": "assistant", "content": answer or "Hello"},
                         {"role": "user", "content": question}]
    return body


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--llama-server", default=None)
    ap.add_argument("--threads", type=int, default=usable_cores())
    ap.add_argument("--fixture", default=FIXTURE)
    args = ap.parse_args()
    model = embedded_model_path()
    with open(args.fixture) as f:
        fixture = json.load(f)
    home = tempfile.mkdtemp()
    ports = {"unsloth_min": free_port(), "llama-server": free_port()}
    commands = {"unsloth_min": [sys.executable, "-m", "unsloth_min", "--model", model, "-p",
                                str(ports["unsloth_min"]), "--api-key", KEY, "-t", str(args.threads)]}
    if args.llama_server:
        commands["llama-server"] = [args.llama_server, "-m", model, "--port", str(ports["llama-server"]),
                                    "-t", str(args.threads), "-np", "4", "-c", str(4 * CTX),
                                    "--no-kv-unified", "--api-key", KEY]
    servers = {name: Server(cmd, ports[name], home) for name, cmd in commands.items()}
    rows: list[tuple[str, dict]] = []

    def run(label: str, bodies: dict) -> dict:
        """One step: `bodies` is a request, or a request per server (their own earlier answers)."""
        row = {}
        for name in servers:
            row[name] = ttft, cached, _ = step(ports[name], bodies.get(name) or bodies)
            print(f"{label:4} {name:12} TTFT {ttft:8.2f} s  cached {cached:6}", flush=True)
        rows.append((label, row))
        return row

    a1 = session(fixture, "a01")
    answers = run("A1", a1)
    a2 = {n: turn(a1, answers[n][2], "Now say goodbye.") for n in servers}
    answers = run("A2", a2)
    run("B1", session(fixture, "b02"))
    for i in range(4):
        run(f"X{i}", other(i))
    run("A3", {n: turn(a2[n], answers[n][2], "And once more, briefly.") for n in servers})
    rss = {n: s.peak_rss_mib() for n, s in servers.items()}
    for s in servers.values():
        s.close()
    servers = {name: Server(cmd, ports[name], home) for name, cmd in commands.items()}
    run("C1", session(fixture, "c03"))
    for s in servers.values():
        s.close()
    disk = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in
               os.walk(os.path.join(home, "prompt-cache")) for f in fs if f.endswith(".kv"))
    print("\n| step | " + " | ".join(f"{n} TTFT (cached)" for n in commands) + " |")
    print("|---|" + "---|" * len(commands))
    for label, row in rows:
        print(f"| {label} | " + " | ".join(f"{row[n][0]:.2f} s ({row[n][1]})" for n in commands) + " |")
    print(f"\npeak RSS before the restart: {', '.join(f'{n} {v:.0f} MiB' for n, v in rss.items())}; "
          f"our disk cache: {disk / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
