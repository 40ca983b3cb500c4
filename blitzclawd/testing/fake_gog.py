"""gog (gogcli), the Google CLI of OpenClaw's bundled gog skill, as the provisioner runs it on a
fake pool server: through cloud-init's `blitzclaw-gog` wrapper, which first exports the
variables of ~/.openclaw/gateway.env (KEY=VALUE lines).

    blitzclaw-gog [--no-input] auth credentials set -          # stdin: Google's client JSON
    blitzclaw-gog [--no-input] auth import --email E --services a,b --refresh-token-stdin [--force]
    blitzclaw-gog [--no-input] auth list --json

What it keeps follows gogcli (README "Integrations (Google)"): the client id in
~/.local/share/gogcli/credentials.json (0600), the client secret and each account's refresh
token as items of its encrypted file keyring (~/.local/share/gogcli/keyring, one 0600 file per
item). The keyring needs GOG_KEYRING_PASSWORD (no TTY to ask on); an import needs the client
first ("oauth credentials missing", exit 10); an account imported already needs --force. The
real items are JWEs; here each is Fernet under a PBKDF2 key of the password, so a test can read
them with the password and only with it (`accounts`).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

COMMAND = "blitzclaw-gog"
ENV_FILE = ".openclaw/gateway.env"
DATA_DIR = ".local/share/gogcli"
KEYRING_DIR = f"{DATA_DIR}/keyring"
CREDENTIALS = f"{DATA_DIR}/credentials.json"
ITEM_PREFIX = "_gogcli_key_v1_"
EXIT_USAGE, EXIT_CONFIG = 2, 10  # gog's exit codes: usage, config (credentials missing)
NO_PASSWORD = "no TTY available for keyring file backend password prompt; set GOG_KEYRING_PASSWORD"


class Output(Protocol):
    def out(self, data: str | bytes) -> bool: ...
    def err(self, data: str | bytes) -> bool: ...


def _key(password: str, salt: bytes) -> bytes:
    kdf = PBKDF2HMAC(algorithm=hashes.SHA256(), length=32, salt=salt, iterations=10_000)
    return base64.urlsafe_b64encode(kdf.derive(password.encode()))


class FakeGog:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.runs: list[list[str]] = []  # argv of every run (stdin is never in it)

    # -- what a test reads -------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        """gateway.env as the wrapper exports it ({} when there is none)."""
        path = self.home / ENV_FILE
        if not path.is_file():
            return {}
        pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
        return {k.strip(): v.strip() for k, v in pairs}

    def client_id(self) -> str | None:
        path = self.home / CREDENTIALS
        return json.loads(path.read_text())["client_id"] if path.is_file() else None

    def items(self) -> dict[str, Path]:
        folder = self.home / KEYRING_DIR
        if not folder.is_dir():
            return {}
        found = [p for p in folder.iterdir() if p.name.startswith(ITEM_PREFIX)]
        return {p.name.removeprefix(ITEM_PREFIX): p for p in found}

    def read_item(self, name: str, password: str) -> dict[str, Any]:
        """One keyring item, decrypted with `password` (InvalidToken with another one)."""
        doc = json.loads(self.items()[name].read_text())
        fernet = Fernet(_key(password, base64.b64decode(doc["salt"])))
        return json.loads(fernet.decrypt(doc["data"].encode()))

    def accounts(self) -> list[dict[str, Any]]:
        """The imported accounts, read with the password of gateway.env."""
        password = self.env().get("GOG_KEYRING_PASSWORD", "")
        return [
            self.read_item(name, password)
            for name in sorted(self.items())
            if name.startswith("token:default:")
        ]

    # -- the command ---------------------------------------------------------------------------

    async def run(self, args: list[str], io: Output, stdin: Callable[[], Awaitable[bytes]]) -> int:
        self.runs.append(list(args))
        env = self.env()
        words = [a for a in args if a not in ("--no-input", "--json", "-j")]
        if words[:3] == ["auth", "credentials", "set"] and words[3:] == ["-"]:
            return self._credentials(await stdin(), env, io)
        if words[:2] == ["auth", "import"]:
            options = _options(words[2:])
            if options is None or "refresh-token-stdin" not in options:
                io.err("gog auth import: --email, --services and --refresh-token-stdin\n")
                return EXIT_USAGE
            return self._import(options, (await stdin()).decode().strip(), env, io)
        if words == ["auth", "list"]:
            return self._list(env, io)
        io.err(f"gog: unknown command {' '.join(words)!r}\n")
        return EXIT_USAGE

    def _password(self, env: dict[str, str], io: Output) -> str | None:
        if env.get("GOG_KEYRING_BACKEND", "auto") not in ("auto", "file"):
            io.err("keyring backend unavailable (no D-Bus session)\n")
            return None
        password = env.get("GOG_KEYRING_PASSWORD")
        if not password:
            io.err(NO_PASSWORD + "\n")
        return password or None

    def _credentials(self, data: bytes, env: dict[str, str], io: Output) -> int:
        try:
            doc = json.loads(data)
            client = doc.get("installed") or doc.get("web")
            client_id, secret = client["client_id"], client["client_secret"]
        except (ValueError, TypeError, KeyError, AttributeError):
            io.err("invalid OAuth client JSON (want Google's downloaded client file)\n")
            return EXIT_USAGE
        password = self._password(env, io)
        if password is None:
            return 1
        self._write(CREDENTIALS, json.dumps({"client_id": client_id}))
        self._store("client_secret:default", {"client_secret": secret}, password)
        io.out(f"Saved OAuth client {client_id}\n")
        return 0

    def _import(self, options: dict[str, str], token: str, env: dict[str, str], io: Output) -> int:
        if self.client_id() is None:
            io.err("oauth credentials missing: run `gog auth credentials set`\n")
            return EXIT_CONFIG
        password = self._password(env, io)
        if password is None:
            return 1
        email = options.get("email", "")
        if "@" not in email or not token:
            io.err("gog auth import: an --email and a refresh token on stdin\n")
            return EXIT_USAGE
        if f"token:default:{email}" in self.items() and "force" not in options:
            io.err(f"a token for {email} exists already (use --force)\n")
            return 1
        payload = {
            "refresh_token": token,
            "email": email,
            "services": options.get("services", "").split(","),
            "scopes": [],
            "created_at": dt.datetime.now(dt.UTC).isoformat(),
        }
        self._store(f"token:default:{email}", payload, password)
        io.out(f"Imported {email}\n")
        return 0

    def _list(self, env: dict[str, str], io: Output) -> int:
        password = self._password(env, io)
        if password is None:
            return 1
        try:
            found = self.accounts()
        except InvalidToken:
            io.err("keyring: the password does not open it\n")
            return 1
        accounts = [{"email": a["email"], "services": a["services"]} for a in found]
        io.out(json.dumps({"accounts": accounts}) + "\n")
        return 0

    def _store(self, name: str, payload: dict[str, Any], password: str) -> None:
        salt = os.urandom(16)
        data = Fernet(_key(password, salt)).encrypt(json.dumps(payload).encode()).decode()
        doc = {"salt": base64.b64encode(salt).decode(), "data": data}
        self._write(f"{KEYRING_DIR}/{ITEM_PREFIX}{name}", json.dumps(doc))

    def _write(self, relative: str, text: str) -> None:
        path = self.home / relative
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(0o600)


def _options(words: list[str]) -> dict[str, str] | None:
    """--name value / --flag pairs (gog's long options)."""
    found: dict[str, str] = {}
    rest = list(words)
    while rest:
        word = rest.pop(0)
        if not word.startswith("--"):
            return None
        name = word[2:]
        if name in ("email", "services", "client"):
            if not rest:
                return None
            found[name] = rest.pop(0)
        elif name in ("refresh-token-stdin", "force"):
            found[name] = ""
        else:
            return None
    return found
