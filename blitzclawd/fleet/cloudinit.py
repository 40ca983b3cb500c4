"""User data for pool servers: ``cloudinit/pool-server.yaml.tmpl`` with validated values.

The templates are package data of ``blitzclawd_cloudinit`` (the top-level ``cloudinit/``
directory, installed under the project's own name), loaded by Jinja2's PackageLoader, so an
installed wheel finds them as well as a checkout.

Rendered by Jinja2 with StrictUndefined (a missing value is an error, never an empty string),
autoescape off (YAML, not HTML) and keep_trailing_newline. Defence in depth against a hostile
value: every value is checked against a narrow pattern (ValueError naming the argument
otherwise), then every ``{{ value }}`` is output as a JSON string (the environment's
`finalize`), which is a YAML double-quoted scalar, so it cannot end its scalar or open a new
key. Only two helpers make text that is output unquoted: ``literal(value)`` (printable ASCII
lines only) and ``file(name)`` (a script or unit beside the template, read through the loader as
it is, never parsed as a template: shell's ``${#x}`` is Jinja's comment syntax). Jinja's
``indent`` filter puts their lines into the YAML block scalar they sit in
(``{{ file("ready.sh") | indent(6) }}``) and keeps them unquoted; indenting anything else gives
a plain string, quoted like any value. The scripts on the server read values from files or get
them as runcmd argv items (cloud-init quotes those); no value is pasted into shell text.
"""

from __future__ import annotations

import base64
import binascii
import functools
import ipaddress
import json
import os
import re
import struct
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import jinja2
import jinja2.filters
import jinja2.meta

from blitzclawd.fleet.versions import (
    GOG_SHA256_LINUX_AMD64,
    GOG_VERSION,
    NODE_MAJOR,
    NODE_VERSION,
    NODESOURCE_KEY_FINGERPRINT,
    OPENCLAW_VERSION,
)

if TYPE_CHECKING:
    from blitzclawd.config import FleetSettings

TEMPLATE_PACKAGE = "blitzclawd_cloudinit"
POOL_SERVER_TEMPLATE = "pool-server.yaml.tmpl"

