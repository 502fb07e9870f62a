"""How often a long prompt reports its progress: the gaps between `prompt_progress` events (and
the server's log lines) while a ~12k-token prompt is computed on the embedded model (or --model).

Usage:
  .venv/bin/python bench/progress.py [--lines 600] [--model PATH] [--threads N]

Starts our server (its defaults, a fresh home: nothing cached), sends one streamed Chat request with
`return_progress: true`, and prints each progress event's time, tokens done, the gap since the
previous one and the chunk's tokens/s; then the largest gap between events and between the log's
progress lines (one per chunk, and one every 3 s while a chunk computes). Nothing is asserted.
"""
from __future__ import annotations

import argparse
import datetime
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=600, help="prompt lines (~20 tokens each)")
    ap.add_argument("--model", default=None)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    port, home = free_port(), tempfile.mkdtemp()
    cmd = [sys.executable, "-m", "unsloth_min", "-p", str(port), "--api-key", KEY]
    cmd += (["--model", args.model] if args.model else []) + (["-t", str(args.threads)] if args.threads else [])
    server = Server(cmd, port, home)
    prompt = " ".join(f"Entry {i}: parcel {i * 37 % 1000} went from depot {i % 17} to town {i % 23}."
                      for i in range(args.lines)) + " Which depot sent the most parcels?"
    body = json.dumps({"model": "m", "stream": True, "max_tokens": 1, "return_progress": True,
                       "messages": [{"role": "user", "content": prompt}]})
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=3600)
        t0 = time.perf_counter()
        conn.request("POST", "/v1/chat/completions", body=body,
                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"})
        events, last = [], t0
        for line in conn.getresponse():
            if line.startswith(b"data: {") and b"prompt_progress" in line:
                p = json.loads(line[6:])["prompt_progress"]
                now = time.perf_counter()
                done = p["processed"] - (events[-1][1] if events else p["cache"])
                events.append((now - t0, p["processed"], now - last, done / max(now - last, 1e-9)))
                last = now
        total = p["total"]
    finally:
        server.proc.terminate()
        server.proc.wait(30)
    for at, processed, gap, speed in events:
        print(f"{at:7.1f} s  {processed:6d}/{total}  gap {gap:5.1f} s  {speed:6.0f} tok/s")
    stamps = [datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
              for line in open(server.log, errors="replace") if f"/{total} tokens" in line]
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    print(f"{total} tokens in {events[-1][0]:.1f} s: {len(events)} progress events (largest gap "
          f"{max(e[2] for e in events):.1f} s), {len(stamps)} log lines (largest gap "
          f"{max(gaps, default=0):.1f} s)")


if __name__ == "__main__":
    main()
