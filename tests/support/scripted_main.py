"""`python tests/support/scripted_main.py FLAGS…`: the real `cli.serve` (flags, signals, shutdown, tools)
over a scripted engine, for process-lifetime tests of the server tools.

The engine reads the last user message as `python:CODE` or `bash:COMMAND` and calls that tool
in its first round; after a tool result it answers "done".
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from types import SimpleNamespace

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/

from support.scripted import ScriptedEngine  # noqa: E402
from unsloth_min import cli  # noqa: E402
from unsloth_min.auth import Authenticator  # noqa: E402
from unsloth_min.config import parse_config  # noqa: E402
from unsloth_min.core import Finish, ToolCallDelta, Usage  # noqa: E402

ARGUMENT = {"python": "code", "bash": "command"}


class ToolEngine(ScriptedEngine):
    model = SimpleNamespace(n_threads=1)  # what the banner prints

    async def generate(self, req):
        last = req.messages[-1]
        if last.role == "user" and ":" in last.text:
            name, _, arg = last.text.partition(":")
            self.enqueue([ToolCallDelta(0, "call_1", name, json.dumps({ARGUMENT[name]: arg})),
                          Finish("tool_calls", Usage(7, 1))])
        else:
            self.enqueue(["done"])
        async for ev in super().generate(req):
            yield ev

    def close(self) -> None:
        pass


if __name__ == "__main__":
    cfg = parse_config(sys.argv[1:] + ["--model", "scripted.gguf"])
    logging.basicConfig(level="INFO", format="%(levelname)s %(name)s: %(message)s")
    asyncio.run(cli.serve(cfg, Authenticator(None, cfg.api_key), make_engine=lambda opts: ToolEngine()))
