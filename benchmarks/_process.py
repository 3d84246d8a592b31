"""What a benchmark process needs to know of itself, with the standard library only.

Imported by our scripts and by ``scale_official.py``, which runs in the official
SDK's virtualenv where this library (and so ``engine.py``) is not importable.
"""

from __future__ import annotations

import resource
import threading

__all__ = ["raise_fd_limit", "threads_now"]


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
