"""The sink-side exactly-once holes of issue #19, each on a real PostgreSQL ledger (the test stack's server,
a fresh database per test) without Kafka: zombie workers (3), resync writing backwards (2), dead letters
whose error body holds Decimals (5), auth failures that need a person (6), resync past permanent errors (9)."""

from __future__ import annotations

import threading
import uuid
from datetime import date, datetime, timezone
from decimal import Decimal

import psycopg
import pytest
from pydantic import BaseModel

from connectors.base import Connector, DocumentState, ExternalRef, PermanentError, RemoteInvoice, delivered
from connectors.testing import invoice_event, next_version, payment
from daemon.canonical import encode_invoice_event
from daemon.config import AppConfig, TargetConfig
from daemon.sink.deliver import DaemonRuntime, PartitionLease, SinkWorker, _Record
from daemon.sink.ledger import FencedOut, Ledger, _lock_key

pytestmark = pytest.mark.stack

TOPIC = "ledgerwire.invoices"


@pytest.fixture
def ledger(local_stack, monkeypatch):
    from cryptography.fernet import Fernet

    name = f"holes_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(local_stack.dsn("postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    monkeypatch.setenv("LEDGERWIRE_SECRET_KEY", Fernet.generate_key().decode())
    ledger = Ledger(local_stack.dsn(name), min_size=1, max_size=6)
    ledger.ensure_schema()
    yield ledger
    ledger.close()
    with psycopg.connect(local_stack.dsn("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class _Settings(BaseModel):
    pass


class ScriptedConnector(Connector):
    """Posts into a dict; ``during_deliver`` runs inside ``deliver`` (to stage what happens meanwhile)."""

    platform = "scripted"
    settings_model = _Settings
    supports_batch = True
    batch_size = 10

    def __init__(self, target: TargetConfig, runtime) -> None:
        super().__init__(target, runtime)
        self.posted: dict[int, list[int]] = {}  # invoice id -> versions posted
        self.seen_docs: list[DocumentState] = []
        self.during_deliver = None
        self.fail: dict[int, Exception] = {}

    def deliver(self, event, doc, ctx):
        self.seen_docs.append(doc.model_copy(deep=True))
        if event.invoice_id in self.fail:
            raise self.fail[event.invoice_id]
        if self.during_deliver is not None:
            self.during_deliver(event, doc, ctx)
        self.posted.setdefault(event.invoice_id, []).append(event.version)
        doc = doc.model_copy(update={"external_id": doc.external_id or f"X{event.invoice_id}", "status": "posted"})
        for p in event.payments:
            doc.payments.setdefault(str(p.id), ExternalRef(external_id=f"P{p.id}", amount=p.amount))
        return delivered(event, doc)

    def find_invoice(self, event):
        return None

    def fetch_invoice(self, external_id):
        return RemoteInvoice(external_id=external_id)


def make_worker(ledger: Ledger, target_name: str = "books") -> tuple[SinkWorker, ScriptedConnector]:
    target = TargetConfig(name=target_name, platform="quickbooks-online", max_attempts=3)
    config = AppConfig.model_validate({"postgres": {"dsn": ledger.dsn}, "targets": [], "shutdown_grace_s": 1})
    runtime = DaemonRuntime(ledger, b"0" * 44)
    connector = ScriptedConnector(target, runtime)
    return SinkWorker(config, target, ledger, runtime, threading.Event(), connector=connector), connector


def record_of(event, offset: int, partition: int = 0) -> _Record:
    return _Record(partition, offset, encode_invoice_event(event))


def lease(worker: SinkWorker, partition: int = 0) -> PartitionLease:
    return PartitionLease(partition, worker.ledger.claim_partition(worker.target.name, TOPIC, partition, "test"))


# --- 5: a dead letter is always written, whatever the error body holds -------------------------------------------

def test_dead_letter_is_written_when_the_error_body_holds_decimals_dates_and_bytes(ledger):
    worker, _ = make_worker(ledger)
    event = invoice_event(41)
    detail = {"Elements": [{"Total": Decimal("1234.50"), "DueDate": date(2026, 12, 1),
                            "At": datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc), "Raw": b"\xffbad",
                            "Nested": ({"Tax": Decimal("0.0625")}, {Decimal("1"), }), "Ok": 3}],
              "Message": "A validation exception occurred"}
    error = PermanentError("Xero: validation", status=400, detail=detail)
    worker._dead_letter(record_of(event, 7), event, error, 8, parked=False, fence=lease(worker).fence)
    rows = ledger.dead_letters("books")
    assert [(r["invoice_number"], r["status"]) for r in rows] == [(event.number, "open")]
    stored = ledger.dead_letter_row(rows[0]["id"])["detail"]
    element = stored["Elements"][0]
    assert element["Total"] == "1234.50" and element["DueDate"] == "2026-12-01" and element["Raw"].endswith("bad")
    assert element["Nested"][0] == {"Tax": "0.0625"} and element["Ok"] == 3
    assert ledger.offsets("books", TOPIC) == {0: 8}


# --- 3: zombie workers ---------------------------------------------------------------------------------------------

def test_a_revoked_worker_cannot_roll_back_the_payments_map(ledger):
    """A zombie (revoked, still running) posts v1 of two invoices in one batch; meanwhile the group rebalanced
    and the new owner of the partition delivers v2 of one with a payment. The zombie's late record of its v1
    result (no payment) must change nothing — or v3 would run as attempt 1, skip the look-up and create the
    payment again."""
    zombie, zombie_books = make_worker(ledger)
    zombie_lease = lease(zombie)
    v1 = invoice_event(7)
    v2 = next_version(v1, payments=[payment(1, "100.00")])
    other = invoice_event(8)
    new_owner, _ = make_worker(ledger)
    new_owner_done = threading.Event()
    new_owner_errors: list[BaseException] = []

    def new_owner_delivers_v2():
        try:
            new_owner._handle(0, record_of(v2, 12), v2, 13, lease(new_owner))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            new_owner_errors.append(exc)
        finally:
            new_owner_done.set()

    def rebalance_meanwhile(event, doc, ctx):
        if event.invoice_id == 7 and not new_owner_done.is_set():
            threading.Thread(target=new_owner_delivers_v2, daemon=True).start()

    zombie_books.during_deliver = rebalance_meanwhile
    original = ledger.record_delivery

    def zombie_records_late(**kwargs):
        if kwargs.get("fence") == zombie_lease.fence:
            # The zombie is slow to record: the new owner gets every chance to finish first (it cannot while
            # the zombie still holds the invoice's lock).
            new_owner_done.wait(5)
        return original(**kwargs)

    ledger.record_delivery = zombie_records_late
    chunk = [(record_of(v1, 10), v1, 11), (record_of(other, 11), other, 12)]
    with pytest.raises(FencedOut):
        zombie._handle_chunk(0, chunk, zombie_lease)
    assert new_owner_done.wait(30) and not new_owner_errors, new_owner_errors
    doc = ledger.document("books", 7)
    assert doc.delivered_version == 2 and set(doc.payments) == {"1"}, doc
    assert ledger.offsets("books", TOPIC) == {0: 13}


def test_a_worker_fenced_out_mid_delivery_writes_nothing_and_dead_letters_nothing(ledger):
    worker, books = make_worker(ledger)
    mine = lease(worker)
    event = invoice_event(21)

    def partition_claimed_elsewhere_then_checkpoint(event, doc, ctx):
        lease(worker)  # a rebalance gave the partition to another worker meanwhile
        ctx.checkpoint(doc.model_copy(update={"external_id": "X21", "status": "posted"}))

    books.during_deliver = partition_claimed_elsewhere_then_checkpoint
    with pytest.raises(FencedOut):
        worker._handle(0, record_of(event, 3), event, 4, mine)
    assert ledger.document("books", 21).external_id is None
    assert ledger.dead_letters("books") == [] and ledger.offsets("books", TOPIC) == {}


def test_ledger_writes_never_go_backwards(ledger):
    v2 = delivered(invoice_event(9, 2), DocumentState(external_id="X9", status="posted",
                                                      payments={"1": ExternalRef(external_id="P1")}))
    ledger.save_document("books", "INV-9", 9, v2)
    stale = DocumentState(external_id="X9", status="posted", delivered_version=1)
    assert ledger.save_document("books", "INV-9", 9, stale) is False
    assert ledger.document("books", 9).payments == v2.payments
    ledger.set_offset("books", TOPIC, 0, 50)
    ledger.set_offset("books", TOPIC, 0, 40)
    assert ledger.offsets("books", TOPIC) == {0: 50}
    ledger.reset_offsets("books", TOPIC, {0: 5})  # an operator's reset is the one way back
    assert ledger.offsets("books", TOPIC) == {0: 5}


def test_batch_path_records_success_while_holding_the_invoice_locks(ledger):
    worker, _ = make_worker(ledger)
    held_at_record: list[bool] = []
    original = ledger.record_delivery

    def probing_record_delivery(**kwargs):
        key = _lock_key("invoice", kwargs["target"], kwargs["invoice_id"])
        with psycopg.connect(ledger.dsn, autocommit=True) as other:
            got = other.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]
            if got:
                other.execute("SELECT pg_advisory_unlock(%s)", (key,))
        held_at_record.append(not got)
        return original(**kwargs)

    ledger.record_delivery = probing_record_delivery
    events = [invoice_event(100 + i) for i in range(3)]
    chunk = [(record_of(e, 20 + i), e, 21 + i) for i, e in enumerate(events)]
    worker._handle_chunk(0, chunk, lease(worker))
    assert held_at_record == [True, True, True]
    assert ledger.offsets("books", TOPIC) == {0: 23}


