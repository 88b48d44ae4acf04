"""Wave's GraphQL endpoint over ``PlatformHttp``: queries, mutations (recorded instead of sent during a preview),
the business every write names, paged lists, and Wave's errors classified.

Wave answers most failures with HTTP 200: GraphQL ``errors`` (auth, schema, server faults; ``extensions.code``)
or a mutation's ``didSucceed: false`` with ``inputErrors`` (``code``, ``message``, ``path``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx

from connectors import jsonmoney
from connectors.rest import sole
from connectors.base import (
    AuthError,
    DeliveryError,
    PermanentError,
    RateLimitedError,
    RetryableError,
    UncertainOutcomeError,
)
from connectors.http import PlatformHttp, retry_after_seconds
from connectors.wave import operations
from connectors.wave.settings import WaveSettings

AUTH_CODES = {"UNAUTHENTICATED", "FORBIDDEN"}
THROTTLED = {"THROTTLED", "RATE_LIMITED", "TOO_MANY_REQUESTS"}
SERVER = {"INTERNAL_SERVER_ERROR", "SERVICE_UNAVAILABLE"}


def graphql_error(errors: list[dict[str, Any]], status: int, *, write: bool, retry_after: float | None = None
                  ) -> DeliveryError:
    """GraphQL ``errors`` → the engine's classes: auth, throttled, server fault (uncertain for a mutation: it
    may have been applied), anything else (a query Wave refuses, bad input) permanent."""
    codes = [str((e.get("extensions") or {}).get("code") or "") for e in errors]
    reason = "Wave " + "; ".join(f"{c or 'ERROR'}: {e.get('message', '')}" for c, e in zip(codes, errors))
    common = {"status": status, "platform_code": codes[0], "detail": errors}
    if status == 401 or AUTH_CODES & set(codes):
        return AuthError(reason, **common)
    if status == 429 or THROTTLED & set(codes):
        return RateLimitedError(reason, retry_after=retry_after, **common)
    if status >= 500 or SERVER & set(codes):
        return (UncertainOutcomeError if write else RetryableError)(reason, **common)
    return PermanentError(reason, **common)


def classify(response: httpx.Response) -> DeliveryError | None:
    """A non-2xx answer with a GraphQL error body (what ``PlatformHttp`` sees)."""
    try:
        body = jsonmoney.loads(response.content)
    except ValueError:
        return None
    errors = body.get("errors") if isinstance(body, dict) else None
    if not errors:
        return None
    return graphql_error(errors, response.status_code, write=False, retry_after=retry_after_seconds(response))


def input_error(name: str, payload: dict[str, Any]) -> PermanentError:
    problems = payload.get("inputErrors") or []
    reason = f"Wave {name} refused: " + ("; ".join(
        f"{p.get('code', '')} {'.'.join(p.get('path') or [])}: {p.get('message', '')}" for p in problems) or "didSucceed false")
    return PermanentError(reason, status=200, platform_code=str((problems or [{}])[0].get("code", "")), detail=problems)


class WaveClient:
    def __init__(self, http: PlatformHttp, settings: WaveSettings, url: str) -> None:
        self.http, self.settings, self.url = http, settings, url  # Wave's one endpoint
        self.business_id = settings.business_id
        # Preview: mutations are appended here and answered with placeholders instead of being sent.
        self.recorder: list[dict[str, Any]] | None = None

    def _post(self, document: str, variables: dict[str, Any], write: bool) -> dict[str, Any]:
        response = self.http.request("POST", self.url, headers={"Content-Type": "application/json"},
                                     content=jsonmoney.dumps({"query": document, "variables": variables}))
        try:
            body = jsonmoney.loads(response.content)
        except ValueError:  # a proxy's page, a cut answer: a mutation may have been applied
            raise (UncertainOutcomeError if write else RetryableError)("Wave answered with a body that is not JSON",
                                                                       status=response.status_code) from None
        if body.get("errors"):
            raise graphql_error(body["errors"], response.status_code, write=write)
        return body.get("data") or {}

    def business(self) -> str:
        """``businessId``: configured, else the only business the grant reaches (never a guess among several)."""
        if self.business_id is None:
            edges = self._post(operations.BUSINESSES, {}, write=False)["businesses"]["edges"]
            self.business_id = str(sole(edges, "Wave", "businesses", "business_id")["node"]["id"])
        return self.business_id

    def query(self, document: str, **variables: Any) -> dict[str, Any]:
        """The ``business`` object of a query on this business."""
        return self._post(document, {"businessId": self.business()} | variables, write=False).get("business") or {}

    def pages(self, document: str, field: str, **variables: Any) -> Iterator[dict[str, Any]]:
        """Every node of a paged list (``pageInfo.totalPages``)."""
        page = 1
        while True:
            answer = self.query(document, page=page, pageSize=self.settings.page_size, **variables)[field]
            yield from (edge["node"] for edge in answer["edges"])
            if page >= int(answer["pageInfo"]["totalPages"]):
                return
            page += 1

    def invoice(self, invoice_id: str) -> dict[str, Any] | None:
        if "<new " in invoice_id:  # a preview's placeholder
            return None
        try:
            return self.query(operations.INVOICE, id=invoice_id).get("invoice")
        except PermanentError as exc:
            if exc.platform_code == "NOT_FOUND":  # deleted: Wave may answer the missing node with an error
                return None
            raise

    def mutate(self, name: str, document: str, fields: dict[str, Any], result: str = "") -> dict[str, Any]:
        """One mutation; its payload's ``result`` object (``{}`` when it has none). ``didSucceed: false`` with
        ``inputErrors`` is a permanent refusal."""
        if self.recorder is not None:
            self.recorder.append({"method": "POST", "path": name, "body": {"input": fields}})
            return {**fields, "id": f"<new {result or name}>", "modifiedAt": "<current>"}
        payload = self._post(document, {"input": fields}, write=True).get(name) or {}
        if not payload.get("didSucceed"):
            raise input_error(name, payload)
        return payload.get(result) or {} if result else {}
