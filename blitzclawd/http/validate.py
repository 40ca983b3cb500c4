"""Request-body validation that names the field and changes nothing when it refuses."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from blitzclawd.http.errors import ApiError


async def json_object(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    try:
        body = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        raise ApiError(400, "invalid_json", "the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json", "the request body must be a JSON object")
    return body


def integer(
    body: dict[str, Any],
    name: str,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    required: bool = True,
    unit: str = "",
) -> int | None:
    """An integer field; 422 naming it for strings, floats, booleans, and out-of-range values."""
    if name not in body or body[name] is None:
        if required:
            raise ApiError(422, "invalid_field", f"{name} is required", field=name)
        return None
    value = body[name]
    if type(value) is not int:  # bool is an int subclass; 20.0 and "20" are not integers here
        raise ApiError(422, "invalid_field", f"{name} must be an integer", field=name)
    if minimum is not None and value < minimum:
        raise ApiError(422, "invalid_field", f"{name} must be at least {minimum}{unit}", field=name)
    if maximum is not None and value > maximum:
        raise ApiError(422, "invalid_field", f"{name} must be at most {maximum}{unit}", field=name)
    return value


def boolean(body: dict[str, Any], name: str) -> bool:
    value = body.get(name)
    if type(value) is not bool:
        raise ApiError(422, "invalid_field", f"{name} must be true or false", field=name)
    return value


def text(body: dict[str, Any], name: str, *, max_length: int, required: bool = True) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise ApiError(422, "invalid_field", f"{name} is required", field=name)
        return None
    if not isinstance(value, str) or not value.strip():
        raise ApiError(422, "invalid_field", f"{name} must be a non-empty string", field=name)
    if len(value) > max_length:
        raise ApiError(
            422, "invalid_field", f"{name} must be at most {max_length} characters", field=name
        )
    return value.strip()
