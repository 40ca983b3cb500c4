"""blitzclawd.toml parsing, secrets lookup, and `blitzclawd config check`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from blitzclawd.config import (
    ConfigError,
    Secret,
    Settings,
    find_config_path,
    load_secrets,
    load_settings,
    parse_settings,
    resolve_state_dir,
)

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "blitzclawd.toml"


def problems_of(raw: dict) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_settings(raw)
    return info.value.problems


def test_shipped_toml_documents_the_defaults() -> None:
    assert load_settings(SHIPPED) == Settings()


def test_shipped_toml_names_every_key() -> None:
    import dataclasses
    import tomllib

    raw = tomllib.loads(SHIPPED.read_text())
    for section in dataclasses.fields(Settings):
        assert section.name in raw, section.name
        keys = {f.name for f in dataclasses.fields(getattr(Settings(), section.name))}
        assert set(raw[section.name]) == keys, section.name


def test_values_are_typed_and_sections_keep_their_own_defaults() -> None:
    s = parse_settings({"api": {"port": 9000}, "daemon": {"shutdown_grace": 3}})
    assert s.api.port == 9000
    assert s.proxy.port == 8787  # untouched section keeps its default
    assert s.api.host == "127.0.0.1"
    assert s.daemon.shutdown_grace == 3.0 and isinstance(s.daemon.shutdown_grace, float)


def test_unknown_keys_name_their_path() -> None:
    assert problems_of({"api": {"prot": 1}}) == ["api.prot: unknown key"]
    assert problems_of({"apii": {}}) == ["apii: unknown key"]


def test_secrets_in_the_toml_are_refused_with_a_hint() -> None:
    (problem,) = problems_of({"database": {"url": "postgres://x"}})
    assert problem.startswith("database.url: unknown key")
    assert "environment" in problem


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"api": {"port": "80"}}, 'api.port: expected an integer, got a string "80"'),
        ({"api": {"port": True}}, "api.port: expected an integer, got a boolean"),
        ({"api": {"port": 1.5}}, "api.port: expected an integer, got float 1.5"),
        ({"api": {"port": 70000}}, "api.port: must be at most 65535, got 70000"),
        ({"api": 5}, "api: expected a table"),
        ({"daemon": {"log_level": "loud"}}, "daemon.log_level: must be one of"),
        ({"daemon": {"shutdown_grace": -1}}, "daemon.shutdown_grace: must be at least 0, got -1"),
    ],
)
def test_wrong_types_and_values_name_the_key(raw: dict, expected: str) -> None:
    (problem,) = problems_of(raw)
    assert problem.startswith(expected)


def test_every_problem_is_reported_at_once() -> None:
    assert len(problems_of({"api": {"port": "x", "nope": 1}, "zzz": 1})) == 3


def test_cross_field_checks() -> None:
    assert problems_of({"database": {"pool_min": 5, "pool_max": 2}}) == [
        "database.pool_min: must not exceed database.pool_max"
    ]
    assert problems_of({"proxy": {"port": 8080}})[0].startswith("proxy.port")
    emails = ["oncall@example.test", "Ops <ops@example.test>", "ops@localhost"]
    assert problems_of({"alerts": {"operator_emails": emails}}) == [
        "alerts.operator_emails[1]: not an email address: 'Ops <ops@example.test>'",
        "alerts.operator_emails[2]: not an email address: 'ops@localhost'",
    ]
    assert problems_of({"alerts": {"operator_emails": "oncall@example.test"}}) == [
        'alerts.operator_emails: expected an array, got a string "oncall@example.test"'
    ]
    ok = parse_settings({"alerts": {"operator_emails": emails[:1]}})
    assert ok.alerts.operator_emails == ("oncall@example.test",)
    # The operator's legal texts: absolute paths (a service's working directory is /).
    assert problems_of({"web": {"terms_path": "terms.md"}}) == [
        "web.terms_path: must be an absolute path, got 'terms.md'"
    ]
    web = parse_settings({"web": {"privacy_path": "/etc/blitzclawd/privacy.md"}}).web
    assert (web.terms_path, web.privacy_path) == ("", "/etc/blitzclawd/privacy.md")


def test_bad_toml_syntax_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[api\nport = 1\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(bad)


def test_secrets_from_env_file_and_credentials_directory(tmp_path: Path) -> None:
    (tmp_path / "creem_api_key").write_text("creem-from-credential\n")
    key_file = tmp_path / "openai"
    key_file.write_text("openai-from-file")
    env = {
        "BLITZCLAW_ANTHROPIC_API_KEY": "anthropic-from-env",
        "BLITZCLAW_OPENAI_API_KEY_FILE": str(key_file),
        "CREDENTIALS_DIRECTORY": str(tmp_path),
    }
    secrets = load_secrets(env)
    assert secrets.get("anthropic_api_key") == Secret("anthropic-from-env")
    assert secrets.get("openai_api_key").reveal() == "openai-from-file"
    assert secrets.get("creem_api_key").reveal() == "creem-from-credential"
    assert secrets.get("database_url") is None
    with pytest.raises(KeyError):
        secrets.get("no_such_secret")


def test_unreadable_secret_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="BLITZCLAW_RESEND_API_KEY_FILE"):
        load_secrets({"BLITZCLAW_RESEND_API_KEY_FILE": str(tmp_path / "missing")})


def test_secret_never_prints_itself() -> None:
    s = Secret("sk-live-very-secret")
    assert "very-secret" not in repr(s) and "very-secret" not in str(s)
    assert "very-secret" not in repr(load_secrets({"BLITZCLAW_ADMIN_API_KEY": "very-secret"}))


def test_state_dir_resolution(tmp_path: Path) -> None:
    assert resolve_state_dir("/x/y", {}) == Path("/x/y")
    assert resolve_state_dir("", {"BLITZCLAW_STATE_DIR": "/a"}) == Path("/a")
    assert resolve_state_dir("", {"STATE_DIRECTORY": "/var/lib/b:/var/lib/c"}) == Path("/var/lib/b")


def test_config_path_resolution(tmp_path: Path) -> None:
    assert find_config_path("x.toml", {"BLITZCLAW_CONFIG": "y.toml"}) == Path("x.toml")
    assert find_config_path(None, {"BLITZCLAW_CONFIG": "y.toml"}) == Path("y.toml")


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "blitzclawd", *args], capture_output=True, text=True, timeout=60
    )


def test_config_check_accepts_the_shipped_file() -> None:
    done = run_cli("config", "check", str(SHIPPED))
    assert done.returncode == 0, done.stderr
    assert "ok" in done.stdout


@pytest.mark.parametrize(
    ("content", "key"),
    [
        ("[api]\nprot = 1\n", "api.prot"),
        ('[proxy]\nport = "8787"\n', "proxy.port"),
        ('[alerts]\noperator_emails = ["oncall"]\n', "alerts.operator_emails[0]"),
        ("[web]\nterms_path = 1\n", "web.terms_path"),
        ('[web]\nprivacy_path = "privacy.md"\n', "web.privacy_path"),
    ],
)
def test_config_check_names_the_bad_key_and_fails(tmp_path: Path, content: str, key: str) -> None:
    path = tmp_path / "blitzclawd.toml"
    path.write_text(content)
    done = run_cli("config", "check", str(path))
    assert done.returncode == 78
    assert f"config error: {key}:" in done.stderr
