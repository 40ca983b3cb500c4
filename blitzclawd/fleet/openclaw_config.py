"""``~/.openclaw/openclaw.json`` for an instance, in the format the pinned OpenClaw accepts.

The shape follows the config WIRE.md records as accepted by the real release (and the tests
validate every persona x channel x model combination with it): ``meta: {}``, a loopback gateway
with token auth, one model provider, heartbeats off, one channel block from the channel's plugin
(blitzclawd.channels.OpenClawBlock, with the plugin trust entry and the owner it asks for).
OpenClaw validates strictly: an unknown key stops the gateway from booting, so nothing here is
speculative.

Secrets: :func:`split_secrets` moves every credential into a JSON file read through OpenClaw's
``file`` SecretRef provider (``secrets.providers``), which OpenClaw only reads when it is a
private (0600, single-link, owned by the gateway user) regular file. That one file covers the
gateway token, the provider key and secret header, and the channel's credentials (the values its
plugin marks as blitzclawd.channels.Secret, e.g. a bot token); OpenClaw keeps
SecretRef values out of what the agent can read, unlike plaintext in ``openclaw.json``.

Models: given the daemon's price table (``ProxyTarget.prices``), each model is declared with
what the table knows (its one source): ``reasoning`` (without it OpenClaw sends ``thinking:
disabled`` and refuses every thinking level), ``input`` modalities, ``contextWindow``,
``maxTokens``, and ``cost`` in OpenClaw's unit, USD per million tokens, at OUR marked-up rates
(list x markup, as the proxy charges), so OpenClaw's own usage report shows what the user pays.
Field names and units are the pinned release's: ``ModelDefinitionSchema`` in
``dist/zod-schema.core-*.mjs`` and ``calculateUsageCost`` in ``dist/usage-cost-*.mjs``
(``tokens * rate / 1e6``; a 1 h cache write at 2x input, as Anthropic bills it).
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from blitzclawd.channels import OpenClawBlock, Secret
from blitzclawd.credentials import api_key as instance_api_key
from blitzclawd.metering.pricing import MTOK, ModelPrice, PriceTable

PROVIDER_ID = "blitzclaw"
GATEWAY_PORT = 18789
WORKSPACE = "~/.openclaw/workspace"
SECRETS_PATH = "~/.openclaw/secrets.json"
SECRETS_PROVIDER = "blitzclaw"  # alias under secrets.providers; ^[a-z][a-z0-9_-]{0,63}$
INSTANCE_HEADER = "X-BlitzClaw-Instance"
SECRET_HEADER = "X-BlitzClaw-Secret"

# OpenClaw's provider `api` values (blitzclawd.proxy.apis holds the proxy's own ApiSpecs).
OPENCLAW_ANTHROPIC_API = "anthropic-messages"
OPENCLAW_OPENAI_API = "openai-completions"
PROXY_APIS = (OPENCLAW_ANTHROPIC_API, OPENCLAW_OPENAI_API)
_PRICE_API = {OPENCLAW_ANTHROPIC_API: "anthropic", OPENCLAW_OPENAI_API: "openai"}  # ModelPrice.api
# Own keys go straight to the provider's official API (no BlitzClaw headers, no proxy).
OFFICIAL_APIS: dict[str, tuple[str, str]] = {
    "anthropic": ("https://api.anthropic.com", OPENCLAW_ANTHROPIC_API),
    "openai": ("https://api.openai.com/v1", OPENCLAW_OPENAI_API),
}

_URL = re.compile(r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~%/-]*)?$")
_MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@/-]{0,127}$")
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{16,256}$")
_SECRET = re.compile(r"^[A-Za-z0-9_-]{20,128}$")
OWN_API_KEY = re.compile(r"^[\x21-\x7e]{8,512}$")  # printable, no spaces: it goes into a header
_API_KEY = OWN_API_KEY
_CHANNEL_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
_OWNER = re.compile(r"^[A-Za-z0-9@.+_:-]{1,128}$")


@dataclass(frozen=True, slots=True)
class ProxyTarget:
    """Our metering proxy, reached with this instance's own credential."""

    base_url: str  # Anthropic style: no /v1 (the SDK appends /v1/messages); OpenAI: ends in /v1
    api: str  # "anthropic-messages" | "openai-completions"
    instance_id: str
    secret: str
    models: list[tuple[str, str]]  # (id, display name)
    primary: str  # one of the model ids
    # The daemon's price table: each model's capabilities and marked-up cost come from it (every
    # model must be priced). None: ids and names only (OpenClaw then assumes no thinking, cost 0).
    prices: PriceTable | None = None


