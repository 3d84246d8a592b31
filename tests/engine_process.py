"""A LocalEngine in a child process, for tests that measure or capture this process only.

Leak and log-capture tests need the engine's own threads, sockets, memory and log
records out of the process under test: the engine keeps a record of every connection
by design, and as the server it logs the request headers it receives. The child is
``python -m vectorshift_sync.testing``; every wait here has a deadline.
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
from typing import Dict, List, Optional

import requests
from conftest import scaled

__all__ = ["EngineProcess"]


class EngineProcess:
    """``with EngineProcess(api_key=...) as engine:`` -- ``engine.env``, ``engine.agent_id``."""

    def __init__(self, api_key: str = "local-test-key", *, extra: Optional[List[str]] = None):
        self.api_key = api_key
        self._argv = [
            sys.executable,
            "-m",
            "vectorshift_sync.testing",
            "--api-key",
            api_key,
            "--stream-delay",
            "0",
            "--log-level",
            "WARNING",
            *(extra or []),
        ]
        self._proc: Optional["subprocess.Popen[str]"] = None
        self.env: Dict[str, str] = {}
        self.port = 0

    def start(self) -> "EngineProcess":
        env = {k: v for k, v in os.environ.items() if not k.startswith("VECTORSHIFT_")}
        self._proc = subprocess.Popen(
            self._argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        assert self._proc.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self._proc.stdout, selectors.EVENT_READ)
            if not selector.select(scaled(15)):
                self.stop()
                raise TimeoutError("the engine process printed no address within 15 s")
        line = self._proc.stdout.readline()
        if not line:
            self.stop()
            raise RuntimeError("the engine process exited before printing its address")
        info = json.loads(line)
        self.env, self.port = dict(info["env"]), int(info["port"])
        return self

    def agent_id(self, name: str = "Demo Agent", kind: str = "agent") -> str:
        response = requests.get(
            f"{self.env['VECTORSHIFT_BASE_URL']}/{kind}",
            params={"name": name},
            headers={"Authorization": f"Bearer {self.api_key}"},
            timeout=scaled(5),
        )
        response.raise_for_status()
        return str(response.json()["object"]["_id"])

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(scaled(10))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(scaled(5))
        if proc.stdout is not None:
            proc.stdout.close()

    def __enter__(self) -> "EngineProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
