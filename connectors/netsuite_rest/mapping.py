"""NetSuite's records (``connectors.netsuite_common.mapping``, shared with the SOAP connector) rendered as REST
record JSON: a sublist as ``{"items": [...]}``, a reference as ``{"id": ...}`` (or ``{"externalId": ...}``),
dates ISO, money exact (Decimal); unset fields left out (a PATCH leaves them as they are)."""

from __future__ import annotations

from datetime import date
from typing import Any

from pydantic import BaseModel


def render(record: BaseModel) -> dict[str, Any]:
    return _json(record.model_dump(by_alias=True, exclude_none=True))


def _json(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return {"items": [_json(item) for item in value]}
    if isinstance(value, date):
        return value.isoformat()
    return value
