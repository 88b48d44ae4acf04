"""The engine's pull driver (connectors/engine_pull.py): the apply loop split into send and answer halves.

Driven here through QuickBooks Desktop's Web Connector operations one call at a time (the only pull platform),
against its sandbox company file: what the driver sends after each answer, across a restart, and when a newer
version is queued in the middle of a run."""

from __future__ import annotations

import pytest

from connectors import engine_pull
from connectors.quickbooks_desktop import CONNECTOR, Sandbox
from connectors.testing import MemoryContext, MemoryEntities, MemoryRuntime, invoice_event, line, next_version
from daemon.canonical import Customer
from daemon.config import TargetConfig


def test_identical_requests_get_their_answers_in_the_order_asked():
    exchange = engine_pull._Exchange([])
    with pytest.raises(engine_pull.AwaitAnswer) as waiting:
        exchange.ask("<PreferencesQueryRq/>")
    answers = [[waiting.value.digest, "closed 11-30"], [waiting.value.digest, "closed 12-31"]]
    replay = engine_pull._Exchange(answers)
    asked = [replay.ask("<PreferencesQueryRq/>"), replay.ask("<PreferencesQueryRq/>")]
    assert asked == ["closed 11-30", "closed 12-31"]
    with pytest.raises(engine_pull.AwaitAnswer):  # asked a third time: a fresh read, not an old answer
        replay.ask("<PreferencesQueryRq/>")
    with pytest.raises(RuntimeError):  # outside the driver a pull operation cannot reach the platform
        engine_pull.ask("<PreferencesQueryRq/>")


class WebConnector:
    """QBWC's calls, one at a time, so a test can stop between a request and its answer."""

    def __init__(self, sandbox: Sandbox, connector) -> None:
        self.sandbox, self.connector = sandbox, connector
        self.ticket = connector._op_authenticate({"strUserName": sandbox.username,
                                                  "strPassword": sandbox.password})[1][0]

    def send(self) -> str:
        return self.connector._op_sendRequestXML({"ticket": self.ticket, "qbXMLMajorVers": "13", "qbXMLMinorVers": "0"})[1]

    def answer(self, request: str) -> None:
        response = self.sandbox.process(request)[0]
        self.connector._op_receiveResponseXML({"ticket": self.ticket, "response": response, "hresult": ""})

    def finish(self) -> list[str]:
        sent = []
        while request := self.send():
            sent.append(request)
            self.answer(request)
        return sent


@pytest.fixture
def qbd():
    sandbox = Sandbox(validate=False)
    credentials = sandbox.seed_credentials()
    target = TargetConfig.model_validate(sandbox.target_config("qbd", "http://127.0.0.1"))
    connector = CONNECTOR(target, MemoryRuntime({"qbd": credentials}))
    sandbox.attach(connector.asgi_app())
    warm = invoice_event(1)  # the customer and the items exist afterwards; the lists are synced
    connector.deliver(warm, connector.document(1) or _blank(), MemoryContext("qbd", warm, MemoryEntities()))
    sandbox.run_session()
    return sandbox, connector


def _blank():
    from connectors.base import DocumentState

    return DocumentState()


def queue(connector, event) -> None:
    connector.deliver(event, _blank(), MemoryContext("qbd", event, MemoryEntities()))


def tag(request: str) -> str:
    return request.split("<QBXMLMsgsRq", 1)[1].split("<", 2)[1].split(" ", 1)[0]


def test_an_answered_write_is_never_sent_again_even_by_another_process(qbd):
    sandbox, connector = qbd
    event = invoice_event(2, lines=[line(1, "labour", "Diagnose", "1", "100.00")])
    queue(connector, event)
    qbwc = WebConnector(sandbox, connector)
    assert tag(first := qbwc.send()) == "PreferencesQueryRq"  # the closing date, read before the first write
    qbwc.answer(first)
    assert tag(add := qbwc.send()) == "InvoiceAddRq"
    qbwc.answer(add)
    # Another daemon process (nothing in memory but the durable queue) takes the session over.
    other = CONNECTOR(connector.target, connector.runtime)
    other.queue = other.driver.queue = other.entities.queue = connector.queue
    assert other._op_sendRequestXML({"ticket": qbwc.ticket, "qbXMLMajorVers": "13", "qbXMLMinorVers": "0"})[1] == ""
    assert [b.total for b in sandbox.booked_invoices() if b.number == event.number] == [event.computed.total]
    assert connector.document(2).external_id and connector.queue.load(2).done_version == 1


