"""OpenClaw configs and personas; every combination validated by the pinned OpenClaw release.

The release is installed from the npm registry on first use and cached (tests/openclaw_tool.py).
Each check is the real CLI: ``openclaw config validate --json`` must say valid with no warnings
(for the plain config and for the one whose secrets are SecretRefs), and ``openclaw secrets audit
--check --json`` must find every secret resolvable from the 0600 file and none in plaintext.
All persona x channel x model combinations are laid out as instance files; the persona only
changes SOUL.md, so identical config files are checked once (one node process each, run in
parallel). Negative cases run in the same batch, so each check is shown able to fail. Finally a
real agent turn runs through the daemon's proxy with the generated files.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from openclaw_tool import (
    EXTERNAL_PLUGINS,
    OpenClaw,
    ensure_openclaw,
    ensure_plugins_home,
    with_plugins,
    write_instance,
)

from blitzclawd import plugins
from blitzclawd.channels import OpenClawBlock
from blitzclawd.credentials import api_key
from blitzclawd.fleet import google_skill
from blitzclawd.fleet.openclaw_config import (
    OwnKey,
    ProxyTarget,
    build_config,
    render_config,
    split_secrets,
)
from blitzclawd.fleet.personas import PERSONA_NAMES, PERSONAS, SOUL_MAX_CHARS, soul_md
from blitzclawd.fleet.versions import NODE_VERSION, OPENCLAW_VERSION
from blitzclawd_plugins.telegram import telegram_channel
from blitzclawd_plugins.whatsapp import whatsapp_channel

INSTANCE = "3f2b8c1e-9a4d-4e7f-8b2a-1c5d6e7f8a9b"
SECRET = "Zq3v_8-kP1xW2yR4tU6iO9pA0sD5fG7hJ"
GATEWAY_TOKEN = "gw_7Yt2Kp9Qx4Lm8Rn3Vb6Zc1"
BOT_TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"
SLOW = pytest.mark.timeout(1800)  # first run installs ~650 MB from the npm registry

CHANNELS: dict[str, Callable[[], tuple[str, OpenClawBlock]]] = {
    "telegram-ids": lambda: telegram_channel(bot_token=BOT_TOKEN, allow_from=["123456789", "42"]),
    "telegram-pairing": lambda: telegram_channel(bot_token=BOT_TOKEN, allow_from=None),
    "whatsapp": whatsapp_channel,
}
MODELS: dict[str, dict[str, Any]] = {
    "proxy-anthropic": {
        "proxy": ProxyTarget(
            base_url="https://proxy.blitzclaw.test",
            api="anthropic-messages",
            instance_id=INSTANCE,
            secret=SECRET,
            models=[("claude-sonnet-4-6", "Claude Sonnet 4.6"), ("claude-haiku-4-5", "Haiku")],
            primary="claude-sonnet-4-6",
        )
    },
    "proxy-openai": {
        "proxy": ProxyTarget(
            base_url="https://proxy.blitzclaw.test/v1",
            api="openai-completions",
            instance_id=INSTANCE,
            secret=SECRET,
            models=[("gpt-4o", "GPT-4o"), ("gpt-4o-mini", "GPT-4o mini")],
            primary="gpt-4o",
        )
    },
    "own-key": {
        "own_key": OwnKey(
            provider="anthropic", api_key="sk-ant-api03-" + "x" * 40, model="claude-sonnet-4-6"
        )
    },
}
COMBINATIONS = list(itertools.product(PERSONA_NAMES, CHANNELS, MODELS))
GMAIL = "https://www.googleapis.com/auth/gmail."
GOOGLE_ACCOUNT = google_skill.GoogleAccount(
    email="ada@gmail.test",
    client_id="1234-abc.apps.googleusercontent.com",
    client_secret="GOCSPX-ada-secret",
    refresh_token="1//0tok",
    scopes=("openid", GMAIL + "readonly", "https://www.googleapis.com/auth/calendar.readonly"),
)
GOOGLE_ENTRIES = {"on": google_skill.skill_entry(GOOGLE_ACCOUNT), "off": {"enabled": False}}
CUSTOM_SOUL = "# SOUL.md\n\nYou are a terse sommelier. Answer in one sentence.\n"


def refused(field: str) -> AbstractContextManager[pytest.ExceptionInfo[ValueError]]:
    """ValueError whose message starts with the field's name (the API's 422 names it)."""
    return pytest.raises(ValueError, match=rf"^{field}:")


def instance_files(persona: str, channel: str, model: str) -> dict[str, str]:
    """What the provisioner writes for one combination: the config in both forms, SOUL.md."""
    cfg = build_config(gateway_token=GATEWAY_TOKEN, channel=CHANNELS[channel](), **MODELS[model])
    with_refs, secrets = split_secrets(cfg)
    return {
        "plain": render_config(cfg),
        "config": render_config(with_refs),
        "secrets": render_config(secrets),
        "soul": soul_md(persona, CUSTOM_SOUL if persona == "custom" else None),
    }


# -- the generated configs (no OpenClaw needed) -------------------------------------------------


def test_proxy_config_has_the_accepted_shape() -> None:
    cfg = build_config(
        gateway_token=GATEWAY_TOKEN, channel=CHANNELS["telegram-ids"](), **MODELS["proxy-anthropic"]
    )
    assert cfg["meta"] == {}
    assert cfg["gateway"] == {
        "mode": "local",
        "port": 18789,
        "bind": "loopback",
        "auth": {"mode": "token", "token": GATEWAY_TOKEN},
    }
    assert cfg["models"]["mode"] == "merge"
    assert cfg["models"]["providers"] == {
        "blitzclaw": {
            "baseUrl": "https://proxy.blitzclaw.test",
            "api": "anthropic-messages",
            "apiKey": api_key(INSTANCE, SECRET),
            "headers": {"X-BlitzClaw-Instance": INSTANCE, "X-BlitzClaw-Secret": SECRET},
            "models": [
                {"id": "claude-sonnet-4-6", "name": "Claude Sonnet 4.6"},
                {"id": "claude-haiku-4-5", "name": "Haiku"},
            ],
        }
    }
    assert cfg["models"]["providers"]["blitzclaw"]["apiKey"].startswith(
        "bcl_" + uuid.UUID(INSTANCE).hex
    )
    assert cfg["agents"] == {
        "defaults": {
            "workspace": "~/.openclaw/workspace",
            "model": {"primary": "blitzclaw/claude-sonnet-4-6"},
            "heartbeat": {"every": "0m"},
        }
    }
    assert cfg["channels"] == {
        "telegram": {
            "enabled": True,
            "botToken": BOT_TOKEN,
            "dmPolicy": "allowlist",
            "allowFrom": ["123456789", "42"],
        }
    }
    assert json.loads(render_config(cfg)) == cfg


def test_openai_style_proxy_and_own_key() -> None:
    openai = build_config(
        gateway_token=GATEWAY_TOKEN, channel=whatsapp_channel(), **MODELS["proxy-openai"]
    )
    provider = openai["models"]["providers"]["blitzclaw"]
    assert provider["baseUrl"].endswith("/v1") and provider["api"] == "openai-completions"
    assert openai["agents"]["defaults"]["model"]["primary"] == "blitzclaw/gpt-4o"

    for name, base, api in (
        ("anthropic", "https://api.anthropic.com", "anthropic-messages"),
        ("openai", "https://api.openai.com/v1", "openai-completions"),
    ):
        own = OwnKey(provider=name, api_key="sk-user-key-123456", model="m-1")
        cfg = build_config(gateway_token=GATEWAY_TOKEN, channel=whatsapp_channel(), own_key=own)
        assert cfg["models"]["providers"] == {
            name: {
                "baseUrl": base,
                "api": api,
                "apiKey": "sk-user-key-123456",
                "models": [{"id": "m-1", "name": "m-1"}],
            }
        }  # straight to the provider: no BlitzClaw headers
        assert cfg["agents"]["defaults"]["model"]["primary"] == f"{name}/m-1"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"base_url": "https://proxy.blitzclaw.test/v1"}, "base_url"),  # Anthropic style: no /v1
        ({"base_url": "https://p.test/x?y=1"}, "base_url"),
        ({"base_url": "javascript:alert(1)"}, "base_url"),
        ({"api": "openai-responses"}, "api"),
        ({"instance_id": "not-a-uuid"}, "instance_id"),
        ({"secret": "short"}, "secret"),
        ({"secret": "x" * 20 + "sk-ant-oat01"}, "secret"),
        ({"models": []}, "models"),
        ({"models": [("a b", "A")], "primary": "a b"}, "models"),
        ({"primary": "claude-opus-4-6"}, "primary"),
    ],
)
def test_bad_proxy_target_refused(change: dict[str, Any], field: str) -> None:
    fields = {
        f: getattr(MODELS["proxy-anthropic"]["proxy"], f)
        for f in ("base_url", "api", "instance_id", "secret", "models", "primary")
    }
    target = ProxyTarget(**{**fields, **change})
    with refused(field):
        build_config(gateway_token=GATEWAY_TOKEN, channel=whatsapp_channel(), proxy=target)


def test_exactly_one_model_source_and_a_sane_token() -> None:
    both = {**MODELS["proxy-anthropic"], **MODELS["own-key"]}
    with pytest.raises(ValueError, match="exactly one"):
        build_config(gateway_token=GATEWAY_TOKEN, channel=whatsapp_channel(), **both)
    with pytest.raises(ValueError, match="exactly one"):
        build_config(gateway_token=GATEWAY_TOKEN, channel=whatsapp_channel())
    with refused("gateway_token"):
        build_config(gateway_token="short", channel=whatsapp_channel(), **MODELS["own-key"])
    with refused("api_key"):
        build_config(
            gateway_token=GATEWAY_TOKEN,
            channel=whatsapp_channel(),
            own_key=OwnKey(provider="openai", api_key="has space in it", model="gpt-4o"),
        )
    with refused("provider"):
        build_config(
            gateway_token=GATEWAY_TOKEN,
            channel=whatsapp_channel(),
            own_key=OwnKey(provider="mistral", api_key="k" * 20, model="m"),
        )
    with refused("channel"):
        build_config(gateway_token=GATEWAY_TOKEN, channel={"discord": {}}, **MODELS["own-key"])


def test_telegram_channel_policies() -> None:
    name, block = telegram_channel(bot_token=BOT_TOKEN, allow_from=["42", "42", " 7 "])
    assert name == "telegram" and block.config == {
        "enabled": True,
        "botToken": BOT_TOKEN,
        "dmPolicy": "allowlist",
        "allowFrom": ["42", "7"],
    }
    # The first allowed id is the owner (OpenClaw's commands.ownerAllowFrom), kept by configures.
    assert block.owners == ("42",)
    cfg = build_config(gateway_token=GATEWAY_TOKEN, channel=(name, block), **MODELS["own-key"])
    assert cfg["commands"] == {"ownerAllowFrom": ["telegram:42"]}
    assert "plugins" not in cfg  # built into OpenClaw: nothing to trust
    # allowlist with an empty list drops every DM: no ids means pairing.
    for none in (None, []):
        block = telegram_channel(bot_token=BOT_TOKEN, allow_from=none)[1]
        assert block.config["dmPolicy"] == "pairing" and "allowFrom" not in block.config
        assert block.owners == ()
    for bad in (
        "123456789",
        "abc:AAHdqTcvCH1vGWJxfSeofSAs0K5PAL",
        "1:short",
        BOT_TOKEN + "\n",
        f" {BOT_TOKEN}",
    ):
        with refused("bot_token"):
            telegram_channel(bot_token=bad, allow_from=None)
    for bad_id in ("@someone", "-100123", "1e5", ""):
        with refused("allow_from"):
            telegram_channel(bot_token=BOT_TOKEN, allow_from=[bad_id])


def test_whatsapp_trusts_its_external_plugin() -> None:
    cfg = build_config(gateway_token=GATEWAY_TOKEN, channel=whatsapp_channel(), **MODELS["own-key"])
    # Without this entry the gateway refuses the plugin and no QR login can start (WIRE.md).
    assert cfg["plugins"] == {"entries": {"whatsapp": {"enabled": True}}}
    assert cfg["channels"]["whatsapp"]["dmPolicy"] == "pairing"


def test_split_secrets_leaves_no_secret_in_the_config() -> None:
    for channel, model in itertools.product(CHANNELS, MODELS):
        files = instance_files("assistant", channel, model)
        plain, config, secrets = (json.loads(files[k]) for k in ("plain", "config", "secrets"))
        for value in (GATEWAY_TOKEN, BOT_TOKEN, SECRET, MODELS["own-key"]["own_key"].api_key):
            assert value not in files["config"]
        assert config["secrets"]["providers"]["blitzclaw"] == {
            "source": "file",
            "path": "~/.openclaw/secrets.json",
            "mode": "json",
        }
        # Every reference resolves, as a JSON pointer into the secrets file, to the plain value.
        refs = list(_secret_refs(config))
        assert len(refs) == (4 if model != "own-key" else 3) - (channel == "whatsapp")
        for path, ref in refs:
            assert ref["source"] == "file" and ref["provider"] == "blitzclaw"
            assert _pointer(secrets, ref["id"]) == _pointer(plain, "/" + "/".join(path))
        without = {k: v for k, v in config.items() if k != "secrets"}
        assert without.keys() == plain.keys()


def _secret_refs(node: Any, path: tuple[str, ...] = ()) -> Any:
    if isinstance(node, dict):
        if node.get("source") == "file" and "id" in node:
            yield path, node
            return
        for key, value in node.items():
            yield from _secret_refs(value, (*path, key))


def _pointer(doc: Any, pointer: str) -> Any:
    for part in pointer.lstrip("/").split("/"):
        doc = doc[part.replace("~1", "/").replace("~0", "~")]
    return doc


# -- personas ------------------------------------------------------------------------------------


def test_persona_templates_are_the_specs() -> None:
    assert set(PERSONA_NAMES) == {"assistant", "dev", "creative", "custom"}
    assert soul_md("assistant", None).startswith("# SOUL.md\n\nYou are a personal assistant.")
    assert "Git workflows" in soul_md("dev", None)
    assert soul_md("creative", None).rstrip().endswith("Push ideas forward.")
    for name, text in PERSONAS.items():
        assert soul_md(name, None) == text and len(text) < SOUL_MAX_CHARS
    assert soul_md("custom", CUSTOM_SOUL) == CUSTOM_SOUL
    extended = soul_md("dev", "Prefer Rust examples.")
    assert extended.startswith(PERSONAS["dev"]) and extended.endswith("Prefer Rust examples.")


def test_persona_errors_name_the_field() -> None:
    with refused("persona_template"):
        soul_md("pirate", None)
    for missing in (None, "", "  \n"):
        with refused("soul_md"):
            soul_md("custom", missing)
    assert len(soul_md("custom", "x" * SOUL_MAX_CHARS)) == SOUL_MAX_CHARS
    with refused("soul_md"):
        soul_md("custom", "x" * (SOUL_MAX_CHARS + 1))
    # OpenClaw counts JavaScript string length: an emoji is two characters.
    with refused("soul_md"):
        soul_md("custom", "\N{CRAB}" * (SOUL_MAX_CHARS // 2 + 1))
    with refused("soul_md"):
        soul_md("assistant", "x" * SOUL_MAX_CHARS)  # the template plus this is over the limit
    with refused("soul_md"):
        soul_md("custom", "nul\x00byte")


# -- the pinned OpenClaw release ------------------------------------------------------------------


@pytest.fixture(scope="module")
def openclaw() -> OpenClaw:
    return ensure_openclaw()


@pytest.fixture(scope="module")
def verdicts(openclaw: OpenClaw, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every check's result, keyed by job name; identical instance files are checked once."""
    jobs: dict[str, tuple[Path, tuple[str, ...]]] = {}
    seen: dict[tuple[str, ...], str] = {}
    root = tmp_path_factory.mktemp("openclaw-instances")

    installed = ensure_plugins_home(openclaw)  # as pool servers install them at boot

    def job(key: str, files: dict[str, str | None], *command: str) -> str:
        content = (*command, files.get("config") or "", files.get("secrets") or "")
        if content not in seen:
            home = write_instance(
                root / f"i{len(jobs)}",
                files["config"] or "",
                files.get("secrets"),
                files.get("soul"),
            )
            if '"plugins"' in (files["config"] or ""):
                with_plugins(home, installed)
            seen[content] = key
            jobs[key] = (home, command)
        return seen[content]

    index: dict[str, Any] = {}
    for combo in COMBINATIONS:
        files = instance_files(*combo)
        index["-".join(combo)] = {
            "plain": job(
                f"plain:{combo}",
                {"config": files["plain"], "soul": files["soul"]},
                "config",
                "validate",
            ),
            "refs": job(f"refs:{combo}", {**files}, "config", "validate"),
            "audit": job(f"audit:{combo}", {**files}, "secrets", "audit", "--check"),
        }
    # The checks must be able to fail: one of each kind of defect.
    base = json.loads(instance_files("assistant", "telegram-ids", "proxy-anthropic")["plain"])
    unknown = {**base, "gateway": {**base["gateway"], "listenEverywhere": True}}
    job("broken:unknown-key", {"config": render_config(unknown)}, "config", "validate")
    empty = {**base, "channels": {"telegram": {**base["channels"]["telegram"], "allowFrom": []}}}
    job("broken:empty-allowlist", {"config": render_config(empty)}, "config", "validate")
    files = instance_files("assistant", "telegram-ids", "proxy-anthropic")
    job("broken:no-secrets-file", {"config": files["config"]}, "secrets", "audit", "--check")
    job("broken:plaintext", {"config": files["plain"]}, "secrets", "audit", "--check")

    # A Google account attached (the gog skill on, for it) and none (the skill off).
    for name, entry in GOOGLE_ENTRIES.items():
        cfg = build_config(
            gateway_token=GATEWAY_TOKEN,
            channel=CHANNELS["telegram-ids"](),
            skills={google_skill.SKILL: entry},
            **MODELS["proxy-anthropic"],
        )
        with_refs, secrets = split_secrets(cfg)
        files = {"config": render_config(with_refs), "secrets": render_config(secrets)}
        job(f"google:{name}", files, "config", "validate")
        job(f"google-audit:{name}", files, "secrets", "audit", "--check")
    workers = min(4, max(2, os.cpu_count() or 1))  # each check is one CPU-bound node process
    with ThreadPoolExecutor(max_workers=workers) as pool:
        done = dict(
            zip(
                jobs, pool.map(lambda j: openclaw.run_json(j[0], *j[1]), jobs.values()), strict=True
            )
        )
    return {"combinations": index, "results": done}


