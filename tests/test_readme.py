"""README.rst stays true: valid reStructuredText, its commands are the ones CI runs."""

from __future__ import annotations

import io
import re
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
