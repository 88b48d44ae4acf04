"""What a dead letter's reason means in plain words, and what usually fixes it; where a posted document
can be opened on its platform.

The reasons are the platforms' own messages (QuickBooks Online faults, Xero validation errors, Zoho codes,
Odoo faults, qbXML status messages) as the connectors raise them. The patterns below are the refusals
a bookkeeper can fix; anything else gets the generic advice and the platform's message as it is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Advice:
    key: str
    plain: str  # what happened, in the bookkeeper's words
    fix: str  # what usually fixes it
    reauthorise: bool = False


AUTHORISATION = re.compile(r"unauthori[sz]ed|authori[sz]ation|invalid_grant|token.*(expired|revoked|invalid)|revoked"
                           r"|expired|forbidden|consent|\b401\b|\b403\b", re.I)

_KNOWN: list[tuple[re.Pattern[str], Advice]] = [
    (re.compile(r"period closed|account period|closed period|books are closed|lock ?date|period.*lock", re.I),
     Advice("closed-period", "The books are closed for this invoice's date.",
            "Ledgerwire posts a change to a closed period as an adjustment in the first open period; when the "
            "platform still refuses, move the closing date (or the lock date) forward or reopen the period at "
            "the platform, then Retry.")),
    (re.compile(r"merged|inactive|archived|made inactive|customer.*(deleted|not found)|contact.*(not found|deleted)"
                r"|Object Not Found.*Customer|ContactID", re.I),
     Advice("customer-merged", "The customer this invoice belongs to was merged, archived or deleted at the platform.",
            "Ledgerwire remembers the platform's customer record it created; after a merge that record is gone. "
            "Reactivate the customer (or undo the merge) at the platform, then Retry.")),
    (re.compile(r"tax ?code|tax ?rate|TaxType|tax_id", re.I),
     Advice("tax-mapping", "A tax code in this target's mapping does not exist at the platform.",
            "Compare the target's mapping.tax_codes with the platform's tax codes/rates (`ledgerwire config check "
            "--online` names the missing one); create the tax code at the platform or correct the mapping and "
            "restart the daemon, then Retry.")),
    (re.compile(r"account|AccountCode|account_id|IncomeAccountRef|DepositToAccountRef", re.I),
     Advice("account-mapping", "An account in this target's mapping does not exist at the platform (or is inactive).",
            "Compare the target's mapping (income_accounts, payment_accounts, core_account, discount_account) with "
            "the platform's chart of accounts (`ledgerwire config check --online` names the missing one); create "
            "or reactivate the account at the platform, or correct the mapping and restart the daemon, then Retry.")),
    (re.compile(r"item|product|ItemRef", re.I),
     Advice("item-mapping", "An item in this target's mapping does not exist at the platform.",
            "Check mapping.items (or the part-number items) against the platform's products and services; create "
            "the item or correct the mapping, then Retry.")),
    (re.compile(r"duplicate|already exists|must be unique", re.I),
     Advice("duplicate-number", "The platform already holds a document under this invoice number.",
            "Someone may have entered it by hand. Run Reconcile for its period: a conflict there shows the "
            "platform's document; void the hand-made one at the platform, or Drop this dead letter if the "
            "platform's document is the right one.")),
    (AUTHORISATION,
     Advice("authorisation", "The platform no longer accepts Ledgerwire's authorisation.",
            "Re-authorise the connection at the platform and store the new credentials with `ledgerwire "
            "credentials set --target <target> --from-file <file>`, then Retry.", reauthorise=True)),
    (re.compile(r"required|missing|must be|invalid", re.I),
     Advice("validation", "The platform refused a value on this invoice.",
            "Read the platform's message below: usually a field the shop software left empty or a value the "
            "platform does not accept. Correct the invoice in the shop software (the corrected version posts by "
            "itself once this one is dealt with), then Retry or Drop this version.")),
]

GENERIC = Advice("other", "The platform refused this invoice.",
                 "Read the platform's message below; fix the cause at the platform or in the target's mapping, then "
                 "Retry. Drop only when this invoice must never reach this target.")


def advise(reason: str) -> Advice:
    for pattern, advice in _KNOWN:
        if pattern.search(reason):
            return advice
    return GENERIC


def needs_reauthorisation(reason: str) -> bool:
    """A paused target's reason that only a new authorisation at the platform clears."""
    return bool(AUTHORISATION.search(reason))


def document_link(platform: str, base_url: str | None, external_id: str | None) -> str | None:
    """The platform's page for a posted invoice, where the platform has a stable address for it.

    QuickBooks Online and Xero have stable invoice pages keyed by the id the API returns. Zoho Books (data
    centre and organisation in the address), Odoo (each installation its own host and menu ids) and
    QuickBooks Desktop (no web page) are not linked. A target pointed at a local sandbox gets no link: the
    id means nothing at the real platform.
    """
    if not external_id:
        return None
    if platform == "quickbooks-online":
        if base_url is None or "quickbooks.api.intuit.com" in base_url and "sandbox" not in base_url:
            return f"https://app.qbo.intuit.com/app/invoice?txnId={external_id}"
        if "sandbox-quickbooks.api.intuit.com" in base_url:
            return f"https://app.sandbox.qbo.intuit.com/app/invoice?txnId={external_id}"
        return None
    if platform == "xero" and (base_url is None or "api.xero.com" in base_url):
        return f"https://go.xero.com/AccountsReceivable/View.aspx?InvoiceID={external_id}"
    return None
