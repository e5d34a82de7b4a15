"""Child processes that end with their parent, so a ``kill -9`` of a run leaves none behind.

Linux has ``prctl(PR_SET_PDEATHSIG)``: the kernel signals a process when its parent dies.
``die_with_parent`` sets it from inside a child (a process pool's initializer);
``dying_with_parent`` rewrites a command line so that a program started by code we do not
own (Prefect's temporary server) sets it before it starts. Elsewhere both do nothing.
"""

from __future__ import annotations

import ctypes
import os
import select
import signal
import sys
import threading
from collections.abc import Sequence

PR_SET_PDEATHSIG = 1

# Run as ``python -c WRAPPER PARENT_PID PROGRAM ARGS...``: set the signal, then exec.
WRAPPER = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)\n"
    "if os.getppid() != int(sys.argv[1]):\n"  # the parent died before prctl: end now
    "    sys.exit(1)\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Ask the kernel to send ``sig`` to this process when its parent dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, sig)
    if os.getppid() == 1:  # the parent is already gone
        os.kill(os.getpid(), sig)


def dying_with_parent(args: Sequence[str]) -> list[str]:
    """The command line that runs ``args`` (an absolute program path first) as a child that
    gets SIGTERM when the process starting it dies (unchanged off Linux)."""
    if not sys.platform.startswith("linux"):
        return list(args)
    return [sys.executable, "-c", WRAPPER, str(os.getpid()), *args]


def end_with_process(publisher: int) -> None:
    """Pool initializer: kill this worker as soon as process ``publisher`` ends (Linux).

    ``publisher``: the pid of the process that owns the pool (a publish or an ingest).

    A forkserver worker's parent is the fork server, not the publisher, and the fork server
    lives on while any worker holds its "alive" pipe (every worker does): the parent-death
    signal alone (``die_with_parent``) would never fire after a ``kill -9`` of the
    publisher. So a daemon thread also waits on a pidfd of the publisher (Linux 5.3+) and
    SIGKILLs this worker when it ends. Elsewhere nothing is done.
    """
    die_with_parent()
    if not sys.platform.startswith("linux") or not hasattr(os, "pidfd_open"):
        return
    try:
        pidfd = os.pidfd_open(publisher)
    except ProcessLookupError:  # already gone
        os.kill(os.getpid(), signal.SIGKILL)
        return
    except OSError:  # no pidfd support (old kernel, seccomp): the death signal only
        return
    threading.Thread(target=_kill_self_when_readable, args=(pidfd,), daemon=True,
                     name="end-with-owner").start()


def _kill_self_when_readable(pidfd: int) -> None:
    select.select([pidfd], [], [])  # a pidfd turns readable when its process ends
    os.kill(os.getpid(), signal.SIGKILL)


def imported(module: str) -> bool:
    """Whether ``module`` is imported in this process (a pool worker's view)."""
    return module in sys.modules