@SLOW
def test_pinned_node_satisfies_openclaw_engines(openclaw: OpenClaw) -> None:
    engines = openclaw.package_json()["engines"]["node"]  # ">=24.16.0 <25 || >=26.1.0"
    assert openclaw.package_json()["version"] == OPENCLAW_VERSION
    assert _satisfies(NODE_VERSION, engines), (NODE_VERSION, engines)
    assert not _satisfies("20.20.2", engines)


def _satisfies(version: str, spec: str) -> bool:
    """Minimal npm range check: ``||`` of space-separated ``>=x``, ``<x`` comparators."""

    def key(v: str) -> tuple[int, ...]:
        return tuple(int(p) for p in [*v.split("."), "0", "0"][:3])

    ops = {
        ">=": lambda a, b: a >= b,
        ">": lambda a, b: a > b,
        "<=": lambda a, b: a <= b,
        "<": lambda a, b: a < b,
    }
    for alternative in spec.split("||"):
        comparators = [re.fullmatch(r"(>=|<=|>|<)([0-9.]+)", c) for c in alternative.split()]
        assert all(comparators), spec
        if all(ops[m.group(1)](key(version), key(m.group(2))) for m in comparators if m):
            return True
    return False


@SLOW
@pytest.mark.parametrize("combo", ["-".join(c) for c in COMBINATIONS])
def test_combination_accepted_by_openclaw(verdicts: dict[str, Any], combo: str) -> None:
    checks = verdicts["combinations"][combo]
    results = verdicts["results"]
    for form in ("plain", "refs"):
        code, report = results[checks[form]]
        assert report.get("valid") is True and code == 0, (form, report)
        assert report.get("warnings") == [], (form, report)
    code, audit = results[checks["audit"]]
    assert code == 0 and audit["status"] == "clean", audit
    assert audit["summary"]["plaintextCount"] == 0 and audit["resolution"]["refsChecked"] >= 2


