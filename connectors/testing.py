"""In-memory stand-ins for the daemon's PostgreSQL-backed runtime, and canonical event builders.

Connector unit tests use these to drive a connector against its sandbox without Kafka or PostgreSQL.
They implement the same protocols as the real stores in ``daemon/sink/ledger.py``; the integration tests
run the real ones.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from connectors.base import DocumentState, ExternalRef
from connectors.ratelimit import limiter_from
from daemon.canonical import (
    Customer,
    InvoiceEvent,
    InvoiceLine,
    Job,
    LineTax,
    Location,
    Payment,
    Refund,
    SourcePosition,
    Totals,
    money,
)
from daemon.config import TargetConfig


class MemoryCredentials:
    def __init__(self, document: dict[str, Any]) -> None:
        self._doc = dict(document)
        self._lock = threading.RLock()
        self.updates: list[dict[str, Any]] = []

    def get(self) -> dict[str, Any]:
        return dict(self._doc)

    def update(self, changes: dict[str, Any]) -> None:
        self._doc.update(changes)
        self.updates.append(dict(changes))

    @contextmanager
    def lock(self) -> Iterator[None]:
        with self._lock:
            yield


class MemoryEntities:
    def __init__(self) -> None:
        self.refs: dict[tuple[str, str], ExternalRef] = {}
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, kind: str, key: str) -> ExternalRef | None:
        return self.refs.get((kind, key))

    def put(self, kind: str, key: str, ref: ExternalRef) -> None:
        self.refs[(kind, key)] = ref

    @contextmanager
    def lock(self, kind: str, key: str) -> Iterator[None]:
        with self._guard:
            lock = self._locks.setdefault((kind, key), threading.Lock())
        with lock:
            yield


class MemoryContext:
    def __init__(self, target: str, event: InvoiceEvent, entities: MemoryEntities | None = None,
                 attempt: int = 1) -> None:
        self.target = target
        self.event = event
        self.attempt = attempt
        self.entities = entities or MemoryEntities()
        self.checkpoints: list[DocumentState] = []

    def checkpoint(self, doc: DocumentState) -> None:
        self.checkpoints.append(doc.model_copy(deep=True))

    def idempotency_key(self, *parts: object) -> str:
        raw = ":".join(str(p) for p in (self.target, self.event.invoice_id, self.event.version, *parts))
        return hashlib.sha256(raw.encode()).hexdigest()[:32]


class MemoryRuntime:
    """ConnectorRuntime for tests: credentials per target in memory, plain HTTP clients, no real limits."""

    pg_pool = None

    def __init__(self, credentials: dict[str, dict[str, Any]] | None = None, *, paced: bool = True) -> None:
        self._credentials = {k: MemoryCredentials(v) for k, v in (credentials or {}).items()}
        self.paced = paced  # False: no request pacing (a harness whose sandbox has its limits lifted too)
        self.failures: list[tuple[str, InvoiceEvent, Any]] = []  # (target, event, error) from report_failure

    def report_failure(self, target: TargetConfig, event: InvoiceEvent, error: Any) -> None:
        self.failures.append((target.name, event, error))

    def credentials(self, target: str) -> MemoryCredentials:
        return self._credentials.setdefault(target, MemoryCredentials({}))

    def limiter(self, target: TargetConfig, *, per_second: float | None = None, per_minute: float | None = None,
                per_day: float | None = None, concurrency: int = 4, overridable: bool = True):
        # Tests talk to a local sandbox: keep the documented limits so 429 handling is exercised (unless a
        # harness lifted them on both sides: then only the concurrency cap stays).
        if not self.paced:
            return limiter_from(None, None, None, concurrency)
        return limiter_from(per_second, per_minute, per_day, concurrency)


def deliver(connector: Any, entities: MemoryEntities, event: InvoiceEvent, doc: DocumentState | None = None,
            attempt: int = 1) -> DocumentState:
    """One ``connector.deliver`` as the sink calls it, with an in-memory context for the connector's target."""
    return connector.deliver(event, doc or DocumentState(),
                             MemoryContext(connector.target.name, event, entities, attempt=attempt))


