"""A user's Google account on their instance's server, as the pinned OpenClaw reads it.

OpenClaw 2026.9.6 has no Gmail or Calendar plugin and no openclaw.json key for Google
credentials: its bundled `gog` skill teaches the agent to run the external `gog` CLI (gogcli,
installed on pool servers by cloud-init, blitzclawd.fleet.versions.GOG_VERSION), which keeps the
OAuth client and the refresh token in its own encrypted file keyring. So the provisioner hands
them to gog itself, on stdin (never on a command line, never in a log):

    blitzclaw-gog --no-input auth credentials set -            # {"installed": {client id, secret}}
    blitzclaw-gog --no-input auth import --email E --services gmail,calendar --refresh-token-stdin

`blitzclaw-gog` (cloudinit/blitzclaw-gog) is gog with the variables of ~/.openclaw/gateway.env,
the 0600 file the gateway's systemd unit reads too (EnvironmentFile): the keyring's backend and
its password, a fresh random one per configure (the keyring is rebuilt each time). OpenClaw drops
a secret-named variable set under skills.entries.gog.env, and openclaw.json's env.vars takes no
SecretRef, hence the unit's environment. openclaw.json gets the skill's non-secret settings: the
account to use and, for read-only scopes, GOG_READONLY (gog then refuses to send or change).

With no account attached (detached, disconnected, broken) the skill is disabled and gog's state
and the env file are removed. Research and checks: README "Integrations (Google)".
"""

from __future__ import annotations

import json
import re
import secrets as pysecrets
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncssh

from blitzclawd.fleet import remote

SKILL = "gog"
GOG = "blitzclaw-gog"  # /usr/local/bin/blitzclaw-gog, from cloud-init
ENV_FILE = ".openclaw/gateway.env"  # relative to the gateway user's home, like remote's paths
GOG_STATE = (".config/gogcli", ".local/share/gogcli")  # gog's config and data (keyring) dirs
# gog's service names for the Google scopes it knows (internal/googleauth/service.go).
_SERVICES = {
    "https://www.googleapis.com/auth/gmail.": "gmail",
    "https://mail.google.com/": "gmail",
    "https://www.googleapis.com/auth/calendar": "calendar",
    "https://www.googleapis.com/auth/drive": "drive",
    "https://www.googleapis.com/auth/contacts": "contacts",
    "https://www.googleapis.com/auth/spreadsheets": "sheets",
    "https://www.googleapis.com/auth/documents": "docs",
}
_EMAIL = re.compile(r"^[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9.-]{1,253}\.[A-Za-z]{2,63}$")
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._-]{1,256}$")


@dataclass(frozen=True, slots=True)
class GoogleAccount:
    """What gog needs: our OAuth client (a refresh token works only with the client that minted
    it) and the user's grant."""

    email: str
    client_id: str
    client_secret: str
    refresh_token: str
    scopes: tuple[str, ...]

    def __repr__(self) -> str:  # never the secret or the token
        return f"GoogleAccount(email={self.email!r}, scopes={self.scopes})"


def services(scopes: Sequence[str]) -> list[str]:
    """gog's --services for the granted scopes, in a stable order."""
    return sorted(
        {name for scope in scopes for prefix, name in _SERVICES.items() if scope.startswith(prefix)}
    )


def read_only(scopes: Sequence[str]) -> bool:
    """Every scope gog uses is read-only (sign-in scopes, openid and email, do not count)."""
    used = [s for s in scopes if any(s.startswith(prefix) for prefix in _SERVICES)]
    return bool(used) and all(scope.endswith(".readonly") for scope in used)


def skill_entry(account: GoogleAccount | None) -> dict[str, Any]:
    """openclaw.json's skills.entries.gog: off without an account (the skill would otherwise
    send the agent into gog's interactive setup, which a hosted user cannot finish)."""
    if account is None:
        return {"enabled": False}
    env = {"GOG_ACCOUNT": checked(account).email}
    if read_only(account.scopes):
        env["GOG_READONLY"] = "1"
    return {"enabled": True, "env": env}


def env_file(password: str) -> str:
    return f"GOG_KEYRING_BACKEND=file\nGOG_KEYRING_PASSWORD={password}\n"


def checked(account: GoogleAccount) -> GoogleAccount:
    """`account` if gog can use it, else ValueError naming what is wrong."""
    if not _EMAIL.fullmatch(account.email):
        raise ValueError("account_email: not an email address gog accepts")
    if not _CLIENT_ID.fullmatch(account.client_id):
        raise ValueError("client_id: not a Google OAuth client id")
    if not services(account.scopes):
        raise ValueError("scopes: none that gog uses (Gmail, Calendar, Drive, ...)")
    secret_values = {"client_secret": account.client_secret, "refresh_token": account.refresh_token}
    for field, value in secret_values.items():
        if not value or any(c.isspace() for c in value):
            raise ValueError(f"{field}: empty or holding spaces")
    return account


async def install(conn: asyncssh.SSHClientConnection, account: GoogleAccount) -> None:
    """gog's state rebuilt from scratch for `account`, under a new keyring password."""
    account = checked(account)
    await remove(conn)
    await remote.write_private(conn, ENV_FILE, env_file(pysecrets.token_urlsafe(32)))
    client = json.dumps(
        {"installed": {"client_id": account.client_id, "client_secret": account.client_secret}}
    )
    await remote.run(
        conn, f"{GOG} --no-input auth credentials set -", "giving gog the OAuth client", client
    )
    await remote.run(
        conn,
        f"{GOG} --no-input auth import --email {shlex.quote(account.email)} "
        f"--services {','.join(services(account.scopes))} --refresh-token-stdin --force",
        "giving gog the Google account",
        account.refresh_token,
    )


async def remove(conn: asyncssh.SSHClientConnection) -> None:
    """No Google account on the server: gog's keyring, client and the env file gone."""
    paths = " ".join(shlex.quote(p) for p in (*GOG_STATE, ENV_FILE))
    await remote.run(conn, f"rm -rf {paths}", "removing the Google account")
