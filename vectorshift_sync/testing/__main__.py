"""``python -m vectorshift_sync.testing``: run the local engine standalone.

Prints exactly one JSON line to stdout, ``{"port": N, "env": {...}}``, then serves
until SIGINT or SIGTERM and exits 0. Logs go to stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from types import FrameType
from typing import List, Optional

from ._engine import LocalEngine

__all__ = ["main"]

logger = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m vectorshift_sync.testing",
        description="Run a local VectorShift engine (HTTP + session WebSocket).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to bind (0: any free port)")
    parser.add_argument("--api-key", default="local-test-key", help="the accepted API key")
    parser.add_argument("--no-demo", action="store_true", help="no Demo Agent / Demo Chatbot")
    parser.add_argument(
        "--stream-delay",
        type=float,
        default=0.03,
        help="seconds between streamed deltas of the demo (0.03)",
    )
    parser.add_argument(
        "--terminated-resumable",
        action="store_true",
        help="let connect_session resume a terminated session",
    )
    parser.add_argument("--log-level", default="INFO", help="stderr log level (INFO)")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    stop = threading.Event()

    def _on_signal(signum: int, frame: Optional[FrameType]) -> None:
        logger.info("received signal %d, stopping", signum)
        stop.set()

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    engine = LocalEngine(
        args.api_key,
        host=args.host,
        port=args.port,
        demo=not args.no_demo,
        terminated_resumable=args.terminated_resumable,
        stream_delay=args.stream_delay,
    )
    with engine:
        sys.stdout.write(json.dumps({"port": engine.port, "env": engine.env}) + "\n")
        sys.stdout.flush()
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
