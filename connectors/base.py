"""The one interface every platform connector implements, and what the framework hands it.

Deliver path: the sink worker (``daemon/sink``) takes a canonical ``InvoiceEvent``, loads the
``DocumentState`` its ledger holds for (target, invoice) and calls ``Connector.deliver``. The connector
makes the platform's books match the event (customer, items, invoice create/update/void, payments and
refunds) and returns the new ``DocumentState``; the worker commits that state and the Kafka offset in
one PostgreSQL transaction. Retries, rate limits, dead-lettering and metrics live in the framework.

Contract for implementers:
* ``deliver`` may be called again with the same ``doc`` after any exception (crash, timeout, retry).
  Before *creating* anything it must therefore make sure it does not already exist: use
  ``doc`` ids first, and when ``ctx.attempt > 1`` or after an ``UncertainOutcomeError`` look the
  document up by its reference (the shop's invoice number, our payment reference).
* After each platform write that creates or changes a document, call ``ctx.checkpoint(doc)`` so the
  external id / concurrency token survive a crash in the middle of a multi-call delivery.
* Raise the ``DeliveryError`` subclass that classifies the failure; never swallow an error.
* Shared entities (customers, items) go through ``ctx.entities`` — with its lock when creating — so
  two invoices of one new customer never create it twice.
* Secrets and customer PII never go to logs; log ids, numbers and statuses.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from datetime import date
from contextlib import AbstractContextManager
from decimal import Decimal
from enum import StrEnum
from typing import Any, ClassVar, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from connectors.engine_state import EngineState
from daemon.canonical import InvoiceEvent, InvoiceLine, LineKind
from daemon.config import TargetConfig

# --- Failure classes ---------------------------------------------------------------------------------


class ErrorClass(StrEnum):
    RETRYABLE = "retryable"  # network, 5xx, 429: back off and try again
    AUTH = "auth"  # expired/invalid token: refresh, then try again
    STALE = "stale"  # concurrency token out of date: re-read the document, retry once
    PERMANENT = "permanent"  # validation and the like: dead-letter, park the invoice


class DeliveryError(Exception):
    error_class: ClassVar[ErrorClass] = ErrorClass.PERMANENT

    def __init__(
        self,
        reason: str,
        *,
        status: int | None = None,
        platform_code: str | None = None,
        retry_after: float | None = None,
        detail: Any = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.platform_code = platform_code
        self.retry_after = retry_after
        self.detail = detail  # the platform's error body (already free of secrets)


class RetryableError(DeliveryError):
    error_class = ErrorClass.RETRYABLE


class RateLimitedError(RetryableError):
    """429 or the platform's equivalent; ``retry_after`` in seconds when the platform says."""


class UncertainOutcomeError(RetryableError):
    """The request may have been applied (timeout after send, connection drop, 5xx): look it up first."""


class NumberInUseError(RetryableError):
    """The platform refuses a new document because a live one already holds its number (Xero, Zoho Books,
    FreeAgent keep numbers unique). Often another shop invoice's void has not arrived yet (the two changes
    travel on different partitions): retried with back-off, dead-lettered with this reason after the
    target's ``max_attempts`` (issue #20)."""


class AuthError(DeliveryError):
    error_class = ErrorClass.AUTH


class ReauthorizationRequired(AuthError):
    """Only a person can fix this (invalid_grant: the refresh token expired or the app was revoked; credentials
    missing or unreadable): the daemon pauses the target — nothing dead-lettered, offsets kept — until
    ``ledgerwire credentials set``."""


class StaleTokenError(DeliveryError):
    error_class = ErrorClass.STALE


class PermanentError(DeliveryError):
    error_class = ErrorClass.PERMANENT


class ClosedPeriodError(PermanentError):
    """The platform refuses the change because the books are closed for that date. ``closed_through``: the
    last closed day when the refusal names it (a platform whose closing date cannot be read otherwise, e.g.
    Zoho's lock message "dated before 2026-12-01"); the engine re-plans with it."""

    def __init__(self, reason: str, *, closed_through: date | None = None, **kwargs: Any) -> None:
        super().__init__(reason, **kwargs)
        self.closed_through = closed_through


# --- Ledger state handed to the connector ------------------------------------------------------------


