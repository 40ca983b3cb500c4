"""What each API operation takes and answers, declared once.

The route table (blitzclawd/http/operations.py) is a list of Operations. `bind` wraps each view:
before it runs, the caller's kind is checked (an operators' route does not exist for anyone
else: 404), then the path, the query and the body are parsed against the declaration (the
kinds of blitzclawd/http/fields.py: 422 naming the field, nothing changed), and the view reads
the parsed values with `args_of(request)`. blitzclawd/http/openapi.py describes the same
declarations as OpenAPI 3.1, so the document cannot say one thing while the checks do another.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import KW_ONLY, dataclass, field
from typing import Any, Literal

from aiohttp import web

from blitzclawd.config import Settings
from blitzclawd.http import validate
from blitzclawd.http.auth import CALLER, authenticate, require_admin, require_user
from blitzclawd.http.context import CONTEXT
from blitzclawd.http.fields import (
    Boolean,
    Choice,
    Field,
    Integer,
    Object,
    Param,
    PathChoice,
    PathNumber,
    PathText,
    PathUuid,
    QueryChoice,
    QueryDate,
    QueryFlag,
    QueryInt,
    QueryText,
    QueryTime,
    Text,
    Uuid,
)

__all__ = [
    "Args",
    "Body",
    "Boolean",
    "Choice",
    "Field",
    "Header",
    "Integer",
    "Object",
    "Operation",
    "OperationTable",
    "Param",
    "PathChoice",
    "PathNumber",
    "PathText",
    "PathUuid",
    "QueryChoice",
    "QueryDate",
    "QueryFlag",
    "QueryInt",
    "QueryText",
    "QueryTime",
    "Reply",
    "Text",
    "Uuid",
    "args_of",
    "bind",
]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Auth = Literal["public", "caller", "user", "admin", "instance", "signature"]


@dataclass(frozen=True)
class Body:
    fields: tuple[Field, ...] = ()
    _: KW_ONLY
    # Bodies that must be read as bytes first (signed webhooks): described, parsed by the view.
    raw: bool = False
    any_of: tuple[str, ...] = ()  # at least one of these must be given
    # (field, value, names): when `field` is `value`, these must be given too.
    required_when: tuple[tuple[str, Any, tuple[str, ...]], ...] = ()
    # Closed: a key it does not declare, or a null, is refused (where a misspelt option must
    # not silently widen what happens, e.g. a drain of "every server").
    closed: bool = False
    optional: bool = False  # no body at all reads as {}
    description: str = ""

    def parse(self, body: Mapping[str, Any], settings: Settings) -> dict[str, Any]:
        if self.closed:
            known = {f.name: f for f in self.fields}
            for name, value in body.items():
                shown = str(name)[:64]
                if name not in known:
                    fields = ", ".join(known)
                    raise validate.invalid(shown, f"{shown} is not a field here ({fields})")
                if value is None and not known[name].nullable:
                    raise validate.invalid(shown, f"{shown} must not be null: leave it out instead")
        out: dict[str, Any] = {}
        for f in self.fields:
            f.parse(body, settings, out)
        if self.any_of and not any(name in out for name in self.any_of):
            raise validate.invalid(self.any_of[0], f"send {' and/or '.join(self.any_of)}")
        for name, value, needed in self.required_when:
            for other in needed:
                if out.get(name) == value and out.get(other) is None:
                    raise validate.invalid(other, f"{other} is required when {name} is {value}")
        return out

    def schema(self, settings: Settings) -> dict[str, Any]:
        schema: dict[str, Any] = {
            "type": "object",
            "properties": {
                f.name: f.schema(settings, null_means_absent=not self.closed) for f in self.fields
            },
        }
        if self.closed:
            schema["additionalProperties"] = False
        required = [f.name for f in self.fields if f.required]
        if required:
            schema["required"] = required
        if self.any_of:
            schema["anyOf"] = [{"required": [name]} for name in self.any_of]
        if self.required_when:
            schema["allOf"] = [
                {
                    "if": {"properties": {name: {"const": value}}, "required": [name]},
                    "then": {
                        "required": list(needed),
                        "properties": {other: {"not": {"type": "null"}} for other in needed},
                    },
                }
                for name, value, needed in self.required_when
            ]
        if self.description:
            schema["description"] = self.description
        return schema


@dataclass(frozen=True)
class Header:
    """A request header the view reads (documented; the view checks it)."""

    name: str
    description: str = ""
    required: bool = False


# -- answers and operations ------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    description: str
    schema: dict[str, Any] | None = None
    content_type: str = "application/json"
    example: Any = None


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    auth: Auth
    _: KW_ONLY
    description: str = ""
    path_params: tuple[Param, ...] = ()
    query: tuple[Param, ...] = ()
    body: Body | None = None
    headers: tuple[Header, ...] = ()
    replies: Mapping[int, Reply] = field(default_factory=dict)
    errors: tuple[int, ...] = ()  # answers besides those every operation of its kind may give
    operation_id: str = ""

    @property
    def id(self) -> str:
        return self.operation_id or self.handler.__name__

    @property
    def route(self) -> str:
        """The path as aiohttp's router writes it (a parameter with slashes matches them)."""
        path = self.path
        for p in self.path_params:
            if isinstance(p, PathText) and p.slashes:
                path = path.replace(f"{{{p.name}}}", f"{{{p.name}:.+}}")
        return path


@dataclass(slots=True)
class OperationTable:
    """A listener's operations, and its OpenAPI documents once built (by audience)."""

    operations: list[Operation]
    documents: dict[bool, dict[str, Any]] = field(default_factory=dict)


OPERATIONS = web.AppKey("blitzclaw_operations", OperationTable)


@dataclass(frozen=True, slots=True)
class Args:
    path: dict[str, Any]
    query: dict[str, Any]
    body: dict[str, Any]


ARGS = web.RequestKey("blitzclaw_args", Args)


def args_of(request: web.Request) -> Args:
    return request[ARGS]


def bind(op: Operation) -> Handler:
    """The view, behind its declaration's checks."""

    async def handle(request: web.Request) -> web.StreamResponse:
        if op.auth in ("caller", "user", "admin") and CALLER not in request:
            await authenticate(request)  # outside /api/ (e.g. /metrics) the middleware does not
        if op.auth == "admin":
            require_admin(request)  # before anything is parsed: no answer tells it exists
        elif op.auth == "user":
            require_user(request)
        settings = request.app[CONTEXT].settings
        path = {p.name: p.parse(request.match_info.get(p.name), settings) for p in op.path_params}
        query = {p.name: p.parse(request.query.get(p.name), settings) for p in op.query}
        body: dict[str, Any] = {}
        if op.body is not None and not op.body.raw:
            given = {} if op.body.optional and not await request.read() else None
            if given is None:
                given = await validate.json_object(request)
            body = op.body.parse(given, settings)
        request[ARGS] = Args(path, query, body)
        return await op.handler(request)

    handle.__name__ = op.id
    return handle
