"""Running as PID 1 in a container: forward signals and reap orphans, like a tiny init.

The kernel gives PID 1 no default signal actions and makes it the parent of every orphan, so a
proxy that is PID 1 would ignore `docker stop`'s SIGTERM and pile up zombies left by actions'
background processes. Instead the first process forks at once (before any heavy import): the
child is the proxy, the parent forwards signals to it and reaps whatever dies.
"""

from __future__ import annotations

import os
import signal

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


def become_init_if_pid1() -> None:
    """Return in the proxy process; when PID 1, the init side never returns (it exits with
    the proxy's status)."""
    if os.getpid() != 1 or os.environ.get("ACTIONPROXY_NO_INIT"):
        return
    child = os.fork()
    if child == 0:
        os.setsid()  # the proxy leads its own session; the init stays outside it
        return
    for sig in FORWARDED:
        signal.signal(sig, lambda signum, _frame: _forward(child, signum))
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            os._exit(0)
        except InterruptedError:
            continue
        if pid == child:
            os._exit(os.waitstatus_to_exitcode(status) % 256)


def _forward(child: int, signum: int) -> None:
    try:
        os.kill(child, signum)
    except ProcessLookupError:
        pass
