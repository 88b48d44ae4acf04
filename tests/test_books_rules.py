"""Issue #20's platform-side rules (the engine-side ones are conformance scenarios in
tests/conformance/test_conformance_books.py): a goodwill refund's tax posted as tax on Zoho Books and Odoo,
QuickBooks Online's DisplayName keeping the shop id, customer matching off unless configured."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

from connectors import references
from connectors.testing import MemoryEntities, connectors_on, deliver, invoice_event, next_version
from daemon.canonical import Customer, Refund
from daemon.config import MappingConfig

GOODWILL = Refund(id=31, kind="refund", amount=Decimal("20.00"), tax_amount=Decimal("1.00"), line_id=None,
                  reason="Goodwill for the wait", created_at=datetime(2026, 11, 22, 10, tzinfo=timezone.utc))


def _goodwill_delivered(sandbox, name):
    with connectors_on(sandbox, name) as build:
        connector, entities = build(), MemoryEntities()
        v1 = invoice_event(3101)
        doc = deliver(connector, entities, v1)
        deliver(connector, entities, next_version(v1, refunds=[GOODWILL]), doc)


def test_zoho_goodwill_refund_without_a_line_posts_its_tax():
    from connectors.zoho_books import Sandbox

    sandbox = Sandbox()
    _goodwill_delivered(sandbox, "zoho")
    (note,) = sandbox.org().creditnotes.values()
    assert (Decimal(str(note["total"])), Decimal(str(note["total"])) - Decimal(str(note["sub_total"]))) == (
        Decimal("21.00"), Decimal("1.00"))


def test_odoo_goodwill_refund_without_a_line_posts_its_tax():
    from connectors.odoo import Sandbox

    sandbox = Sandbox()
    _goodwill_delivered(sandbox, "odoo")
    (note,) = [m for m in sandbox.records("account.move") if m["move_type"] == "out_refund"]
    assert (Decimal(str(note["amount_total"])), Decimal(str(note["amount_tax"]))) == (Decimal("21.00"), Decimal("1.00"))


def test_qbo_display_name_keeps_the_shop_id_of_a_long_name():
    from connectors.quickbooks_online.mapping import customer_display_name

    name = "W" * 120
    label = customer_display_name(Customer(id=622, name=name))
    assert label.endswith(" (#622)") and references.claimed_by(label) == "622" and len(label) <= 500
    assert references.customer_label(622, name, 100).endswith(" (#622)")  # cut names keep the id too


def test_customer_matching_is_off_unless_the_bookkeeper_configures_it():
    assert MappingConfig().customer_match == []
