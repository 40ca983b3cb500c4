"""Secrets at rest: AES-256-GCM under a key with an id, so keys can rotate.

Blob (bytea columns ending in _enc): b"\\x01" | len(key id) | key id | nonce(12) | sealed

The key id travels with every ciphertext, so old ciphertexts stay readable after a rotation
while new ones use the newest key. Every encryption is bound to where it is stored (associated
data such as "instances.channel_secret_enc:<instance id>"), so a ciphertext copied into another
row or column does not decrypt.

Keys come from the `encryption_keys` secret: whitespace- or comma-separated `<id>:<base64 of 32
bytes>` entries; the LAST one encrypts (append a new key to rotate; keep old ones to read).
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

VERSION = 1
_KEY_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class CryptoError(Exception):
    """A blob that cannot be decrypted (wrong key, tampered, moved to another row)."""


class Keyring:
    def __init__(self, keys: dict[str, bytes], current: str) -> None:
        if current not in keys:
            raise ValueError("the current key must be one of the keys")
        for key_id, key in keys.items():
            if not _KEY_ID.match(key_id):
                raise ValueError(f"encryption key id {key_id!r}: letters, digits, _ . - only")
            if len(key) != 32:
                raise ValueError(f"encryption key {key_id!r}: must be 32 bytes (AES-256)")
        self._aead = {key_id: AESGCM(key) for key_id, key in keys.items()}
        self.current = current

    def __repr__(self) -> str:
        return f"Keyring(keys={sorted(self._aead)}, current={self.current!r})"

    @classmethod
    def parse(cls, spec: str) -> Keyring:
        keys: dict[str, bytes] = {}
        last = None
        for entry in re.split(r"[\s,]+", spec.strip()):
            if not entry:
                continue
            key_id, sep, encoded = entry.partition(":")
            if not sep:
                raise ValueError("encryption_keys: each entry is <id>:<base64 key>")
            try:
                keys[key_id] = base64.b64decode(encoded, validate=True)
            except binascii.Error:
                raise ValueError(f"encryption_keys: key {key_id!r} is not base64") from None
            last = key_id
        if last is None:
            raise ValueError("encryption_keys: no key given")
        return cls(keys, last)

    @classmethod
    def load_or_create(cls, path: Path) -> Keyring:
        """A development keyring kept in the state directory (0600), made on first use."""
        if not path.exists():
            key = base64.b64encode(os.urandom(32)).decode()
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(f"local1:{key}\n")
        return cls.parse(path.read_text())

    def encrypt(self, plaintext: bytes, context: str) -> bytes:
        key_id = self.current.encode()
        nonce = os.urandom(12)
        sealed = self._aead[self.current].encrypt(nonce, plaintext, context.encode())
        return bytes([VERSION, len(key_id)]) + key_id + nonce + sealed

    def decrypt(self, blob: bytes, context: str) -> bytes:
        blob = bytes(blob)
        if len(blob) < 2 or blob[0] != VERSION:
            raise CryptoError("unknown ciphertext format")
        end = 2 + blob[1]
        key_id = blob[2:end].decode(errors="replace")
        aead = self._aead.get(key_id)
        if aead is None:
            raise CryptoError(f"ciphertext under unknown key {key_id!r}")
        try:
            return aead.decrypt(blob[end : end + 12], blob[end + 12 :], context.encode())
        except InvalidTag:
            raise CryptoError("ciphertext does not authenticate") from None

    def key_id_of(self, blob: bytes) -> str:
        blob = bytes(blob)
        return blob[2 : 2 + blob[1]].decode(errors="replace")

    def needs_rotation(self, blob: bytes) -> bool:
        return self.key_id_of(blob) != self.current

    def encrypt_text(self, text: str, context: str) -> bytes:
        return self.encrypt(text.encode(), context)

    def decrypt_text(self, blob: bytes, context: str) -> str:
        return self.decrypt(blob, context).decode()
