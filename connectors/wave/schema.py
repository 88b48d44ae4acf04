"""Wave's GraphQL schema (the part Ledgerwire uses) as SDL, and the schema built from it with graphql-core.

The connector's operations and the sandbox are both checked against it; see the SDL's own header for where each
part comes from."""

from __future__ import annotations

from datetime import date
from decimal import Decimal, InvalidOperation
from functools import cache
from typing import Any

import graphql
from graphql.execution.values import get_variable_values

SDL = """
# Wave's public GraphQL API (https://gql.waveapps.com/graphql/public), the part Ledgerwire uses, written by hand.
# Wave publishes no schema file: the input types below follow the field table in
# $LEDGERWIRE_SPECS_DIR/wave/SOURCE.md (tests/connectors/test_wave.py checks them against it). Types the table
# does not cover (queries, payloads, InvoicePatchInput, CustomerPatchInput, InvoicePayment, enum values of
# InvoicePaymentMethod / InvoiceStatus / CurrencyCode beyond the few used) follow the Wave portal pages as
# mirrored by third-party clients and are NOT confirmed by an introspection: the README says so.

scalar Date
scalar DateTime
scalar Decimal

enum InvoiceCreateStatus { DRAFT SAVED }
enum InvoiceStatus { DRAFT SAVED SENT VIEWED UNSENT PARTIAL PAID OVERPAID OVERDUE }
enum CurrencyCode { USD CAD EUR GBP AUD NZD }
enum InvoicePaymentMethod { BANK_TRANSFER CASH CHEQUE CREDIT_CARD OTHER PAYPAL }
enum InvoiceDiscountType { FIXED PERCENTAGE }

input AddressInput {
  addressLine1: String
  addressLine2: String
  city: String
  provinceCode: String
  countryCode: String
  postalCode: String
}

input CustomerShippingDetailsInput {
  name: String
  address: AddressInput
  phone: String
  instructions: String
}

input CustomerCreateInput {
  businessId: ID!
  name: String!
  firstName: String
  lastName: String
  email: String
  phone: String
  mobile: String
  fax: String
  tollFree: String
  website: String
  internalNotes: String
  address: AddressInput
  currency: CurrencyCode
  shippingDetails: CustomerShippingDetailsInput
}

input CustomerPatchInput {
  id: ID!
  name: String
  email: String
  phone: String
  internalNotes: String
  address: AddressInput
}

input ProductCreateInput {
  businessId: ID!
  name: String!
  unitPrice: Decimal!
  description: String
  incomeAccountId: ID
  expenseAccountId: ID
  defaultSalesTaxIds: [ID!]
}

input InvoiceCreateItemTaxInput {
  salesTaxId: ID!
  amount: Decimal @deprecated(reason: "Wave computes the tax amount")
}

input InvoiceCreateItemInput {
  productId: ID!
  description: String
  quantity: Decimal
  unitPrice: Decimal
  taxes: [InvoiceCreateItemTaxInput!]
}

input InvoiceDiscountInput {
  discountType: InvoiceDiscountType!
  name: String
  amount: Decimal
  percentage: Decimal
}

input InvoiceCreateInput {
  businessId: ID!
  customerId: ID!
  status: InvoiceCreateStatus
  currency: CurrencyCode
  title: String
  subhead: String
  invoiceNumber: String
  poNumber: String
  memo: String
  footer: String
  invoiceDate: Date
  dueDate: Date
  exchangeRate: Decimal
  items: [InvoiceCreateItemInput!]
  discounts: [InvoiceDiscountInput!]
  itemTitle: String
  unitTitle: String
  priceTitle: String
  amountTitle: String
  hideName: Boolean
  hideDescription: Boolean
  hideUnit: Boolean
  hidePrice: Boolean
  hideAmount: Boolean
  disableCreditCardPayments: Boolean
  disableBankPayments: Boolean
}

input InvoicePatchInput {
  id: ID!
  customerId: ID
  status: InvoiceCreateStatus
  title: String
  invoiceNumber: String
  poNumber: String
  memo: String
  footer: String
  invoiceDate: Date
  dueDate: Date
  items: [InvoiceCreateItemInput!]
  discounts: [InvoiceDiscountInput!]
}

input InvoiceDeleteInput { invoiceId: ID! }
input InvoiceApproveInput { invoiceId: ID! }
input InvoiceMarkSentInput { invoiceId: ID! }
input InvoiceSendInput {
  invoiceId: ID!
  to: [String]
  message: String
  attachPDF: Boolean
}

input InvoicePaymentCreateManualInput {
  invoiceId: ID!
  paymentAccountId: ID!
  amount: Decimal!
  paymentDate: Date!
  paymentMethod: InvoicePaymentMethod!
  exchangeRate: Decimal!
  memo: String
}

type InputError { code: String message: String path: [String!] }
type Money { value: Decimal! }
type Currency { code: CurrencyCode! symbol: String name: String }
type PageInfo { currentPage: Int! totalPages: Int! totalCount: Int! }
type Account { id: ID! name: String }
type SalesTax { id: ID! name: String rate: Decimal }

type Customer { id: ID! name: String! email: String phone: String internalNotes: String modifiedAt: DateTime }
type CustomerEdge { node: Customer! }
type CustomerConnection { pageInfo: PageInfo! edges: [CustomerEdge!]! }

type Product { id: ID! name: String! unitPrice: Decimal isArchived: Boolean incomeAccount: Account }
type ProductEdge { node: Product! }
type ProductConnection { pageInfo: PageInfo! edges: [ProductEdge!]! }

type InvoiceItemTax { salesTax: SalesTax! amount: Money! }
type InvoiceItem {
  product: Product!
  description: String
  quantity: Decimal!
  unitPrice: Decimal!
  subtotal: Money!
  total: Money!
  taxes: [InvoiceItemTax!]!
}

type InvoicePayment {
  id: ID!
  amount: Decimal!
  paymentDate: Date!
  paymentMethod: InvoicePaymentMethod!
  paymentAccount: Account!
  memo: String
}

type Invoice {
  id: ID!
  createdAt: DateTime!
  modifiedAt: DateTime!
  status: InvoiceStatus!
  invoiceNumber: String!
  invoiceDate: Date!
  dueDate: Date
  poNumber: String
  memo: String
  customer: Customer!
  currency: Currency!
  exchangeRate: Decimal!
  items: [InvoiceItem!]!
  subtotal: Money!
  taxTotal: Money!
  total: Money!
  amountDue: Money!
  amountPaid: Money!
  payments: [InvoicePayment!]!
}
type InvoiceEdge { node: Invoice! }
type InvoiceConnection { pageInfo: PageInfo! edges: [InvoiceEdge!]! }

type Business {
  id: ID!
  name: String!
  currency: Currency!
  invoice(id: ID!): Invoice
  invoices(page: Int = 1, pageSize: Int = 10, invoiceNumber: String): InvoiceConnection!
  customers(page: Int = 1, pageSize: Int = 20, email: String): CustomerConnection!
  products(page: Int = 1, pageSize: Int = 20): ProductConnection!
}
type BusinessEdge { node: Business! }
type BusinessConnection { pageInfo: PageInfo! edges: [BusinessEdge!]! }

type Query {
  business(id: ID!): Business
  businesses(page: Int = 1, pageSize: Int = 10): BusinessConnection!
}

type CustomerCreateOutput { didSucceed: Boolean! inputErrors: [InputError!] customer: Customer }
type CustomerPatchOutput { didSucceed: Boolean! inputErrors: [InputError!] customer: Customer }
type ProductCreateOutput { didSucceed: Boolean! inputErrors: [InputError!] product: Product }
type InvoiceCreateOutput { didSucceed: Boolean! inputErrors: [InputError!] invoice: Invoice }
type InvoicePatchOutput { didSucceed: Boolean! inputErrors: [InputError!] invoice: Invoice }
type InvoiceDeleteOutput { didSucceed: Boolean! inputErrors: [InputError!] }
type InvoiceApproveOutput { didSucceed: Boolean! inputErrors: [InputError!] invoice: Invoice }
type InvoiceMarkSentOutput { didSucceed: Boolean! inputErrors: [InputError!] invoice: Invoice }
type InvoiceSendOutput { didSucceed: Boolean! inputErrors: [InputError!] }
type InvoicePaymentCreateManualOutput { didSucceed: Boolean! inputErrors: [InputError!] invoicePayment: InvoicePayment }

type Mutation {
  customerCreate(input: CustomerCreateInput!): CustomerCreateOutput
  customerPatch(input: CustomerPatchInput!): CustomerPatchOutput
  productCreate(input: ProductCreateInput!): ProductCreateOutput
  invoiceCreate(input: InvoiceCreateInput!): InvoiceCreateOutput
  invoicePatch(input: InvoicePatchInput!): InvoicePatchOutput
  invoiceDelete(input: InvoiceDeleteInput!): InvoiceDeleteOutput
  invoiceApprove(input: InvoiceApproveInput!): InvoiceApproveOutput
  invoiceMarkSent(input: InvoiceMarkSentInput!): InvoiceMarkSentOutput
  invoiceSend(input: InvoiceSendInput!): InvoiceSendOutput
  invoicePaymentCreateManual(input: InvoicePaymentCreateManualInput!): InvoicePaymentCreateManualOutput
}
"""


