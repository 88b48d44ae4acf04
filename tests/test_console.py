"""The bookkeeper's console over plain HTTP (Starlette's TestClient) on a real ledger database: login
required, CSRF refused, actions recorded with their user in the audit trail, nothing secret in any page,
customer names on the page but never in the logs; and the pure parts (password hashes, advice, links).
The browser tests on the whole stack are in ``test_console_browser.py``.
"""

from __future__ import annotations

import re
import uuid
from decimal import Decimal

import psycopg
import pytest
from cryptography.fernet import Fernet
from pydantic import ValidationError
from starlette.testclient import TestClient

from connectors.base import DocumentState, ExternalRef
from connectors.testing import invoice_event, payment
from daemon.canonical import encode_invoice_event
from daemon.config import AppConfig
from daemon.console import build_console
from daemon.console.advice import advise, document_link
from daemon.console.password import hash_password, verify_password
from daemon.sink.deliver import DaemonRuntime
from daemon.sink.ledger import Ledger, PgCredentials
from daemon.service import build_http_app

PASSWORD = "correct horse battery"
SECRETS = {"client_id": "ABclientid0001", "client_secret": "s3cr3t-client-secret-value",
           "refresh_token": "RT-refresh-token-value-0001", "access_token": "AT-access-token-value-0001"}


# --- pure parts -------------------------------------------------------------------------------------------


def test_password_hash_round_trip_and_salted():
    first, second = hash_password(PASSWORD), hash_password(PASSWORD)
    assert first != second and first.startswith("scrypt$")
    assert verify_password(PASSWORD, first) and not verify_password("wrong", first)
    assert not verify_password(PASSWORD, "scrypt$garbage")


def test_console_config_errors_are_one_line():
    with pytest.raises(ValidationError) as bad_hash:
        AppConfig.model_validate({"console": {"enabled": True, "password_hash": "hunter2"}})
    assert "never the password itself" in str(bad_hash.value)
    with pytest.raises(ValidationError) as no_hash:
        AppConfig.model_validate({"console": {"enabled": True}})
    assert "needs console.password_hash" in str(no_hash.value)
    with pytest.raises(ValidationError) as no_header:
        AppConfig.model_validate({"console": {"enabled": True, "auth": "proxy"}})
    assert "proxy_user_header" in str(no_header.value)
    assert AppConfig().console.enabled is False  # off by default


def test_advice_for_known_reasons():
    assert advise("Invalid Reference Id : Account 4000 not found").key == "account-mapping"
    assert advise("Account Period Closed, Cannot Update Through Services API").key == "closed-period"
    assert advise("The contact has been archived").key == "customer-merged"
    assert advise("TaxType OUTPUT9 is not valid").key == "tax-mapping"
    assert advise("invalid_grant: refresh token revoked").reauthorise
    assert advise("Duplicate Document Number Error").key == "duplicate-number"
    assert advise("something nobody expected").key == "other"


def test_document_links_only_where_stable():
    assert document_link("quickbooks-online", None, "130") == "https://app.qbo.intuit.com/app/invoice?txnId=130"
    assert document_link("quickbooks-online", "https://sandbox-quickbooks.api.intuit.com", "7").startswith(
        "https://app.sandbox.qbo.intuit.com/")
    assert document_link("xero", None, "abc") == "https://go.xero.com/AccountsReceivable/View.aspx?InvoiceID=abc"
    assert document_link("quickbooks-online", "http://127.0.0.1:5000", "130") is None  # a local sandbox
    assert document_link("zoho-books", None, "1") is None and document_link("odoo", None, "1") is None


def test_console_is_not_served_unless_enabled():
    app = build_http_app(lambda: {}, lambda: {}, {})
    assert TestClient(app).get("/console/invoices").status_code == 404


def test_auth_none_only_on_loopback(ledger_db):
    config = AppConfig.model_validate({"postgres": {"dsn": ledger_db.dsn}, "http": {"host": "0.0.0.0"},
                                       "console": {"enabled": True, "auth": "none"}})
    with pytest.raises(ValueError, match="only allowed with http.host on loopback"):
        build_console(config, ledger_db, None)


# --- over HTTP on a real ledger -----------------------------------------------------------------------------


@pytest.fixture
def ledger_db(local_stack):
    name = f"console_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(local_stack.dsn("postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    ledger = Ledger(local_stack.dsn(name), min_size=1, max_size=4)
    ledger.ensure_schema()
    yield ledger
    ledger.close()