# --- 2 and 9: resync ---------------------------------------------------------------------------------------------

def _posted(ledger: Ledger, event, **extra: str) -> DocumentState:
    doc = delivered(event, DocumentState(external_id=f"X{event.invoice_id}", status="posted", extra=dict(extra)))
    ledger.save_document("books", event.number, event.invoice_id, doc)
    return doc


def test_resync_skips_an_invoice_whose_newer_version_was_delivered_meanwhile(ledger):
    from daemon.operations import resync

    worker, books = make_worker(ledger)
    v2 = next_version(invoice_event(5))
    v3 = next_version(v2, lines=list(v2.lines[:2]))
    _posted(ledger, v3, invoice_hash="h3")  # the sink delivered v3 after the resync planned with v2
    result = resync.apply(ledger, books, worker.target, [resync.ResyncItem(v2, "update", "total differs")])
    assert books.posted == {}, "resync posted the plan's older state over a newer delivered version"
    assert result.counts == {} and result.skipped and "newer version v3 delivered meanwhile" in result.skipped[0][1]
    assert ledger.document("books", 5).delivered_version == 3


def test_resync_keeps_the_connectors_state_and_the_delivered_version(ledger):
    from daemon.operations import resync

    worker, books = make_worker(ledger)
    v2 = next_version(invoice_event(6))
    _posted(ledger, v2, invoice_hash="h2", txn_date="2026-12-01", **{"credit_applied:4": "P9:10.00"})
    result = resync.apply(ledger, books, worker.target, [resync.ResyncItem(v2, "update", "total differs")])
    assert result.counts == {"update": 1} and not result.errors
    sent = books.seen_docs[-1]
    assert sent.extra == {"txn_date": "2026-12-01", "credit_applied:4": "P9:10.00"}, sent.extra
    assert sent.delivered_version == 2
    stored = ledger.document("books", 6)
    assert stored.delivered_version == 2 and stored.extra.get("credit_applied:4") == "P9:10.00"