@SLOW
@pytest.mark.parametrize("name", GOOGLE_ENTRIES)
def test_the_gog_skill_settings_accepted_by_openclaw(verdicts: dict[str, Any], name: str) -> None:
    code, report = verdicts["results"][f"google:{name}"]
    assert code == 0 and report["valid"] is True and report["warnings"] == [], report
    code, audit = verdicts["results"][f"google-audit:{name}"]
    assert code == 0 and audit["status"] == "clean", audit


def test_the_gog_skill_entry() -> None:
    assert google_skill.skill_entry(None) == {"enabled": False}
    assert GOOGLE_ENTRIES["on"] == {
        "enabled": True,
        "env": {"GOG_ACCOUNT": "ada@gmail.test", "GOG_READONLY": "1"},
    }
    writes = replace(GOOGLE_ACCOUNT, scopes=(*GOOGLE_ACCOUNT.scopes, GMAIL + "send"))
    assert google_skill.skill_entry(writes)["env"] == {"GOG_ACCOUNT": "ada@gmail.test"}
    assert google_skill.services(writes.scopes) == ["calendar", "gmail"]
    assert "ada-secret" not in repr(GOOGLE_ACCOUNT) and "1//0tok" not in repr(GOOGLE_ACCOUNT)
    for change, field in (
        ({"email": "ada; reboot"}, "account_email"),
        ({"client_id": "x y"}, "client_id"),
        ({"scopes": ("openid",)}, "scopes"),
        ({"refresh_token": ""}, "refresh_token"),
    ):
        with refused(field):
            google_skill.skill_entry(replace(GOOGLE_ACCOUNT, **change))


