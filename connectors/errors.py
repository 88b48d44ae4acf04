"""A platform's error answers classified from a table (issue #12): each connector states which of its
answers mean what, the framework builds the ``DeliveryError`` (status, platform code, detail, Retry-After,
closing date) the same way for every platform.

A rule matches when ANY of its ``on`` facts is among the answer's facts (``"http:401"``, ``"http:5xx"``,
``"code:3200"``, or any fact the connector adds, such as a fault type) and ANY of its ``text`` markers is in
the answer's message (a lower-case substring or a compiled pattern); a rule with neither part matches always.
The first rule that matches decides; none → ``PermanentError``."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date
from typing import Any

import httpx

from connectors import jsonmoney
from connectors.base import ClosedPeriodError, DeliveryError, PermanentError, RateLimitedError
from connectors.http import retry_after_seconds


@dataclass(frozen=True)
class When:
    error: type[DeliveryError]
    on: frozenset[str] | set[str] = frozenset()
    text: tuple[str | re.Pattern[str], ...] = ()

    def matches(self, facts: set[str], message: str) -> bool:
        return (not self.on or bool(self.on & facts)) and (not self.text or any(
            m.search(message) if isinstance(m, re.Pattern) else m in message for m in self.text))


def facts_of(status: int | None, code: object = None, *more: object) -> set[str]:
    """The facts an answer is matched on: its HTTP status (exact and its class), its platform code, extras."""
    found = {str(m) for m in more if m}
    if status is not None:
        found |= {f"http:{status}", f"http:{status // 100}xx"}
    if code not in (None, ""):
        found.add(f"code:{code}")
    return found


def classify_by(rules: Iterable[When], reason: str, *, facts: set[str], message: str = "",
                response: httpx.Response | None = None, status: int | None = None, code: object = None,
                detail: Any = None, closed_through: date | None = None) -> DeliveryError:
    """The error of the first rule that matches (``message`` is compared in lower case)."""
    lowered = message.lower()
    error = next((rule.error for rule in rules if rule.matches(facts, lowered)), PermanentError)
    kwargs: dict[str, Any] = {"status": status if status is not None else (response.status_code if response else None),
                              "platform_code": None if code in (None, "") else str(code), "detail": detail}
    if issubclass(error, RateLimitedError) and response is not None:
        kwargs["retry_after"] = retry_after_seconds(response)
    if issubclass(error, ClosedPeriodError):
        kwargs["closed_through"] = closed_through
    return error(reason, **kwargs)


def odata_error(response: httpx.Response) -> tuple[dict[str, Any], str, str] | None:
    """OData's error body, ``{"error": {"code", "message"}}`` — the message a string (Business Central, OData v4)
    or ``{"lang", "value"}`` (SAP Business One, OData v3): (the error object, its code, its message), or None when
    the body is not one."""
    try:
        body = jsonmoney.loads(response.content)
    except ValueError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return None
    message = error.get("message")
    text = message.get("value", "") if isinstance(message, dict) else str(message or "")
    return error, str(error.get("code", "")), text


def odata_classifier(platform: str, rules: Iterable[When]) -> Callable[[httpx.Response], DeliveryError | None]:
    """``classify`` for a platform answering with OData's error body: the first of ``rules`` matching the HTTP
    status decides; the reason is "<platform> <code>: <message>"."""
    rules = tuple(rules)

    def classify(response: httpx.Response) -> DeliveryError | None:
        found = odata_error(response)
        if found is None:
            return None
        error, code, message = found
        return classify_by(rules, f"{platform} {code}: {message}", facts=facts_of(response.status_code),
                           response=response, code=code, detail=error)

    return classify
