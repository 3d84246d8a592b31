"""What a benchmark process needs to know of itself, with the standard library only.

Imported by our scripts and by ``scale_official.py``, which runs in the official
SDK's virtualenv where this library (and so ``engine.py``) is not importable.
"""

from __future__ import annotations

import resource
import threading
import time
from typing import Dict, Optional

__all__ = ["raise_fd_limit", "threads_now", "cpu_by_thread"]


def raise_fd_limit() -> int:
    """Lift the soft open-files limit to the hard one (1,000 sessions need 1,000+ fds)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def threads_now() -> int:
    """OS threads of this process (every thread, Python's or not)."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return threading.active_count()  # pragma: no cover - no /proc


def cpu_by_thread() -> Optional[Dict[str, float]]:
    """CPU seconds each named group of this process's live Python threads has used so
    far, read from each thread's own CPU clock (``pthread_getcpuclockid``); ``None``
    where there is no such clock. Threads are grouped by name with a ``-<number>``
    tail cut (a pool's workers make one group); a thread that has ended is not
    counted, so read it while the threads of interest still live."""
    if not hasattr(time, "pthread_getcpuclockid"):  # pragma: no cover - not Unix
        return None
    groups: Dict[str, float] = {}
    for thread in threading.enumerate():
        if thread.ident is None:
            continue
        try:
            seconds = time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
        except OSError:  # ended between enumerate() and here
            continue
        name = thread.name.rstrip("0123456789").rstrip("-")
        groups[name] = groups.get(name, 0.0) + seconds
    return groups