def seed_ledger(ledger: Ledger, key: bytes) -> None:
    """One posted invoice with a payment, one invoice refused (a missing account) with a parked later
    version, and the target's credentials in the encrypted store."""
    posted = invoice_event(2001, 1, number="INV-2001", payments=[payment(1, "100.00")])
    doc = DocumentState(external_id="130", status="posted", delivered_version=1, token="SyncToken-9",
                        payments={"1": ExternalRef(external_id="P1", amount=Decimal("100.00"), status="applied")})
    ledger.record_delivery(target="books", invoice_id=2001, invoice_number="INV-2001", doc=doc, topic="t", partition=0,
                           next_offset=1, issue_date=posted.issue_date, location_code="MAIN",
                           audit={"version": 1, "action": "create", "payload_hash": "h",
                                  "request_summary": {"status": "issued", "lines": 5, "payments": 1,
                                                      "total": str(posted.computed.total)},
                                  "response_status": "posted", "external_id": "130", "source_tx": "900"})
    refused = invoice_event(2002, 1, number="INV-2002")
    for version, parked in ((1, False), (2, True)):
        ledger.dead_letter(target="books", invoice_id=2002, invoice_number="INV-2002", version=version, topic="t",
                           partition=0, offset=version, error_class="permanent",
                           reason="Invalid Reference Id : Account 4000 not found", detail={"code": "2500"},
                           event=encode_invoice_event(refused), parked=parked, next_offset=version + 1)
    PgCredentials(ledger, "books", key).put(SECRETS | {"access_token_expires_at": 1_900_000_000})


def console_config(ledger: Ledger, **console) -> AppConfig:
    return AppConfig.model_validate({
        "postgres": {"dsn": ledger.dsn},
        "targets": [{"name": "books", "platform": "quickbooks-online", "settings": {"realm_id": "9130"}}],
        "console": {"enabled": True, "username": "bookkeeper", "password_hash": HASH} | console,
    })


HASH = hash_password(PASSWORD)


def client_for(console_app) -> TestClient:
    """The console mounted in the daemon's HTTP app, as ``Daemon.start`` mounts it."""
    app = build_http_app(lambda: {}, lambda: {}, {}, console_app)
    return TestClient(app, base_url="http://testserver/console", follow_redirects=False)


@pytest.fixture
def console(ledger_db):
    key = Fernet.generate_key()
    seed_ledger(ledger_db, key)
    config = console_config(ledger_db)
    app = build_console(config, ledger_db, DaemonRuntime(ledger_db, key))
    return client_for(app), ledger_db, key


def login(client: TestClient) -> None:
    answer = client.post("/login", data={"username": "bookkeeper", "password": PASSWORD})
    assert answer.status_code == 303, answer.text


def csrf_of(client: TestClient, path: str = "/attention") -> str:
    return re.search(r'name="csrf" value="([^"]+)"', client.get(path).text).group(1)


def test_no_login_redirects_or_401(console):
    client, _, _ = console
    for path in ("/invoices", "/invoices/INV-2001", "/attention", "/reconcile", "/cash", "/audit"):
        answer = client.get(path)
        assert answer.status_code == 303 and answer.headers["location"].startswith("/console/login"), path
    for path in ("/attention/retry", "/attention/drop", "/reconcile/run", "/logout"):
        assert client.post(path, data={"dead_letter": "1"}).status_code == 401, path
    wrong = client.post("/login", data={"username": "bookkeeper", "password": "not it"})
    assert wrong.status_code == 401 and "ledgerwire_console" not in wrong.cookies


def test_failed_logins_are_throttled(console):
    client, _, _ = console
    for _ in range(5):
        assert client.post("/login", data={"username": "bookkeeper", "password": "guess"}).status_code == 401
    assert client.post("/login", data={"username": "bookkeeper", "password": PASSWORD}).status_code == 429


def test_proxy_header_believed_only_from_trusted_proxies(ledger_db):
    config = console_config(ledger_db, auth="proxy", proxy_user_header="X-Forwarded-User",
                            trusted_proxies=["testclient"])
    client = client_for(build_console(config, ledger_db, None))
    assert client.get("/invoices").status_code == 401
    page = client.get("/invoices", headers={"X-Forwarded-User": "alex"})
    assert page.status_code == 200 and "alex" in page.text
    untrusted = console_config(ledger_db, auth="proxy", proxy_user_header="X-Forwarded-User")
    client = client_for(build_console(untrusted, ledger_db, None))
    assert client.get("/invoices", headers={"X-Forwarded-User": "alex"}).status_code == 401


