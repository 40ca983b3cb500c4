"""Pool-server user data: accepted by Debian's cloud-init, hostile values refused, ready call real.

``cloud-init schema`` comes from Debian's own package (not on PyPI): the test downloads
``cloud-init`` and the python3-* packages of its dependency closure with ``apt-get download``,
unpacks them with ``dpkg-deb -x`` into ``~/.cache/blitzclawd-test/cloud-init-<version>`` (once;
later runs reuse it) and runs them with Debian's python3, the interpreter they were built for.
Nothing needs installing by hand. cloud-init silently skips validation when jsonschema is
missing, so a test also shows that a broken config is refused.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh
import pytest
from aiohttp import web
from openclaw_tool import CACHE_ROOT, cache_lock

from blitzclawd.fleet import google_skill
from blitzclawd.fleet.cloudinit import render_pool_server, render_template
from blitzclawd.fleet.versions import (
    GOG_SHA256_LINUX_AMD64,
    GOG_VERSION,
    NODE_VERSION,
    NODESOURCE_KEY_FINGERPRINT,
    OPENCLAW_VERSION,
)

DEBIAN_PYTHON = Path("/usr/bin/python3")
READY_SH = Path(__file__).resolve().parent.parent / "cloudinit" / "ready.sh"
SECRET = "Kx9_wQ2-eR7tY5uI3oP1aS8dF6gH4jL0zX"
ED25519 = asyncssh.generate_private_key("ssh-ed25519", comment="provisioner@blitzclaw")
RSA = asyncssh.generate_private_key("ssh-rsa", key_size=2048)
VALID: dict[str, Any] = {
    "server_name": "blitz-pool-7",
    "server_secret": SECRET,
    "ready_url": "http://127.0.0.1:8080/internal/instance-ready",
    "api_host_cidr": "203.0.113.7/32",
    "ssh_authorized_key": ED25519.export_public_key().decode(),
}
SLOW = pytest.mark.timeout(600)  # the first run downloads ~3 MB of Debian packages


# -- Debian's cloud-init, fetched and cached ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class CloudInit:
    root: Path  # the packages, unpacked
    version: str

    def python(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        env = {
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": str(self.root / "usr/lib/python3/dist-packages"),
            "PYTHONNOUSERSITE": "1",
            "LANG": "C.UTF-8",
        }
        return subprocess.run(
            [str(DEBIAN_PYTHON), *args],
            input=stdin,
            env=env,
            # Not the checkout: `python -c` puts its cwd first on sys.path, where our cloudinit/
            # (installed as blitzclawd_cloudinit) would shadow Debian's `cloudinit` package.
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def schema(self, path: Path) -> subprocess.CompletedProcess:
        """``cloud-init schema --config-file PATH``, the packaged entry point itself."""
        return self.python(
            str(self.root / "usr/bin/cloud-init"), "schema", "--config-file", str(path)
        )

    def parse(self, text: str) -> dict[str, Any]:
        """The user data as cloud-init loads it, plus the runcmd script cloud-init would write."""
        code = (
            "import json, sys\n"
            "from cloudinit import safeyaml, util\n"
            "cfg = safeyaml.load(sys.stdin.read())\n"
            "print(json.dumps({'cfg': cfg, 'runcmd': util.shellify(cfg['runcmd'])}))\n"
        )
        done = self.python("-c", code, stdin=text)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)


def _apt(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=600, check=False)


def _candidate() -> str | None:
    policy = _apt("apt-cache", "policy", "cloud-init").stdout
    match = re.search(r"Candidate:\s*(\S+)", policy)
    return match.group(1) if match and match.group(1) != "(none)" else None


def ensure_cloud_init(cache: Path = CACHE_ROOT) -> CloudInit:
    if not DEBIAN_PYTHON.is_file():
        pytest.fail(f"{DEBIAN_PYTHON} (Debian's python3) is needed to run Debian's cloud-init")
    for tool in ("apt-get", "apt-cache", "dpkg-deb"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is needed to fetch Debian's cloud-init")
    version = _candidate()
    if version is None:  # a machine whose apt lists were never fetched
        updated = _apt("apt-get", "update")
        version = _candidate()
        if version is None:
            pytest.fail(f"apt knows no cloud-init package: {updated.stderr[-800:]}")
    final = cache / f"cloud-init-{version}"
    if (final / "usr/bin/cloud-init").is_file():
        return CloudInit(final, version)
    cache.mkdir(parents=True, exist_ok=True)
    with cache_lock(cache / "cloud-init.lock", timeout=900):
        if not (final / "usr/bin/cloud-init").is_file():
            _fetch(cache, final)
    return CloudInit(final, version)


def _fetch(cache: Path, final: Path) -> None:
    # cloud-init plus the python3-* packages it needs, transitively (the interpreter is there).
    closure = _apt(
        "apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests",
        "--no-conflicts", "--no-breaks", "--no-replaces", "--no-enhances", "--no-pre-depends",
        "cloud-init",
    )  # fmt: skip
    names = sorted({line for line in closure.stdout.splitlines() if line.startswith("python3-")})
    scratch = cache / f".cloud-init.tmp-{os.getpid()}"
    shutil.rmtree(scratch, ignore_errors=True)
    (scratch / "debs").mkdir(parents=True)
    try:
        got = subprocess.run(
            ["apt-get", "download", "-o", "APT::Sandbox::User=root", "cloud-init", *names],
            cwd=scratch / "debs",
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if got.returncode != 0:
            pytest.fail(f"apt-get download cloud-init failed: {got.stderr[-1500:]}")
        for deb in sorted((scratch / "debs").glob("*.deb")):
            subprocess.run(
                ["dpkg-deb", "-x", str(deb), str(scratch / "root")], check=True, timeout=120
            )
        shutil.rmtree(final, ignore_errors=True)
        (scratch / "root").rename(final)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@pytest.fixture(scope="module")
def cloud_init() -> CloudInit:
    return ensure_cloud_init()


def render(**changes: Any) -> str:
    return render_pool_server(**{**VALID, **changes})


# -- the schema ------------------------------------------------------------------------------


@SLOW
@pytest.mark.parametrize(
    "changes",
    [
        {},
        {
            "ready_url": "https://api.blitzclaw.test:8443/internal/instance-ready",
            "api_host_cidr": "2001:db8:10::/64",
            "ssh_authorized_key": RSA.export_public_key().decode(),
        },
        {"ready_url": "http://[::1]:9000/internal/instance-ready", "api_host_cidr": "10.20.0.0/16"},
    ],
    ids=["ipv4-ed25519", "ipv6-rsa-https", "ipv6-url"],
)
def test_rendered_pool_server_passes_cloud_init_schema(
    cloud_init: CloudInit, tmp_path: Path, changes: dict[str, Any]
) -> None:
    path = tmp_path / "user-data.yaml"
    path.write_text(render(**changes))
    done = cloud_init.schema(path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Valid cloud-config" in done.stdout


@SLOW
def test_cloud_init_schema_check_can_fail(cloud_init: CloudInit, tmp_path: Path) -> None:
    """Without jsonschema cloud-init would pass anything: show this one really validates."""
    assert cloud_init.version.startswith(("22.", "23.", "24.", "25.")), cloud_init.version
    broken = render().replace("lock_passwd: true", 'lock_passwd: "nope"')
    assert broken != render()
    path = tmp_path / "user-data.yaml"
    path.write_text(broken)
    done = cloud_init.schema(path)
    assert done.returncode != 0
    assert "lock_passwd" in done.stdout + done.stderr


# -- what the rendered user data does --------------------------------------------------------


@pytest.fixture(scope="module")
def parsed(cloud_init: CloudInit) -> dict[str, Any]:
    return cloud_init.parse(render())


def _file(cfg: dict[str, Any], path: str) -> dict[str, Any]:
    (entry,) = (f for f in cfg["write_files"] if f["path"] == path)
    return entry


@SLOW
def test_env_file_lines(parsed: dict[str, Any]) -> None:
    text = render()
    # The fake cloud finds these in the raw user data with exactly these regexes.
    assert re.findall(r"^\s*BLITZCLAW_READY_URL=(\S+)\s*$", text, re.M) == [VALID["ready_url"]]
    assert re.findall(r"^\s*BLITZCLAW_SERVER_SECRET=(\S+)\s*$", text, re.M) == [SECRET]
    env = _file(parsed["cfg"], "/etc/blitzclaw/server.env")
    assert env["permissions"] == "0600" and env["owner"] == "root:root"
    lines = env["content"].splitlines()
    assert f"BLITZCLAW_READY_URL={VALID['ready_url']}" in lines
    assert f"BLITZCLAW_SERVER_SECRET={SECRET}" in lines
    assert f"BLITZCLAW_SERVER_NAME={VALID['server_name']}" in lines


@SLOW
def test_firewall_and_fail2ban(parsed: dict[str, Any]) -> None:
    cfg, script = parsed["cfg"], parsed["runcmd"]
    ufw = [cmd for cmd in cfg["runcmd"] if isinstance(cmd, list) and cmd[0] == "ufw"]
    assert ufw == [
        ["ufw", "default", "deny", "incoming"],
        ["ufw", "default", "allow", "outgoing"],
        ["ufw", "allow", "from", "203.0.113.7/32", "to", "any", "port", "22", "proto", "tcp"],
        ["ufw", "--force", "enable"],
    ]
    # As cloud-init writes it: every argv item single-quoted.
    assert "'ufw' 'allow' 'from' '203.0.113.7/32' 'to' 'any' 'port' '22' 'proto' 'tcp'\n" in script
    assert {"ufw", "fail2ban"} <= set(cfg["packages"])
    jail = _file(cfg, "/etc/fail2ban/jail.d/blitzclaw.conf")["content"]
    assert "ignoreip = 127.0.0.1/8 ::1 203.0.113.7/32" in jail and "[sshd]" in jail
    assert ["systemctl", "enable", "fail2ban"] in cfg["runcmd"]


@SLOW
def test_openclaw_install_gateway_unit_and_ready_last(parsed: dict[str, Any]) -> None:
    cfg, script = parsed["cfg"], parsed["runcmd"]
    assert cfg["hostname"] == VALID["server_name"]
    (user,) = (u for u in cfg["users"] if isinstance(u, dict) and u["name"] == "openclaw")
    assert user["ssh_authorized_keys"] == [VALID["ssh_authorized_key"].strip()]
    assert user["lock_passwd"] is True and "restart openclaw-gateway.service" in user["sudo"]
    install = ["/usr/local/lib/blitzclaw/install-openclaw.sh", "24", NODE_VERSION]
    assert [*install, OPENCLAW_VERSION, NODESOURCE_KEY_FINGERPRINT] in cfg["runcmd"]
    unit = _file(cfg, "/etc/systemd/system/openclaw-gateway.service")["content"]
    for line in (
        "ExecStart=/usr/local/bin/openclaw gateway",
        "User=openclaw",
        "Restart=on-failure",
    ):
        assert f"\n{line}\n" in unit
    timer = _file(cfg, "/etc/systemd/system/openclaw-gateway-restart.timer")["content"]
    assert (
        "OnCalendar=" in timer
        and "try-restart openclaw-gateway.service"
        in (_file(cfg, "/etc/systemd/system/openclaw-gateway-restart.service")["content"])
    )
    assert ["systemctl", "enable", "--now", "openclaw-gateway-restart.timer"] in cfg["runcmd"]
    # Fail fast, and the ready call is the very last step.
    assert cfg["runcmd"][0] == "set -e"
    assert cfg["runcmd"][-1] == ["/usr/local/lib/blitzclaw/ready.sh"]
    assert script.startswith("#!/bin/sh\nset -e\n")
    assert subprocess.run(["sh", "-n"], input=script, text=True, check=False).returncode == 0
    for entry in cfg["write_files"]:
        if entry["content"].startswith("#!/bin/bash"):
            check = subprocess.run(["bash", "-n"], input=entry["content"], text=True, check=False)
            assert check.returncode == 0, entry["path"]


# -- hostile values --------------------------------------------------------------------------


HOSTILE: list[tuple[str, Any]] = [
    ("server_name", "pool\nruncmd: [reboot]"),
    ("server_name", 'x"; rm -rf /'),
    ("server_name", "UPPER"),
    ("server_name", "a" * 64),
    ("server_name", "-leading"),
    ("server_name", "blitz-pool-7\n"),
    ("server_secret", "short"),
    ("server_secret", "x" * 30 + "$(reboot)"),
    ("server_secret", "x" * 30 + "\nBLITZCLAW_READY_URL=http://evil"),
    ("server_secret", "x" * 30 + " "),
    ("ready_url", "http://h/x\nBLITZCLAW_READY_URL=http://evil/"),
    ("ready_url", "http://h/$(reboot)"),
    ("ready_url", "http://h/'; reboot; '"),
    ("ready_url", "http://h/x?a=1&b=2"),
    ("ready_url", "http://user:pw@h/x"),
    ("ready_url", "file:///etc/shadow"),
    ("ready_url", "http://h:99999/x"),
    ("ready_url", "http://h/ x"),
    ("api_host_cidr", "0.0.0.0/0"),
    ("api_host_cidr", "::/0"),
    ("api_host_cidr", "10.0.0.5/24"),
    ("api_host_cidr", "1.2.3.4; reboot"),
    ("api_host_cidr", "1.2.3.4/32 to any"),
    ("api_host_cidr", "any"),
    ("ssh_authorized_key", 'command="reboot" ' + VALID["ssh_authorized_key"]),
    ("ssh_authorized_key", VALID["ssh_authorized_key"].strip() + "\nssh-ed25519 AAAA evil"),
    ("ssh_authorized_key", "ssh-ed25519 not-base64!"),
    ("ssh_authorized_key", "ssh-rsa " + VALID["ssh_authorized_key"].split()[1]),  # type mismatch
    ("ssh_authorized_key", VALID["ssh_authorized_key"].strip().rsplit(" ", 1)[0] + ' "quoted"'),
    ("ssh_authorized_key", "ssh-dss AAAAB3NzaC1kc3M="),
    ("openclaw_version", "latest"),
    ("openclaw_version", "2026.9.6 && reboot"),
    ("openclaw_version", "2026.9.6\n"),
    ("node_major", 20),
    ("node_major", True),
    ("node_major", "24"),
    ("node_version", "25.0.0"),
    ("node_version", "24.21"),
]


@pytest.mark.parametrize(
    ("field", "value"), HOSTILE, ids=[f"{f}-{i}" for i, (f, _) in enumerate(HOSTILE)]
)
def test_hostile_values_refused(field: str, value: Any) -> None:
    with pytest.raises(ValueError, match=rf"^{field}:"):
        render(**{field: value})


def test_values_appear_only_where_placed() -> None:
    text = render()
    assert text.startswith("#cloud-config\n") and text.isascii()
    assert text.count(SECRET) == 1  # only in the 0600 env file
    assert text.count("203.0.113.7/32") == 2  # the ufw rule and fail2ban's ignoreip
    assert "{{" not in text and "}}" not in text


HOSTILE_VALUE = 'x"\nevil: 1\n{{ v }}\u2028'
# `{{ v | indent(2) }}`: indented (the filter's splitlines takes U+2028 for a line break), then
# quoted like any value.
INDENTED_VALUE = 'x"\n  evil: 1\n  {{ v }}\n'
HOSTILE_SCRIPT = 'echo "${#x}" {{ v }}\n\nexit 0\n'


def hostile_template(directory: Path) -> Path:
    (directory / "t.tmpl").write_text(
        "a: {{ v }}\n"
        "b: |\n  {{ literal(block) | indent(2) }}\n"
        'c: |\n  {{ file("s.sh") | indent(2) }}\n'
        "d: {{ v | indent(2) }}\n"
    )
    (directory / "s.sh").write_text(HOSTILE_SCRIPT)
    return directory


def test_the_template_engine_quotes_what_slips_through(tmp_path: Path) -> None:
    """Past the patterns, a value still cannot leave its scalar or reach the template engine,
    indented or not; a file beside the template is copied, never parsed; a missing or unused
    value is an error."""
    hostile_template(tmp_path)
    text = render_template("t.tmpl", {"v": HOSTILE_VALUE, "block": "one\ntwo"}, tmp_path)
    lines = text.split("\n")
    assert lines[0].startswith("a: ") and json.loads(lines[0][3:]) == HOSTILE_VALUE
    assert text.isascii() and "\nevil" not in text
    assert lines[1:8] == [
        "b: |",
        "  one",
        "  two",
        "c: |",
        '  echo "${#x}" {{ v }}',
        "",
        "  exit 0",
    ]
    # The indent filter on a value: a plain string, so still one JSON string on one line.
    assert lines[8].startswith("d: ") and json.loads(lines[8][3:]) == INDENTED_VALUE
    assert lines[9:] == [""]
    with pytest.raises(ValueError, match="printable ASCII"):
        render_template("t.tmpl", {"v": "", "block": "ok\x1b[2J"}, tmp_path)
    with pytest.raises(ValueError, match="printable ASCII"):
        render_template("t.tmpl", {"v": "", "block": "ok\rx: 1"}, tmp_path)
    with pytest.raises(KeyError, match="missing"):
        render_template("t.tmpl", {"v": ""}, tmp_path)
    with pytest.raises(KeyError, match="unused"):
        render_template("t.tmpl", {"v": "", "block": "", "extra": ""}, tmp_path)
    (tmp_path / "s.sh").write_bytes(b"echo one\x0cx: 1\n")  # a line break to splitlines
    with pytest.raises(ValueError, match=r"^s\.sh: only printable ASCII"):
        render_template("t.tmpl", {"v": "", "block": ""}, tmp_path)


@SLOW
def test_hostile_render_parses_as_the_yaml_it_looks_like(
    cloud_init: CloudInit, tmp_path: Path
) -> None:
    """The same render, parsed by the YAML loader cloud-init uses (Debian's PyYAML)."""
    text = render_template(
        "t.tmpl", {"v": HOSTILE_VALUE, "block": "one\ntwo"}, hostile_template(tmp_path)
    )
    code = (
        "import json, sys\n"
        "from cloudinit import safeyaml\n"
        "print(json.dumps(safeyaml.load(sys.stdin.read())))\n"
    )
    done = cloud_init.python("-c", code, stdin=text)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "a": HOSTILE_VALUE,
        "b": "one\ntwo\n",
        "c": HOSTILE_SCRIPT,
        "d": INDENTED_VALUE,
    }


