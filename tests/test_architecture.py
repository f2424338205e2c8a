"""The architecture as tests: the import contracts of pyproject.toml ([tool.importlinter]).

They run here, not only as ``lint-imports``, so that ``python -m pytest`` holds the one-way
imports of docs/architecture.md in CI.
"""

from __future__ import annotations

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
