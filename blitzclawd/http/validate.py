"""Request validation that names the field and changes nothing when it refuses.

Every value a view takes from a body or a query string comes through here, so the same rules
hold everywhere: the declared type exactly (a JSON 20.0 or "20" is not an integer, a string is
not a list), text without NUL (PostgreSQL cannot store it) and bounded, integers inside bigint.
Query and path parameters: blitzclawd/http/fields.py (numbers and dates from plain ASCII digits:
``"²".isdigit()`` is true).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import orjson
from aiohttp import web

from blitzclawd.http.errors import ApiError

INT8_MIN = -(2**63)
INT8_MAX = 2**63 - 1
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DIGITS = re.compile(r"[0-9]{1,18}")
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def invalid(name: str, message: str) -> ApiError:
    return ApiError(422, "invalid_field", message, field=name)


def _json_content_type(request: web.Request) -> bool:
    """JSON, or not said (curl -d says form data: that is a mistake worth naming)."""
    if "Content-Type" not in request.headers:
        return True
    kind = request.content_type
    return kind == "application/json" or (
        kind.startswith("application/") and kind.endswith("+json")
    )


async def json_object(request: web.Request) -> dict[str, Any]:
    if not _json_content_type(request):
        raise ApiError(
            415,
            "unsupported_media_type",
            f"send the body as JSON (Content-Type: application/json), not {request.content_type}",
        )
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
    """An integer field; 422 naming it for strings, floats, booleans, and out-of-range values.

    Without explicit bounds it is still kept inside bigint, so no value reaches SQL as an
    overflow."""
    if name not in body or body[name] is None:
        if required:
            raise invalid(name, f"{name} is required")
        return None
    value = body[name]
    if type(value) is not int:  # bool is an int subclass; 20.0 and "20" are not integers here
        raise invalid(name, f"{name} must be an integer")
    low = INT8_MIN if minimum is None else max(minimum, INT8_MIN)
    high = INT8_MAX if maximum is None else min(maximum, INT8_MAX)
    if value < low:
        raise invalid(name, f"{name} must be at least {low}{unit}")
    if value > high:
        raise invalid(name, f"{name} must be at most {high}{unit}")
    return value


def boolean(body: dict[str, Any], name: str) -> bool:
    value = body.get(name)
    if type(value) is not bool:
        raise invalid(name, f"{name} must be true or false")
    return value


def check_text(value: object, name: str, *, max_length: int, multiline: bool = False) -> str:
    """A string that PostgreSQL can store and a log line can hold; 422 naming `name`."""
    if not isinstance(value, str):
        raise invalid(name, f"{name} must be a string")
    if len(value) > max_length:
        raise invalid(name, f"{name} must be at most {max_length} characters")
    if "\x00" in value:
        raise invalid(name, f"{name} must not contain NUL characters")
    if not multiline and _CONTROL.search(value):
        raise invalid(name, f"{name} must not contain control characters")
    return value


def text(
    body: dict[str, Any],
    name: str,
    *,
    max_length: int,
    required: bool = True,
    multiline: bool = False,
) -> str | None:
    """A non-blank string field, stripped; single-line unless `multiline`."""
    value = body.get(name)
    if value is None:
        if required:
            raise invalid(name, f"{name} is required")
        return None
    if not isinstance(value, str) or not value.strip():
        raise invalid(name, f"{name} must be a non-empty string")
    return check_text(value, name, max_length=max_length, multiline=multiline).strip()


def choice(body: dict[str, Any], name: str, options: Iterable[str]) -> str:
    """One of `options` (a string: a list or an object is refused, never hashed)."""
    allowed = tuple(options)
    value = body.get(name)
    if not isinstance(value, str) or value not in allowed:
        raise invalid(name, f"{name} must be one of {', '.join(allowed)}")
    return value