def dead_lettered_before_any_write(connector: Any, entities: MemoryEntities, requests: Callable[[], list[Any]],
                                   home: InvoiceEvent, foreign: InvoiceEvent, reason: str) -> None:
    """``foreign`` (an invoice in a currency the company cannot take) is dead-lettered with ``reason`` and writes
    nothing, once ``home`` has made its customer: the check every connector that sends currencies makes first."""
    import pytest  # noqa: PLC0415 - only tests call this

    from connectors.base import PermanentError  # noqa: PLC0415

    deliver(connector, entities, home)
    before = len(requests())
    with pytest.raises(PermanentError, match=reason):
        deliver(connector, entities, foreign)
    assert len(requests()) == before


@contextmanager
def connectors_on(sandbox: Any, name: str, *, request_timeout_s: float = 2, paced: bool = True,
                  **settings: Any) -> Iterator[Callable[..., Any]]:
    """Serve ``sandbox`` and yield ``build(**mapping)``: a connector on it (one credential store shared by all,
    so token rotations are seen by every connector built) from the sandbox's own target config, with
    ``mapping`` and ``settings`` overrides and a short request timeout. Connectors and server close afterwards.
    ``paced=False``: no client-side rate pacing (for a sandbox whose own limits were lifted)."""
    from connectors.registry import connector_class

    server = sandbox.serve()
    runtime = MemoryRuntime({name: sandbox.seed_credentials()}, paced=paced)
    built: list[Any] = []

    def build(**mapping: Any) -> Any:
        data = sandbox.target_config(name, server.url) | {"request_timeout_s": request_timeout_s}
        data["settings"] = {**data["settings"], **settings}
        data["mapping"] = {**data["mapping"], **mapping}
        target = TargetConfig.model_validate(data)
        built.append(connector_class(target.platform)(target, runtime))
        return built[-1]

    try:
        yield build
    finally:
        for connector in built:
            connector.close()
        server.stop()


# --- canonical event builders ------------------------------------------------------------------------

GST = dict(tax_rate_id=1, code="GST", name="GST 5%", rate=Decimal("0.05"))
PST = dict(tax_rate_id=2, code="PST", name="PST 7%", rate=Decimal("0.07"))
NOW = datetime(2026, 11, 20, 15, 30, tzinfo=timezone.utc)


def line(line_id: int, kind: str, description: str, quantity: str, unit_price: str, taxes=(GST,),
         part_number: str | None = None, position: int | None = None) -> InvoiceLine:
    q, p = Decimal(quantity), Decimal(unit_price)
    amount = money(q * p)
    return InvoiceLine(
        id=line_id, position=position if position is not None else line_id, kind=kind,
        part_number=part_number, description=description, quantity=q, unit_price=p, amount=amount,
        taxes=tuple(LineTax(**t, amount=money(amount * t["rate"])) for t in taxes),
    )


def payment(payment_id: int, amount: str, method: str = "card", status: str = "received") -> Payment:
    return Payment(id=payment_id, amount=Decimal(amount), method=method, reference=f"REF{payment_id}",
                   received_at=NOW + timedelta(hours=payment_id), status=status)


def refund(refund_id: int, line_id: int, amount: str, tax: str) -> Refund:
    """A returned part refunded (a credit note at the platform), dated when ``invoice_event`` emits."""
    return Refund(id=refund_id, kind="return", amount=Decimal(amount), tax_amount=Decimal(tax), line_id=line_id,
                  reason="Part returned unused", created_at=invoice_event().emitted_at)


def goodwill_refund(refund_id: int = 9, amount: str = "40.00", tax: str = "2.00", payment_id: int | None = None) -> Refund:
    """Money given back with no line (a goodwill gesture) that carries tax; paid back when ``payment_id`` is set."""
    return Refund(id=refund_id, kind="refund", amount=Decimal(amount), tax_amount=Decimal(tax), line_id=None,
                  payment_id=payment_id, reason="Goodwill", created_at=invoice_event().emitted_at)


