"""The architecture as tests: the import contracts of pyproject.toml ([tool.importlinter]) and
the size of modules.

The contracts run here, not only as ``lint-imports``, so that ``python -m pytest`` holds the
one-way imports of docs/architecture.md in CI.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept() -> None:
    # A child process with this checkout first on the path, so the contracts judge this tree
    # (not an installed copy); no cache, so no stale graph.
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    lint = "from importlinter.cli import lint_imports_command; lint_imports_command()"
    config = str(ROOT / "pyproject.toml")
    done = subprocess.run(
        [sys.executable, "-c", lint, "--no-cache", "--no-logo", "--config", config],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": path}, capture_output=True, text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


#: a module longer than this says why at the top: a line of its docstring starting "Size:"
MAX_LINES = 400
#: modules allowed past MAX_LINES without a reason (none left)
EXEMPT: set[str] = set()


def _size_reason(source: str) -> str | None:
    doc = ast.get_docstring(ast.parse(source)) or ""
    lines = [line.strip() for line in doc.splitlines()]
    reasons = [line[len("Size:"):].strip() for line in lines if line.startswith("Size:")]
    return next((r for r in reasons if r), None)


def test_no_module_is_long_without_a_reason_at_its_top() -> None:
    long = []
    for path in sorted((ROOT / "sinsr_cli").rglob("*.py")):
        name = path.relative_to(ROOT).as_posix()
        source = path.read_text(encoding="utf-8")
        lines = len(source.splitlines())
        if lines > MAX_LINES and name not in EXEMPT and _size_reason(source) is None:
            long.append(f"{name}: {lines} lines")
    assert not long, f"over {MAX_LINES} lines with no 'Size: <reason>' line in the docstring: {long}"


def test_a_size_reason_is_a_docstring_line_with_text() -> None:
    assert _size_reason('"""Tables.\n\nSize: one table, read top to bottom."""') == "one table, read top to bottom."
    assert _size_reason('"""Tables.\n\nSize:\n"""') is None
    assert _size_reason('# Size: a comment is not the docstring\n"""Tables."""') is None
    assert _size_reason("x = 1") is None
