"""The API as a contract (issue 14): /api/openapi.json is a valid OpenAPI 3.1 document built from
the declarations that check requests, every route the API listener serves is in it (and nothing
else), operators' routes only in an operator's copy, and the checks it describes are the ones
applied."""

from __future__ import annotations

import re

from openapi_spec_validator import OpenAPIV31SpecValidator
from openapi_spec_validator import validate as validate_spec

from blitzclawd.web.routes import page_paths


def _routes(env) -> set[tuple[str, str]]:
    app = env.daemon.supervisor.child("api-listener").app
    return {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None
    }


def _operations(doc: dict) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in doc["paths"].items() for method in item}


async def test_the_document_is_openapi_3_1_and_lists_every_route(api_env) -> None:
    status, public = await api_env.call("GET", "/api/openapi.json")
    assert status == 200 and public["openapi"] == "3.1.0"
    validate_spec(public, cls=OpenAPIV31SpecValidator)  # raises when invalid
    admin = {"Authorization": f"Bearer {api_env.admin_key}"}
    status, full = await api_env.call("GET", "/api/openapi.json", headers=admin)
    assert status == 200
    validate_spec(full, cls=OpenAPIV31SpecValidator)

    pages = page_paths()  # the dashboard's HTML pages are the website, not the API
    served = {
        (m, re.sub(r"\{(\w+):[^}]+\}", r"{\1}", p)) for m, p in _routes(api_env) if p not in pages
    }
    # Every route is declared, and every declaration is served: same set, both ways.
    assert _operations(full) == served
    assert not any(m == "HEAD" for m, _ in served)

    # Operators' routes are not there for anyone else (to them they do not exist at all).
    hidden = {op for op in _operations(full) if op not in _operations(public)}
    assert hidden and all(
        p.startswith(("/api/admin/", "/api/health/")) or p == "/metrics" for _, p in hidden
    )
    assert not [p for p in public["paths"] if p.startswith("/api/admin/")]

    # A wrong credential still gets the public document (it is never a 401).
    status, again = await api_env.call(
        "GET", "/api/openapi.json", headers={"Authorization": "Bearer sk_nonsense"}
    )
    assert status == 200 and again == public


async def test_every_operation_says_how_it_fails_and_who_may_call_it(api_env) -> None:
    admin = {"Authorization": f"Bearer {api_env.admin_key}"}
    _, doc = await api_env.call("GET", "/api/openapi.json", headers=admin)
    schemes = doc["components"]["securitySchemes"]
    assert {"apiKey", "clerkSession", "sessionCookie", "adminKey", "serverSecret"} <= set(schemes)
    error = doc["components"]["schemas"]["Error"]
    assert error["properties"]["error"]["required"] == ["code", "message"]
    for path, item in doc["paths"].items():
        for method, op in item.items():
            where = f"{method.upper()} {path}"
            assert op["operationId"] and op["summary"] and op["tags"], where
            codes = set(op["responses"])
            assert any(c.startswith("2") for c in codes), where
            if op["security"]:
                assert "401" in codes, where
            if "requestBody" in op:
                assert {"400", "413"} <= codes, where
            if any(p["in"] == "query" for p in op.get("parameters", [])):
                assert "422" in codes, where
            if op["tags"] == ["admin"]:
                assert "404" in codes, where
    ops = {op["operationId"] for item in doc["paths"].values() for op in item.values()}
    assert len(ops) == sum(len(item) for item in doc["paths"].values())  # unique ids


async def test_the_document_states_the_bounds_the_checks_apply(api_env) -> None:
    """The top-up bounds come from this daemon's settings, in the document and in the check."""
    _, doc = await api_env.call("GET", "/api/openapi.json")
    body = doc["paths"]["/api/billing/topup"]["post"]["requestBody"]["content"]
    amount = body["application/json"]["schema"]["properties"]["amount_cents"]
    settings = api_env.daemon.settings
    assert amount["minimum"] == settings.billing.topup_min_cents
    assert amount["maximum"] == settings.billing.topup_max_cents
    assert amount["multipleOf"] == settings.creem.unit_cents
    user = api_env.session_headers("user_bounds")
    for value in (amount["minimum"] - amount["multipleOf"], amount["maximum"] + 1, "2500", 25.0):
        status, answer = await api_env.call(
            "POST", "/api/billing/topup", headers=user, json={"amount_cents": value}
        )
        assert status == 422 and answer["error"]["field"] == "amount_cents", (value, answer)

    channels = doc["paths"]["/api/instances"]["post"]["requestBody"]["content"]
    kinds = channels["application/json"]["schema"]["properties"]["channel_type"]["enum"]
    assert {"telegram", "whatsapp"} <= set(kinds)  # from the loaded plugins
    plugin_routes = [
        p for p in doc["paths"] if p.startswith("/api/instances/{instance_id}/whatsapp/")
    ]
    assert plugin_routes, "a channel plugin's own routes are documented too"


async def test_operators_routes_refuse_before_reading_anything(api_env) -> None:
    """A user's malformed request to an operators' route is a 404, not a 422 telling it exists."""
    user = api_env.session_headers("user_probe")
    for method, path, body in (
        ("POST", "/api/admin/pool/provision", {"count": "many"}),
        ("GET", "/api/admin/jobs?status=bogus", None),
        ("POST", "/api/admin/users/not-a-uuid/adjust", {}),
        ("GET", "/api/admin/metrics?from=yesterday", None),
    ):
        status, answer = await api_env.call(method, path, headers=user, json=body)
        assert status == 404 and answer["error"]["code"] == "not_found", (path, answer)