class ExternalRef(BaseModel):
    """A document or entity at the platform: its id and its concurrency token, if it has one."""

    model_config = ConfigDict(extra="forbid")
    external_id: str
    token: str | None = None  # SyncToken, EditSequence, RowVersion, ETag, write_date …
    amount: Decimal | None = None  # for payments and refunds: what was posted
    status: str | None = None  # e.g. "applied", "voided", "deleted"


class DocumentState(BaseModel):
    """What the ledger knows of one invoice at one target. Returned, changed, by ``deliver``."""

    model_config = ConfigDict(extra="forbid")
    external_id: str | None = None
    token: str | None = None
    status: Literal["none", "posted", "voided", "deleted", "queued"] = "none"
    delivered_version: int = 0
    payload_hash: str | None = None
    customer_id: str | None = None
    payments: dict[str, ExternalRef] = Field(default_factory=dict)  # source payment id -> ref
    refunds: dict[str, ExternalRef] = Field(default_factory=dict)  # source refund id -> ref
    extra: dict[str, str] = Field(default_factory=dict)  # connector-specific (e.g. tax difference)
    # Connectors on the delivery engine (connectors/engine.py): intents, credit applications, adjustments…
    engine: EngineState | None = None


class EntityStore(Protocol):
    """Target-wide map of shared entities (customers, items, tax codes) to their platform ids."""

    def get(self, kind: str, key: str) -> ExternalRef | None: ...

    def put(self, kind: str, key: str, ref: ExternalRef) -> None: ...

    def lock(self, kind: str, key: str) -> AbstractContextManager[None]:
        """Held while looking up and creating one entity; serialises across threads and processes."""
        ...


class DeliveryContext(Protocol):
    target: str
    attempt: int  # 1 on the first try of this event; > 1 means an earlier try may have partly happened
    entities: EntityStore

    def checkpoint(self, doc: DocumentState) -> None:
        """Persist ``doc`` now (not the offset): an external id created mid-delivery survives a crash."""
        ...

    def idempotency_key(self, *parts: object) -> str:
        """A stable key from target, invoice, version and ``parts``, for request-id headers."""
        ...


class RemoteInvoice(BaseModel):
    """An invoice read back from the platform, for reconciliation and uncertain-outcome lookups."""

    external_id: str
    number: str | None = None
    token: str | None = None
    status: str | None = None  # platform status, mapped to draft/issued/void/deleted where possible
    total: Decimal | None = None
    tax_total: Decimal | None = None
    balance: Decimal | None = None
    raw: dict[str, Any] = Field(default_factory=dict)


class Connector(ABC):
    """One platform. Small: mapping (canonical -> platform payloads), client (HTTP/SOAP/XML-RPC)."""

    platform: ClassVar[str]  # e.g. "quickbooks-online"; the value of ``platform`` in the config
    settings_model: ClassVar[type[BaseModel]]  # validates TargetConfig.settings for this platform
    supports_batch: ClassVar[bool] = False
    # Pull platforms (QuickBooks Desktop's Web Connector) only queue work in deliver(); the platform
    # fetches it later through the daemon's own endpoint.
    pull_model: ClassVar[bool] = False

    def __init__(self, target: TargetConfig, runtime: "ConnectorRuntime") -> None:
        self.target = target
        self.runtime = runtime
        self.settings = self.settings_model.model_validate(target.settings)

    @abstractmethod
    def deliver(self, event: InvoiceEvent, doc: DocumentState, ctx: DeliveryContext) -> DocumentState:
        """Make the platform match ``event``; return the new state (delivered_version = event.version)."""

    def deliver_many(
        self, batch: list[tuple[InvoiceEvent, DocumentState, DeliveryContext]]
    ) -> list[DocumentState | DeliveryError]:
        """Deliver several invoices (distinct invoice ids, newest version of each). Platforms with batch
        endpoints (``supports_batch``) override this to use fewer calls; the result list is in the same
        order, each entry the new state or the error that invoice failed with."""
        results: list[DocumentState | DeliveryError] = []
        for event, doc, ctx in batch:
            try:
                results.append(self.deliver(event, doc, ctx))
            except DeliveryError as exc:
                results.append(exc)
        return results

    @abstractmethod
    def find_invoice(self, event: InvoiceEvent) -> RemoteInvoice | None:
        """Look the invoice up by its reference (the shop's invoice number), for uncertain outcomes."""

    @abstractmethod
    def fetch_invoice(self, external_id: str) -> RemoteInvoice | None:
        """Read one invoice back (reconciliation); None when the platform no longer has it."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release clients and sessions."""

    def unconfirmed(self) -> int:
        """Invoices handed over but not yet confirmed by the platform: 0 for a push platform (``deliver`` returns
        once it is done); a pull platform's queue not yet carried and answered by its client (queued is not done)."""
        return 0

    def check_mapping(self) -> list[str]:
        """Resolve every account, tax code/rate, item and tracking value the target's mapping names against the
        platform (read-only calls); one human-readable line per reference that does not resolve, e.g.
        ``"income_accounts.labour: account '999' not found"``. Empty list = everything resolves. Used by
        ``ledgerwire config check FILE --online``. Connectors without the check say so in one line."""
        return [f"{self.platform}: online mapping check not supported"]

    def preview(self, event: InvoiceEvent, doc: "DocumentState") -> list[dict[str, Any]]:
        """Exactly what ``deliver`` would send for ``event`` given ``doc``, sending and writing nothing: a list
        of ``{"method", "path", "body"}`` (bodies as the wire carries them, Decimals kept); ids not known yet
        appear as ``"<new customer>"``-style placeholders. Used by ``run --preview`` and ``resync --preview``."""
        raise NotImplementedError(f"{self.platform}: preview is not supported by this connector yet")

    def asgi_app(self) -> Any | None:
        """An ASGI app the daemon mounts at ``/connectors/<target>/`` (pull platforms' endpoints)."""
        return None

    @classmethod
    def ledger_ddl(cls) -> str:
        """Extra tables this connector keeps in Ledgerwire's PostgreSQL (``CREATE … IF NOT EXISTS``)."""
        return ""


