"""What --sleep-idle frees and what a wake-up costs, on the embedded model (or --model).

Usage:
  .venv/bin/python bench/sleep.py [--idle 5] [--model PATH] [--prompt-lines 90]

Starts our server with `--sleep-idle IDLE` (its defaults otherwise, a fresh home), then:
  1. a short request (warm-up) and a long one (~1.5k tokens: computed cold, and checkpointed to
     the disk prompt cache); the short one again, warm: its time is an answer without a wake-up
  2. the server process's RSS, loaded; it waits for /health to say `sleeping` and reads it again
  3. the short request: wake-up + answer; the load's own seconds from the server's log
  4. the long prompt again: its time to the first token after the wake-up (restored from disk)
Prints each figure; nothing is asserted.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from bench import KEY, Server, free_port  # noqa: E402


def server_rss_mib(server: Server) -> float:
    """RSS of the server process (the supervisor's child)."""
    with open(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children") as f:
        child = int(f.read().split()[0])
    with open(f"/proc/{child}/status") as f:
        kib = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return kib / 1024


def health(server: Server) -> str:
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    conn.request("GET", "/health")
    return json.loads(conn.getresponse().read())["status"]


def timed(server: Server, content: str, max_tokens: int = 1) -> tuple[float, int]:
    """(seconds to the first token, cached prompt tokens)."""
    out = server.stream([{"role": "user", "content": content}], max_tokens)
    first = out["stamps"][0] if out["stamps"] else time.perf_counter()
    return first - out["t0"], out["usage"].get("prompt_tokens_details", {}).get("cached_tokens", 0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--idle", type=float, default=5.0)
    ap.add_argument("--model", default=None)
    ap.add_argument("--prompt-lines", type=int, default=90)
    args = ap.parse_args()
    port, home = free_port(), tempfile.mkdtemp()
    cmd = [sys.executable, "-m", "unsloth_min", "-p", str(port), "--api-key", KEY,
           "--sleep-idle", str(args.idle)] + (["--model", args.model] if args.model else [])
    server = Server(cmd, port, home)
    long = " ".join(f"Row {i}: the ferry from pier {i} leaves at {i % 12 + 1} o'clock."
                    for i in range(args.prompt_lines)) + " Which ferry leaves first?"
    try:
        timed(server, "Say hi.")
        cold, _ = timed(server, long)
        warm_short, _ = timed(server, "Say hi.")
        loaded = server_rss_mib(server)
        t = time.perf_counter()
        while health(server) != "sleeping":
            time.sleep(0.1)
        noticed = time.perf_counter() - t
        time.sleep(1.0)  # the unload finishes after /health says so
        asleep = server_rss_mib(server)
        woke_short, _ = timed(server, "Say hi.")
        woken = server_rss_mib(server)
        load_s = re.findall(r"loaded again in ([\d.]+) s", open(server.log).read())
        time.sleep(0.2)
        restored, cached = timed(server, long)
    finally:
        server.proc.terminate()
        server.proc.wait(30)
    print(f"sleep after {args.idle:g} s idle (seen {noticed:.1f} s after the last request)")
    print(f"RSS: {loaded:.0f} MiB loaded -> {asleep:.0f} MiB asleep -> {woken:.0f} MiB woken")
    print(f"short request: {warm_short:.2f} s warm, {woke_short:.2f} s with the wake-up "
          f"(the load itself: {load_s[-1] if load_s else '?'} s)")
    print(f"long prompt: {cold:.2f} s cold, {restored:.2f} s after the wake-up ({cached} cached tokens)")


if __name__ == "__main__":
    main()
