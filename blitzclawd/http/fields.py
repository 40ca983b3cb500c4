"""The kinds of value an API operation declares (blitzclawd/http/declare.py): body fields and
query and path parameters. Each both checks a value, with the rules of
blitzclawd/http/validate.py (422 naming the field; a malformed id in a path is a 404), and
describes itself as JSON Schema for the OpenAPI document.

Bounds that come from the configuration (the top-up range, say) are callables of the Settings:
the document shows the bounds this daemon applies.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Mapping
from dataclasses import KW_ONLY, dataclass
from typing import Any

from blitzclawd.config import Settings
from blitzclawd.errors import ApiError
from blitzclawd.http import validate

# A value, or how to read it from this daemon's settings.
Configured = Any

INT8_MIN, INT8_MAX = validate.INT8_MIN, validate.INT8_MAX
# Text a log line and PostgreSQL can hold, with something in it besides spaces.
SINGLE_LINE = r"^[^\u0000-\u001f\u007f]*\S[^\u0000-\u001f\u007f]*$"
MULTI_LINE = r"^[^\u0000]*\S[^\u0000]*$"


def _resolve(value: Configured, settings: Settings) -> Any:
    return value(settings) if callable(value) else value


def _optional(schema: dict[str, Any]) -> dict[str, Any]:
    """An optional field: null means "not given" (as leaving it out does)."""
    kind = schema.get("type")
    if isinstance(kind, str):
        return {**schema, "type": [kind, "null"]}
    return {"anyOf": [schema, {"type": "null"}]}


# -- body fields -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    name: str
    _: KW_ONLY
    required: bool = False
    nullable: bool = False  # null is a value of its own (e.g. "back to the global limit")
    description: str = ""
    example: Any = None

    def check(self, value: Any, settings: Settings) -> Any:
        raise NotImplementedError

    def value_schema(self, settings: Settings) -> dict[str, Any]:
        raise NotImplementedError

    def parse(self, body: Mapping[str, Any], settings: Settings, out: dict[str, Any]) -> None:
        """Put the checked value in `out`; absent (or null when null means nothing) leaves it
        out, so a view can tell "not given" from a value."""
        if self.name not in body or (body[self.name] is None and not self.nullable):
            if self.required:
                raise validate.invalid(self.name, f"{self.name} is required")
            return
        value = body[self.name]
        out[self.name] = None if value is None else self.check(value, settings)

    def schema(self, settings: Settings, *, null_means_absent: bool = True) -> dict[str, Any]:
        schema = self.value_schema(settings)
        if self.nullable or (not self.required and null_means_absent):
            schema = _optional(schema)
        if self.description:
            schema["description"] = self.description
        if self.example is not None:
            schema["examples"] = [self.example]
        return schema


@dataclass(frozen=True)
class Integer(Field):
    minimum: Configured = None
    maximum: Configured = None
    multiple_of: Configured = None
    nonzero: bool = False
    unit: str = ""

    def check(self, value: Any, settings: Settings) -> int:
        low, high = _resolve(self.minimum, settings), _resolve(self.maximum, settings)
        number = validate.integer(
            {self.name: value}, self.name, minimum=low, maximum=high, unit=self.unit
        )
        assert number is not None
        step = _resolve(self.multiple_of, settings)
        if step and number % step:
            raise validate.invalid(self.name, f"{self.name} must be a multiple of {step}")
        if self.nonzero and number == 0:
            raise validate.invalid(self.name, f"{self.name} must not be 0")
        return number

    def value_schema(self, settings: Settings) -> dict[str, Any]:
        low, high = _resolve(self.minimum, settings), _resolve(self.maximum, settings)
        schema: dict[str, Any] = {
            "type": "integer",
            "minimum": INT8_MIN if low is None else max(low, INT8_MIN),
            "maximum": INT8_MAX if high is None else min(high, INT8_MAX),
        }
        step = _resolve(self.multiple_of, settings)
        if step:
            schema["multipleOf"] = step
        if self.nonzero:
            schema["not"] = {"const": 0}
        return schema


@dataclass(frozen=True)
class Boolean(Field):
    def check(self, value: Any, settings: Settings) -> bool:
        return validate.boolean({self.name: value}, self.name)

    def value_schema(self, settings: Settings) -> dict[str, Any]:
        return {"type": "boolean"}


@dataclass(frozen=True)
class Text(Field):
    """A non-blank string, stripped; single-line unless `multiline`. A `pattern` (a full
    match, on the stripped text) comes with the message a user is shown when it fails."""

    max_length: int = 200
    multiline: bool = False
    pattern: str | None = None
    mismatch: str = ""

    def check(self, value: Any, settings: Settings) -> str:
        text = validate.text(
            {self.name: value}, self.name, max_length=self.max_length, multiline=self.multiline
        )
        assert text is not None
        if self.pattern is not None and not re.fullmatch(self.pattern, text):
            raise validate.invalid(self.name, self.mismatch or f"{self.name} is not valid")
        return text

    def value_schema(self, settings: Settings) -> dict[str, Any]:
        schema: dict[str, Any] = {
            "type": "string",
            "minLength": 1,
            "maxLength": self.max_length,
            "pattern": MULTI_LINE if self.multiline else SINGLE_LINE,
        }
        if self.pattern is not None:
            # Both must hold; the declared pattern matches the whole (stripped) text.
            return {**schema, "allOf": [{"pattern": f"^\\s*(?:{self.pattern})\\s*$"}]}
        return schema


_UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"


@dataclass(frozen=True)
class Uuid(Field):
    """An id in a body (the canonical hyphenated form)."""

    def check(self, value: Any, settings: Settings) -> uuid.UUID:
        if not isinstance(value, str) or not re.fullmatch(_UUID, value):
            raise validate.invalid(self.name, f"{self.name} must be an id (a UUID)")
        return uuid.UUID(value)

    def value_schema(self, settings: Settings) -> dict[str, Any]:
        return {"type": "string", "format": "uuid", "pattern": f"^{_UUID}$"}


@dataclass(frozen=True)
class Choice(Field):
    options: Configured = ()

    def check(self, value: Any, settings: Settings) -> str:
        return validate.choice({self.name: value}, self.name, _resolve(self.options, settings))

    def value_schema(self, settings: Settings) -> dict[str, Any]:
        return {"type": "string", "enum": list(_resolve(self.options, settings))}


@dataclass(frozen=True)
class Object(Field):
    """A JSON object whose keys the view (or a channel plugin) checks."""

    properties: Configured = None  # the known keys' schemas, for the document

    def check(self, value: Any, settings: Settings) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise validate.invalid(self.name, f"{self.name} must be an object")
        return value

    def value_schema(self, settings: Settings) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "object"}
        props = _resolve(self.properties, settings)
        if props:
            schema["properties"] = props
        return schema


# -- query and path parameters ---------------------------------------------------------------


@dataclass(frozen=True)
class Param:
    name: str
    _: KW_ONLY
    description: str = ""

    def parse(self, raw: str | None, settings: Settings) -> Any:
        raise NotImplementedError

    def schema(self, settings: Settings) -> dict[str, Any]:
        raise NotImplementedError


@dataclass(frozen=True)
class QueryInt(Param):
    default: int | None = 0
    minimum: int = 0
    maximum: int = INT8_MAX

    def parse(self, raw: str | None, settings: Settings) -> int | None:
        if raw is None:  # absent; an empty value is no number (422), as the document says
            return self.default
        if not re.fullmatch("[0-9]{1,18}", raw) or not self.minimum <= int(raw) <= self.maximum:
            raise validate.invalid(
                self.name,
                f"{self.name} must be a whole number from {self.minimum} to {self.maximum}",
            )
        return int(raw)

    def schema(self, settings: Settings) -> dict[str, Any]:
        schema: dict[str, Any] = {
            "type": "integer",
            "minimum": self.minimum,
            "maximum": self.maximum,
        }
        if self.default is not None:
            schema["default"] = self.default
        return schema


@dataclass(frozen=True)
class QueryFlag(Param):
    def parse(self, raw: str | None, settings: Settings) -> bool:
        if raw in (None, "", "0", "false"):
            return False
        if raw in ("1", "true"):
            return True
        raise validate.invalid(self.name, f"{self.name} must be 1, 0, true or false")

    def schema(self, settings: Settings) -> dict[str, Any]:
        # A bare `?name` (an empty value) is 0, like leaving it out.
        return {"type": "string", "enum": ["1", "0", "true", "false", ""], "default": "0"}


@dataclass(frozen=True)
class QueryChoice(Param):
    options: tuple[str, ...] = ()

    def parse(self, raw: str | None, settings: Settings) -> str | None:
        if raw is None:
            return None
        if raw not in self.options:
            raise validate.invalid(
                self.name, f"{self.name} must be one of {', '.join(self.options)}"
            )
        return raw

    def schema(self, settings: Settings) -> dict[str, Any]:
        return {"type": "string", "enum": list(self.options)}


@dataclass(frozen=True)
class QueryText(Param):
    max_length: int = 200

    def parse(self, raw: str | None, settings: Settings) -> str | None:
        if raw is None or raw == "":
            return None
        return validate.check_text(raw, self.name, max_length=self.max_length)

    def schema(self, settings: Settings) -> dict[str, Any]:
        return {
            "type": "string",
            "maxLength": self.max_length,
            "pattern": r"^[^\u0000-\u001f\u007f]*$",
        }


@dataclass(frozen=True)
class QueryDate(Param):
    def parse(self, raw: str | None, settings: Settings) -> dt.date | None:
        if raw is None:
            return None
        try:
            if not re.fullmatch("[0-9]{4}-[0-9]{2}-[0-9]{2}", raw):
                raise ValueError(raw)
            return dt.date.fromisoformat(raw)
        except ValueError:
            raise validate.invalid(self.name, f"{self.name} must be a date (YYYY-MM-DD)") from None

    def schema(self, settings: Settings) -> dict[str, Any]:
        return {"type": "string", "format": "date"}


@dataclass(frozen=True)
class QueryTime(Param):
    """An ISO date or date-time; without a zone, UTC."""

    def parse(self, raw: str | None, settings: Settings) -> dt.datetime | None:
        if raw is None:
            return None
        try:
            value = dt.datetime.fromisoformat(raw) if len(raw) <= 40 else None
        except ValueError:
            value = None
        if value is None:
            raise validate.invalid(self.name, f"{self.name} must be an ISO date or time (UTC)")
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)

    def schema(self, settings: Settings) -> dict[str, Any]:
        return {
            "anyOf": [
                {"type": "string", "format": "date-time"},
                {"type": "string", "format": "date"},
            ]
        }


@dataclass(frozen=True)
class PathUuid(Param):
    """An id in the path; a malformed one is a 404 like a missing row (nothing to probe)."""

    missing: str = "not found"

    def parse(self, raw: str | None, settings: Settings) -> uuid.UUID:
        try:
            return uuid.UUID(raw or "")
        except ValueError:
            raise ApiError(404, "not_found", self.missing) from None

    def schema(self, settings: Settings) -> dict[str, Any]:
        return {"type": "string", "format": "uuid"}


@dataclass(frozen=True)
class PathNumber(Param):
    missing: str = "not found"

    def parse(self, raw: str | None, settings: Settings) -> int:
        if raw is None or not re.fullmatch("[0-9]{1,18}", raw):
            raise ApiError(404, "not_found", self.missing)
        return int(raw)

    def schema(self, settings: Settings) -> dict[str, Any]:
        return {"type": "integer", "minimum": 0, "maximum": 10**18 - 1}


@dataclass(frozen=True)
class PathChoice(Param):
    """One of a few names (a channel, a file); anything else is a 404."""

    options: Configured = ()
    missing: str = "not found"

    def parse(self, raw: str | None, settings: Settings) -> str:
        if raw not in _resolve(self.options, settings):
            raise ApiError(404, "not_found", self.missing)
        return raw

    def schema(self, settings: Settings) -> dict[str, Any]:
        return {"type": "string", "enum": list(_resolve(self.options, settings))}


@dataclass(frozen=True)
class PathText(Param):
    max_length: int = 200
    slashes: bool = False  # may hold "/" (sent as is, or as %2F)

    def parse(self, raw: str | None, settings: Settings) -> str:
        return raw or ""

    def schema(self, settings: Settings) -> dict[str, Any]:
        return {"type": "string", "minLength": 1, "maxLength": self.max_length}
