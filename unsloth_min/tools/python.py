"""python: one Jupyter kernel (ipykernel) per session, driven through jupyter_client's async API.

Strategy: `Kernels` maps a session key to a live `Kernel` (an AsyncKernelManager and its client).
A call sends `execute_request` and reads the iopub messages of that request until the kernel goes
idle, with a wall-clock deadline: past it the kernel is interrupted (SIGINT → KeyboardInterrupt,
variables kept); if it does not go idle within a grace period it is shut down and the next call of
the session starts a fresh one. While waiting, a kernel whose process died (`os._exit`, a segfault,
the OOM killer) is noticed within `POLL_S` and reported; the next call starts a fresh kernel.
Output (stdout/stderr/results/tracebacks) is capped with a visible marker; images are named, not
inlined. Idle kernels are reaped, live ones capped (least recently used idle one evicted), all shut
down by `close()`. Each kernel starts in its session folder with a scrubbed environment, in its own
process group (jupyter_client), and dies with the server even on SIGKILL (ipykernel's parent poller).

Does not: sandbox the kernel beyond that (it runs as the server's user), or pass stdin (input()
raises StdinNotImplementedError), or keep state once a session's kernel is gone.
"""
from __future__ import annotations

import asyncio
import logging
import queue
import re
import sys
import time
from pathlib import Path

from jupyter_client import AsyncKernelManager
from jupyter_client.kernelspec import KernelSpec

from ..core import new_id
from .common import Capped, Outcome, Session, ToolOptions, tool_env

log = logging.getLogger("unsloth_min.tools.python")

KERNEL_START_S = 60.0    # a cold ipykernel start on a busy 2-core machine takes a few seconds
INTERRUPT_GRACE_S = 3.0  # after SIGINT, how long the kernel gets to report KeyboardInterrupt
POLL_S = 0.25            # how often a silent kernel is checked for being alive
REAP_EVERY_S = 60.0
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
KERNEL_ARGS = ["--HistoryManager.enabled=False",  # no sqlite history file per kernel
               "--InteractiveShell.xmode=Plain", "--InteractiveShell.colors=NoColor"]
DIED = "[the Python kernel died (its process exited); the next call starts a fresh kernel: " \
       "all variables and imports are lost]"
LOST = "[note: this session's earlier kernel was shut down while idle; its variables are gone]\n"


class Output:
    """One call's iopub messages folded into capped text for the model."""

    def __init__(self, limit: int):
        self.text, self.error = Capped(limit), False

    def add(self, msg: dict) -> None:
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream":
            self.text.feed(content.get("text", ""))
        elif kind in ("execute_result", "display_data"):
            data = content.get("data", {})
            images = [m for m in data if m.startswith("image/")]
            if images:
                self.text.feed(f"[{', '.join(images)} output not shown to the model]\n")
            if "text/plain" in data:
                self.text.feed(data["text/plain"] + "\n")
        elif kind == "error":
            self.error = True
            lines = content.get("traceback") or [f"{content.get('ename')}: {content.get('evalue')}"]
            self.text.feed(ANSI.sub("", "\n".join(lines)) + "\n")

    def outcome(self, note: str = "") -> Outcome:
        text = self.text.text().rstrip("\n")
        text = "\n".join(t for t in (text, note) if t) or "(no output)"
        return Outcome(text, self.error or bool(note))


