"""No module over ~400 lines unless it is one cohesive thing that says why at its top (issue 12):
a reader opening a long module learns first why it was not split."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIMIT = 420  # ~400: a few lines of slack so a small change does not force a split
REASON = "Why one module"


def long_modules_without_a_reason() -> list[str]:
    found = []
    for folder in ("blitzclawd", "plugins", "tui", "cloudinit"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            text = path.read_text()
            lines = text.count("\n")
            docstring = ast.get_docstring(ast.parse(text)) or ""
            if lines > LIMIT and REASON not in docstring:
                found.append(f"{path.relative_to(ROOT)} ({lines} lines)")
    return found


def test_every_long_module_says_why_it_is_one() -> None:
    assert not long_modules_without_a_reason()
