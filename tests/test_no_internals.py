"""The package stands on public APIs: no interpreter-private modules, no object tricks.

Speed comes from maintained libraries (msgspec for JSON, websockets for framing), not
from CPython internals that change between versions and do not exist on other
interpreters: no ``import _json`` / ``_signal`` / ``_thread``..., no ``json.scanner``
or a decoder's ``scan_once``, no ``object.__new__`` or ``__dict__`` assignment to
build our objects behind their constructors.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import List

import pytest

import vectorshift_sync

PACKAGE = Path(vectorshift_sync.__file__).resolve().parent
SOURCES = sorted(PACKAGE.rglob("*.py"))
#: Underscored names that are not private modules: __future__, typeshed's stubs.
ALLOWED_PRIVATE = {"__future__", "_typeshed"}
FORBIDDEN_MODULES = {"json.scanner", "json.decoder"}


def _violations(source: str) -> List[str]:
    found: List[str] = []
    for node in ast.walk(ast.parse(source)):
        names: List[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            top = name.split(".")[0]
            if (top.startswith("_") and top not in ALLOWED_PRIVATE) or name in FORBIDDEN_MODULES:
                found.append(f"line {node.lineno}: imports {name}")
        if isinstance(node, ast.Attribute):
            value = node.value
            if isinstance(value, ast.Name) and value.id == "object" and node.attr == "__new__":
                found.append(f"line {node.lineno}: object.__new__")
            if node.attr in ("scan_once", "c_make_scanner", "c_scanstring"):
                found.append(f"line {node.lineno}: json internals ({node.attr})")
        if isinstance(node, ast.Constant) and node.value == "__dict__":
            found.append(f"line {node.lineno}: sets or reads '__dict__' by name")
    return found


def test_the_package_has_sources() -> None:
    assert len(SOURCES) > 20


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_private_interpreter_modules_and_no_object_tricks(path: Path) -> None:
    assert _violations(path.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize(
    "snippet",
    [
        "import _json",
        "from _signal import default_int_handler",
        "import json.scanner",
        "from json import scanner",
        "from json.decoder import scanstring",
        "scan = json.JSONDecoder().scan_once",
        "event = object.__new__(SessionEvent)",
        "object.__setattr__(event, '__dict__', {})",
    ],
)
def test_the_check_catches_each_pattern(snippet: str) -> None:
    assert _violations(snippet)