_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_BLOCK_LINE = re.compile(r"^[\x20-\x7e]*$")  # printable ASCII: literal in a YAML block scalar
_FILE_LINE = re.compile(r"^[\t\x20-\x7e]*$")  # a script or unit may also hold tabs
# RFC 1123 label: what Hetzner accepts as a server name and Linux as a hostname.
_SERVER_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_SECRET = re.compile(r"^[A-Za-z0-9_-]{20,128}$")
# No query, fragment, user info or quotes: the URL travels through an env file and curl's argv.
_READY_URL = re.compile(
    r"^https?://(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])"
    r"(?::[0-9]{1,5})?(?:/[A-Za-z0-9._~%/-]*)?$"
)
_VERSION = re.compile(r"^[0-9]{1,5}\.[0-9]{1,5}\.[0-9]{1,5}(?:-[A-Za-z0-9.]{1,32})?$")
_NODE_VERSION = re.compile(r"^[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}$")
_FINGERPRINT = re.compile(r"^[0-9A-F]{40}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# An npm package at an exact version: "@scope/name@1.2.3" (no ranges, tags, URLs or paths).
_PLUGIN_SPEC = re.compile(
    r"^(?:@[a-z0-9][a-z0-9._-]{0,63}/)?[a-z0-9][a-z0-9._-]{0,127}@[0-9]{1,9}\.[0-9]{1,9}"
    r"\.[0-9]{1,9}(?:-[A-Za-z0-9.]{1,32})?$"
)
_SSH_KEY_TYPES = frozenset(
    {
        "ssh-ed25519",
        "ssh-rsa",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
    }
)
_SSH_COMMENT = re.compile(r"^[A-Za-z0-9@._+:-]{1,100}$")


def render_pool_server(
    *,
    server_name: str,
    server_secret: str,
    ready_url: str,
    api_host_cidr: str,
    ssh_authorized_key: str,
    openclaw_version: str = OPENCLAW_VERSION,
    node_major: int = NODE_MAJOR,
    node_version: str = NODE_VERSION,
    openclaw_plugins: Sequence[str] = (),
    gog_version: str = GOG_VERSION,
    gog_sha256: str = GOG_SHA256_LINUX_AMD64,
) -> str:
    """``#cloud-config`` user data for one pool server; `openclaw_plugins` are the pinned npm
    specs of the OpenClaw plugins the channels need, installed for the gateway user."""
    name = _match(_SERVER_NAME, server_name, "server_name")
    secret = _match(_SECRET, server_secret, "server_secret")
    url = _ready_url(ready_url)
    cidr = _cidr(api_host_cidr)
    key = _ssh_key(ssh_authorized_key)
    version = _match(_VERSION, openclaw_version, "openclaw_version")
    major = _node_major(node_major)
    node = _match(_NODE_VERSION, node_version, "node_version")
    if node.split(".")[0] != str(major):
        raise ValueError(f"node_version: {node} is not a Node.js {major} release")
    fingerprint = _match(_FINGERPRINT, NODESOURCE_KEY_FINGERPRINT, "fingerprint")
    packages = [_match(_PLUGIN_SPEC, spec, "openclaw_plugins") for spec in openclaw_plugins]
    gog = _match(_VERSION, gog_version, "gog_version")
    gog_sum = _match(_SHA256, gog_sha256, "gog_sha256")
    # The fake cloud and the daemon's tooling read these two lines with a regex: keep the form.
    server_env = (
        f"BLITZCLAW_SERVER_NAME={name}\n"
        f"BLITZCLAW_READY_URL={url}\n"
        f"BLITZCLAW_SERVER_SECRET={secret}\n"
    )
    # SSH is only open to the API host, so fail2ban must never ban the API host itself.
    jail = (
        f"[DEFAULT]\nignoreip = 127.0.0.1/8 ::1 {cidr}\n\n"
        "[sshd]\nenabled = true\nbackend = systemd\n"
    )
    values = {
        "server_name": name,
        "ssh_authorized_key": key,
        "server_env": server_env,
        "fail2ban_jail": jail,
        "node_major": str(major),
        "node_version": node,
        "openclaw_version": version,
        "nodesource_key_fingerprint": fingerprint,
        "api_host_cidr": cidr,
        "openclaw_plugins": packages,
        "gog_version": gog,
        "gog_sha256": gog_sum,
    }
    return render_template(POOL_SERVER_TEMPLATE, values)


class _Unquoted(str):
    """Text the template helpers made (block lines, checked): output as it is."""


def _finalize(value: Any) -> str:
    if isinstance(value, _Unquoted):
        return value
    if not isinstance(value, str):
        raise TypeError(f"template values are strings, not {type(value).__name__}")
    # ensure_ascii: the output stays ASCII whatever slipped through, so no YAML line breaks.
    return json.dumps(value, ensure_ascii=True)


def _block(text: str, pattern: re.Pattern[str], what: str) -> _Unquoted:
    """Lines for a YAML block scalar: each matching `pattern` (so "\\n" is the only line break,
    for YAML and for the indent filter's splitlines alike); trailing newlines dropped (the
    template's own line break follows)."""
    text = text.rstrip("\n")
    if not all(pattern.fullmatch(line) for line in text.split("\n")):
        raise ValueError(what)
    return _Unquoted(text)


def _indent(text: str, *args: Any, **kwargs: Any) -> str:
    """Jinja's own indent filter; text literal() or file() made stays unquoted once indented."""
    indented = jinja2.filters.do_indent(text, *args, **kwargs)
    return _Unquoted(indented) if isinstance(text, _Unquoted) else indented


def _environment(loader: jinja2.BaseLoader) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=loader,
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # YAML, not HTML: values are quoted by _finalize instead
        keep_trailing_newline=True,
        finalize=_finalize,
    )

    def literal(text: str) -> _Unquoted:
        return _block(text, _BLOCK_LINE, "a literal block holds only printable ASCII lines")

    def file(name: str) -> _Unquoted:
        if not _FILE_NAME.fullmatch(name):
            raise ValueError(f"{name!r}: not a file beside the template")
        source, _, _ = loader.get_source(env, name)  # the text as it is, not a template
        return _block(source, _FILE_LINE, f"{name}: only printable ASCII lines and tabs")

    env.globals.update(literal=literal, file=file)
    env.filters["indent"] = _indent
    return env