# -- the ready call, for real ----------------------------------------------------------------


@dataclass
class Server:
    url: str
    requests: list[tuple[dict[str, str], bytes]]


@pytest.fixture
async def ready_server() -> AsyncIterator[Server]:
    seen: list[tuple[dict[str, str], bytes]] = []

    async def ready(request: web.Request) -> web.Response:
        seen.append((dict(request.headers), await request.read()))
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/internal/instance-ready", ready)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield Server(f"http://127.0.0.1:{port}/internal/instance-ready", seen)
    finally:
        await runner.cleanup()


def _stub(bin_dir: Path, name: str, output: str) -> None:
    path = bin_dir / name
    path.write_text(f"#!/bin/sh\nprintf '%s\\n' '{output}'\n")
    path.chmod(0o755)


def _ready_env(ci: CloudInit, tmp_path: Path, url: str, ufw_status: str) -> dict[str, str]:
    """Environment for cloudinit/ready.sh: the env file as rendered, stub ufw and openclaw."""
    cfg = ci.parse(render(ready_url=url))["cfg"]
    env_file = tmp_path / "server.env"
    env_file.write_text(_file(cfg, "/etc/blitzclaw/server.env")["content"])
    host_key = tmp_path / "ssh_host_ed25519_key.pub"
    host_key.write_text(ED25519.export_public_key().decode())
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    _stub(bin_dir, "openclaw", f"OpenClaw {OPENCLAW_VERSION} (test)")
    _stub(bin_dir, "ufw", ufw_status)
    return {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "BLITZCLAW_ENV_FILE": str(env_file),
        "BLITZCLAW_HOST_KEY_FILE": str(host_key),
    }


