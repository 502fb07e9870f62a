"""bash: one `bash -c COMMAND` per call, in the session folder, inside limits, killed as a group.

Strategy: the command runs in a new session (its own process group) with stdin closed, stdout and
stderr merged into one pipe that is read into a capped buffer. A bash prologue sets the rlimits
(`ulimit`: CPU seconds, address space, file size, processes, open files) and then `exec`s the
command — rlimits set by the shell itself, not by a `preexec_fn`, which is unsafe in a process
that runs threads (ours decodes on one). RLIMIT_NPROC counts every task of a user, so the cap is
"what the user runs now + `max_processes`"; root is exempt from it, so a root server runs commands
as `nobody` (chdir happens before the uid switch, so the session folder works although
`$UNSLOTH_MIN_HOME` is 0700: the command sees its folder and nothing else of ours). When bash
exits, or the wall clock runs out, the whole group is SIGKILLed: no background job outlives a call.
The environment is the allow-list of `common.tool_env`. With `--bash-network off` the command runs
under `unshare -rn` (a user + network namespace: loopback only); where that fails, we refuse.

Does not: confine the file system (the command can read what its user can read), or keep shell
state between calls (only files in the session folder persist).
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
from asyncio.subprocess import DEVNULL, PIPE, STDOUT
from pathlib import Path

from .common import Capped, Outcome, Session, ToolOptions, tool_env

log = logging.getLogger("unsloth_min.tools.bash")

NOBODY = 65534
ADDRESS_SPACE_KIB = 4 * 1024 * 1024  # 4 GiB per process: numpy-sized work, not a runaway
FILE_SIZE_KIB = 256 * 1024           # 256 MiB per file written
OPEN_FILES = 256
EXIT_GRACE_S = 0.5  # after bash exits, how long background holders of the pipe may still write
EXIT_POLL_S = 0.02
READ_CHUNK = 64 * 1024
PROLOGUE = ('ulimit -t {cpu} -v {vmem} -f {fsize} -u {nproc} -n {nofile} || exit 126; '
            'exec bash -c "$1"')


def user_tasks(uid: int) -> int:
    """Tasks (threads count: RLIMIT_NPROC counts them) that `uid` runs now."""
    n = 0
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if os.stat(f"/proc/{pid}").st_uid == uid:
                    n += len(os.listdir(f"/proc/{pid}/task"))
            except OSError:
                pass  # gone meanwhile
    return n


def kill_group(pgid: int) -> None:
    """SIGKILL the group a few times: a fork in flight during the first signal is caught by the next."""
    for _ in range(3):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            return


async def _read(stream: asyncio.StreamReader, out: Capped) -> None:
    while chunk := await stream.read(READ_CHUNK):
        out.feed_bytes(chunk)
    out.feed_bytes(b"", final=True)


async def _exited_late(proc: asyncio.subprocess.Process, timeout: float) -> bool:
    """Wait for bash itself to exit; True if it was still running at the deadline. Polled:
    `proc.wait()` also waits for the pipe, which a background job may hold open."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while proc.returncode is None:
        left = deadline - loop.time()
        if left <= 0:
            return True
        await asyncio.sleep(min(EXIT_POLL_S, left))
    return False


class BashRunner:
    def __init__(self, options: ToolOptions):
        self.options = options
        self.as_root = os.geteuid() == 0
        self.uid = NOBODY if self.as_root else os.getuid()
        self.isolation: bool | None = None  # does `unshare -rn` work here? (probed once)

    def _user(self) -> dict:
        return {"user": NOBODY, "group": NOBODY, "extra_groups": []} if self.as_root else {}

    async def _argv(self, command: str) -> list[str]:
        nproc = await asyncio.to_thread(user_tasks, self.uid) + self.options.max_processes
        prologue = PROLOGUE.format(cpu=max(1, int(self.options.timeout) + 1),
                                   vmem=ADDRESS_SPACE_KIB, fsize=FILE_SIZE_KIB, nproc=nproc,
                                   nofile=OPEN_FILES)
        argv = ["bash", "-c", prologue, "sandbox", command]
        return argv if self.options.bash_network else ["unshare", "-rn", *argv]

    async def _can_isolate(self) -> bool:
        if self.isolation is None:
            try:
                proc = await asyncio.create_subprocess_exec(
                    "unshare", "-rn", "true", stdin=DEVNULL, stdout=DEVNULL, stderr=DEVNULL,
                    env=tool_env(Path("/")), **self._user())
                self.isolation = await proc.wait() == 0
            except OSError:
                self.isolation = False
            if not self.isolation:
                log.warning("--bash-network off, but `unshare -rn` fails here: bash calls refused")
        return self.isolation

    def _prepare(self, folder: Path) -> None:
        if self.as_root and folder.stat().st_uid != NOBODY:
            os.chown(folder, NOBODY, NOBODY)

    async def run(self, command: str, session: Session) -> Outcome:
        if not self.options.bash_network and not await self._can_isolate():
            return Outcome("error: bash runs without network here (--bash-network off), but "
                           "network isolation is not available on this machine: not run", True)
        self._prepare(session.folder)
        proc = await asyncio.create_subprocess_exec(
            *await self._argv(command), cwd=session.folder, env=tool_env(session.folder),
            stdin=DEVNULL, stdout=PIPE, stderr=STDOUT, start_new_session=True, **self._user())
        out = Capped(self.options.max_output)
        reader = asyncio.ensure_future(_read(proc.stdout, out))
        try:
            timed_out = await _exited_late(proc, self.options.timeout)
            await asyncio.wait({reader}, timeout=0 if timed_out else EXIT_GRACE_S)
        finally:
            kill_group(proc.pid)  # the group id is bash's pid (start_new_session)
            await asyncio.wait({reader}, timeout=2.0)  # killed writers: EOF comes at once
            reader.cancel()
            await asyncio.gather(reader, proc.wait(), return_exceptions=True)
        return self._outcome(out, proc.returncode, timed_out)

    def _outcome(self, out: Capped, code: int | None, timed_out: bool) -> Outcome:
        text = out.text().rstrip("\n") or "(no output)"
        if timed_out:
            note = f"[killed: the command ran past the {self.options.timeout:g} s limit]"
        elif code is not None and code < 0:
            note = f"[killed by signal {signal.Signals(-code).name}]"
        else:
            note = f"[exit code {code}]"
        return Outcome(f"{text}\n{note}", timed_out or code != 0)
