"""QuickBooks Desktop RefNumbers (≤ 11 characters), deterministic so a lost answer finds its document: not a payload."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterator

from connectors import references
from daemon.canonical import InvoiceEvent

REF_NUMBER_MAX = 11  # InvoiceAdd/RefNumber maxLength


def ref_candidates(number: str) -> Iterator[str]:
    """Deterministic RefNumber candidates (≤ 11 chars) for a shop invoice number, best first: the number
    without punctuation ("INV-NORTH-000123" → "NORTH000123" once the "INV" prefix goes), then hashed forms.
    The store keeps the first free one, so a collision takes the next candidate."""
    compact = re.sub(r"[^A-Za-z0-9]", "", number).upper()
    if compact and len(compact) <= REF_NUMBER_MAX:
        yield compact
    stripped = re.sub(r"^INV", "", compact)
    if stripped and len(stripped) <= REF_NUMBER_MAX and stripped != compact:
        yield stripped
    for n in range(1000):
        digest = base64.b32encode(hashlib.sha256(f"{number}#{n}".encode()).digest()).decode()
        yield (stripped[:5] + digest[:REF_NUMBER_MAX - 5]).upper()


def refund_reference(refund_id: object) -> str:  # CreditMemoAdd/RefNumber (≤ 11)
    return references.refund_reference(refund_id)[:REF_NUMBER_MAX]


def credit_reference(refund_id: object) -> str:  # ReceivePaymentAdd/RefNumber (≤ 20) of a credit memo's application
    return f"LWC{refund_id}"[:20]


def settlement_reference(refund_id: object) -> str:  # RefNumber (≤ 11) of the money paid back on a credit memo
    return references.settlement_reference(refund_id)[:REF_NUMBER_MAX]


def adjustment_ref(event: InvoiceEvent, sequence: int, kind: str) -> str:
    """RefNumber (≤ 11) of a closed-period adjustment: "A<n>-"/"C<n>-" (increase / decrease) and a digest of
    the invoice number, deterministic so that a lost answer finds it again; the full number goes in Other."""
    prefix = f"{'A' if kind == 'increase' else 'C'}{sequence}-"
    digest = base64.b32encode(hashlib.sha256(f"{event.number}#{prefix}".encode()).digest()).decode()
    return (prefix + digest)[:REF_NUMBER_MAX]