@dataclass(frozen=True, slots=True)
class OwnKey:
    """The user's own provider key (spec "User API Keys"): no proxy in between."""

    provider: str  # "anthropic" | "openai"
    api_key: str
    model: str
    # Capabilities from the price table and the provider's LIST prices (the user pays the
    # provider, not us: no markup); a model the table does not know gets id and name only.
    prices: PriceTable | None = None


def build_config(
    *,
    gateway_token: str,
    channel: tuple[str, OpenClawBlock],
    proxy: ProxyTarget | None = None,
    own_key: OwnKey | None = None,
    skills: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The whole openclaw.json as a dict (secrets inline; see :func:`split_secrets`).
    `skills`: skills.entries (name -> entry), e.g. blitzclawd.fleet.google_skill.skill_entry;
    their values are plain settings, never secrets (OpenClaw drops secret-named skill env)."""
    if proxy is not None and own_key is None:
        provider_id, provider, primary = _proxy_provider(proxy)
    elif own_key is not None and proxy is None:
        provider_id, provider, primary = _own_provider(own_key)
    else:
        raise ValueError("exactly one of proxy / own_key")
    if not isinstance(gateway_token, str) or not _TOKEN.fullmatch(gateway_token):
        raise ValueError("gateway_token: 16-256 characters of [A-Za-z0-9_-]")
    name, block = _check_channel(channel)
    cfg: dict[str, Any] = {
        "meta": {},  # OpenClaw treats a write that drops meta as a clobber
        "gateway": {
            "mode": "local",
            "port": GATEWAY_PORT,
            "bind": "loopback",
            "auth": {"mode": "token", "token": gateway_token},
        },
        # Versions are pinned by the fleet (blitzclawd.fleet.versions): no update checks at boot.
        "update": {"checkOnStart": False},
        "models": {"mode": "merge", "providers": {provider_id: provider}},
        "agents": {
            "defaults": {
                "workspace": WORKSPACE,
                "model": {"primary": f"{provider_id}/{primary}"},
                "heartbeat": {"every": "0m"},  # idle heartbeats burn millions of tokens a day
            }
        },
        "channels": {name: dict(block.config)},
    }
    if skills:
        cfg["skills"] = {"entries": {name: dict(entry) for name, entry in skills.items()}}
    if block.trust_plugin:
        # An external OpenClaw plugin loads only when trusted here; `config validate` passes
        # without it, but the gateway then refuses the plugin (WIRE.md, the QR login).
        cfg["plugins"] = {"entries": {name: {"enabled": True}}}
    if block.owners:
        cfg["commands"] = {"ownerAllowFrom": [f"{name}:{owner}" for owner in block.owners]}
    return cfg


def _proxy_provider(proxy: ProxyTarget) -> tuple[str, dict[str, Any], str]:
    if proxy.api not in PROXY_APIS:
        raise ValueError(f"api: one of {', '.join(PROXY_APIS)}")
    base = _check_url(proxy.base_url, "base_url")
    if proxy.api == OPENCLAW_OPENAI_API and not base.endswith("/v1"):
        raise ValueError("base_url: the OpenAI-style base URL ends in /v1")
    if proxy.api == OPENCLAW_ANTHROPIC_API and base.endswith("/v1"):
        raise ValueError("base_url: the Anthropic-style base URL has no /v1 (the SDK adds it)")
    try:
        instance = str(uuid.UUID(str(proxy.instance_id)))
    except ValueError:
        raise ValueError("instance_id: not a UUID") from None
    if not isinstance(proxy.secret, str) or not _SECRET.fullmatch(proxy.secret):
        raise ValueError("secret: 20-128 characters of [A-Za-z0-9_-]")
    # The proxy accepts this key in x-api-key / Bearer too: OpenClaw has had header bugs.
    key = instance_api_key(instance, proxy.secret)
    if "sk-ant-oat" in key:  # OpenClaw would take it for an OAuth token
        raise ValueError("secret: must not contain 'sk-ant-oat'")
    models = _check_models(proxy.models, proxy.primary)
    if proxy.prices is not None:
        for model in models:
            price = proxy.prices.get(model["id"])
            if price is None:  # the proxy would refuse every request for it
                raise ValueError(f"models: {model['id']!r} is not in the price table")
            if _PRICE_API[proxy.api] != price.api:
                raise ValueError(f"models: {model['id']!r} is not served over {proxy.api}")
            model.update(model_fields(price, proxy.prices.markup))
            if proxy.api == OPENCLAW_OPENAI_API and price.reasoning:
                # OpenClaw sends `reasoning_effort` on a custom Chat Completions route only when
                # the model declares it (openai-completions payload: model.reasoning &&
                # compat.supportsReasoningEffort); the proxy forwards it to OpenAI untouched.
                model["compat"] = {"supportsReasoningEffort": True}
    provider = {
        "baseUrl": base,
        "api": proxy.api,
        "apiKey": key,
        "headers": {INSTANCE_HEADER: instance, SECRET_HEADER: proxy.secret},
        "models": models,
    }
    return PROVIDER_ID, provider, proxy.primary


def _own_provider(own: OwnKey) -> tuple[str, dict[str, Any], str]:
    if own.provider not in OFFICIAL_APIS:
        raise ValueError(f"provider: one of {', '.join(OFFICIAL_APIS)}")
    if not isinstance(own.api_key, str) or not _API_KEY.fullmatch(own.api_key):
        raise ValueError("api_key: 8-512 printable characters without spaces")
    base, api = OFFICIAL_APIS[own.provider]
    models = _check_models([(own.model, own.model)], own.model)
    price = None if own.prices is None else own.prices.get(own.model)
    if price is not None and OFFICIAL_APIS.get(price.api, ("", ""))[1] == api:
        models[0].update(model_fields(price, 1))
    provider = {"baseUrl": base, "api": api, "apiKey": own.api_key, "models": models}
    return own.provider, provider, own.model


def _check_url(url: str, field: str) -> str:
    if not isinstance(url, str) or not _URL.fullmatch(url):
        raise ValueError(f"{field}: an http(s) URL without query, credentials or spaces")
    return url.rstrip("/")


def model_fields(price: ModelPrice, markup: Fraction | int) -> dict[str, Any]:
    """OpenClaw's per-model capability and cost fields for one priced model.

    ``cost`` is USD per million tokens at list x ``markup`` (our price: what the proxy charges
    per token before its once-per-request round-up); ``cacheWrite`` is the 5-minute write
    (OpenClaw prices a 1 h write at 2x input, Anthropic's own rule).
    """

    def usd(rate: int) -> float:  # micro-USD per Mtok -> USD per Mtok, marked up
        return float(Fraction(rate) * markup / MTOK)

    fields: dict[str, Any] = {
        "reasoning": price.reasoning,
        "input": list(price.modalities),
        "cost": {
            "input": usd(price.input),
            "output": usd(price.output),
            "cacheRead": usd(price.cache_read),
            "cacheWrite": usd(price.cache_write_5m),
        },
        "maxTokens": price.max_output_tokens,
    }
    if price.context_window:
        fields["contextWindow"] = price.context_window
    return fields


def _check_models(models: list[tuple[str, str]], primary: str) -> list[dict[str, Any]]:
    if not models:
        raise ValueError("models: at least one")
    out: list[dict[str, Any]] = []
    for model_id, name in models:
        if not isinstance(model_id, str) or not _MODEL_ID.fullmatch(model_id):
            raise ValueError(f"models: bad model id {model_id!r}")
        if not isinstance(name, str) or not name.strip() or len(name) > 200:
            raise ValueError(f"models: bad display name for {model_id!r}")
        out.append({"id": model_id, "name": name})  # objects: OpenClaw rejects bare strings
    ids = [m["id"] for m in out]
    if len(set(ids)) != len(ids):
        raise ValueError("models: duplicate model id")
    if primary not in ids:
        raise ValueError(f"primary: {primary!r} is not among the models")
    return out


def _check_channel(channel: tuple[str, OpenClawBlock]) -> tuple[str, OpenClawBlock]:
    try:
        name, block = channel
    except (TypeError, ValueError):
        raise ValueError("channel: (name, OpenClawBlock) from the channel's plugin") from None
    if not isinstance(name, str) or not _CHANNEL_NAME.fullmatch(name):
        raise ValueError("channel: a channel name of [a-z0-9_-]")
    if not isinstance(block, OpenClawBlock) or not isinstance(block.config, dict):
        raise ValueError("channel: (name, OpenClawBlock) from the channel's plugin")
    for owner in block.owners:
        if not isinstance(owner, str) or not _OWNER.fullmatch(owner):
            raise ValueError(f"channel: bad owner id {owner!r}")
    return name, block


def split_secrets(
    cfg: dict[str, Any], *, path: str = SECRETS_PATH
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(config with file SecretRefs, secrets document) for a config from :func:`build_config`.

    Write the secrets document to ``path`` as 0600, owned by the gateway user, one hard link.
    """
    config = json.loads(json.dumps(cfg))  # deep copy; the input stays as it was
    secrets: dict[str, Any] = {}

    def move(container: dict[str, Any], key: str, pointer: list[str]) -> None:
        value = container.get(key)
        if not isinstance(value, str):
            return
        node = secrets
        for part in pointer[:-1]:
            node = node.setdefault(part, {})
        node[pointer[-1]] = value
        ref = "/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in pointer)
        container[key] = {"source": "file", "provider": SECRETS_PROVIDER, "id": ref}

    move(config["gateway"]["auth"], "token", ["gateway", "auth", "token"])
    for pid, provider in config["models"]["providers"].items():
        move(provider, "apiKey", ["models", "providers", pid, "apiKey"])
        headers = provider.get("headers") or {}
        move(headers, SECRET_HEADER, ["models", "providers", pid, "headers", SECRET_HEADER])
    for name, block in cfg["channels"].items():  # the original: Secret survives no copy
        for key, value in block.items():
            if isinstance(value, Secret):
                move(config["channels"][name], key, ["channels", name, key])
            elif _holds_secret(value):  # it would stay in openclaw.json, readable by the agent
                raise ValueError(f"channel: a Secret in channels.{name}.{key} is not top-level")
    config["secrets"] = {
        "providers": {SECRETS_PROVIDER: {"source": "file", "path": path, "mode": "json"}}
    }
    return config, secrets


def _holds_secret(value: Any) -> bool:
    if isinstance(value, dict):
        return any(isinstance(v, Secret) or _holds_secret(v) for v in value.values())
    if isinstance(value, list):
        return any(isinstance(v, Secret) or _holds_secret(v) for v in value)
    return False


def render_config(cfg: dict[str, Any]) -> str:
    """JSON text (valid JSON5) for openclaw.json, or for the secrets document."""
    return json.dumps(cfg, indent=2, ensure_ascii=False) + "\n"
