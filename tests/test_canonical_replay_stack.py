"""A sink on the real stack reads a canonical topic holding every released kind of record (issue #19 item 8):
bare Avro from the release before single-object encoding (v1, no header), v1 with its header, v2 (the current
writer) — and, between them, a record with an unknown writer fingerprint and one that does not decode. The
good ones are all delivered, the two bad ones are on the dead-letter topic with their reasons, and the
partition's stored offset reaches its end: nothing stalls."""

from __future__ import annotations

import io
import threading
import time

import fastavro
import pytest
from confluent_kafka import Consumer, KafkaError, Producer

from connectors.testing import invoice_event
from daemon.canonical import (
    HEADER_LENGTH, SINGLE_OBJECT_MAGIC, _to_avro, encode_invoice_event, released_schemas, schema_fingerprint,
)
from daemon.config import TargetConfig
from daemon.sink.deliver import DaemonRuntime, SinkWorker
from daemon.kafka_util import ensure_topics
from daemon.sink.ledger import Ledger, load_secret_key
from tests.test_pipeline_stack import RecordingBooks, RecordingConnector, wait_until

pytestmark = pytest.mark.stack


def _v1(event, header: bool) -> bytes:
    schema = released_schemas()[1]
    names = {f["name"] for f in schema["fields"]}
    buf = io.BytesIO()
    if header:
        buf.write(SINGLE_OBJECT_MAGIC + schema_fingerprint(schema))
    fastavro.schemaless_writer(buf, schema, {k: v for k, v in _to_avro(event).items() if k in names})
    return buf.getvalue()


def _dead_letters(bootstrap: str, topic: str, want: int) -> list:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"dlq-check-{time.time_ns()}",
                         "auto.offset.reset": "earliest", "enable.partition.eof": True})
    consumer.subscribe([topic])
    found, deadline = [], time.monotonic() + 60
    while len(found) < want and time.monotonic() < deadline:
        m = consumer.poll(0.5)
        if m is None or (m.error() and m.error().code() == KafkaError._PARTITION_EOF):
            continue
        if not m.error():
            found.append(m)
    consumer.close()
    return found


def test_sink_replays_every_released_schema_and_dead_letters_what_none_reads(shop):
    target = TargetConfig(name="rec", platform="quickbooks-online")
    config = shop.app_config(targets=[target.model_dump(mode="json")])
    ensure_topics(config)
    unknown_fingerprint = SINGLE_OBJECT_MAGIC + b"\x5a" * 8 + encode_invoice_event(invoice_event(2002))[HEADER_LENGTH:]
    records = [
        (1001, _v1(invoice_event(1001), header=False)),  # the release before: bare Avro
        (1002, _v1(invoice_event(1002), header=True)),
        (2002, unknown_fingerprint),
        (1003, encode_invoice_event(invoice_event(1003))),  # the current writer, v2
        (2003, encode_invoice_event(invoice_event(2003))[:HEADER_LENGTH + 5]),  # truncated: undecodable
        (1004, encode_invoice_event(invoice_event(1004))),
    ]
    producer = Producer({"bootstrap.servers": shop.bootstrap, "transactional.id": f"{shop.name}-writer"})
    producer.init_transactions(30)
    producer.begin_transaction()
    for invoice_id, value in records:  # one partition: the bad records sit between good ones
        producer.produce(config.kafka.canonical_topic, key=str(invoice_id).encode(), value=value, partition=0)
    producer.commit_transaction(30)

    ledger = Ledger(shop.ledger_dsn)
    ledger.ensure_schema()
    books = RecordingBooks()
    stop = threading.Event()
    runtime = DaemonRuntime(ledger, load_secret_key(None))
    sink = SinkWorker(config, target, ledger, runtime, stop, connector=RecordingConnector(target, runtime, books))
    thread = threading.Thread(target=sink.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: set(books.latest) == {1001, 1002, 1003, 1004}, 90, "the four decodable records delivered")
        end = len(records) + 1  # the transaction's commit marker takes the last offset
        wait_until(lambda: ledger.offsets("rec", config.kafka.canonical_topic).get(0) == end, 60,
                   "partition 0's stored offset at its end")
    finally:
        stop.set()
        thread.join(30)
        ledger.close()
    dead = _dead_letters(shop.bootstrap, config.kafka.dead_letter_topic, 2)
    reasons = sorted(dict(m.headers())["ledgerwire-reason"].decode().split(":")[0] for m in dead)
    assert reasons == ["undecodable canonical record", "unknown writer schema"]
    assert all(dict(m.headers())["ledgerwire-stage"] == b"canonical-decode" for m in dead)
    assert {m.value() for m in dead} == {records[2][1], records[4][1]}
    assert all(n == 1 for n in books.deliveries.values())
    print(f"delivered {sorted(books.latest)} (v1 bare, v1, v2, v2); dead-lettered {reasons}; offset 0 at {end}")
