"""The bookkeeper's console in a real browser (Debian's headless Chromium driven by Selenium through
Debian's chromedriver — nothing downloaded at run time) against the whole stack: the shop's PostgreSQL,
Debezium, Kafka, the daemon (fold + a QuickBooks Online sink on its local sandbox) serving the console.

The story: an invoice posts; another is refused because the target's mapping names an income account the
books do not have. The bookkeeper finds the invoices, sees the dead letter's reason and the advice, adds the
account at the platform, presses Retry and sees the invoice posted — once. Every page is screenshotted
into the test's tmp directory; with LEDGERWIRE_CONSOLE_DOCS_SCREENSHOTS=1 the invoices and needs-attention
screenshots are also copied into docs/ for the README.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from decimal import Decimal
from pathlib import Path

import httpx
import psycopg
import pytest

from connectors.quickbooks_online.sandbox import Sandbox
from connectors.sandbox_kit import free_port
from daemon.console.password import hash_password
from daemon.sink.ledger import Ledger

pytestmark = pytest.mark.stack

REPO = Path(__file__).resolve().parent.parent
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
PASSWORD = "alternator-core-2026"
MISSING_ACCOUNT = "4000"


def wait_until(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def browser():
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip("Debian's chromium and chromium-driver are not installed (scripts/bootstrap.sh installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1360,900", "--force-device-scale-factor=1"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


def seed_shop(conn) -> None:
    conn.execute("INSERT INTO locations (id, code, name) VALUES (1, 'MAIN', 'Main St')")
    conn.execute("INSERT INTO customers (id, location_id, name, email) VALUES "
                 "(1, 1, 'Harbor Fleet Services', 'ap@harbor.example'), (2, 1, 'Dana Whitfield', 'd@example.com')")
    conn.execute("INSERT INTO tax_rates (id, code, name, rate) VALUES (1, 'STATE', 'State', 0.0625)")
    conn.execute("SELECT setval('locations_id_seq', 10), setval('customers_id_seq', 10), setval('tax_rates_id_seq', 10)")


def issue_invoice(conn, n: int, customer: int, kind: str, description: str, price: str) -> int:
    with conn.transaction():
        job = conn.execute("INSERT INTO jobs (number, location_id, customer_id, description) VALUES (%s,1,%s,%s) "
                           "RETURNING id", (f"J-{n}", customer, description)).fetchone()[0]
        inv = conn.execute("INSERT INTO invoices (number, job_id, customer_id, location_id, status, issue_date) "
                           "VALUES (%s,%s,%s,1,'issued',current_date) RETURNING id",
                           (f"INV-{n:04d}", job, customer)).fetchone()[0]
        line = conn.execute("INSERT INTO invoice_lines (invoice_id, position, kind, description, quantity, unit_price) "
                            "VALUES (%s,1,%s,%s,1,%s) RETURNING id", (inv, kind, description, price)).fetchone()[0]
        tax = (Decimal(price) * Decimal("0.0625")).quantize(Decimal("0.01"))
        conn.execute("INSERT INTO line_taxes (line_id, invoice_id, tax_rate_id, amount) VALUES (%s,%s,1,%s)",
                     (line, inv, tax))
        conn.execute("UPDATE invoices SET subtotal=%s, tax_total=%s, total=%s WHERE id=%s",
                     (price, tax, Decimal(price) + tax, inv))
        conn.execute("INSERT INTO payments (job_id, invoice_id, customer_id, amount, method) VALUES (%s,%s,%s,%s,'card')",
                     (job, inv, customer, "50.00"))
    return inv


def test_bookkeeper_finds_fixes_and_retries_in_a_browser(shop, browser, tmp_path, report):
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    from daemon.app import Daemon

    sandbox = Sandbox()
    sandbox.server = sandbox.serve()
    credentials = tmp_path / "books-credentials.json"
    credentials.write_text(json.dumps(sandbox.seed_credentials()))
    target = sandbox.target_config("books", sandbox.server.url) | {"credentials_file": str(credentials)}
    # The bookkeeper mapped parts to an income account that the company's chart of accounts lacks.
    target["mapping"]["income_accounts"]["part"] = MISSING_ACCOUNT
    port = free_port()
    config = shop.app_config(
        targets=[target], http={"port": port},
        source={"topic_prefix": shop.name, "incomplete_transaction_timeout_s": 10, "shop_dsn": shop.shop_dsn},
        console={"enabled": True, "username": "bookkeeper", "password_hash": hash_password(PASSWORD)})
    daemon = Daemon(config)
    daemon.start()
    shots = tmp_path / "console-screenshots"
    shots.mkdir()
    base = f"http://127.0.0.1:{port}/console"
    ledger = Ledger(shop.ledger_dsn, min_size=1, max_size=2)

    def shot(name: str) -> None:
        browser.save_screenshot(str(shots / f"{name}.png"))

    def text() -> str:
        """The page's main content; empty while a navigation (a form's POST and redirect) is under way."""
        try:
            if browser.execute_script("return document.readyState") != "complete":
                return ""
            return browser.find_element(By.TAG_NAME, "main").text
        except (NoSuchElementException, StaleElementReferenceException):
            return ""

    try:
        wait_until(lambda: all(daemon.activity().values()), 90, "the daemon's partition assignment")
        with psycopg.connect(shop.shop_dsn, autocommit=True) as conn:
            seed_shop(conn)
            issue_invoice(conn, 1, 1, "labour", "Diagnose charging system", "120.00")
            refused_id = issue_invoice(conn, 2, 1, "part", "Alternator, reman 140A", "289.95")
            issue_invoice(conn, 3, 2, "labour", "Replace starter", "180.00")
        wait_until(lambda: ledger.dead_letters("books"), 120, "the part invoice's dead letter")
        wait_until(lambda: {"INV-0001", "INV-0003"} <= {b.number for b in sandbox.booked_invoices()}, 120,
                   "the labour invoices posted")

        # No session: the browser is sent to the login page.
        browser.get(f"{base}/invoices")
        assert browser.current_url.startswith(f"{base}/login")
        shot("login")
        browser.find_element(By.NAME, "username").send_keys("bookkeeper")
        browser.find_element(By.NAME, "password").send_keys(PASSWORD)
        browser.find_element(By.CSS_SELECTOR, "form.login button").click()
        page = wait_until(lambda: browser.current_url.startswith(f"{base}/invoices") and "INV-0003" in text()
                          and text(), 10, "the invoices page")
        assert "INV-0001" in page and "INV-0002" in page and "INV-0003" in page
        assert "parked behind a dead letter" in page and "posted" in page
        assert "Harbor Fleet Services" in page  # customer names come from the shop database
        shot("invoices")

        # Find an invoice: by customer, then by number.
        browser.find_element(By.NAME, "customer").send_keys("harbor")
        browser.find_element(By.CSS_SELECTOR, "form.search button").click()
        page = wait_until(lambda: "customer=harbor" in browser.current_url and text(), 10, "customer search")
        assert "INV-0001" in page and "INV-0002" in page and "INV-0003" not in page
        browser.get(f"{base}/invoices?number=INV-0002")
        assert "INV-0001" not in text()
        browser.find_element(By.LINK_TEXT, "INV-0002").click()
        page = wait_until(lambda: "Invoice INV-0002" in text() and text(), 10, "the invoice page")
        assert f"Account {MISSING_ACCOUNT} not found" in page and "parked behind a dead letter" in page
        shot("invoice-parked")

        # Needs attention: the reason, in plain words, with what fixes it.
        browser.find_element(By.LINK_TEXT, "Needs attention").click()
        page = wait_until(lambda: "Recent console actions" in text() and text(), 10, "the needs-attention page")
        assert f"Account {MISSING_ACCOUNT} not found" in page
        assert "An account in this target's mapping does not exist at the platform" in page
        assert "chart of accounts" in page
        shot("needs-attention")

        # Retry before the fix: refused again, still parked.
        browser.find_element(By.CSS_SELECTOR, "button[name=retry]").click()
        assert "retry failed again" in wait_until(lambda: "retry failed" in text() and text(), 60, "retry answer")
        assert ledger.dead_letters("books")

        # The bookkeeper adds the account the mapping names to the chart of accounts, then retries.
        with sandbox._lock:
            realm = next(iter(sandbox.realms.values()))
            realm.entities["Account"][MISSING_ACCOUNT] = {"Id": MISSING_ACCOUNT, "Name": "Parts income",
                                                          "AccountType": "Income", "SyncToken": "0", "Active": True}
        browser.find_element(By.CSS_SELECTOR, "button[name=retry]").click()
        page = wait_until(lambda: "delivered to books" in text() and text(), 60, "retry delivered")
        assert "No dead letters" in page and "dlq-retry" in page and "bookkeeper" in page
        shot("needs-attention-after-retry")
        assert ledger.dead_letters("books") == []
        booked = [b for b in sandbox.booked_invoices() if b.number == "INV-0002"]
        assert len(booked) == 1 and not booked[0].voided, f"posted once: {booked}"
        assert booked[0].total == Decimal("289.95") + Decimal("18.12")

        # See it posted, with its QuickBooks id, and the retry in its history with who did it.
        browser.get(f"{base}/invoices/INV-0002")
        page = text()
        assert "posted" in page and "parked" not in page.split("History")[0]
        assert booked[0].external_id in page
        assert "console-retry" in page and "by bookkeeper" in page and "Audit chain: intact" in page
        shot("invoice-posted")
        assert ledger.verify_audit_chain() == (True, None)

        # Someone edits INV-0003's total by hand at the platform; reconcile finds it, and offers the CSV.
        with sandbox._lock:
            hand_edited = next(i for i in realm.entities["Invoice"].values() if i.get("DocNumber") == "INV-0003")
            hand_edited["TotalAmt"] = Decimal("1.00")
        browser.get(f"{base}/reconcile")
        Select(browser.find_element(By.NAME, "target")).select_by_visible_text("books")
        browser.find_element(By.CSS_SELECTOR, "form.search button").click()
        page = wait_until(lambda: "Reconciled books" in text() and text(), 120, "reconcile run")
        assert "1 difference(s)" in page and "INV-0003 amount total 1.00 -> 191.25" in page, page
        shot("reconcile")
        csv_link = browser.find_element(By.LINK_TEXT, "Download CSV").get_attribute("href")
        session = {"ledgerwire_console": browser.get_cookie("ledgerwire_console")["value"]}
        csv_lines = httpx.get(csv_link, cookies=session).text.splitlines()
        assert csv_lines[0] == "invoice,kind,detail,ledger_version,source_version,external_id"
        assert csv_lines[1].startswith("INV-0003,amount,total 1.00 -> 191.25,1,1,") and len(csv_lines) == 2
        assert httpx.get(csv_link).status_code in (303, 401)  # not without the session
        browser.get(f"{base}/invoices?number=INV-0003")
        assert "posted, with differences" in text() and "amount: total 1.00 -> 191.25" in text()

        # Cash: the three invoices' balances (total less the 50.00 paid on each) in the 0-30 bucket.
        browser.get(f"{base}/cash")
        page = text()
        outstanding = sum(Decimal(p) + (Decimal(p) * Decimal("0.0625")).quantize(Decimal("0.01")) - Decimal("50.00")
                          for p in ("120.00", "289.95", "180.00"))
        assert f"{outstanding:,.2f}" in page, page
        assert "150.00" in page  # three payments of 50.00 applied at MAIN
        shot("cash")
        report(f"browser: login, search by customer/number, dead letter reason + advice, retry refused then "
               f"posted once (invoice {refused_id}), reconcile, cash {outstanding}; screenshots in {shots}")
    finally:
        if browser.current_url.startswith(base):
            shot("last")
        ledger.close()
        daemon.shutdown()
        sandbox.server.stop()
    for name in ("login", "invoices", "invoice-parked", "needs-attention", "needs-attention-after-retry",
                 "invoice-posted", "reconcile", "cash"):
        assert (shots / f"{name}.png").stat().st_size > 10_000, name
    if os.environ.get("LEDGERWIRE_CONSOLE_DOCS_SCREENSHOTS") == "1":
        (REPO / "docs").mkdir(exist_ok=True)
        shutil.copy(shots / "invoices.png", REPO / "docs" / "console-invoices.png")
        shutil.copy(shots / "needs-attention.png", REPO / "docs" / "console-needs-attention.png")