def test_resync_goes_on_past_a_permanent_error_and_reports_it_per_invoice(ledger):
    from daemon.operations import resync

    worker, books = make_worker(ledger)
    first, second = invoice_event(11), invoice_event(12)
    books.fail[11] = PermanentError("Business Validation Error: the transaction is voided", status=400)
    items = [resync.ResyncItem(first, "update", "status"), resync.ResyncItem(second, "create", "not at the platform")]
    result = resync.apply(ledger, books, worker.target, items)
    assert books.posted == {12: [1]}
    assert result.counts == {"create": 1}
    assert result.errors == [(first.number, "permanent: Business Validation Error: the transaction is voided")]


def test_a_void_never_posted_is_nothing_to_do():
    from daemon.operations import resync

    void = next_version(invoice_event(13), status="void")
    action, detail = resync.classify(void, DocumentState(), None, None)
    assert action == "no change" and "nothing to do" in detail
    issued = invoice_event(14)
    assert resync.classify(issued, DocumentState(), None, None)[0] == "create"


def test_reconcile_expects_refund_credit_on_the_balance():
    from connectors.testing import NOW
    from daemon.canonical import Refund
    from daemon.operations.resync import expected_balance

    event = invoice_event(15, payments=[payment(1, "100.00")],
                          refunds=[Refund(id=1, kind="return", amount=Decimal("50.00"), tax_amount=Decimal("3.13"),
                                          created_at=NOW)])
    assert expected_balance(event) == event.computed.total - Decimal("100.00") - Decimal("53.13")
    paid_up = invoice_event(16, payments=[payment(2, str(invoice_event(16).computed.total))],
                            refunds=[Refund(id=2, kind="refund", amount=Decimal("20.00"), created_at=NOW)])
    assert expected_balance(paid_up) == Decimal("0")


