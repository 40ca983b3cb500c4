"""AES-256-GCM at rest: key ids, rotation, binding to the row, tamper detection."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from blitzclawd.crypto import CryptoError, Keyring


def key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def test_round_trip_and_no_plaintext_in_the_blob() -> None:
    ring = Keyring.parse(f"k1:{key()}")
    blob = ring.encrypt_text("123456:ABC-bot-token", "instances.channel_secret_enc:i1")
    assert b"bot-token" not in blob
    assert ring.decrypt_text(blob, "instances.channel_secret_enc:i1") == "123456:ABC-bot-token"
    # Same plaintext, fresh nonce: different ciphertexts.
    assert blob != ring.encrypt_text("123456:ABC-bot-token", "instances.channel_secret_enc:i1")


def test_rotation_keeps_old_ciphertexts_readable_and_uses_the_new_key() -> None:
    k1, k2 = key(), key()
    old = Keyring.parse(f"k1:{k1}")
    blob = old.encrypt(b"secret", "ctx")
    rotated = Keyring.parse(f"k1:{k1}, k2:{k2}")
    assert rotated.current == "k2"
    assert rotated.decrypt(blob, "ctx") == b"secret"
    assert rotated.needs_rotation(blob)
    fresh = rotated.encrypt(b"secret", "ctx")
    assert rotated.key_id_of(fresh) == "k2" and not rotated.needs_rotation(fresh)
    with pytest.raises(CryptoError, match="unknown key"):
        old.decrypt(fresh, "ctx")


def test_a_blob_moved_to_another_row_or_tampered_does_not_decrypt() -> None:
    ring = Keyring.parse(f"k1:{key()}")
    blob = ring.encrypt(b"secret", "instances.own_api_key_enc:a")
    with pytest.raises(CryptoError):
        ring.decrypt(blob, "instances.own_api_key_enc:b")
    tampered = blob[:-1] + bytes([blob[-1] ^ 1])
    with pytest.raises(CryptoError):
        ring.decrypt(tampered, "instances.own_api_key_enc:a")
    with pytest.raises(CryptoError):
        ring.decrypt(b"\x09garbage", "x")


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "nokey",
        "k1:notbase64!",
        f"k1:{base64.b64encode(b'short').decode()}",
        f"bad id:{base64.b64encode(os.urandom(32)).decode()}",
    ],
)
def test_bad_key_specs_are_refused(spec: str) -> None:
    with pytest.raises(ValueError):
        Keyring.parse(spec)


def test_repr_never_shows_key_material() -> None:
    material = key()
    assert material not in repr(Keyring.parse(f"k1:{material}"))


def test_development_keyring_is_created_once_with_0600(tmp_path: Path) -> None:
    path = tmp_path / "encryption.keys"
    ring = Keyring.load_or_create(path)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    blob = ring.encrypt(b"x", "c")
    assert Keyring.load_or_create(path).decrypt(blob, "c") == b"x"
