"""Import hygiene and style: the daemon never imports textual; the tree is ruff clean."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

IMPORT_ALL = """
import importlib, pkgutil, sys
import blitzclawd, blitzclawd_plugins
for pkg in (blitzclawd, blitzclawd_plugins):
    for mod in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
        importlib.import_module(mod.name)
bad = sorted(m for m in sys.modules if m == "textual" or m.startswith("textual."))
print(len(sys.modules))
sys.exit("daemon imported: " + ", ".join(bad) if bad else 0)
"""


def test_daemon_never_imports_textual() -> None:
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_ALL], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.strip()) > 100  # the imports really happened


def test_ruff_is_clean() -> None:
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    assert ruff, "ruff is part of the dev install"
    for args in (["check", "."], ["format", "--check", "."]):
        done = subprocess.run([ruff, *args], capture_output=True, text=True, cwd=ROOT, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
