"""Starting children for the action-loop protocol and watching them exit.

Children get stdin (requests) and fd 3 (results) as pipes, their own process group (so a
stuck action is killed with everything it started), and optionally piped stdout/stderr.
`spawn` needs no event loop, so the CLI can start the stem-cell launcher before aiohttp is
even imported; `ProcessHandle` attaches it to the loop later.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from actionproxy.executor.futures import settle

if TYPE_CHECKING:  # spawn runs before the event loop's modules are imported
    import asyncio


@dataclass
class SpawnedProcess:
    """A started child and the proxy's ends of its pipes (-1 where inherited)."""

    pid: int
    stdin: int
    results: int
    stdout: int = -1
    stderr: int = -1


PIPE_SIZE = 1 << 20  # Linux's default cap for unprivileged pipes; 64 KiB would split every large payload


def _pipe() -> tuple[int, int]:
    """A pipe as large as allowed: a payload that fits crosses in one write, one wake-up."""
    read_end, write_end = os.pipe()
    try:
        fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    except OSError:
        pass  # a lower pipe-max-size: the default size still works, only slower
    return read_end, write_end


def spawn(argv: Sequence[str], env: dict[str, str], cwd: str | None = None,
          capture_output: bool = False) -> SpawnedProcess:
    stdin_r, stdin_w = _pipe()
    results_r, results_w = _pipe()
    actions = [(os.POSIX_SPAWN_DUP2, stdin_r, 0), (os.POSIX_SPAWN_DUP2, results_w, 3)]
    ours = [stdin_w, results_r]
    theirs = [stdin_r, results_w]
    out_r = err_r = -1
    if capture_output:
        out_r, out_w = _pipe()
        err_r, err_w = _pipe()
        actions += [(os.POSIX_SPAWN_DUP2, out_w, 1), (os.POSIX_SPAWN_DUP2, err_w, 2)]
        ours += [out_r, err_r]
        theirs += [out_w, err_w]
    argv = list(argv)
    if cwd is not None:  # posix_spawn has no chdir action before Python 3.13
        argv = ["/bin/sh", "-c", 'cd "$0" && exec "$@"', cwd, *argv]
    try:
        pid = os.posix_spawnp(argv[0], argv, env, file_actions=actions, setpgroup=0)
    except OSError:
        for fd in ours:
            os.close(fd)
        raise
    finally:
        for fd in theirs:
            os.close(fd)
    return SpawnedProcess(pid, stdin_w, results_r, out_r, err_r)


def spawn_plain(argv: Sequence[str], env: dict[str, str], cwd: str) -> SpawnedProcess:
    """A child with stdin/stdout/stderr piped and no result channel, in its own process group
    and working directory (subprocess's vfork path: cheaper than a shell to change folder)."""
    child = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, cwd=cwd, env=env, process_group=0)
    child.returncode = 0  # reaped by ProcessHandle, not by this object
    fds = [stream.fileno() for stream in (child.stdin, child.stdout, child.stderr)]
    ours = [os.dup(fd) for fd in fds]
    for stream in (child.stdin, child.stdout, child.stderr):
        stream.close()
    return SpawnedProcess(child.pid, ours[0], -1, ours[1], ours[2])


def stat_fields(pid: int | str) -> list[bytes]:
    """/proc/<pid>/stat after the command name (which may hold spaces and parentheses):
    [0] is the state, [1] the parent pid, [19] the start time in clock ticks."""
    with open(f"/proc/{pid}/stat", "rb") as stat:
        return stat.read().rsplit(b")", 1)[1].split()


REPORT_WAIT = 0.2  # how long to wait for a zygote's report on a worker that ended


def describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            return f"killed by signal {signal.Signals(sig).name}"
        except ValueError:
            return f"killed by signal {sig}"
    return f"exit code {os.WEXITSTATUS(status)}"


class ProcessHandle:
    """Exit watching (pidfd) and killing for one process, child of ours or not."""

    def __init__(self, loop: asyncio.AbstractEventLoop, pid: int, own_child: bool) -> None:
        self.pid = pid
        self._own_child = own_child
        self.exited: asyncio.Future[str] = loop.create_future()
        self._loop = loop
        try:
            self.leads_group = os.getpgid(pid) == pid
            self._pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            self.leads_group = False
            self._pidfd = -1
            self._reap()
            return
        loop.add_reader(self._pidfd, self._on_exit)

    def _on_exit(self) -> None:
        self._loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        self._pidfd = -1
        if self._own_child:
            self._reap()
        else:  # its parent (a zygote) may still say how it ended
            self._loop.call_later(REPORT_WAIT, self.report, "the process ended")

    def report(self, detail: str) -> None:
        """How a process that is not our child ended, as its parent reported it."""
        settle(self.exited, detail)

    def _reap(self) -> None:
        detail = "the process ended"
        if self._own_child:
            try:
                _, status = os.waitpid(self.pid, 0)
                detail = describe_status(status)
            except ChildProcessError:
                pass
        settle(self.exited, detail)

    @property
    def alive(self) -> bool:
        return not self.exited.done()

    def kill(self) -> None:
        """SIGKILL the process and, when it leads a process group, whatever is left in it
        (also after the process itself has exited: its children must not linger)."""
        try:
            if self.leads_group:
                os.killpg(self.pid, signal.SIGKILL)
            elif self.alive and self._pidfd >= 0:
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


class Abortable:
    """A running process as the memory guard sees it: its pid, and a kill that says why (the
    verdict the activations it fails are answered with)."""

    def __init__(self, process: ProcessHandle) -> None:
        self.pid = process.pid
        self.process = process
        self.verdict: str | None = None

    def abort(self, message: str) -> None:
        self.verdict = message
        self.process.kill()


def free_port() -> int:
    """A loopback port nothing listens on now (for a child server told its PORT)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