@cache
def schema() -> graphql.GraphQLSchema:
    """The SDL with Wave's scalars made strict: a Decimal is an exact number (an int, a JSON number read as a
    Decimal, or a numeric string — never a float or a boolean), a Date an ISO date."""
    built = graphql.build_schema(SDL)
    for name, coerce in (("Decimal", _decimal), ("Date", _date)):
        scalar = built.type_map[name]
        scalar.parse_value = coerce  # type: ignore[union-attr]
        scalar.parse_literal = lambda node, _v=None, coerce=coerce: coerce(graphql.value_from_ast_untyped(node))  # type: ignore[union-attr]
        if hasattr(scalar, "coerce_input_value"):
            # graphql-core 3.3 coerces variables through ``coerce_input_value``, set from ``parse_value`` only when
            # the scalar is constructed: without this, 3.3 passed an int where the sandbox expects a Decimal.
            scalar.coerce_input_value = coerce  # type: ignore[union-attr]
    return built


def _decimal(value: Any) -> Decimal:
    if isinstance(value, (bool, float)) or not isinstance(value, (int, Decimal, str)):
        raise ValueError(f"Decimal cannot represent {value!r}")
    try:
        return Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"Decimal cannot represent {value!r}") from None


def _date(value: Any) -> str:
    return date.fromisoformat(str(value)).isoformat()


def operation_errors(query: str, variables: dict[str, Any] | None = None) -> list[str]:
    """What graphql-core finds wrong with an operation and its variables against the SDL (empty: valid)."""
    try:
        document = graphql.parse(query)
    except graphql.GraphQLError as error:
        return [error.message]
    problems = [error.message for error in graphql.validate(schema(), document)]
    operation = graphql.get_operation_ast(document)
    if problems or operation is None:
        return problems or ["no single operation in the document"]
    coerced = get_variable_values(schema(), operation.variable_definitions or (), variables or {})
    return [error.message for error in coerced] if isinstance(coerced, list) else []
