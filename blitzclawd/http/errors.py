"""The one error shape every API failure takes: {"error": {code, message, field?, request_id}}."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from blitzclawd.errors import ApiError
from blitzclawd.http.jsonutil import json_response

__all__ = ["ApiError", "error_body", "error_response"]


def error_body(code: str, message: str, request_id: str | None, field: str | None = None) -> dict:
    err: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        err["field"] = field
    if request_id is not None:
        err["request_id"] = request_id
    return {"error": err}


def error_response(exc: ApiError, request_id: str | None) -> web.Response:
    body = error_body(exc.code, exc.message, request_id, exc.field)
    body["error"].update(exc.extra)
    return json_response(body, status=exc.status)