# --- 6: dlq retry --all --target T [--since D] ---------------------------------------------------------------------

def test_dlq_retry_all_for_a_target_since_a_date(ledger, tmp_path, capsys):
    import json

    import yaml

    from connectors.quickbooks_online import Sandbox
    from daemon import cli

    sandbox = Sandbox()
    server = sandbox.serve()
    try:
        config = AppConfig.model_validate({"postgres": {"dsn": ledger.dsn},
                                           "targets": [sandbox.target_config("qbo", server.url)]})
        config_file = tmp_path / "ledgerwire.yml"
        config_file.write_text(yaml.safe_dump(config.model_dump(mode="json")))
        seed = tmp_path / "seed.json"
        seed.write_text(json.dumps(sandbox.seed_credentials()))
        assert cli.main(["credentials", "set", "--config", str(config_file), "--target", "qbo",
                         "--from-file", str(seed)]) == 0
        old, recent = invoice_event(31), invoice_event(32)
        recent_v2 = next_version(recent)
        for event, parked in ((old, False), (recent, False), (recent_v2, True)):
            ledger.dead_letter(target="qbo", invoice_id=event.invoice_id, invoice_number=event.number,
                               version=event.version, topic=TOPIC, partition=0, offset=event.invoice_id, error_class=
                               "parked" if parked else "permanent", reason="validation", detail=None,
                               event=encode_invoice_event(event), parked=parked, next_offset=None)
        with psycopg.connect(ledger.dsn, autocommit=True) as conn:
            conn.execute("UPDATE dead_letters SET created_at = '2026-01-05' WHERE invoice_id = %s", (old.invoice_id,))
        capsys.readouterr()
        assert cli.main(["dlq", "retry", "--all", "--target", "qbo", "--since", "2026-06-01",
                         "--config", str(config_file)]) == 0
        out = capsys.readouterr().out
        assert "retried 1 invoice(s) on qbo: 1 delivered, 0 failed" in out, out
        assert [b.number for b in sandbox.booked_invoices()] == [recent.number]
        assert ledger.document("qbo", recent.invoice_id).delivered_version == 2
        assert [r["invoice_id"] for r in ledger.dead_letters("qbo")] == [old.invoice_id]
        assert cli.main(["dlq", "retry", "--all", "--target", "qbo", "--config", str(config_file)]) == 0
        assert sorted(b.number for b in sandbox.booked_invoices()) == sorted([old.number, recent.number])
        assert ledger.dead_letters("qbo") == []
    finally:
        server.stop()


# --- 4: a transient failure is retried and reported; a bug ends the process non-zero (issue #13 item 4) ----------

