"""The GraphQL operations the Wave connector sends (every one validated against ``schema.SDL`` in the tests)."""

from __future__ import annotations

INVOICE_FIELDS = """id invoiceNumber status modifiedAt invoiceDate currency { code } exchangeRate
  total { value } taxTotal { value } amountDue { value } amountPaid { value }
  payments { id amount paymentDate paymentAccount { id } memo }"""
PAGE_INFO = "pageInfo { currentPage totalPages }"

BUSINESS_CURRENCY = "query ($businessId: ID!) { business(id: $businessId) { id currency { code } } }"
BUSINESSES = "query { businesses(page: 1, pageSize: 10) { edges { node { id } } } }"
INVOICE = f"query ($businessId: ID!, $id: ID!) {{ business(id: $businessId) {{ invoice(id: $id) {{ {INVOICE_FIELDS} }} }} }}"
INVOICES = (f"query ($businessId: ID!, $number: String, $page: Int!, $pageSize: Int!) {{ business(id: $businessId) {{"
            f" invoices(invoiceNumber: $number, page: $page, pageSize: $pageSize) {{ {PAGE_INFO}"
            f" edges {{ node {{ {INVOICE_FIELDS} }} }} }} }} }}")
CUSTOMERS = ("query ($businessId: ID!, $page: Int!, $pageSize: Int!) { business(id: $businessId) {"
             f" customers(page: $page, pageSize: $pageSize) {{ {PAGE_INFO}"
             " edges { node { id name email internalNotes modifiedAt } } } } }")
PRODUCTS = ("query ($businessId: ID!, $page: Int!, $pageSize: Int!) { business(id: $businessId) {"
            f" products(page: $page, pageSize: $pageSize) {{ {PAGE_INFO} edges {{ node {{ id name isArchived }} }} }} }} }}")


def mutation(name: str, input_type: str, selection: str = "") -> str:
    """``mutation ($input: <Input>!) { <name>(input: $input) { didSucceed inputErrors { … } <selection> } }``."""
    return (f"mutation ($input: {input_type}!) {{ {name}(input: $input) {{ didSucceed"
            f" inputErrors {{ code message path }} {selection} }} }}")


CUSTOMER_CREATE = mutation("customerCreate", "CustomerCreateInput", "customer { id modifiedAt }")
CUSTOMER_PATCH = mutation("customerPatch", "CustomerPatchInput", "customer { id modifiedAt }")
PRODUCT_CREATE = mutation("productCreate", "ProductCreateInput", "product { id }")
INVOICE_CREATE = mutation("invoiceCreate", "InvoiceCreateInput", f"invoice {{ {INVOICE_FIELDS} }}")
INVOICE_PATCH = mutation("invoicePatch", "InvoicePatchInput", f"invoice {{ {INVOICE_FIELDS} }}")
INVOICE_DELETE = mutation("invoiceDelete", "InvoiceDeleteInput")
PAYMENT_CREATE = mutation("invoicePaymentCreateManual", "InvoicePaymentCreateManualInput",
                          "invoicePayment { id amount paymentAccount { id } }")

# Every operation the connector can send, by name (the tests validate each against the SDL).
ALL = {"businesses": BUSINESSES, "businessCurrency": BUSINESS_CURRENCY, "invoice": INVOICE, "invoices": INVOICES,
       "customers": CUSTOMERS, "products": PRODUCTS, "customerCreate": CUSTOMER_CREATE, "customerPatch": CUSTOMER_PATCH,
       "productCreate": PRODUCT_CREATE, "invoiceCreate": INVOICE_CREATE, "invoicePatch": INVOICE_PATCH,
       "invoiceDelete": INVOICE_DELETE, "invoicePaymentCreateManual": PAYMENT_CREATE}
