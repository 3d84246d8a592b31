"""Shared by the examples: the real service if you have a key, else a local engine.

With ``VECTORSHIFT_API_KEY`` set, the examples talk to VectorShift itself (edit the
agent and chatbot names at the top of each example to ones in your account). Without
it, they start the local engine that ships with vectorshift_sync, which serves a
"Demo Agent" and a "Demo Chatbot" on 127.0.0.1, so every example runs offline.
"""

import contextlib
import os
import sys


def start_local_engine_unless_api_key():
    """Start a local engine and point the library at it, unless a key is set.

    Returns the engine (call ``engine.stop()`` when done), or None for the real service.
    """
    if os.environ.get("VECTORSHIFT_API_KEY"):
        return None

    from vectorshift_sync.testing import LocalEngine

    # stream_delay paces the demo reply so that you can watch it stream.
    engine = LocalEngine(stream_delay=0.02).start()
    # The library reads its key and endpoints from these variables.
    os.environ.update(engine.env)
    print(
        f"(no VECTORSHIFT_API_KEY set: using the local engine at {engine.base_url})",
        file=sys.stderr,
    )
    return engine


@contextlib.contextmanager
def local_engine_unless_api_key():
    """The same, for a ``with`` block: the engine stops when the block ends."""
    engine = start_local_engine_unless_api_key()
    try:
        yield
    finally:
        if engine is not None:
            engine.stop()
            for name in engine.env:
                os.environ.pop(name, None)