class ConnectorRuntime(Protocol):
    """What the daemon gives a connector: its credential store, its rate limiter, and PostgreSQL."""

    # A psycopg_pool.ConnectionPool on Ledgerwire's database in the daemon; None in unit tests (a
    # connector that keeps its own tables must then fall back to memory).
    pg_pool: Any

    def credentials(self, target: str) -> "CredentialSource": ...

    def limiter(
        self,
        target: TargetConfig,
        *,
        per_second: float | None = None,
        per_minute: float | None = None,
        per_day: float | None = None,
        concurrency: int = 4,
        overridable: bool = True,
    ) -> Any:
        """A ``connectors.ratelimit.Limiter`` from the platform's documented limits (the arguments),
        unless the target's ``rate_limit`` overrides them — which it does only for the request limiter
        (``overridable``), never for a second one such as QuickBooks Online's batch limit. Build
        ``connectors.http.PlatformHttp`` with it."""
        ...


    def report_failure(self, target: TargetConfig, event: InvoiceEvent, error: DeliveryError) -> None:
        """A pull platform refused a version after ``deliver`` had queued it (QuickBooks Desktop answers
        later, through the Web Connector): dead-letter it as the sink does, with its reason and metrics."""
        ...


class CredentialSource(Protocol):
    def get(self) -> dict[str, Any]:
        """The stored credential document (client id/secret, tokens, tenant/realm)."""
        ...

    def update(self, changes: dict[str, Any]) -> None:
        """Persist changes atomically (a rotated refresh token) before they are used."""
        ...

    def lock(self) -> AbstractContextManager[None]:
        """Serialise refreshes across threads and processes."""
        ...


def delivered(event: InvoiceEvent, doc: DocumentState) -> DocumentState:
    """Mark ``doc`` as holding ``event``: what every ``deliver`` returns last."""
    doc.delivered_version = event.version
    doc.payload_hash = event.content_hash()
    return doc


def deliver_each(connector: "Connector", batch: list[tuple[InvoiceEvent, DocumentState, DeliveryContext]],
                 results: list[DocumentState | DeliveryError | None]) -> list[DocumentState | DeliveryError]:
    """Finish a batch: every entry a batch request did not settle goes through ``deliver`` one by one (which
    finds what the batch created already there); a failure stays that invoice's own result."""
    for index, (event, doc, ctx) in enumerate(batch):
        if results[index] is not None:
            continue
        try:
            results[index] = connector.deliver(event, doc, ctx)
        except DeliveryError as exc:
            results[index] = exc
    return results  # type: ignore[return-value]  # every entry is settled now