@SLOW
def test_openclaw_checks_can_fail(verdicts: dict[str, Any]) -> None:
    results = verdicts["results"]
    code, report = results["broken:unknown-key"]
    assert code != 0 and report["valid"] is False
    assert any("listenEverywhere" in issue["message"] for issue in report["issues"]), report
    # Valid, but OpenClaw warns that every DM would be dropped: our check treats that as a failure.
    code, report = results["broken:empty-allowlist"]
    assert report["valid"] is True and report["warnings"], report
    code, audit = results["broken:no-secrets-file"]
    assert code != 0 and audit["status"] == "unresolved", audit
    code, audit = results["broken:plaintext"]
    assert code != 0 and audit["summary"]["plaintextCount"] >= 3, audit


@SLOW
@pytest.mark.parametrize(
    ("api", "base", "model"),
    [("anthropic-messages", "", "claude-sonnet-4-6"), ("openai-completions", "/v1", "gpt-4o")],
    ids=["anthropic", "openai"],
)
async def test_real_agent_turn_through_the_proxy(
    openclaw: OpenClaw, proxy_env: Any, tmp_path: Path, api: str, base: str, model: str
) -> None:
    """The generated files drive a real OpenClaw agent turn through our metering proxy: the
    SecretRefs resolve from the 0600 file, the proxy accepts the instance credential and
    charges it, and the persona reaches the model as part of the system prompt."""
    inst = proxy_env.instance
    target = ProxyTarget(
        base_url=proxy_env.url + base,
        api=api,
        instance_id=inst.id,
        secret=inst.secret,
        models=[(model, model)],
        primary=model,
    )
    channel = telegram_channel(bot_token=BOT_TOKEN, allow_from=None)
    config, secrets = split_secrets(
        build_config(gateway_token=GATEWAY_TOKEN, channel=channel, proxy=target)
    )
    home = write_instance(tmp_path, render_config(config), render_config(secrets), PERSONAS["dev"])
    before = await proxy_env.balance()

    done = await asyncio.to_thread(
        openclaw.run, home, "agent", "--local", "-m", "Say hi", "--json", timeout=240
    )

    assert done.returncode == 0, done.stderr[-3000:]
    start = done.stdout.find("{")
    report, _ = json.JSONDecoder().raw_decode(done.stdout[start:])
    assert report["meta"]["executionTrace"]["winnerProvider"] == "blitzclaw", report
    (upstream,) = [r for r in proxy_env.fake.requests if r.json and r.json.get("model") == model]
    assert "You are a technical assistant for developers." in json.dumps(upstream.json)
    await proxy_env.settled()
    assert await proxy_env.balance() < before  # metered against this instance


