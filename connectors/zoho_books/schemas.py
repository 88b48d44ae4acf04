"""Request bodies Zoho Books accepts, as pydantic models (and the JSON Schema derived from them).

NOT an official file (Zoho's own OpenAPI files, stored later under the specs directory's zoho-books/, are what
the connector tests validate against first; these stricter models also refuse fields the docs do not list,
which OpenAPI lets through). These models are written by hand from Zoho's public API documentation (Books API v3), field names, types and maximum
lengths as the pages state them:
  * Invoices            https://www.zoho.com/books/api/v3/invoices/
  * Customer payments   https://www.zoho.com/books/api/v3/customer-payments/
  * Credit notes        https://www.zoho.com/books/api/v3/credit-notes/  ("Credit to an invoice")
  * Contacts            https://www.zoho.com/books/api/v3/contacts/
  * Items               https://www.zoho.com/books/api/v3/items/
Only the fields Ledgerwire sends are modelled, and ``extra="forbid"`` makes any other field an error, so a
typo or a field the docs do not list fails validation. The sandbox enforces these models on every write,
and the connector tests validate every body the connector sent against ``json_schema(...)``.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, model_validator

Amount = Annotated[Decimal, WithJsonSchema({"type": "number"})]
Id = Annotated[str, Field(pattern=r"^[0-9]+$", max_length=2000)]  # "a set of numeric characters"
Date = Annotated[str, Field(pattern=r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$")]  # [yyyy-mm-dd]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Tag(_Body):
    """Reporting tag on a line item (``tags`` of invoices, credit notes)."""

    tag_id: Id
    tag_option_id: Id


class LineItem(_Body):
    """``line_items[]`` of an invoice or credit note. Either an item (``item_id``) or a free line (``name``)."""

    item_id: Id | None = None
    name: str | None = Field(None, max_length=100)
    description: str | None = Field(None, max_length=2000)
    item_order: int | None = Field(None, ge=0)
    rate: Amount
    quantity: Amount
    account_id: Id | None = None
    tax_id: Id | None = None
    location_id: Id | None = None
    tags: list[Tag] | None = None

    @model_validator(mode="after")
    def _item_or_name(self) -> "LineItem":
        if not self.item_id and not self.name:
            raise ValueError("a line item needs item_id or name")
        return self


class InvoiceRequest(_Body):
    """POST /invoices (with ``ignore_auto_number_generation=true`` for our own number) and PUT /invoices/{id}."""

    customer_id: Id
    currency_id: Id | None = None  # from /settings/currencies
    exchange_rate: Amount | None = Field(None, gt=0)  # required for a currency other than the base
    invoice_number: str | None = Field(None, min_length=1, max_length=100)
    reference_number: str | None = Field(None, max_length=100)
    date: Date | None = None
    due_date: Date | None = None
    payment_terms: int | None = Field(None, ge=0)
    is_inclusive_tax: bool | None = None
    notes: str | None = Field(None, max_length=5000)
    location_id: Id | None = None
    branch_id: Id | None = None
    line_items: list[LineItem] = Field(min_length=1)


class InvoiceApplied(_Body):
    invoice_id: Id
    amount_applied: Amount


class CustomerPaymentRequest(_Body):
    """POST /customerpayments: a payment applied to the invoices listed (never auto-applied)."""

    customer_id: Id
    payment_mode: Literal["check", "cash", "creditcard", "banktransfer", "bankremittance", "autotransaction",
                          "others"]
    amount: Amount
    date: Date
    reference_number: str | None = Field(None, max_length=100)
    description: str | None = Field(None, max_length=500)
    account_id: Id | None = None
    location_id: Id | None = None
    invoices: list[InvoiceApplied] = Field(min_length=1)


class CreditNoteRequest(_Body):
    """POST /creditnotes."""

    customer_id: Id
    currency_id: Id | None = None  # from /settings/currencies
    exchange_rate: Amount | None = Field(None, gt=0)  # required for a currency other than the base
    date: Date
    reference_number: str | None = Field(None, max_length=100)
    is_inclusive_tax: bool | None = None
    notes: str | None = Field(None, max_length=5000)
    location_id: Id | None = None
    branch_id: Id | None = None
    line_items: list[LineItem] = Field(min_length=1)


class CreditNoteRefundRequest(_Body):
    """POST /creditnotes/{creditnote_id}/refunds ("Refund credit note"): money paid back to the customer."""

    date: Date
    refund_mode: str | None = None
    reference_number: str | None = Field(None, max_length=100)
    amount: Amount
    from_account_id: Id | None = None
    description: str | None = Field(None, max_length=500)


class CreditToInvoicesRequest(_Body):
    """POST /creditnotes/{creditnote_id}/invoices ("Credit to an invoice")."""

    invoices: list[InvoiceApplied] = Field(min_length=1)


class ContactPerson(_Body):
    first_name: str | None = Field(None, max_length=100)
    last_name: str | None = Field(None, max_length=100)
    email: str | None = Field(None, max_length=100)
    phone: str | None = Field(None, max_length=50)
    is_primary_contact: bool | None = None


class ContactRequest(_Body):
    """POST /contacts and PUT /contacts/{id}."""

    contact_name: str = Field(min_length=1, max_length=200)
    company_name: str | None = Field(None, max_length=200)
    contact_type: Literal["customer", "vendor"] = "customer"
    customer_sub_type: Literal["individual", "business"] | None = None
    payment_terms: int | None = Field(None, ge=0)
    notes: str | None = Field(None, max_length=5000)
    contact_persons: list[ContactPerson] | None = None


class ItemRequest(_Body):
    """POST /items: an item (name unique in the organisation; rate required)."""

    name: str = Field(min_length=1, max_length=100)
    rate: Amount
    description: str | None = Field(None, max_length=2000)
    sku: str | None = Field(None, max_length=100)
    account_id: Id | None = None
    tax_id: Id | None = None
    item_type: Literal["sales", "purchases", "sales_and_purchases", "inventory"] | None = None
    product_type: Literal["goods", "service"] | None = None


# (method, path pattern) -> the model its body must satisfy. Paths are relative to /books/v3.
REQUESTS: list[tuple[str, str, type[_Body]]] = [
    ("POST", r"/invoices", InvoiceRequest),
    ("PUT", r"/invoices/[0-9]+", InvoiceRequest),
    ("POST", r"/customerpayments", CustomerPaymentRequest),
    ("POST", r"/creditnotes", CreditNoteRequest),
    ("POST", r"/creditnotes/[0-9]+/invoices", CreditToInvoicesRequest),
    ("POST", r"/creditnotes/[0-9]+/refunds", CreditNoteRefundRequest),
    ("POST", r"/contacts", ContactRequest),
    ("PUT", r"/contacts/[0-9]+", ContactRequest),
    ("POST", r"/items", ItemRequest),
]


def model_for(method: str, path: str) -> type[_Body] | None:
    import re

    for m, pattern, model in REQUESTS:
        if m == method and re.fullmatch(pattern, path):
            return model
    return None


def json_schema(model: type[_Body]) -> dict[str, Any]:
    return model.model_json_schema(mode="validation")


def schema_errors(method: str, path: str, body: Any) -> list[str]:
    """Validate ``body`` (JSON as loaded with Decimals) against the documented JSON Schema for the call."""
    import jsonschema

    model = model_for(method, path)
    if model is None:
        return [] if body in (None, {}, b"") else [f"no documented body for {method} {path}"]
    validator = jsonschema.Draft202012Validator(json_schema(model))
    errors = [f"{'/'.join(map(str, e.absolute_path)) or '<body>'}: {e.message}" for e in validator.iter_errors(body)]
    if not errors:  # cross-field rules JSON Schema does not state (item_id or name)
        try:
            model.model_validate(body)
        except ValueError as exc:
            errors.append(str(exc).splitlines()[0])
    return errors