def test_csrf_refused_and_actions_audited_with_their_user(console):
    client, ledger, _ = console
    login(client)
    dead = ledger.dead_letters("books")[0]
    token = csrf_of(client)
    assert client.post("/attention/drop", data={"dead_letter": dead["id"]}).status_code == 403
    assert client.post("/attention/drop", data={"dead_letter": dead["id"], "csrf": "forged"}).status_code == 403
    assert client.post("/attention/drop", data={"dead_letter": dead["id"], "csrf": token},
                       headers={"Origin": "https://evil.example"}).status_code == 403
    assert len(ledger.dead_letters("books")) == 2, "a refused request changed nothing"

    done = client.post("/attention/drop", data={"dead_letter": dead["id"], "csrf": token})
    assert done.status_code == 303
    assert ledger.dead_letters("books") == []
    page = client.get("/attention").text
    assert "dropped 2 dead letter(s) of invoice INV-2002" in page
    with ledger.pool.connection() as conn:
        actor, action, outcome = conn.execute("SELECT actor, action, outcome FROM console_actions "
                                              "WHERE action='dlq-drop'").fetchone()
    assert (actor, action, outcome) == ("bookkeeper", "dlq-drop", "ok")
    trail = ledger.audit_trail("INV-2002")
    assert [(r["action"], r["request_summary"]["by"]) for r in trail] == [("console-drop", "bookkeeper")]
    assert ledger.verify_audit_chain() == (True, None)
    history = client.get("/invoices/INV-2002").text
    assert "console-drop" in history and "by bookkeeper" in history and "Audit chain: intact" in history


def test_pages_show_state_and_nothing_secret(console, capsys):
    client, ledger, key = console
    login(client)
    session_id = client.cookies.get("ledgerwire_console")
    pages = {path: client.get(path) for path in ("/invoices", "/invoices?number=inv-2001", "/invoices/INV-2001",
                                                 "/invoices/INV-2002", "/attention", "/reconcile", "/cash", "/audit")}
    for path, answer in pages.items():
        assert answer.status_code == 200, path
        assert answer.headers["content-security-policy"].startswith("default-src 'none'")
        for secret in [*SECRETS.values(), key.decode(), HASH, PASSWORD, session_id, "SyncToken-9"]:
            assert secret not in answer.text, f"{path} shows a secret"
    assert client.get("/login").status_code == 303  # logged in: nothing to render there

    invoices = pages["/invoices"].text
    assert "INV-2001" in invoices and "INV-2002" in invoices and "parked behind a dead letter" in invoices
    assert "Account 4000 not found" in pages["/invoices/INV-2002"].text
    assert "Dana Whitfield" in pages["/invoices/INV-2002"].text  # the bookkeeper sees the customer…
    assert "INV-2002" not in pages["/invoices?number=inv-2001"].text
    attention = pages["/attention"].text
    assert "An account in this target" in attention and "chart of accounts" in attention
    cash = pages["/cash"].text
    # INV-2001: total of the delivered version less the 100.00 payment, aged by its issue date.
    outstanding = invoice_event(2001, 1, payments=[payment(1, "100.00")]).computed.total - Decimal("100.00")
    assert f"{outstanding:,.2f}" in cash and "100.00" in cash
    assert "cannot be read from it" in cash  # payments per day: the ledger has no received dates
    client.post("/attention/drop", data={"dead_letter": ledger.dead_letters("books")[0]["id"],
                                         "csrf": csrf_of(client)})
    logged = capsys.readouterr()
    assert "Dana Whitfield" not in logged.out + logged.err, "a customer name reached the logs"
    assert "console_action" in logged.out + logged.err  # the action itself was logged


def test_paused_targets_with_a_reauthorisation_hint(console):
    client, ledger, _ = console
    login(client)
    ledger.set_paused("books", True, "authorisation expired: the platform refused the refresh token (invalid_grant)")
    page = client.get("/attention").text
    assert "Paused targets" in page and "Re-authorise the connection at the platform" in page
    assert "ledgerwire credentials set --target books" in page
    ledger.set_paused("books", True, "offsets reset")
    page = client.get("/attention").text
    assert "Paused by an operator" in page and "Re-authorise the connection" not in page


def test_logout_ends_the_session(console):
    client, _, _ = console
    login(client)
    token = csrf_of(client)
    assert client.post("/logout", data={"csrf": token}).status_code == 303
    assert client.get("/invoices").status_code == 303