# -- models that tell the truth: capabilities and our marked-up prices from the price table ------


def _table() -> Any:
    from blitzclawd.config import PricingSettings, price_table

    return price_table(PricingSettings())


def test_models_declare_capabilities_and_marked_up_costs() -> None:
    table = _table()
    anthropic = MODELS["proxy-anthropic"]["proxy"]
    cfg = build_config(
        gateway_token=GATEWAY_TOKEN,
        channel=whatsapp_channel(),
        proxy=ProxyTarget(**{**_fields(anthropic), "prices": table}),
    )
    sonnet, haiku = cfg["models"]["providers"]["blitzclaw"]["models"]
    # OpenClaw's cost unit is USD per million tokens; ours is list x markup (1.5): $3 -> $4.50.
    assert sonnet == {
        "id": "claude-sonnet-4-6",
        "name": "Claude Sonnet 4.6",
        "reasoning": True,
        "input": ["text", "image"],
        "cost": {"input": 4.5, "output": 22.5, "cacheRead": 0.45, "cacheWrite": 5.625},
        "maxTokens": 64000,
        "contextWindow": 200000,
    }
    assert haiku["reasoning"] is True and haiku["cost"]["output"] == 7.5
    openai = MODELS["proxy-openai"]["proxy"]
    cfg = build_config(
        gateway_token=GATEWAY_TOKEN,
        channel=whatsapp_channel(),
        proxy=ProxyTarget(
            **{**_fields(openai), "models": [("gpt-4o", "GPT-4o"), ("gpt-5", "GPT-5")]},
            prices=table,
        ),
    )
    gpt4o, gpt5 = cfg["models"]["providers"]["blitzclaw"]["models"]
    assert gpt4o["reasoning"] is False and "compat" not in gpt4o
    assert gpt5["reasoning"] is True and gpt5["compat"] == {"supportsReasoningEffort": True}
    assert gpt5["cost"] == {
        "input": 1.875,
        "output": 15.0,
        "cacheRead": 0.1875,
        "cacheWrite": 1.875,
    }
    # A price change (here the markup) is what the next configure declares.
    from blitzclawd.config import PricingSettings, price_table

    dearer = price_table(PricingSettings(markup=2.0))
    cfg = build_config(
        gateway_token=GATEWAY_TOKEN,
        channel=whatsapp_channel(),
        proxy=ProxyTarget(**{**_fields(anthropic), "prices": dearer}),
    )
    assert cfg["models"]["providers"]["blitzclaw"]["models"][0]["cost"]["input"] == 6.0
    # The user's own key: capabilities and the provider's list price (they pay it, not us).
    own = build_config(
        gateway_token=GATEWAY_TOKEN,
        channel=whatsapp_channel(),
        own_key=OwnKey(
            provider="anthropic",
            api_key="sk-user-key-123456",
            model="claude-sonnet-4-6",
            prices=table,
        ),
    )
    (model,) = own["models"]["providers"]["anthropic"]["models"]
    assert model["reasoning"] is True and model["cost"]["input"] == 3.0


