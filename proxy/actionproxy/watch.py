"""`serve --init FILE --watch`, for development: the function is loaded again when FILE changes.

This process binds the port once and runs the proxy as a child on that socket
(ACTIONPROXY_LISTEN_FD). When FILE changes, the child is stopped (SIGTERM: it drains) and a new
one started on the same socket, so requests sent meanwhile wait in the listen backlog instead of
being refused. A function that does not load leaves no proxy until the next change. Without
--watch, OpenWhisk's one-init rule holds as always.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

LISTEN_FD = "ACTIONPROXY_LISTEN_FD"
POLL = 0.25  # seconds between looks at the file
STOP_WITHIN = 10.0  # seconds a child may take to drain before it is killed


def inherited_socket() -> socket.socket | None:
    """The listening socket a watching parent passed down, if any."""
    fd = os.environ.pop(LISTEN_FD, None)
    return None if fd is None else socket.socket(fileno=int(fd))


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


def _say(message: str) -> None:
    sys.stderr.write(f"actionproxy: --watch: {message}\n")
    sys.stderr.flush()


class Child:
    def __init__(self, argv: list[str], sock: socket.socket) -> None:
        env = {**os.environ, LISTEN_FD: str(sock.fileno())}
        self.process = subprocess.Popen([sys.executable, "-m", "actionproxy", *argv], env=env,
                                        pass_fds=(sock.fileno(),))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_WITHIN)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def watch(argv: list[str], sock: socket.socket, path: Path) -> int:
    """Serve `argv` (a `serve` command line without --watch) until SIGTERM or SIGINT."""
    stopping: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _: stopping.append(signum))
    seen = _stamp(path)
    child = Child(argv, sock)
    reported = False
    try:
        while not stopping:
            time.sleep(POLL)
            now = _stamp(path)
            if now != seen and now is not None:
                seen = now
                _say(f"{path} changed: loading it again")
                child.stop()
                child = Child(argv, sock)
                reported = False
            elif child.process.poll() is not None and not reported:
                _say(f"the proxy ended ({child.process.returncode}); waiting for {path} to change")
                reported = True
    finally:
        child.stop()
    return 0
