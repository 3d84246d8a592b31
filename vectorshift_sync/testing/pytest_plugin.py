"""pytest plugin (entry point ``pytest11``): the ``local_engine`` fixture.

Loaded by every pytest run where ``vectorshift_sync`` is installed, so it imports the
engine only when a test asks for the fixture.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Callable, Iterator, Protocol, TypeVar

if TYPE_CHECKING:
    from ._engine import LocalEngine

__all__ = ["local_engine"]

_F = TypeVar("_F", bound=Callable[..., Any])

# Imported by name: pytest's own source uses Python 3.10 syntax, which a type check
# aimed at 3.9 (``mypy --python-version 3.9``) cannot parse if it follows the import.
_fixture: Callable[[_F], _F] = importlib.import_module("pytest").fixture


class _MonkeyPatch(Protocol):
    def setenv(self, name: str, value: str, prepend: Any = None) -> None: ...


@_fixture
def local_engine(monkeypatch: _MonkeyPatch) -> Iterator[LocalEngine]:
    """A started ``LocalEngine`` (demo agent and chatbot, ephemeral port), with
    ``VECTORSHIFT_API_KEY``, ``VECTORSHIFT_BASE_URL`` and ``VECTORSHIFT_WS_URL`` set to
    it for the test. Stopped afterwards.
    """
    from ._engine import LocalEngine

    engine = LocalEngine()
    engine.start()
    try:
        for name, value in engine.env.items():
            monkeypatch.setenv(name, value)
        yield engine
    finally:
        engine.stop()
