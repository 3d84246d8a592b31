"""README.rst stays true: valid reStructuredText, its commands are the ones CI runs."""

from __future__ import annotations

import io
import re
import subprocess
from pathlib import Path

import docutils.core
import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.rst").read_text(encoding="utf-8")
MAIN_COMMAND = "python -m pip install -e . && python -m vectorshift_sync chat"
TEST_COMMAND = 'python -m pip install -e ".[test]" && python -m pytest'


@pytest.mark.parametrize(
    "path", [ROOT / "README.rst", ROOT / "CHANGELOG.rst", *sorted((ROOT / "docs").glob("*.rst"))],
    ids=lambda p: p.name,
)
def test_documents_are_valid_restructuredtext(path: Path) -> None:
    errors = io.StringIO()
    docutils.core.publish_doctree(
        path.read_text(encoding="utf-8"),
        settings_overrides={"warning_stream": errors, "report_level": 2},
    )
    assert errors.getvalue() == ""


def test_the_two_commands_come_first_and_ci_runs_the_test_command_verbatim() -> None:
    first_block = README.index("::\n")
    assert README.index(MAIN_COMMAND) > first_block
    assert README.index(MAIN_COMMAND) < README.index(TEST_COMMAND) < README.index("Quickstart")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert TEST_COMMAND in ci.splitlines()
    assert MAIN_COMMAND in ci.splitlines()
    assert ci.count("-m venv --clear ") == 2  # both virtualenvs start empty


#: The part of .ci/run that runs README's test command and judges its status.
_GATE = re.compile(r"^readme_tests\(\) \{.*?^check_status \"README.rst's test command\".*?$",
                   re.M | re.S)


@pytest.mark.parametrize(
    ("pip_status", "pytest_status", "ci_fails"),
    [(0, 0, False), (1, 0, True), (0, 1, True), (0, 5, True), (0, 2, True)],
    ids=["green", "install-fails", "tests-fail", "no-tests-collected", "interrupted"],
)
def test_ci_fails_whenever_the_test_command_does(
    pip_status: int, pytest_status: int, ci_fails: bool, tmp_path: Path
) -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    gate = _GATE.search(ci)
    assert gate, ".ci/run no longer has the readme_tests gate"
    ran = tmp_path / "ran"
    # A stand-in `python` that records what it ran and fails as told, then the gate
    # exactly as CI runs it, under the same shell options.
    script = "\n".join([
        "set -euo pipefail",
        "python() {",
        f'  echo "$*" >> "{ran}"',
        f'  case "$2" in pip) return {pip_status} ;; pytest) return {pytest_status} ;; esac',
        "}",
        gate.group(0),
        "echo CI-WENT-ON",
    ])
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30)
    went_on = "CI-WENT-ON" in done.stdout
    assert went_on is not ci_fails, (done.returncode, done.stdout, done.stderr)
    assert (done.returncode != 0) is ci_fails
    lines = ran.read_text().splitlines()
    assert lines[0] == '-m pip install -e .[test]'
    assert len(lines) == (1 if pip_status else 2)


def test_ci_runs_python_3_9_at_the_oldest_release_setup_py_allows() -> None:
    setup = (ROOT / "setup.py").read_text(encoding="utf-8")
    block = setup[setup.index("install_requires=[") : setup.index("extras_require=")]
    floors = dict(re.findall(r'"([A-Za-z0-9_.-]+)>=([0-9.]+)', block))
    assert set(floors) == {"websocket-client", "websockets", "requests", "msgspec"}
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    pinned = dict(re.findall(r'"([A-Za-z0-9_.-]+)==([0-9.]+)"', ci))
    # Pins may spell a floor in full ("1.6" as "1.6.0").
    assert {name: pinned.get(name, "").removesuffix(".0") for name in floors} == {
        name: floor.removesuffix(".0") for name, floor in floors.items()
    }


def test_python_code_blocks_compile() -> None:
    blocks = re.findall(r"\.\. code-block:: python\n\n((?:    .*\n|\n)+)", README)
    assert len(blocks) >= 3
    for block in blocks:
        source = "\n".join(line[4:] for line in block.splitlines())
        compile(source, "README.rst", "exec")


def test_every_example_named_in_the_readme_exists() -> None:
    for name in re.findall(r"``([a-z_]+\.(?:py|ipynb))``", README):
        if name in ("setup.py",):
            continue
        assert (ROOT / "examples" / name).exists(), name
