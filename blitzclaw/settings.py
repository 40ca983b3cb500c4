"""Where the CLI finds its daemon and key: flags, then BLITZCLAW_API_URL / BLITZCLAW_API_KEY,
then ~/.config/blitzclaw/config.toml ($XDG_CONFIG_HOME; written 0600: it holds a key)."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

DEFAULT_API_URL = "http://127.0.0.1:8080"


def config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "blitzclaw" / "config.toml"


@dataclass(frozen=True)
class Settings:
    api_url: str
    api_key: str | None


def load(api_url: str | None = None, api_key: str | None = None) -> Settings:
    stored: dict[str, str] = {}
    path = config_path()
    if path.exists():
        with path.open("rb") as f:
            stored = {k: v for k, v in tomllib.load(f).items() if isinstance(v, str)}
    return Settings(
        api_url=api_url
        or os.environ.get("BLITZCLAW_API_URL")
        or stored.get("api_url")
        or DEFAULT_API_URL,
        api_key=api_key or os.environ.get("BLITZCLAW_API_KEY") or stored.get("api_key"),
    )


def save(values: dict[str, str | None]) -> Path:
    """Merge `values` into the config file (None removes a key); 0600 from the start."""
    path = config_path()
    current: dict[str, str] = {}
    if path.exists():
        with path.open("rb") as f:
            current = {k: v for k, v in tomllib.load(f).items() if isinstance(v, str)}
    for key, value in values.items():
        if value is None:
            current.pop(key, None)
        else:
            current[key] = value
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    text = "".join(f"{k} = {_quote(v)}\n" for k, v in sorted(current.items()))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)
    return path


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