class Kernel:
    def __init__(self, km: AsyncKernelManager, kc):
        self.km, self.kc = km, kc
        self.lock = asyncio.Lock()  # one execution at a time: a session's calls queue up
        self.last_used = time.monotonic()

    @classmethod
    async def start(cls, folder: Path, runtime: Path) -> "Kernel":
        runtime.mkdir(mode=0o700, parents=True, exist_ok=True)
        name = str(runtime / f"kernel-{new_id('', 8)}")
        # IPC sockets in a 0700 folder: no TCP port for other local users to knock on
        km = AsyncKernelManager(connection_file=name + ".json", transport="ipc", ip=name)
        # our own interpreter, not whatever "python3" kernelspec the machine has installed
        km._kernel_spec = KernelSpec(argv=[sys.executable, "-m", "ipykernel_launcher", "-f",
                                           "{connection_file}", *KERNEL_ARGS],
                                     display_name="unsloth_min", language="python")
        await km.start_kernel(cwd=str(folder), env=tool_env(folder))
        kc = km.client()
        kc.start_channels()
        kernel = cls(km, kc)
        try:
            await kc.wait_for_ready(timeout=KERNEL_START_S)
        except BaseException:
            await kernel.stop()
            raise
        return kernel

    async def stop(self) -> None:
        self.kc.stop_channels()
        try:
            await self.km.shutdown_kernel(now=True)  # SIGKILL to the kernel's process group
        except Exception:
            log.exception("kernel shutdown failed")

    async def execute(self, code: str, timeout: float, limit: int) -> tuple[Outcome, bool]:
        """(what the model reads, whether this kernel may be used again)."""
        out = Output(limit)
        msg_id = self.kc.execute(code, allow_stdin=False, stop_on_error=True)
        status = await self._collect(msg_id, out, timeout)
        if status == "idle":
            await self._drain_reply(msg_id)
            return out.outcome(), True
        if status == "dead":
            return out.outcome(DIED), False
        await self.km.interrupt_kernel()
        if await self._collect(msg_id, out, INTERRUPT_GRACE_S) == "idle":
            await self._drain_reply(msg_id)
            return out.outcome(f"[interrupted: the call ran past the {timeout:g} s limit; "
                               "the kernel and its variables are kept]"), True
        return out.outcome(f"[timed out after {timeout:g} s and did not stop when interrupted: "
                           "the kernel was shut down, all variables and imports are lost]"), False

    async def _collect(self, msg_id: str, out: Output, seconds: float) -> str:
        """Read iopub until this request's idle status: "idle", "dead" or "timeout"."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while (left := deadline - loop.time()) > 0:
            try:
                msg = await self.kc.get_iopub_msg(timeout=min(POLL_S, left))
            except queue.Empty:
                if not await self.km.is_alive():
                    return "dead"
                continue
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue  # a status or output of an earlier, interrupted request
            if msg["msg_type"] == "status":
                if msg["content"].get("execution_state") == "idle":
                    return "idle"
            else:
                out.add(msg)
        return "timeout"

    async def _drain_reply(self, msg_id: str) -> None:
        """Take this request's shell reply off the channel, so replies never pile up."""
        try:
            while (await self.kc.get_shell_msg(timeout=2.0))["parent_header"].get("msg_id") != msg_id:
                pass
        except queue.Empty:
            pass


class Kernels:
    def __init__(self, options: ToolOptions):
        self.options = options
        self.live: dict[str, Kernel] = {}
        self.lost: set[str] = set()  # sessions whose kernel was reaped or evicted while idle
        self.runtime = Path(options.home) / "kernels"
        self.guard = asyncio.Lock()  # kernel starts, evictions and close() one at a time
        self.reaper: asyncio.Task | None = None
        self.closed = False

    async def run(self, code: str, session: Session) -> Outcome:
        kernel = await self._kernel(session)
        if isinstance(kernel, Outcome):
            return kernel
        note = LOST if session.key in self.lost else ""
        self.lost.discard(session.key)
        async with kernel.lock:
            try:
                outcome, usable = await kernel.execute(code, self.options.timeout,
                                                       self.options.max_output)
            except asyncio.CancelledError:  # the client left mid-call: stop the code, keep state
                await asyncio.gather(kernel.km.interrupt_kernel(), return_exceptions=True)
                raise
            finally:
                kernel.last_used = time.monotonic()
        if not usable:
            await self.drop(session.key, kernel)
        return Outcome(note + outcome.content, outcome.is_error) if note else outcome

    async def _kernel(self, session: Session) -> Kernel | Outcome:
        kernel = self.live.get(session.key)
        if kernel is not None and not self.closed:  # a live one: no wait behind another's start
            return kernel
        async with self.guard:  # starts and evictions, one at a time
            if self.closed:
                return Outcome("error: the server is shutting down", True)
            kernel = self.live.get(session.key)
            if kernel is not None:
                return kernel
            if len(self.live) >= self.options.max_kernels and not await self._evict():
                return Outcome(f"error: all {self.options.max_kernels} Python kernels are busy; "
                               "try again later", True)
            kernel = await Kernel.start(session.folder, self.runtime)
            self.live[session.key] = kernel
            if self.reaper is None:
                self.reaper = asyncio.ensure_future(self._reap_forever())
            return kernel

    async def _evict(self) -> bool:
        idle = [(k.last_used, key) for key, k in self.live.items() if not k.lock.locked()]
        if not idle:
            return False
        key = min(idle)[1]
        self.lost.add(key)
        await self.live.pop(key).stop()
        return True

    async def drop(self, key: str, kernel: Kernel | None = None) -> None:
        """Shut down `key`'s kernel (only if it is still `kernel`, when one is given)."""
        current = self.live.get(key)
        if current is not None and (kernel is None or current is kernel):
            del self.live[key]
        if kernel is not None or current is not None:
            await (kernel or current).stop()

    async def reap(self) -> None:
        now = time.monotonic()
        for key, k in list(self.live.items()):
            if not k.lock.locked() and now - k.last_used > self.options.session_idle:
                log.info("shutting down an idle Python kernel")
                self.lost.add(key)
                await self.drop(key, k)

    async def _reap_forever(self) -> None:
        every = min(REAP_EVERY_S, max(0.05, self.options.session_idle / 4))
        while True:
            await asyncio.sleep(every)
            await self.reap()

    async def close(self) -> None:
        async with self.guard:
            self.closed = True
            if self.reaper is not None:
                self.reaper.cancel()
            kernels, self.live = list(self.live.values()), {}
            await asyncio.gather(*(k.stop() for k in kernels), return_exceptions=True)