def test_retry_after_the_fix_is_not_answered_with_the_replayed_refusal(ledger_db, monkeypatch):
    """QuickBooks answers a reused requestid with its earlier answer — the refusal. A dead letter retried
    after the bookkeeper fixed the cause must send fresh request ids, or it can never succeed."""
    import threading

    from connectors.quickbooks_online.sandbox import Sandbox
    from daemon.operations.bookkeeping import retry_dead_letter
    from daemon.sink.deliver import SinkWorker, deliver_event_now
    from connectors.testing import line

    key = Fernet.generate_key()
    sandbox = Sandbox()
    server = sandbox.serve()
    try:
        seed = sandbox.seed_credentials()
        target_data = sandbox.target_config("books", server.url)
        target_data["mapping"]["income_accounts"]["part"] = "4000"  # not in the chart of accounts
        config = AppConfig.model_validate({"postgres": {"dsn": ledger_db.dsn}, "targets": [target_data]})
        target = config.target("books")
        runtime = DaemonRuntime(ledger_db, key)
        runtime.credentials("books").put(seed)
        worker = SinkWorker(config, target, ledger_db, runtime, threading.Event())
        event = invoice_event(3001, 1, number="INV-3001", lines=[line(1, "part", "Alternator", "1", "289.95")])
        refused = deliver_event_now(worker, event)
        assert not isinstance(refused, tuple) and "Account 4000" in refused.reason
        ledger_db.dead_letter(target="books", invoice_id=3001, invoice_number="INV-3001", version=1, topic="t",
                              partition=0, offset=1, error_class="permanent", reason=refused.reason, detail=None,
                              event=encode_invoice_event(event), parked=False, next_offset=2)
        row = ledger_db.dead_letters("books")[0]
        assert not retry_dead_letter(config, ledger_db, runtime, target, row, worker).ok  # not fixed yet
        with sandbox._lock:
            realm = next(iter(sandbox.realms.values()))
            realm.entities["Account"]["4000"] = {"Id": "4000", "Name": "Parts income", "AccountType": "Income",
                                                 "SyncToken": "0", "Active": True}
        outcome = retry_dead_letter(config, ledger_db, runtime, target, row, worker)
        assert outcome.ok, outcome.message
        assert [b.number for b in sandbox.booked_invoices()] == ["INV-3001"]
        assert ledger_db.document("books", 3001).status == "posted"
        # The retried delivery is in the audit trail like any other, and its attempt count is closed.
        assert [r["action"] for r in ledger_db.audit_trail("INV-3001")] == ["dlq-retry-create"]
        assert "attempts" not in ledger_db.document("books", 3001).extra
        worker.connector.close()
    finally:
        server.stop()


def test_cash_summary_follows_new_deliveries(console):
    """The cash page's incrementally kept summary agrees with one rebuilt from scratch after deliveries that
    add an invoice, add a payment and move an invoice to another location."""
    from datetime import date as _date

    from daemon.console import queries

    _, ledger, _ = console
    today = _date.today()
    first = queries.cash_figures(ledger, "books", today, None)
    assert sum(first.aging_totals.values()) > 0
    # INV-2001 gets a second payment and moves to NORTH; INV-2003 is posted at MAIN, unpaid.
    moved = invoice_event(2001, 2, number="INV-2001", payments=[payment(1, "100.00"), payment(2, "25.00")])
    doc = DocumentState(external_id="130", status="posted", delivered_version=2,
                        payments={"1": ExternalRef(external_id="P1", amount=Decimal("100.00"), status="applied"),
                                  "2": ExternalRef(external_id="P2", amount=Decimal("25.00"), status="applied")})
    new = invoice_event(2003, 1, number="INV-2003")
    for event, document, location in ((moved, doc, "NORTH"),
                                      (new, DocumentState(external_id="131", status="posted", delivered_version=1),
                                       "MAIN")):
        ledger.record_delivery(target="books", invoice_id=event.invoice_id, invoice_number=event.number,
                               doc=document, topic="t", partition=0, next_offset=5, issue_date=today,
                               location_code=location,
                               audit={"version": event.version, "action": "update", "payload_hash": "h",
                                      "request_summary": {"total": str(event.computed.total)},
                                      "response_status": "posted", "external_id": document.external_id,
                                      "source_tx": "901"})
    incremental = queries.cash_figures(ledger, "books", today, None)
    with ledger.pool.connection() as conn:
        conn.execute("DELETE FROM console_watermarks")  # forces a rebuild from scratch
    rebuilt = queries.cash_figures(ledger, "books", today, None)
    assert incremental.aging == rebuilt.aging and incremental.payments_by_location == rebuilt.payments_by_location
    assert incremental.payments_by_location == {"NORTH": (2, Decimal("125.00"))}
    assert incremental.aging["NORTH"]["0-30"] == moved.computed.total - Decimal("125.00")
    assert incremental.aging["MAIN"]["0-30"] == new.computed.total