def test_a_sink_loop_meeting_pool_timeout_retries_and_a_bug_ends_the_process_non_zero(ledger, monkeypatch):
    from psycopg_pool import PoolTimeout

    from daemon import app, metrics
    from daemon.liveness import EXIT_COMPONENT_DIED

    worker, _ = make_worker(ledger)
    calls: list[int] = []

    def consumer_loop_that_meets_an_exhausted_pool_once():
        calls.append(1)
        if len(calls) == 1:
            raise PoolTimeout("couldn't get a connection after 30.00 sec")
        worker.stop.set()

    monkeypatch.setattr(worker, "_run_consumer", consumer_loop_that_meets_an_exhausted_pool_once)
    monkeypatch.setattr(worker, "_target_paused", lambda: False)
    monkeypatch.setattr("daemon.sink.deliver.ensure_topics", lambda config: None)
    transient = metrics.TRANSIENT_FAILURES.labels("sink:books", "postgresql")
    before = transient._value.get()  # noqa: SLF001
    worker.ready.set()
    worker.run()  # returns only because the second consumer loop stopped it: the pool timeout was waited out
    assert len(calls) == 2 and worker.crashes == 0  # transient: retried and counted, not a crash
    assert transient._value.get() == before + 1  # noqa: SLF001

    config = AppConfig.model_validate({"postgres": {"dsn": ledger.dsn}, "targets": [], "run_fold": False,
                                       "shutdown_grace_s": 2})
    daemon = app.Daemon(config, serve_http=False)
    runs: list[int] = []

    def sink_loop():
        runs.append(1)
        raise RuntimeError("a bug the loop did not catch")

    daemon._spawn("sink:books", sink_loop)
    assert daemon.stop.wait(10), "a loop that died of a bug did not stop the daemon"
    daemon.supervise()
    assert runs == [1]  # not started again in-process: the process is restarted from committed offsets
    daemon.shutdown()
    assert daemon.clean is False and daemon.exit_code == EXIT_COMPONENT_DIED


def test_resync_settles_the_dead_letters_it_supersedes(ledger):
    from daemon.operations import resync

    worker, books = make_worker(ledger)
    v1 = invoice_event(17, lines=[])
    v3 = next_version(next_version(v1), lines=list(invoice_event(17).lines))
    for event, parked in ((v1, False), (next_version(v1), True), (v3, True)):
        ledger.dead_letter(target="books", invoice_id=17, invoice_number=v1.number, version=event.version, topic=TOPIC,
                           partition=0, offset=event.version, error_class="permanent", reason="no lines", detail=None,
                           event=encode_invoice_event(event), parked=parked, next_offset=None)
    ledger.dead_letter(target="books", invoice_id=17, invoice_number=v1.number, version=4, topic=TOPIC, partition=0,
                       offset=4, error_class="parked", reason="parked", detail=None,
                       event=encode_invoice_event(next_version(v3)), parked=True, next_offset=None)
    result = resync.apply(ledger, books, worker.target, [resync.ResyncItem(v3, "create", "not at the platform")])
    assert result.counts == {"create": 1}
    assert [(r["version"], r["status"]) for r in ledger.dead_letters("books")] == [(4, "parked")]


def test_resync_planned_create_does_not_post_twice_when_the_sink_posted_it_meanwhile(ledger):
    """Found by the chaos test with every connector: resync planned "create" for invoices the sink had not posted
    yet, the sink then posted them (same version), and resync created each a second time on Odoo (no unique
    numbers there). Under the invoice lock the ledger now knows the document: the plan is made again from it."""
    from daemon.operations import resync

    worker, books = make_worker(ledger)
    v1 = invoice_event(21)
    planned = resync.ResyncItem(v1, "create", "not at the platform")  # the plan saw no document
    _posted(ledger, v1, invoice_hash="h1")  # then the sink posted v1 before resync took the invoice's lock
    result = resync.apply(ledger, books, worker.target, [planned])
    assert books.posted == {}, "resync created a second document for an invoice the sink had just posted"
    assert result.counts == {"no change": 1} and not result.errors
    assert ledger.document("books", 21).external_id == "X21"


