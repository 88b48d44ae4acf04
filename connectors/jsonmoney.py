"""JSON with exact money: Decimals are written as JSON numbers (never through float) and read back as
Decimals. Platforms' JSON APIs take amounts as numbers; a float would turn 289.95 into 289.949999…
Also the dates platforms put in JSON, read as one ``date``."""

from __future__ import annotations

import json
import re
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any

_MARK = "\u0000dec:"
_MARKED = re.compile(r'"\\u0000dec:(-?[0-9]+(?:\.[0-9]+)?(?:E[+-]?[0-9]+)?)"')


def _mark(value: Any) -> Any:
    if isinstance(value, Decimal):
        return f"{_MARK}{value:f}"
    if isinstance(value, dict):
        return {k: _mark(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_mark(v) for v in value]
    return value


def dumps(value: Any) -> bytes:
    """``json.dumps`` in which every Decimal becomes an unquoted JSON number with its exact digits."""
    return _MARKED.sub(r"\1", json.dumps(_mark(value), separators=(",", ":"))).encode()


def loads(data: bytes | str) -> Any:
    return json.loads(data, parse_float=Decimal)


def amount(value: Any) -> Decimal | None:
    """A platform's amount as an exact Decimal, whatever JSON gave (number, string); None when absent."""
    return None if value is None or value is False else Decimal(str(value))


def day(value: Any) -> date | None:
    """A date as a platform's JSON gives it: "2019-01-01", "2019-01-01T00:00:00…", or the Microsoft JSON
    form "/Date(1546214400000+0000)/" (Xero); None for nothing or what is not a date."""
    if not value:
        return None
    text = str(value)
    if text.startswith("/Date("):
        millis = text[6:].split(")")[0].split("+")[0]
        return datetime.fromtimestamp(int(millis) / 1000, tz=timezone.utc).date()
    try:
        return date.fromisoformat(text[:10])
    except ValueError:
        return None
