"""The project as installed, not as checked out: `pip install .` (not editable) into a fresh venv
outside the checkout renders a pool server's cloud-init from package data, and the wheel claims
only the project's own top-level names (no `plugins`, `tui` or `cloudinit`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import jinja2
import markupsafe
import pytest
import setuptools

ROOT = Path(__file__).resolve().parent.parent
# The top-level directories and the import names they install as.
INSTALLED_AS = {
    "blitzclaw": "blitzclaw",
    "blitzclawd": "blitzclawd",
    "plugins": "blitzclawd_plugins",
    "tui": "blitzclawd_tui",
    "cloudinit": "blitzclawd_cloudinit",
}
RENDER = """
import json, sys
from blitzclawd.fleet.cloudinit import render_pool_server
print(json.dumps({"file": __import__("blitzclawd").__file__, "text": render_pool_server(
    server_name="blitz-pool-1",
    server_secret="Kx9_wQ2-eR7tY5uI3oP1aS8dF6gH4jL0zX",
    ready_url="https://api.blitzclaw.test/internal/instance-ready",
    api_host_cidr="203.0.113.7/32",
    ssh_authorized_key=sys.argv[1],
)}))
"""
ED25519_PUB = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl provisioner"
)


def expected_packages() -> set[str]:
    """Every directory with an __init__.py under the mapped top-level directories, by the
    dotted name it installs as."""
    names = set()
    for top, name in INSTALLED_AS.items():
        for init in (ROOT / top).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / top).parts
            names.add(".".join((name, *rel)))
    return names


def test_every_package_directory_is_listed_under_its_installed_name() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert set(config["packages"]) == expected_packages()
    assert config["package-dir"] == {name: top for top, name in INSTALLED_AS.items() if top != name}


def run(*args: str | Path, cwd: Path, pythonpath: str | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


@pytest.mark.timeout(900)
def test_pip_install_dot_renders_cloud_init_and_claims_no_generic_names(tmp_path: Path) -> None:
    # A copy of the tracked tree: the build writes build/ and *.egg-info beside its sources.
    source = tmp_path / "src"
    tracked = run("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", cwd=ROOT)
    for rel in filter(None, tracked.split("\0")):
        if (ROOT / rel).is_file():
            (source / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, source / rel)
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    # Nothing is downloaded (--no-deps): the build backend is this environment's setuptools (a
    # dev dependency), lent to the fresh venv's pip for the build only; rendering needs Jinja2,
    # lent the same way (its two packages alone, linked into a directory of their own).
    # PYTHONPATH adds a directory without running its .pth files, so this checkout's editable
    # install stays out of the fresh venv.
    build_backend = str(Path(setuptools.__file__).parent.parent)
    run(
        python,
        *("-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "-q", "."),
        cwd=source,
        pythonpath=build_backend,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.rmtree(source)  # nothing may still point into a checkout

    lent = tmp_path / "lent"
    lent.mkdir()
    for package in (jinja2, markupsafe):
        (lent / package.__name__).symlink_to(Path(package.__file__).parent)
    out = json.loads(run(python, "-c", RENDER, ED25519_PUB, cwd=elsewhere, pythonpath=str(lent)))
    assert Path(out["file"]).is_relative_to(venv)
    text = out["text"]
    assert text.startswith("#cloud-config\n")
    assert '"blitz-pool-1"' in text
    assert "BLITZCLAW_READY_URL=https://api.blitzclaw.test/internal/instance-ready" in text
    assert "ignoreip = 127.0.0.1/8 ::1 203.0.113.7/32" in text
    assert ED25519_PUB in text
    # The included scripts and units made it into the wheel and the output.
    for included in ("ready.sh", "install-openclaw.sh", "openclaw-gateway.service"):
        lines = (ROOT / "cloudinit" / included).read_text().splitlines()
        assert all(line.strip() in text for line in lines if line.strip()), included

    shown = run(python, "-m", "pip", "show", "-f", "blitzclawd", cwd=elsewhere)
    files = [line.strip() for line in shown.split("Files:", 1)[1].splitlines() if line.strip()]
    tops = {f.split("/", 1)[0] for f in files if "/" in f}
    assert not tops & {"plugins", "tui", "cloudinit"}, sorted(tops)
    assert {"blitzclawd", "blitzclawd_plugins", "blitzclawd_tui", "blitzclawd_cloudinit"} <= tops
    for package in expected_packages():
        assert package.replace(".", "/") + "/__init__.py" in files, package
    for data in ("pool-server.yaml.tmpl", "ready.sh", "openclaw-gateway.service"):
        assert f"blitzclawd_cloudinit/{data}" in files
    assert any(f.startswith("blitzclawd/db/migrations/") and f.endswith(".sql") for f in files)
