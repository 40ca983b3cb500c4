"""Modules stay small enough to read: over ~400 lines, a module says at its top why it is one."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "blitzclawd"
LIMIT = 420  # "~400"
MARK = "Why one module:"


def test_no_module_over_the_limit_without_a_reason_at_its_top() -> None:
    unexplained = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = path.read_text()
        lines = source.count("\n")
        if lines <= LIMIT:
            continue
        doc = ast.get_docstring(ast.parse(source)) or ""
        if MARK not in doc:
            unexplained.append(f"{path.relative_to(PACKAGE.parent)}: {lines} lines")
    assert not unexplained, f"split these, or say '{MARK} ...' in their docstring: {unexplained}"