def test_a_version_queued_mid_run_is_posted_without_a_second_invoice(qbd):
    sandbox, connector = qbd
    v1 = invoice_event(3, lines=[line(1, "labour", "Diagnose", "1", "100.00")])
    queue(connector, v1)
    qbwc = WebConnector(sandbox, connector)
    qbwc.answer(qbwc.send())  # the closing date
    add = qbwc.send()
    v2 = next_version(v1, lines=[line(1, "labour", "Diagnose", "1", "150.00")])
    queue(connector, v2)  # while the InvoiceAdd of version 1 is on its way
    qbwc.answer(add)
    rest = qbwc.finish()
    assert [tag(r) for r in rest if "Query" not in tag(r)] == ["InvoiceModRq"]
    v3 = next_version(v2, lines=[line(1, "labour", "Diagnose", "1", "175.00")])
    queue(connector, v3)  # and once more, between an answered read and the write it leads to
    qbwc = WebConnector(sandbox, connector)
    qbwc.answer(qbwc.send())
    rest = qbwc.finish()
    assert [tag(r) for r in rest if "Query" not in tag(r)] == ["InvoiceModRq"]
    (booked,) = [b for b in sandbox.booked_invoices() if b.number == v1.number]
    assert booked.total == v3.computed.total and connector.queue.load(3).done_version == 3


def test_a_request_quickbooks_could_not_process_is_looked_up_before_it_is_sent_again(qbd):
    sandbox, connector = qbd
    event = invoice_event(4, lines=[line(1, "labour", "Diagnose", "1", "100.00")])
    queue(connector, event)
    qbwc = WebConnector(sandbox, connector)
    qbwc.answer(qbwc.send())
    add = qbwc.send()
    sandbox.process(add)  # QuickBooks saved it; the Web Connector reports an error instead of the answer
    connector._op_receiveResponseXML({"ticket": qbwc.ticket, "response": "", "hresult": "0x80040408",
                                      "message": "the company file closed"})
    assert connector.document(4).engine.intent.step == "create_invoice"
    sent = WebConnector(sandbox, connector).finish()
    assert tag(sent[0]) == "InvoiceQueryRq" and "InvoiceAddRq" not in [tag(r) for r in sent]
    assert len([b for b in sandbox.booked_invoices() if b.number == event.number]) == 1


def test_a_step_that_cannot_progress_is_dead_lettered_and_the_session_ends(qbd, monkeypatch):
    """Issue #20: a planner that keeps asking the same query QuickBooks keeps answering "not found" (the rename
    livelock: 10,002 CustomerQuery requests in 60 s, the session never ended) ends its run in a dead letter
    with the reason, and the Web Connector's session ends."""
    from connectors.quickbooks_desktop import qbxml

    sandbox, connector = qbd

    def never_found(customer):  # the livelock's shape: ask again until found
        while not connector._rets(qbxml.query("Customer", full_name="Name QuickBooks does not have")):
            pass

    monkeypatch.setattr(connector, "find_customer", never_found)
    event = invoice_event(4400, customer=Customer(id=4401, name="Renamed Customer"))  # not in the entity map
    connector.deliver(event, engine_pull.DocumentState(), MemoryContext("qbd", event, MemoryEntities()))
    client = WebConnector(sandbox, connector)
    sent = []
    while (request := client.send()) and len(sent) < 1000:
        sent.append(request)
        client.answer(request)
    assert len(sent) <= engine_pull.MAX_SAME_REQUEST_PER_RUN + 5, len(sent)
    work = connector.queue.load(4400)
    assert work.failed_version == 1 and "cannot progress" in work.failed_reason
    ((_, failed, error),) = connector.runtime.failures
    assert failed.invoice_id == 4400 and "cannot progress" in error.reason