def test_models_must_be_priced_and_served_over_the_targets_api() -> None:
    table = _table()
    anthropic = _fields(MODELS["proxy-anthropic"]["proxy"])
    for models, why in (
        ([("claude-unknown-9", "X")], "not in the price table"),
        ([("gpt-4o", "GPT-4o")], "not served over anthropic-messages"),
    ):
        target = ProxyTarget(
            **{**anthropic, "models": models, "primary": models[0][0]}, prices=table
        )
        with pytest.raises(ValueError, match=f"^models: .*{why}"):
            build_config(gateway_token=GATEWAY_TOKEN, channel=whatsapp_channel(), proxy=target)


def _fields(target: ProxyTarget) -> dict[str, Any]:
    return {
        f: getattr(target, f)
        for f in ("base_url", "api", "instance_id", "secret", "models", "primary")
    }


@SLOW
@pytest.mark.parametrize(
    ("api", "base", "model"),
    [("anthropic-messages", "", "claude-sonnet-4-6"), ("openai-completions", "/v1", "gpt-5")],
    ids=["anthropic", "openai"],
)
async def test_real_thinking_turn_through_the_proxy_reports_our_price(
    openclaw: OpenClaw, proxy_env: Any, tmp_path: Path, api: str, base: str, model: str
) -> None:
    """With the models declared from the daemon's price table, ``agent --local --thinking low``
    works: the upstream is asked to think (Anthropic adaptive thinking at effort low, OpenAI
    reasoning_effort low), the thinking tokens are billed as output, and OpenClaw's own report
    of the turn's cost (``--json`` meta.agentMeta.costUsd) is exactly what we charged."""
    from blitzclawd.metering.pricing import Usage

    table = _table()
    inst = proxy_env.instance
    target = ProxyTarget(
        base_url=proxy_env.url + base,
        api=api,
        instance_id=inst.id,
        secret=inst.secret,
        models=[(model, model)],
        primary=model,
        prices=table,
    )
    channel = telegram_channel(bot_token=BOT_TOKEN, allow_from=None)
    config, secrets = split_secrets(
        build_config(gateway_token=GATEWAY_TOKEN, channel=channel, proxy=target)
    )
    home = write_instance(tmp_path, render_config(config), render_config(secrets), PERSONAS["dev"])
    check = await asyncio.to_thread(openclaw.run_json, home, "config", "validate")
    assert check[0] == 0 and check[1]["valid"] is True and check[1]["warnings"] == [], check
    before = await proxy_env.balance()

    done = await asyncio.to_thread(
        openclaw.run,
        home,
        "agent",
        "--local",
        "--thinking",
        "low",
        "-m",
        "Say hi",
        "--json",
        timeout=240,
    )

    assert done.returncode == 0, done.stderr[-3000:]
    start = done.stdout.find("{")
    report, _ = json.JSONDecoder().raw_decode(done.stdout[start:])
    assert report["meta"]["requestShaping"]["thinking"] == "low", report["meta"]
    (upstream,) = [r.json for r in proxy_env.fake.requests if r.json and r.json["model"] == model]
    if api == "anthropic-messages":
        # Claude 4.6: adaptive thinking with an effort (older models: enabled + budget_tokens).
        assert upstream["thinking"] == {"type": "adaptive", "display": "summarized"}, upstream
        assert upstream["output_config"] == {"effort": "low"}
    else:
        assert upstream["reasoning_effort"] == "low", upstream
    await proxy_env.settled()
    row = await proxy_env.pool.fetchrow(
        """SELECT input_tokens, output_tokens, cache_write_5m_tokens, cache_write_1h_tokens,
                  cache_read_tokens, cost_micros FROM usage_logs WHERE model = $1""",
        model,
    )
    thinking = proxy_env.fake.scenario.thinking_tokens
    text = proxy_env.fake.scenario.output_tokens
    assert row["output_tokens"] == thinking + text  # thinking is billed as output
    usage = Usage(**{k: row[k] for k in row.keys() if k != "cost_micros"})
    charged = table.cost_micros(table.get(model), usage)
    assert row["cost_micros"] == charged and await proxy_env.balance() == before - charged
    # OpenClaw prices the same tokens with the declared (marked-up) rates: the user sees what
    # they pay, within our once-per-request round-up to a whole micro-dollar.
    agent_usage = report["meta"]["agentMeta"]["usage"]
    assert agent_usage["output"] == thinking + text
    assert abs(report["meta"]["agentMeta"]["costUsd"] * 1e6 - charged) < 1, report["meta"]
    assert agent_usage["cost"]["total"] == report["meta"]["agentMeta"]["costUsd"]


def test_the_checks_install_what_pool_servers_install() -> None:
    """The release validates configs with the same external OpenClaw plugins installed as pool
    servers get at boot (the channels' own pinned list)."""
    for channel in plugins.channels().values():
        assert set(channel.server_packages) <= set(EXTERNAL_PLUGINS), channel.name
    whatsapp = plugins.channels()["whatsapp"]
    assert whatsapp.server_packages == (f"@openclaw/whatsapp@{OPENCLAW_VERSION}",)
