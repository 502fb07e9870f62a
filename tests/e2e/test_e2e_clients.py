"""The real clients, one non-interactive turn each, against the server on the embedded model
(`make e2e-clients`: it installs the pinned versions with npm into .cache/clients and points
UNSLOTH_MIN_CLIENTS there). Each must exit 0 and print an answer, with no 4xx/5xx in the access
log; Claude Code's second turn must write a file through its own Write tool (a client tool call
round trip: our answer names the tool, the client runs it and sends the result back).

Claude Code's first prompt is 12-30k tokens (2.1.332: 12.5k, 2.1.197: 20k): this is also the
long-prompt check (the default context covers it, past the 135M model's 8k training context).
Skipped, saying why, unless UNSLOTH_MIN_CLIENTS names a folder with the clients installed.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess

import pytest

from support.servers import KEY, start_server_process, stop_server_process

CLIENTS = os.environ.get("UNSLOTH_MIN_CLIENTS")
pytestmark = [pytest.mark.model,
              pytest.mark.skipif(not CLIENTS, reason="the real clients run with `make e2e-clients` "
                                 "(it installs them with npm)")]
TIMEOUT = 2400  # a 20-30k-token prefill on 2 cores takes minutes (and a watchdog retry)
CODEX_CONFIG = """model = "default"
model_provider = "local"
[model_providers.local]
name = "local"
base_url = "{base}/v1"
wire_api = "responses"
env_key = "UNSLOTH_MIN_KEY"
"""
OPENCODE_CONFIG = """{{"$schema": "https://opencode.ai/config.json",
 "provider": {{"local": {{"npm": "@ai-sdk/openai-compatible", "name": "unsloth_min",
   "options": {{"baseURL": "{base}/v1", "apiKey": "{{env:UNSLOTH_MIN_KEY}}"}},
   "models": {{"default": {{"name": "default"}}}}}}}}}}
"""


def binary(name: str) -> str:
    path = os.path.join(os.path.abspath(CLIENTS), "node_modules", ".bin", name)
    if not os.path.exists(path):
        pytest.fail(f"{path} is missing: run `make e2e-clients`")
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # make run's defaults (sampled; the embedded model's -n 1024: greedy, the 135M model loops
    # until the cap, and Claude Code takes a max_tokens stop for a failed turn), two slots:
    # opencode sends its title request beside the turn
    running = start_server_process(str(tmp_path_factory.mktemp("home")), "-np", "2")
    yield running
    assert stop_server_process(running) == 0


def run(cmd: list[str], home, cwd=None, **env) -> subprocess.CompletedProcess:
    cwd = cwd or home  # PWD too: opencode finds its project (and opencode.json) by $PWD
    env = dict(os.environ, HOME=str(home), PWD=str(cwd), UNSLOTH_MIN_KEY=KEY, NO_COLOR="1", **env)
    # its own process group: a timeout ends the client's helpers (node workers, tools) too
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    done = subprocess.CompletedProcess(cmd, proc.wait(), out, err)
    print(f"$ {' '.join(cmd)}\n-> {done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return done


def client_errors(server, since: int) -> list[str]:
    """Access-log lines past byte `since` (the test's start) with a 4xx/5xx status."""
    return [line for line in server.log_text(since).splitlines()
            if "unsloth_min.access" in line and re.search(r" [45]\d\d ", line)]


@pytest.fixture
def since(server) -> int:
    return server.log_size()


def claude(server, home, prompt: str, *flags: str) -> subprocess.CompletedProcess:
    # the README's configuration and nothing more: its stream watchdog (5 minutes without a
    # message event) meets a 20k-token prefill on two cores as a user's does (the held
    # message_start and a retry resuming the cached prefill see it through)
    return run([binary("claude"), "-p", prompt, "--model", "default", *flags], home,
               ANTHROPIC_BASE_URL=server.base_url, ANTHROPIC_API_KEY=KEY, IS_SANDBOX="1",
               DISABLE_TELEMETRY="1", CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1")


def test_claude_code_answers_a_turn(server, since, tmp_path):
    done = claude(server, tmp_path, "Say hello")
    prompts = [int(n) for n in re.findall(r"POST /v1/messages\S* 200 .* tokens=(\d+)\+",
                                          server.log_text(since))]
    assert prompts and min(prompts) > 8192, prompts  # past the model's training context
    assert done.returncode == 0 and done.stdout.strip()
    assert client_errors(server, since) == []


TRIES = 12  # the 135M model copies the call it is shown in one turn in three or four


def test_claude_code_writes_a_file_with_its_tool(server, since, tmp_path):
    """Its Write tool, called by the model, run by the client, its result sent back and answered.
    The 135M model does not choose a tool for "write hi to F": it is shown the call to copy (in
    the Hermes format our prompt describes; the grammar holds the arguments to Write's schema),
    which it does in one sampled turn in three or four: fresh turns until one writes the file."""
    for n in range(TRIES):
        target = tmp_path / f"hello{n}.txt"
        call = json.dumps({"name": "Write", "arguments": {"file_path": str(target), "content": "hi"}})
        done = claude(server, tmp_path, f"Reply with exactly this line: <tool_call>{call}</tool_call>",
                      "--tools", "Write", "--allowedTools", "Write", "--dangerously-skip-permissions")
        if target.exists():
            break
    assert target.exists(), f"the model did not call the Write tool in {TRIES} turns"
    assert target.read_text() == "hi" and done.returncode == 0
    assert client_errors(server, since) == []


def test_codex_answers_a_turn(server, since, tmp_path):
    home = tmp_path / "codex"
    home.mkdir()
    (home / "config.toml").write_text(CODEX_CONFIG.format(base=server.base_url))
    done = run([binary("codex"), "exec", "--skip-git-repo-check", "Say hello"], tmp_path,
               CODEX_HOME=str(home))
    assert done.returncode == 0 and done.stdout.strip()
    assert client_errors(server, since) == []


def test_opencode_answers_a_turn(server, since, tmp_path):
    work, home = tmp_path / "work", tmp_path / "home"  # (its config in the project, not in HOME)
    work.mkdir()
    home.mkdir()
    (work / "opencode.json").write_text(OPENCODE_CONFIG.format(base=server.base_url))
    done = run([binary("opencode"), "run", "--print-logs", "-m", "local/default", "Say hello"], home,
               cwd=work)
    assert done.returncode == 0 and done.stdout.strip()
    assert client_errors(server, since) == []
