"""The official SDK's own virtualenv, made once and reused; a loud banner if it can't be.

The official ``vectorshift`` 0.1.15 pins old dependencies (and needs Python 3.11+,
PROTOCOL.md D17), so it never enters the main environment: it lives in a virtualenv of
its own, ``<repo>/.venv-compat`` or ``$VS_COMPAT_VENV``. The first run creates it
(about half a minute); later runs find the marker, check that ``vectorshift`` still
imports at the right version, and reuse it. A file lock keeps two pytest processes
from installing into it at once.

If the install is impossible (no Python 3.11+, no ``venv``/``ensurepip``, no package
registry), the compat tests are skipped with the reason, and a banner says so at the
end of the run. ``VS_COMPAT_REQUIRED=1`` (for CI) turns that skip into a failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import pytest

#: What the compat tests prove fidelity against.
OFFICIAL_SDK = "vectorshift"
OFFICIAL_VERSION = "0.1.15"

REPO = Path(__file__).resolve().parents[2]

#: The environment as pytest started, before the suite's autouse fixture clears
#: proxies: pip may need them to reach the registry (the driver must not have them).
_STARTUP_ENV: Dict[str, str] = dict(os.environ)

_MARKER = ".vectorshift-compat.json"
_LOCK = ".vectorshift-compat.lock"
_PIP_TIMEOUT = 600.0

_unavailable: List[str] = []


class CompatUnavailable(Exception):
    """The official SDK's virtualenv could not be made; the message says why."""


def _venv_dir() -> Path:
    return Path(os.environ.get("VS_COMPAT_VENV") or REPO / ".venv-compat").resolve()


def _venv_python(venv: Path) -> Path:
    if os.name == "nt":
        return venv / "Scripts" / "python.exe"
    return venv / "bin" / "python"


def _tool_env() -> Dict[str, str]:
    """The environment for venv and pip: pytest's own, minus anything that would make
    the new interpreter look at our packages instead of its own."""
    env = dict(_STARTUP_ENV)
    for name in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"):
        env.pop(name, None)
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _base_python() -> str:
    """An interpreter the official SDK can run on (3.11+, PROTOCOL.md D17)."""
    explicit = os.environ.get("VS_COMPAT_PYTHON")
    if explicit:
        return explicit
    if sys.version_info >= (3, 11):
        return sys.executable
    for name in ("python3.13", "python3.12", "python3.11"):
        found = shutil.which(name)
        if found:
            return found
    raise CompatUnavailable(
        f"the official SDK needs Python 3.11+ (it imports enum.StrEnum), this is "
        f"{sys.version.split()[0]} and no python3.11+ is on PATH (set VS_COMPAT_PYTHON)"
    )


def _run(argv: List[str], what: str, timeout: float) -> None:
    try:
        proc = subprocess.run(
            argv,
            env=_tool_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CompatUnavailable(f"{what} failed: {exc}") from exc
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.strip().splitlines()[-15:])
        raise CompatUnavailable(f"{what} failed (exit {proc.returncode}):\n{tail}")


def _installed_version(python: Path) -> Optional[str]:
    """The official SDK's version if ``import vectorshift`` works there, else None."""
    if not python.exists():
        return None
    probe = f"import importlib.metadata as m, vectorshift; print(m.version({OFFICIAL_SDK!r}))"
    try:
        proc = subprocess.run(
            [str(python), "-c", probe],
            env=_tool_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` (POSIX ``flock``; no lock where there is none)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: one pytest at a time there
        yield
        return
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_official_sdk() -> Path:
    """The compat virtualenv's interpreter, with ``vectorshift==0.1.15`` installed."""
    venv = _venv_dir()
    try:
        venv.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CompatUnavailable(f"cannot create {venv}: {exc}") from exc
    python = _venv_python(venv)
    marker = venv / _MARKER
    with _locked(venv / _LOCK):
        if marker.exists() and _installed_version(python) == OFFICIAL_VERSION:
            return python
        marker.unlink(missing_ok=True)
        _run([_base_python(), "-m", "venv", str(venv)], f"python -m venv {venv}", 300.0)
        requirement = f"{OFFICIAL_SDK}=={OFFICIAL_VERSION}"
        _run(
            [str(python), "-m", "pip", "install", "--quiet", requirement],
            f"pip install {requirement} into {venv}",
            _PIP_TIMEOUT,
        )
        found = _installed_version(python)
        if found != OFFICIAL_VERSION:
            raise CompatUnavailable(
                f"after pip install, {venv} has {OFFICIAL_SDK} {found!r}, "
                f"not {OFFICIAL_VERSION} (or it does not import)"
            )
        marker.write_text(
            json.dumps({"requirement": requirement, "python": str(python)}) + "\n",
            encoding="utf-8",
        )
        return python


@pytest.fixture(scope="session")
def official_python() -> Path:
    """The interpreter of the official SDK's virtualenv (made on first use)."""
    try:
        return ensure_official_sdk()
    except CompatUnavailable as exc:
        reason = (
            f"OFFICIAL-SDK COMPAT TESTS NOT RUN: cannot install "
            f"{OFFICIAL_SDK}=={OFFICIAL_VERSION} into its own virtualenv: {exc}"
        )
        _unavailable.append(reason)
        if os.environ.get("VS_COMPAT_REQUIRED", "") not in ("", "0"):
            pytest.fail(reason + "\n(VS_COMPAT_REQUIRED is set, so this is a failure)")
        pytest.skip(reason)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say it where nobody can miss it: the fidelity proof did not run."""
    if not _unavailable:
        return
    terminalreporter.section("official SDK compat", sep="!", red=True, bold=True)
    for reason in _unavailable:
        terminalreporter.write_line(reason, red=True, bold=True)
    terminalreporter.write_line(
        "The engine's fidelity to the official vectorshift SDK was NOT checked in this run.",
        red=True,
        bold=True,
    )