async def _run_ready(env: dict[str, str]) -> int:
    proc = await asyncio.create_subprocess_exec(
        "bash",
        str(READY_SH),
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        return await asyncio.wait_for(proc.wait(), 60)
    finally:
        if proc.returncode is None:  # curl would retry for minutes: don't leave it behind
            proc.kill()
            await proc.wait()


@SLOW
async def test_ready_script_reports_name_and_host_key(
    cloud_init: CloudInit, tmp_path: Path, ready_server: Server
) -> None:
    env = _ready_env(cloud_init, tmp_path, ready_server.url, "Status: active")
    assert await _run_ready(env) == 0
    ((headers, body),) = ready_server.requests
    assert headers["Authorization"] == f"Bearer {SECRET}"
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == {
        "server_name": VALID["server_name"],
        "host_key": ED25519.export_public_key().decode().strip(),
    }


@SLOW
async def test_ready_script_refuses_without_firewall(
    cloud_init: CloudInit, tmp_path: Path, ready_server: Server
) -> None:
    env = _ready_env(cloud_init, tmp_path, ready_server.url, "Status: inactive")
    assert await _run_ready(env) != 0
    assert ready_server.requests == []


# -- gog (the Google skill's CLI) ----------------------------------------------------------------

CLOUDINIT = READY_SH.parent


def test_gog_installed_pinned_with_the_gateways_environment(parsed: dict[str, Any]) -> None:
    cfg = parsed["cfg"]
    # Not fatal under runcmd's `set -e`: a server without gog still serves assistants.
    script = '/usr/local/lib/blitzclaw/install-gog.sh "$@" || echo "gog not installed" >&2'
    install = ["sh", "-c", script, "install-gog", GOG_VERSION, GOG_SHA256_LINUX_AMD64]
    assert install in cfg["runcmd"]
    assert cfg["runcmd"].index(install) < cfg["runcmd"].index(["/usr/local/lib/blitzclaw/ready.sh"])
    failing = subprocess.run(
        ["sh", "-c", script.replace("/usr/local/lib/blitzclaw/install-gog.sh", "false"), "x"],
        capture_output=True,
        text=True,
    )
    assert failing.returncode == 0 and "gog not installed" in failing.stderr
    wrapper = _file(cfg, "/usr/local/bin/blitzclaw-gog")
    assert wrapper["permissions"] == "0755" and wrapper["content"].startswith("#!/bin/sh\n")
    unit = _file(cfg, "/etc/systemd/system/openclaw-gateway.service")["content"]
    assert "\nEnvironmentFile=-/home/openclaw/.openclaw/gateway.env\n" in unit


@pytest.mark.parametrize(("field", "value"), [("gog_version", "latest"), ("gog_sha256", "ab" * 31)])
def test_gog_pins_refuse_hostile_values(field: str, value: str) -> None:
    with pytest.raises(ValueError, match=rf"^{field}:"):
        render_pool_server(**{**VALID, field: value})


def _gog_release(tmp_path: Path) -> tuple[Path, str]:
    """A release archive as gogcli publishes it (the `gog` binary at its top), and its SHA-256."""
    build = tmp_path / "build"
    build.mkdir()
    _stub(build, "gog", "gog v0.43.0 (test)")
    archive = tmp_path / "gogcli_0.43.0_linux_amd64.tar.gz"
    subprocess.run(["tar", "-czf", str(archive), "-C", str(build), "gog"], check=True)
    return archive, hashlib.sha256(archive.read_bytes()).hexdigest()


def _install_gog(tmp_path: Path, archive: Path, checksum: str) -> tuple[int, Path]:
    """cloudinit/install-gog.sh with curl serving `archive` and dpkg saying amd64."""
    stubs, target = tmp_path / "stubs", tmp_path / "bin"
    stubs.mkdir(exist_ok=True)
    target.mkdir(exist_ok=True)
    _stub(stubs, "dpkg", "amd64")
    curl = stubs / "curl"  # the URL is the last argument; -o names the file
    curl.write_text(
        '#!/bin/sh\nout=""\nwhile [ $# -gt 1 ]; do [ "$1" = -o ] && out=$2; shift; done\n'
        f'printf "%s\\n" "$1" > {tmp_path}/url\ncp {archive} "$out"\n'
    )
    curl.chmod(0o755)
    env = {**os.environ, "PATH": f"{stubs}:{os.environ['PATH']}", "BLITZCLAW_BIN_DIR": str(target)}
    script = CLOUDINIT / "install-gog.sh"
    done = subprocess.run(
        ["bash", str(script), GOG_VERSION, checksum], env=env, capture_output=True, timeout=60
    )
    return done.returncode, target / "gog"


def test_install_gog_installs_the_pinned_archive(tmp_path: Path) -> None:
    archive, checksum = _gog_release(tmp_path)
    code, gog = _install_gog(tmp_path, archive, checksum)
    assert code == 0 and os.access(gog, os.X_OK)
    url = (tmp_path / "url").read_text().strip()
    assert url == (
        f"https://github.com/openclaw/gogcli/releases/download/v{GOG_VERSION}/"
        f"gogcli_{GOG_VERSION}_linux_amd64.tar.gz"
    )


def test_install_gog_refuses_an_archive_with_another_checksum(tmp_path: Path) -> None:
    archive, _ = _gog_release(tmp_path)
    code, gog = _install_gog(tmp_path, archive, "0" * 64)
    assert code != 0 and not gog.exists()


def test_the_gog_wrapper_runs_gog_with_the_gateways_env_file(tmp_path: Path) -> None:
    home, stubs = tmp_path / "home", tmp_path / "stubs"
    (home / ".openclaw").mkdir(parents=True)
    stubs.mkdir()
    gog = stubs / "gog"
    gog.write_text('#!/bin/sh\necho "$GOG_KEYRING_BACKEND $GOG_KEYRING_PASSWORD $*"\n')
    gog.chmod(0o755)
    env = {"HOME": str(home), "PATH": f"{stubs}:/usr/bin:/bin"}
    wrapper = [str(CLOUDINIT / "blitzclaw-gog"), "--no-input", "auth", "list"]
    # No env file yet (no account attached): gog runs as it is.
    assert subprocess.run(wrapper, env=env, capture_output=True, text=True).stdout == (
        "  --no-input auth list\n"
    )
    (home / ".openclaw" / "gateway.env").write_text(google_skill.env_file("pw_Abc-123"))
    done = subprocess.run(wrapper, env=env, capture_output=True, text=True, check=True)
    assert done.stdout == "file pw_Abc-123 --no-input auth list\n"
