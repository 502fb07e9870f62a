"""Throughput and latency of unsloth_min, side by side with llama-cpp-python and llama-server.

Usage:
  .venv/bin/python bench/bench.py [--model PATH] [--threads N] [--parallel 4] [--tokens 128]
                                  [--runs 3] [--llama-server PATH] [--skip-inprocess]

`--llama-server` takes a binary built from the llama.cpp source inside the llama-cpp-python sdist
(vendor/llama.cpp; see bench/README.md); it runs with the same model, threads, context and slots.
For each server this prints: single-stream decode tok/s, time to first token (TTFT) for a short
and a ~2k-token prompt, TTFT of a follow-up turn of that 2k conversation (the prefix cache at
work), aggregate decode tok/s at 1, 2, 4 and 8 concurrent streams, and peak RSS. The in-process
reference is llama-cpp-python's own streaming `create_chat_completion` with the same settings.

Method: greedy sampling, a fixed token budget, and a unique first line per request so no run
profits from an earlier one's cache (except the follow-up turn, whose point that is). Decode
tok/s counts tokens after the first over the time after the first, so prompt reading is not in
it. Each single-stream figure is the median of --runs runs after a warm-up. Nothing is asserted.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from unsloth_min.engine import embedded_model_path  # noqa: E402
from unsloth_min.engine.bufts import choose  # noqa: E402
from unsloth_min.engine.model import usable_cores  # noqa: E402

KEY = "sk-unsloth-" + "b" * 32
STORY = "Write a long, detailed story about a lighthouse keeper who finds a message in a bottle."
FACTS = " ".join(f"Fact {i}: the lighthouse on island {i} was painted in the year {1800 + i}."
                 for i in range(120))  # about 2k tokens with SmolLM2's tokenizer


class Server:
    """A server process on a free port with helpers for streamed chat requests."""

    def __init__(self, cmd: list[str], port: int, home: str | None = None):
        self.port = port
        home = home or tempfile.mkdtemp()
        env = dict(os.environ, UNSLOTH_MIN_HOME=home)
        self.log = os.path.join(home, "server.log")
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + 180
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{cmd[0]} exited early")
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                c.request("GET", "/health")
                if c.getresponse().status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.25)
        raise RuntimeError("server not healthy")

    def stream(self, messages: list[dict], max_tokens: int) -> dict:
        body = json.dumps({"model": "m", "stream": True, "max_tokens": max_tokens, "temperature": 0,
                           "messages": messages, "stream_options": {"include_usage": True}})
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
        t0 = time.perf_counter()
        conn.request("POST", "/v1/chat/completions", body=body,
                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"})
        resp = conn.getresponse()
        stamps, text, usage, finish = [], [], {}, None
        for line in resp:
            if not line.startswith(b"data: {"):
                continue
            chunk = json.loads(line[6:])
            for choice in chunk.get("choices") or []:
                piece = (choice.get("delta") or {}).get("content")
                if piece:
                    stamps.append(time.perf_counter())
                    text.append(piece)
                finish = choice.get("finish_reason") or finish
            usage = chunk.get("usage") or usage
        conn.close()
        return {"t0": t0, "stamps": stamps, "text": "".join(text), "usage": usage, "finish": finish}

    def main_thread_cpu_s(self) -> float:
        """CPU seconds of the serving process's main thread (ours: the event loop of the
        supervisor's child, which parses requests and frames every streamed token; the model
        runs on other threads)."""
        pid = self._family()[-1]
        with open(f"/proc/{pid}/task/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def peak_rss_mib(self) -> float:
        """The peak RSS of the server: ours is the supervisor's child, so the largest of the family."""
        return max(_vm_hwm_mib(pid) for pid in self._family())

    def _family(self) -> list[int]:
        """The started process, then its children (ours: the supervisor, then its server)."""
        pids = [self.proc.pid]
        try:
            with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as f:
                pids += [int(p) for p in f.read().split()]
        except OSError:
            pass
        return pids

    def close(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _vm_hwm_mib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ttft(r: dict) -> float:
    return r["stamps"][0] - r["t0"]


def decode_tps(r: dict) -> float:
    s = r["stamps"]
    return (len(s) - 1) / (s[-1] - s[0]) if len(s) > 1 else 0.0


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


class InProcess:
    """llama-cpp-python's own streaming chat completion in this process: the single-stream reference."""

    def __init__(self, model: str, args):
        import llama_cpp
        placement, default = choose("auto", model, False), llama_cpp.llama_cpp.llama_model_default_params

        def params():  # the weight placement ours chooses (AMX machines crash without it)
            mp = default()
            placement.apply(mp)
            return mp
        llama_cpp.llama_cpp.llama_model_default_params = params
        self.llm = llama_cpp.Llama(model, n_ctx=args.ctx, n_threads=args.threads,
                                   n_threads_batch=args.threads, n_batch=512, verbose=False)

    def stream(self, messages: list[dict], max_tokens: int) -> dict:
        t0, stamps = time.perf_counter(), []
        for chunk in self.llm.create_chat_completion(messages, stream=True, temperature=0,
                                                     max_tokens=max_tokens):
            if chunk["choices"][0]["delta"].get("content"):
                stamps.append(time.perf_counter())
        return {"t0": t0, "stamps": stamps}

    def close(self) -> None:
        self.llm.close()


def rounds(contenders: dict, runs: int, one) -> dict[str, list]:
    """`one(name, target, i)` for every contender in turn, `runs` rounds: drift on a shared host
    then hits every contender alike instead of whichever ran last."""
    out = {name: [] for name in contenders}
    for i in range(runs):
        for name, target in contenders.items():
            out[name].append(one(name, target, i))
    return out


def measure(contenders: dict, servers: dict, args) -> tuple[dict, dict]:
    """Every metric for every contender (the in-process one: single-stream only), and for each
    reference the median over rounds of our single-stream decode divided by its own that round."""
    res = {name: {} for name in contenders}
    for name, target in contenders.items():
        target.stream(user(f"[{name} warm] {STORY}"), 16)
    loop_cpu = servers["unsloth_min"].main_thread_cpu_s()
    single = rounds(contenders, args.runs,
                    lambda name, t, i: t.stream(user(f"[{name} run {i}] {STORY}"), args.tokens))
    loop_cpu = servers["unsloth_min"].main_thread_cpu_s() - loop_cpu
    res["unsloth_min"]["event_loop_cpu_ms_per_token"] = 1000 * loop_cpu / sum(
        len(r["stamps"]) for r in single["unsloth_min"])
    for name, runs in single.items():
        res[name]["decode_tps"] = statistics.median(decode_tps(r) for r in runs)
        res[name]["tokens"] = min(len(r["stamps"]) for r in runs)
        res[name]["ttft_short_ms"] = 1000 * statistics.median(ttft(r) for r in runs)
        res[name]["decode_tps_runs"] = [round(decode_tps(r), 1) for r in runs]
    ratios = {name: statistics.median(decode_tps(a) / decode_tps(b)
                                      for a, b in zip(single["unsloth_min"], single[name]))
              for name in contenders if name != "unsloth_min"}
    if args.decode_only:
        return res, ratios

    def turns(name, server, i):
        first = server.stream(user(f"[{name} long {i}] {FACTS}"), 32)
        convo = user(f"[{name} long {i}] {FACTS}") + [
            {"role": "assistant", "content": first["text"]},
            {"role": "user", "content": "Which island's lighthouse is the oldest?"}]
        return first, server.stream(convo, 8)

    for name, pairs in rounds(servers, args.runs, turns).items():
        r = res[name]
        r["prompt_tokens_long"] = pairs[0][0]["usage"].get("prompt_tokens")
        r["ttft_2k_ms"] = 1000 * statistics.median(ttft(first) for first, _ in pairs)
        r["ttft_followup_ms"] = 1000 * statistics.median(ttft(follow) for _, follow in pairs)
        r["followup_cached_tokens"] = (pairs[0][1]["usage"].get("prompt_tokens_details") or {}).get(
            "cached_tokens")
    for n in (1, 2, 4, 8):
        for name, runs in rounds(servers, args.runs,
                                 lambda name, s, i: concurrent(s, n, args.tokens, f"{name} {i}")).items():
            res[name][f"aggregate_tps_{n}"] = statistics.median(tps for tps, _ in runs)
            res[name][f"complete_{n}"] = all(done for _, done in runs)
    for name, server in servers.items():
        res[name]["peak_rss_mib"] = server.peak_rss_mib()
    return res, ratios


def concurrent(server: Server, n: int, max_tokens: int, tag: str) -> tuple[float, bool]:
    """Aggregate generated tok/s with n streams at once, and whether every stream completed."""
    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(n) as pool:
        results = list(pool.map(lambda i: server.stream(user(f"[{tag} c{n}-{i}] {STORY}"), max_tokens),
                                range(n)))
    wall = time.perf_counter() - t0
    tokens = sum(len(r["stamps"]) for r in results)
    return tokens / wall, all(r["finish"] in ("stop", "length") for r in results)


ROWS = [("decode_tps", "single-stream decode tok/s", "{:.1f}"), ("ttft_short_ms", "TTFT short prompt ms", "{:.0f}"),
        ("ttft_2k_ms", "TTFT ~2k-token prompt ms", "{:.0f}"), ("ttft_followup_ms", "TTFT follow-up turn ms", "{:.0f}"),
        ("followup_cached_tokens", "follow-up cached tokens", "{}"),
        ("aggregate_tps_1", "aggregate tok/s, 1 stream", "{:.1f}"), ("aggregate_tps_2", "aggregate tok/s, 2 streams", "{:.1f}"),
        ("aggregate_tps_4", "aggregate tok/s, 4 streams", "{:.1f}"), ("aggregate_tps_8", "aggregate tok/s, 8 streams", "{:.1f}"),
        ("peak_rss_mib", "peak RSS MiB", "{:.0f}"),
        ("event_loop_cpu_ms_per_token", "event-loop thread CPU ms per streamed token", "{:.2f}")]


def table(results: dict[str, dict]) -> str:
    names = list(results)
    lines = ["| metric | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for key, label, fmt in ROWS:
        cells = [fmt.format(results[n][key]) if results[n].get(key) is not None else "–" for n in names]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--threads", type=int, default=usable_cores())
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--ctx", type=int, default=8192, help="tokens per sequence")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--llama-server", default=None)
    ap.add_argument("--skip-inprocess", action="store_true")
    ap.add_argument("--decode-only", action="store_true", help="single-stream decode and TTFT only")
    ap.add_argument("--ours", nargs=argparse.REMAINDER, default=[],
                    help="the rest of the line goes to our server (e.g. --ours --cache-ram 0)")
    args = ap.parse_args()
    model = args.model or embedded_model_path()
    threads = ["-t", str(args.threads), "-np", str(args.parallel)]
    commands = {"unsloth_min": lambda p: [sys.executable, "-m", "unsloth_min", "--model", model, "-p", str(p),
                                          "--api-key", KEY, "--log-level", "info", "-c", str(args.ctx),
                                          *threads, *args.ours]}
    if args.llama_server:  # its -c is the total, split into per-slot streams: the same KV layout as ours
        # on AMX machines its extra buffers crash too: --no-repack turns them all off
        repack = [] if choose("auto", model, False).mode == "on" else ["--no-repack"]
        commands["llama-server"] = lambda p: [args.llama_server, "-m", model, "--port", str(p),
                                              "--api-key", KEY, "--jinja", "--no-kv-unified",
                                              "-c", str(args.ctx * args.parallel), *threads, *repack]
    print(f"model {os.path.basename(model)}, {args.threads} threads, ctx {args.ctx}, {args.parallel} slots, "
          f"{args.tokens} tokens per stream, median of {args.runs}", flush=True)
    targets = {}
    try:  # all up at once, idle but for the one measured: the rounds interleave them
        for name, cmd in commands.items():
            port = free_port()
            targets[name] = Server(cmd(port), port)
        servers = dict(targets)
        if not args.skip_inprocess:
            targets["llama-cpp-python in-process"] = InProcess(model, args)
        results, ratios = measure(targets, servers, args)
    finally:
        for target in targets.values():
            target.close()
    if "unsloth_min" in targets:  # the worker's own account, logged at shutdown
        with open(targets["unsloth_min"].log, errors="replace") as f:
            engine = [line.split("engine: ", 1)[1].strip() for line in f if "engine: " in line]
        print("unsloth_min worker, whole run:", engine[-1] if engine else "(no timing line)")
    for name, r in results.items():
        print(name, json.dumps(r), flush=True)
    print(table(results))
    ours = results["unsloth_min"]
    for name, ratio in ratios.items():
        print(f"unsloth_min / {name} single-stream decode: {ratio:.3f}x (median of per-round ratios)")
    if args.decode_only:
        return
    print(f"unsloth_min 4 streams / 1 stream: {ours['aggregate_tps_4'] / ours['aggregate_tps_1']:.2f}x; "
          f"follow-up TTFT / 2k TTFT: {ours['ttft_followup_ms'] / ours['ttft_2k_ms']:.3f}")
    os.makedirs(os.path.join(HERE, "out"), exist_ok=True)
    with open(os.path.join(HERE, "out", "bench.json"), "w") as f:
        json.dump({"args": vars(args), "results": results, "decode_ratios": ratios}, f, indent=2)


if __name__ == "__main__":
    main()