def invoice_event(
    invoice_id: int = 1001,
    version: int = 1,
    *,
    number: str | None = None,
    status: str = "issued",
    lines: list[InvoiceLine] | None = None,
    payments: list[Payment] | None = None,
    refunds: list[Refund] | None = None,
    customer: Customer | None = None,
    location: Location | None = None,
    currency: str = "USD",
    **overrides: Any,
) -> InvoiceEvent:
    """A realistic alternator job unless told otherwise; totals computed from the lines."""
    if lines is None:
        lines = [
            line(1, "labour", "Diagnose charging system", "1.0", "120.00"),
            line(2, "part", "Alternator, reman 140A", "1", "289.95", part_number="ALT-140R"),
            line(3, "core_charge", "Alternator core deposit", "1", "45.00", taxes=()),
            line(4, "labour", "Replace alternator", "1.5", "120.00"),
            line(5, "fee", "Shop supplies", "1", "12.50"),
        ]
    subtotal = sum((ln.amount for ln in lines), Decimal("0"))
    tax_total = sum((t.amount for ln in lines for t in ln.taxes), Decimal("0"))
    totals = Totals(subtotal=subtotal, tax_total=tax_total, total=subtotal + tax_total)
    data: dict[str, Any] = dict(
        invoice_id=invoice_id, version=version, number=number or f"INV-{invoice_id:06d}", status=status,
        issue_date=date(2026, 11, 20), due_date=date(2026, 12, 20), currency=currency,
        location=location or Location(id=1, code="MAIN", name="Main St Auto Electric"),
        customer=customer or Customer(id=77, name="Dana Whitfield", email="dana@example.com", phone="555-0101"),
        job=Job(id=501, number=f"J-{invoice_id:05d}", description="No-charge / battery light on",
                vehicle="2016 Ford F-150"),
        lines=tuple(lines), payments=tuple(payments or ()), refunds=tuple(refunds or ()),
        computed=totals, stored=totals, source=SourcePosition(tx_id="900", lsn=1, committed_at=NOW),
        emitted_at=NOW,
    )
    data.update(overrides)
    return InvoiceEvent(**data)


def next_version(event: InvoiceEvent, **changes: Any) -> InvoiceEvent:
    """The same invoice, one version on, with ``changes`` (totals recomputed from the lines)."""
    kept: dict[str, Any] = dict(
        number=event.number, status=event.status.value, lines=list(event.lines), payments=list(event.payments),
        refunds=list(event.refunds), customer=event.customer, location=event.location, currency=event.currency,
        issue_date=event.issue_date, due_date=event.due_date, tax_inclusive=event.tax_inclusive, job=event.job,
    )
    kept.update(changes)
    return invoice_event(event.invoice_id, event.version + 1, **kept)


def tax_inclusive_event(invoice_id: int) -> InvoiceEvent:
    """Prices that include their tax, with the shop's own per-line, per-component rounding: 105.00 holds 5.00
    GST; 22.40 holds 1.07 GST (21.33 x 5 % rounded per line); 0.10 holds 0.01 GST + 0.01 PST. A platform that
    takes each included tax as its share of the price can round that last line a cent differently."""
    lines = [line(1, "labour", "Diagnosis", "1", "105.00"), line(2, "part", "Relay", "2", "11.20"),
             line(3, "fee", "Disposal", "1", "0.10", taxes=(GST, PST))]
    shop_tax = ((Decimal("5.00"),), (Decimal("1.07"),), (Decimal("0.01"), Decimal("0.01")))
    lines = [ln.model_copy(update={"taxes": tuple(t.model_copy(update={"amount": amount})
                                                  for t, amount in zip(ln.taxes, amounts))})
             for ln, amounts in zip(lines, shop_tax)]
    event = invoice_event(invoice_id, lines=lines, tax_inclusive=True)
    return event.model_copy(update={"computed": event.computed.model_copy(update={
        "subtotal": Decimal("121.41"), "tax_total": Decimal("6.09"), "total": Decimal("127.50")})})


def paid_then_goodwill(connector: Any, invoice_id: int) -> tuple[InvoiceEvent, Refund, DocumentState]:
    """An invoice paid in full, then a goodwill refund of it paid back to the customer, both delivered: the
    invoice's first version, the refund and the document after the second delivery."""
    entities = MemoryEntities()
    v1 = invoice_event(invoice_id, payments=[payment(1, "677.58")])
    goodwill = goodwill_refund(payment_id=1)
    doc = deliver(connector, entities, next_version(v1, refunds=[goodwill]), deliver(connector, entities, v1))
    return v1, goodwill, doc
