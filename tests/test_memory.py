"""The daemon does not pay for what it may never use: aiogram (~155 MB resident once imported)
is loaded only by the first Telegram token check (issue 13; figures: bench/rss.py)."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys
import blitzclawd.cli, blitzclawd.daemon, blitzclawd.children, blitzclawd.http.app
print(sorted(m for m in ("aiogram", "textual") if m in sys.modules))
"""


def test_starting_the_daemon_imports_no_aiogram() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "[]"


def test_the_probe_sees_an_import() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import aiogram\n" + PROBE],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert done.stdout.strip() == "['aiogram']"
