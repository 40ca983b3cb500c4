"""The fleet's key material: the at-rest Keyring and the provisioner's SSH key.

Both come from secrets (`encryption_keys`, `ssh_private_key`); without them a development key is
made once in the state directory (0600) and reused. Loaded lazily, so a daemon that never touches
the fleet never writes into its state directory.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import asyncssh

from blitzclawd.config import Secrets, Settings
from blitzclawd.crypto import Keyring

log = logging.getLogger("blitzclawd.fleet")

SSH_KEY_FILE = "provisioner_ed25519"
KEYRING_FILE = "encryption.keys"


def _state_dir(settings: Settings) -> Path:
    state = settings.state_path()
    state.mkdir(parents=True, exist_ok=True, mode=0o711)
    return state


def load_keyring(settings: Settings, secrets: Secrets) -> Keyring:
    spec = secrets.get("encryption_keys")
    if spec is not None:
        return Keyring.parse(spec.reveal())
    if secrets.get("database_url") is not None:
        # A shared database may be served by several daemons: each would make its own key and
        # none could read the others' ciphertexts. Say so loudly; it still works for one daemon.
        log.warning(
            "no encryption_keys secret: using a key local to this daemon's state "
            "directory; set encryption_keys on every daemon that shares the database"
        )
    return Keyring.load_or_create(_state_dir(settings) / KEYRING_FILE)


def load_ssh_key(settings: Settings, secrets: Secrets) -> asyncssh.SSHKey:
    """The provisioner's private key (OpenSSH format)."""
    given = secrets.get("ssh_private_key")
    if given is not None:
        return asyncssh.import_private_key(given.reveal())
    path = _state_dir(settings) / SSH_KEY_FILE
    if not path.exists():
        key = asyncssh.generate_private_key("ssh-ed25519", comment="blitzclawd-provisioner")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key.export_private_key("openssh"))
    return asyncssh.read_private_key(path)


def public_key_line(key: asyncssh.SSHKey) -> str:
    """`ssh-ed25519 AAAA...` (no comment), as cloud-init's authorized keys want it."""
    line = key.export_public_key("openssh").decode().strip().split()
    return " ".join(line[:2])