def sync_entity(ctx: DeliveryContext, kind: str, key: str, digest: str, *,
                find: Callable[[], ExternalRef | None], create: Callable[[], ExternalRef],
                update: Callable[[ExternalRef], ExternalRef | None]) -> ExternalRef:
    """A shared entity (customer, item) at the platform, created once and kept current.

    The ledger's entity map first; under the entity's lock (threads and processes) it is read again, then
    looked up at the platform (``find``: an earlier attempt or the bookkeeper may have made it) and only then
    created. When the shop's data changed since (``digest``, kept as the ref's status), ``update`` corrects
    the platform's record; it returns None when it could not (the ref is then kept, to try again next time).
    """
    ref = ctx.entities.get(kind, key)
    if ref is not None and ref.status == digest:
        return ref
    with ctx.entities.lock(kind, key):
        ref = ctx.entities.get(kind, key)
        if ref is None:
            ref = find()
            if ref is None:
                ref = create().model_copy(update={"status": digest})
                ctx.entities.put(kind, key, ref)
                return ref
        if ref.status != digest:
            updated = update(ref)
            if updated is not None:
                ref = updated.model_copy(update={"status": digest})
        ctx.entities.put(kind, key, ref)
        return ref


def line_text(line: InvoiceLine, limit: int) -> str:
    """A line as the bookkeeper reads it on the platform: part number, then description, cut to ``limit``."""
    return (f"{line.part_number} {line.description}" if line.part_number else line.description)[:limit]


def invoice_memo(event: InvoiceEvent, limit: int) -> str:
    """The shop's invoice number, job number and vehicle, for the platform's memo or note field."""
    parts = [f"Shop invoice {event.number}"]
    if event.job:
        parts.append(f"job {event.job.number}")
        if event.job.vehicle:
            parts.append(event.job.vehicle)
    return "; ".join(parts)[:limit]


def income_kind(kind: LineKind) -> LineKind:
    """Line kinds that post like another kind when the mapping has no entry of their own."""
    return {LineKind.CORE_RETURN: LineKind.CORE_CHARGE}.get(kind, kind)


def posting_account(kind: LineKind, mapping: Any, fallback: LineKind | None = None) -> str | None:
    """The account a line kind posts to, one rule for every platform: core charges and returns on
    ``core_account`` when set; discounts with ``discount_posting: discount_account`` on ``discount_account``
    (which must be set then); else the kind's income account (a core return's: the core charge's when it has
    none), else ``fallback``'s. None: the mapping names none."""
    if kind in (LineKind.CORE_CHARGE, LineKind.CORE_RETURN) and mapping.core_account:
        return mapping.core_account
    if kind == LineKind.DISCOUNT and mapping.discount_posting == "discount_account":
        if not mapping.discount_account:
            raise PermanentError("mapping.discount_posting is 'discount_account' but mapping.discount_account is not set")
        return mapping.discount_account
    accounts = mapping.income_accounts
    return accounts.get(kind) or accounts.get(income_kind(kind)) or (accounts.get(fallback) if fallback else None)


def combined_tax_code(taxes: Iterable[Any], mapping: Any, platform: str, what: str = "tax code") -> str:
    """The platform's tax code for a line's combination of tax components, as ``mapping.tax_codes`` names it
    (key: the component codes sorted and joined by ``+``; ``"none"`` for a line without tax)."""
    key = "+".join(sorted({t.code for t in taxes})) or "none"
    if key not in mapping.tax_codes:
        raise PermanentError(f"mapping.tax_codes names no {platform} {what} for {key!r}")
    return mapping.tax_codes[key]


def required_posting_account(kind: LineKind, mapping: Any, platform: str, what: str = "G/L account") -> str:
    """``posting_account`` with parts' income account as the fallback, refused when the mapping names none."""
    account = posting_account(kind, mapping, LineKind.PART)
    if not account:
        raise PermanentError(f"mapping.income_accounts names no {platform} {what} for {kind.value} lines")
    return account


def payment_account(payment: Any, mapping: Any, platform: str, what: str = "account") -> str:
    """The platform account (bank, deposit account, receipt method) ``mapping.payment_accounts`` names for a
    payment's method, refused when it names none: a payment is never posted to a guessed account."""
    account = mapping.payment_accounts.get(payment.method)
    if not account:
        raise PermanentError(f"mapping.payment_accounts names no {platform} {what} for {payment.method!r} payments")
    return account


def chunks(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