def test_resync_waits_out_the_platforms_login_limit_instead_of_failing_the_invoice(ledger):
    """Found by the chaos run with every connector: the operator's `resync` shares BILL's login limit (BDC_1144)
    with the running daemons; its own login was refused and the command failed. It now waits the limit out (here
    the wait clears the sandbox's login window, as the hour passing would)."""
    from connectors.bill_com import Sandbox
    from connectors.sandbox_kit import WindowLimit
    from connectors.testing import connectors_on
    from daemon.operations import resync
    from daemon.operations.patience import Patience

    sandbox = Sandbox()
    waited: list[float] = []

    def a_minute_passes(seconds: float) -> bool:
        waited.append(seconds)
        sandbox.login_window = WindowLimit(sandbox.login_window.limit, 3600.0)
        return False

    with connectors_on(sandbox, "books") as build:
        connector = build()
        dev_key = next(iter(sandbox.users.values()))[2]
        for _ in range(sandbox.login_window.limit):  # the daemons' logins used this hour's allowance
            sandbox.login_window.hit(dev_key)
        event = invoice_event(31)
        result = resync.apply(ledger, connector, connector.target, [resync.ResyncItem(event, "create", "missing")],
                              patience=Patience(wait=a_minute_passes, say=None))
    assert not result.errors, result.errors
    assert result.counts == {"create": 1} and len(waited) == 1
    assert [i["invoiceNumber"] for i in sandbox.records("invoices")] == [event.number]


def test_a_resync_try_after_a_transient_refusal_goes_on_from_what_the_refused_try_checkpointed(ledger):
    """A retried resync of a "create" must not start from an empty document again once the refused try recorded
    its progress (the invoice made, its answer lost): that would post the invoice twice. And the wait happens
    with the invoice's lock released, so the sink is never held behind a resync's back-off."""
    from connectors.base import UncertainOutcomeError
    from daemon.operations import resync
    from daemon.operations.patience import Patience

    worker, books = make_worker(ledger)
    event = invoice_event(32)
    seen: list[DocumentState] = []

    def made_then_lost(ev, doc, ctx):
        seen.append(doc.model_copy(deep=True))
        if len(seen) == 1:
            ctx.checkpoint(doc.model_copy(update={"external_id": "X32-made", "status": "posted"}))
            raise UncertainOutcomeError("timed out after the invoice was sent")

    def lock_is_free(seconds: float) -> bool:
        with psycopg.connect(ledger.dsn, autocommit=True) as conn:
            assert conn.execute("SELECT pg_try_advisory_lock(%s)", (_lock_key("invoice", "books", 32),)).fetchone()[0], \
                "the resync waits holding the invoice's lock"
        return False

    books.during_deliver = made_then_lost
    result = resync.apply(ledger, books, worker.target, [resync.ResyncItem(event, "create", "not at the platform")],
                          patience=Patience(wait=lock_is_free, say=None))
    assert [d.external_id for d in seen] == [None, "X32-made"], "the retry started again from an empty document"
    assert result.counts == {"create": 1} and not result.errors
    assert ledger.document("books", 32).external_id == "X32-made"


def test_an_older_version_is_not_delivered_over_a_newer_one_a_dead_process_left_half_done(ledger):
    """Found by the spine with SIGKILLed daemons: v3 (with a payment) was being delivered when the process died, so
    its offset was never stored; the restarted sink re-read v1 first and delivered it — taking v3's payment off
    the books — before v3 came again. v1 is now skipped (v3's record is further on in the partition) and v3 goes
    on from what the dead attempt left."""
    worker, books = make_worker(ledger)
    v1 = invoice_event(34)
    v3 = next_version(next_version(v1), payments=[payment(7, "50.00")])
    half_done = DocumentState(external_id="X34", status="posted", extra={"attempt_version": "3", "attempts": "1"})
    half_done.payments["7"] = ExternalRef(external_id="P7", amount=Decimal("50.00"))
    ledger.save_document("books", v1.number, 34, half_done)
    worker._handle(0, record_of(v1, 40), v1, 41, lease(worker))
    assert books.posted == {}, "the older version was delivered over the newer one's writes"
    assert ledger.offsets("books", TOPIC) == {0: 41}
    worker._handle(0, record_of(v3, 42), v3, 43, lease(worker))
    assert books.posted == {34: [3]} and books.seen_docs[-1].payments["7"].external_id == "P7"
    assert ledger.document("books", 34).delivered_version == 3 and ledger.offsets("books", TOPIC) == {0: 43}
