"""What platform clients share on top of ``PlatformHttp`` (issue #12): the preview's recorder (writes recorded
and answered with placeholders instead of being sent), JSON answers with exact money, and reads or deletes of
something the platform no longer has."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import httpx

from connectors import jsonmoney
from connectors.base import PermanentError
from connectors.references import payload_digest

T = TypeVar("T")
ACCEPT_JSON = {"Accept": "application/json"}
SEND_JSON = {"Content-Type": "application/json", "Accept": "application/json"}


class RecordingClient:
    """A client whose writes the engine's ``recording()`` (``EngineConnector.recording``) captures: while
    ``recorder`` is a list, ``recorded`` appends the write and the caller answers with placeholders."""

    recorder: list[dict[str, Any]] | None = None

    def recorded(self, method: str, path: str, body: Any, query: dict[str, Any] | None = None) -> bool:
        """True (and the write appended) during a preview: the caller must not send it."""
        if self.recorder is None:
            return False
        shown = "&".join(f"{k}={v}" for k, v in (query or {}).items() if v is not None)
        self.recorder.append({"method": method, "path": path + (f"?{shown}" if shown else ""), "body": body})
        return True


def sole(found: list[T] | set[T], platform: str, what: str, setting: str) -> T:
    """The one account / business / book / organisation a grant reaches, when the settings name none: never
    a guess among several (``what`` plural, ``setting`` the field that picks one)."""
    if len(found) != 1:
        raise PermanentError(f"the {platform} grant reaches {len(found)} {what}: set settings.{setting}")
    return next(iter(found))


def present(params: dict[str, Any]) -> dict[str, Any]:
    """Query parameters without the ones left out (None)."""
    return {k: v for k, v in params.items() if v is not None}


def is_placeholder(external_id: object) -> bool:
    """An id a preview made up (``"<new invoice>"``): not at the platform, so never read there."""
    return "<" in str(external_id)


class CurrencyCustomers:
    """The shop customer's platform customer for each foreign currency, where a platform customer's currency is
    fixed (QuickBooks Online, Sage, MYOB AccountRight): found by what the shop cannot change, else created; brought
    up to date when the platform's record is ``stale`` against what the shop's customer holds now (a rename, a new
    email), never made twice. Remembered for the process per shop customer, currency and content (``wanted``), so
    a change in the shop is looked at again."""

    def __init__(self) -> None:
        self._ids: dict[tuple[int, str, str], str] = {}

    def get(self, customer_id: int, currency: str, wanted: dict[str, Any], *, find: Callable[[], dict | None],
            create: Callable[[], dict], stale: Callable[[dict], bool], update: Callable[[dict], dict],
            id_of: Callable[[dict], Any]) -> str:
        key = (customer_id, currency, payload_digest(wanted))
        if key not in self._ids or is_placeholder(self._ids[key]):
            found = find()
            record = create() if found is None else update(found) if stale(found) else found
            self._ids[key] = str(id_of(record))  # a preview's placeholder is looked up again next time
        return self._ids[key]


def json_of(response: httpx.Response) -> Any:
    """The answer's JSON with Decimal money (``{}`` for an empty answer, e.g. a DELETE's)."""
    return jsonmoney.loads(response.content) if response.content else {}


def not_found(exc: PermanentError) -> bool:
    return exc.status == 404


def unless_gone(call: Callable[[], T], gone: Callable[[PermanentError], bool] = not_found) -> T | None:
    """``call()``, or None when the platform says the thing is not there: a read of something deleted, a delete
    or void of something already gone (``gone`` tells the platform's way of saying so; default HTTP 404)."""
    try:
        return call()
    except PermanentError as exc:
        if gone(exc):
            return None
        raise