@functools.cache
def _package_environment() -> jinja2.Environment:
    return _environment(jinja2.PackageLoader(TEMPLATE_PACKAGE, package_path=""))


def render_template(
    name: str, values: dict[str, Any], directory: str | os.PathLike[str] | None = None
) -> str:
    """Fill a template of ``blitzclawd_cloudinit`` (or of `directory`): ``{{ key }}`` with the
    value as JSON; ``{{ literal(key) | indent(n) }}`` with the value's lines, and
    ``{{ file("name") | indent(n) }}`` with that file's, as a literal block indented by n."""
    if directory is None:
        env = _package_environment()
    else:
        env = _environment(jinja2.FileSystemLoader(directory))
    assert env.loader is not None
    source, _, _ = env.loader.get_source(env, name)
    used = jinja2.meta.find_undeclared_variables(env.parse(source)) - set(env.globals)
    if used != set(values):
        raise KeyError(
            f"template values: missing {used - set(values)}, unused {set(values) - used}"
        )
    return env.get_template(name).render(values)


def _match(pattern: re.Pattern[str], value: object, field: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ValueError(f"{field}: invalid value")
    return value


def _ready_url(value: object) -> str:
    url = _match(_READY_URL, value, "ready_url")
    port = re.search(r"^https?://[^/]*:([0-9]+)(?:/|$)", url)
    if port and not 0 < int(port.group(1)) < 65536:
        raise ValueError("ready_url: invalid port")
    return url


def _cidr(value: object) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[0-9A-Fa-f.:/]{2,49}", value):
        raise ValueError("api_host_cidr: not an IP network")
    try:
        # strict: 10.0.0.5/24 is refused rather than silently widened to 10.0.0.0/24.
        network = ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        raise ValueError(f"api_host_cidr: {exc}") from None
    if network.prefixlen == 0:
        raise ValueError("api_host_cidr: would open SSH to the whole internet")
    return str(network)


def _ssh_key(value: object) -> str:
    """One OpenSSH public key line: type, base64 blob (whose embedded type matches), comment."""
    if not isinstance(value, str):
        raise ValueError("ssh_authorized_key: not a string")
    parts = value.strip().split(" ")
    if len(parts) not in (2, 3) or parts[0] not in _SSH_KEY_TYPES:
        raise ValueError("ssh_authorized_key: not an OpenSSH public key line")
    if len(parts) == 3 and not _SSH_COMMENT.fullmatch(parts[2]):
        raise ValueError("ssh_authorized_key: comment may only hold [A-Za-z0-9@._+:-]")
    try:
        blob = base64.b64decode(parts[1], validate=True)
        (size,) = struct.unpack(">I", blob[:4])
        embedded = blob[4 : 4 + size].decode("ascii")
    except (binascii.Error, struct.error, UnicodeDecodeError):
        raise ValueError("ssh_authorized_key: bad key data") from None
    if embedded != parts[0] or len(blob) < 4 + size + 16:
        raise ValueError("ssh_authorized_key: key data does not match its type")
    return " ".join(parts)


def _node_major(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 24 <= value <= 99:
        raise ValueError("node_major: OpenClaw needs Node.js 24 or newer")
    return value


def user_data_for(cfg: FleetSettings, *, name: str, secret: str, ssh_public_key: str) -> str:
    """A pool server's user-data from the fleet settings (the pool manager's and a redeploy's)."""
    from blitzclawd import plugins  # the channels installed here decide what servers need

    return render_pool_server(
        server_name=name,
        server_secret=secret,
        ready_url=cfg.ready_url,
        api_host_cidr=cfg.api_host_cidr,
        ssh_authorized_key=ssh_public_key,
        openclaw_plugins=sorted(
            {spec for channel in plugins.channels().values() for spec in channel.server_packages}
        ),
    )
