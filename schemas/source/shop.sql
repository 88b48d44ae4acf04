-- Reference shop database: what an auto-electrical shop's service software keeps.
-- Ledgerwire only reads it (through Debezium); the workload generator and the tests write it.
--
-- Design notes for the CDC side:
-- * line_taxes and refunds carry invoice_id (denormalised) so every row names its invoice directly.
-- * Money and quantities are NUMERIC; Debezium sends them as precise decimals.
-- * What Debezium needs on top of these tables — REPLICA IDENTITY FULL on every captured table, the
--   `ledgerwire` publication for exactly the captured tables, the signal and heartbeat tables and the
--   least-privilege replication role — is set up by `ledgerwire source init` (daemon/source.py), the same
--   way on this reference database and on a shop's own database (README "Onboarding a shop's database").

CREATE TABLE IF NOT EXISTS locations (
    id          bigserial PRIMARY KEY,
    code        text NOT NULL UNIQUE,
    name        text NOT NULL,
    timezone    text NOT NULL DEFAULT 'UTC',
    currency    char(3) NOT NULL DEFAULT 'USD'
);

CREATE TABLE IF NOT EXISTS customers (
    id                  bigserial PRIMARY KEY,
    location_id         bigint REFERENCES locations(id),
    name                text NOT NULL,
    email               text,
    phone               text,
    is_fleet            boolean NOT NULL DEFAULT false,   -- account customer, invoiced on terms
    payment_terms_days  integer,                          -- NULL = due on receipt
    tax_exempt          boolean NOT NULL DEFAULT false,
    billing_address     text,
    updated_at          timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS vehicles (
    id           bigserial PRIMARY KEY,
    customer_id  bigint NOT NULL REFERENCES customers(id),
    vin          text,
    year         integer,
    make         text,
    model        text,
    plate        text
);

CREATE TABLE IF NOT EXISTS jobs (
    id           bigserial PRIMARY KEY,
    number       text NOT NULL UNIQUE,                    -- work order number, e.g. J-004211
    location_id  bigint NOT NULL REFERENCES locations(id),
    customer_id  bigint NOT NULL REFERENCES customers(id),
    vehicle_id   bigint REFERENCES vehicles(id),
    description  text NOT NULL,
    status       text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed')),
    opened_at    timestamptz NOT NULL DEFAULT now(),
    closed_at    timestamptz
);

CREATE TABLE IF NOT EXISTS tax_rates (
    id            bigserial PRIMARY KEY,
    code          text NOT NULL UNIQUE,                   -- e.g. GST, PST-BC, STATE-TX, COUNTY
    name          text NOT NULL,
    rate          numeric(7, 5) NOT NULL,                 -- 0.05000 = 5 %
    jurisdiction  text,
    active        boolean NOT NULL DEFAULT true
);

CREATE TABLE IF NOT EXISTS invoices (
    id            bigserial PRIMARY KEY,
    number        text NOT NULL UNIQUE,                   -- the shop's invoice number, e.g. INV-2026-000123
    job_id        bigint NOT NULL REFERENCES jobs(id),
    customer_id   bigint NOT NULL REFERENCES customers(id),
    location_id   bigint NOT NULL REFERENCES locations(id),
    status        text NOT NULL DEFAULT 'draft' CHECK (status IN ('draft', 'issued', 'void')),
    issue_date    date,
    due_date      date,
    currency      char(3) NOT NULL DEFAULT 'USD',
    tax_inclusive boolean NOT NULL DEFAULT false,
    -- Totals as the shop software stored them; the fold recomputes and flags any mismatch.
    subtotal      numeric(12, 2) NOT NULL DEFAULT 0,
    tax_total     numeric(12, 2) NOT NULL DEFAULT 0,
    total         numeric(12, 2) NOT NULL DEFAULT 0,
    notes         text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS invoice_lines (
    id           bigserial PRIMARY KEY,
    invoice_id   bigint NOT NULL REFERENCES invoices(id) ON DELETE CASCADE,
    position     integer NOT NULL,
    kind         text NOT NULL CHECK (kind IN ('part', 'labour', 'sublet', 'fee', 'discount',
                                               'core_charge', 'core_return')),
    part_number  text,
    description  text NOT NULL,
    quantity     numeric(12, 3) NOT NULL,
    unit_price   numeric(12, 4) NOT NULL,                 -- negative for discounts and core returns
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS line_taxes (
    id           bigserial PRIMARY KEY,
    line_id      bigint NOT NULL REFERENCES invoice_lines(id) ON DELETE CASCADE,
    invoice_id   bigint NOT NULL REFERENCES invoices(id) ON DELETE CASCADE,
    tax_rate_id  bigint NOT NULL REFERENCES tax_rates(id),
    amount       numeric(12, 2) NOT NULL                  -- the shop's own computed tax for this line
);

CREATE TABLE IF NOT EXISTS payments (
    id           bigserial PRIMARY KEY,
    job_id       bigint NOT NULL REFERENCES jobs(id),
    invoice_id   bigint REFERENCES invoices(id),          -- NULL while it is a deposit on the job
    customer_id  bigint NOT NULL REFERENCES customers(id),
    amount       numeric(12, 2) NOT NULL CHECK (amount > 0),
    method       text NOT NULL CHECK (method IN ('cash', 'card', 'check', 'eft', 'fleet_account')),
    reference    text,
    received_at  timestamptz NOT NULL DEFAULT now(),
    status       text NOT NULL DEFAULT 'received' CHECK (status IN ('received', 'reversed')),
    reversed_at  timestamptz
);

CREATE TABLE IF NOT EXISTS refunds (
    id           bigserial PRIMARY KEY,
    invoice_id   bigint NOT NULL REFERENCES invoices(id),
    payment_id   bigint REFERENCES payments(id),
    line_id      bigint REFERENCES invoice_lines(id) ON DELETE SET NULL,
    kind         text NOT NULL CHECK (kind IN ('refund', 'return')),
    amount       numeric(12, 2) NOT NULL CHECK (amount > 0),
    tax_amount   numeric(12, 2) NOT NULL DEFAULT 0,
    reason       text,
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS invoice_lines_invoice ON invoice_lines (invoice_id);
CREATE INDEX IF NOT EXISTS line_taxes_invoice ON line_taxes (invoice_id);
CREATE INDEX IF NOT EXISTS payments_invoice ON payments (invoice_id);
CREATE INDEX IF NOT EXISTS payments_job ON payments (job_id);
CREATE INDEX IF NOT EXISTS refunds_invoice ON refunds (invoice_id);
