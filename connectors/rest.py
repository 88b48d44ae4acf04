"""What platform clients share on top of ``PlatformHttp`` (issue #12): the preview's recorder (writes recorded
and answered with placeholders instead of being sent), JSON answers with exact money, and reads or deletes of
something the platform no longer has."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import httpx

from connectors import jsonmoney
from connectors.base import PermanentError

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
