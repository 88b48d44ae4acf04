"""Resync's and reconcile's verdict on one invoice, read against what each platform reads back for a void: a
platform whose void is a delete reads back "deleted", Patriot's read-back names the export that carried the void.
Found by the fifteen-target chaos run (tests/test_chaos.py), which counted them as differences."""

from __future__ import annotations

import pytest

from connectors.base import DocumentState, RemoteInvoice
from connectors.testing import invoice_event, next_version
from daemon.operations.resync import classify


@pytest.mark.parametrize("read_back", ["void", "deleted", "void, export 3"])
def test_a_void_the_platform_holds_in_its_own_words_is_no_change(read_back):
    voided = next_version(invoice_event(4100), status="void")
    remote = RemoteInvoice(external_id="x1", number=voided.number, status=read_back)
    assert classify(voided, DocumentState(external_id="x1"), remote, None) == ("no change", "")


def test_a_live_invoice_the_platform_holds_as_deleted_is_a_difference():
    live = invoice_event(4101)
    remote = RemoteInvoice(external_id="x2", number=live.number, status="deleted", total=live.computed.total,
                           tax_total=live.computed.tax_total)
    verdict, why = classify(live, DocumentState(external_id="x2"), remote, None)
    assert verdict == "update" and why.startswith("status deleted")
