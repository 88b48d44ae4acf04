"""Canonical records name their writer schema (issue #19 item 8).

Every record on the canonical topic is Avro single-object encoded — 0xC3 0x01, the writer schema's 8-byte
little-endian CRC-64-AVRO fingerprint, then the Avro body — and readers resolve the writer schema among
the released versions (schemas/canonical/released/) before decoding with Avro schema resolution into the
current schema. Records of the release before (bare Avro, no header) are read as written with v1. A record
whose fingerprint is unknown or whose bytes do not decode is dead-lettered by the sink, and the partition
goes on.
"""

from __future__ import annotations

import io
import json
import threading
from datetime import datetime, timezone

import fastavro
import pytest
from prometheus_client import REGISTRY

from connectors.testing import invoice_event, payment
from daemon import canonical
from daemon.canonical import (
    SCHEMAS_DIR, CanonicalDecodeError, _to_avro, decode_invoice_event, encode_invoice_event,
)
from daemon.sink.deliver import PartitionLease, _Record
from tests.test_schedule import Clock, make_worker

RELEASED = SCHEMAS_DIR / "canonical" / "released"


def _schema(version: int) -> dict:
    return fastavro.parse_schema(json.loads((RELEASED / f"invoice_event.v{version}.avsc").read_text()))


def _fingerprint(version: int) -> bytes:
    form = fastavro.schema.to_parsing_canonical_form(_schema(version))
    return bytes.fromhex(fastavro.schema.fingerprint(form, "CRC-64-AVRO"))


def _bare(version: int, event) -> bytes:
    """The event's Avro body as a writer holding released schema ``version`` writes it."""
    schema = _schema(version)
    names = {f["name"] for f in schema["fields"]}
    record = {k: v for k, v in _to_avro(event).items() if k in names}
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, schema, record)
    return buf.getvalue()


def test_records_carry_the_single_object_header_of_the_current_schema():
    event = invoice_event(payments=[payment(1, "100.01")])
    payload = encode_invoice_event(event)
    current = json.loads((SCHEMAS_DIR / "canonical" / "invoice_event.avsc").read_text())
    form = fastavro.schema.to_parsing_canonical_form(fastavro.parse_schema(current))
    assert payload[:2] == b"\xc3\x01"
    assert payload[2:10] == bytes.fromhex(fastavro.schema.fingerprint(form, "CRC-64-AVRO"))
    assert decode_invoice_event(payload) == event


def test_the_current_schema_is_a_released_version():
    """A writer's fingerprint must be one every reader knows: the current schema is released, as a file."""
    current = json.loads((SCHEMAS_DIR / "canonical" / "invoice_event.avsc").read_text())
    released = [json.loads(p.read_text()) for p in sorted(RELEASED.glob("invoice_event.v*.avsc"))]
    assert current == released[-1]
    assert len(released) >= 2, "a previous released version exists to replay"


def test_v2_adds_an_optional_field_with_a_default():
    v1 = {f["name"] for f in _schema(1)["fields"]}
    v2 = {f["name"] for f in _schema(2)["fields"]}
    assert v1 == v2
    source = {s: {f["name"]: f for f in next(x for x in _schema(s)["fields"] if x["name"] == "source")["type"]["fields"]}
              for s in (1, 2)}
    added = set(source[2]) - set(source[1])
    assert added == {"completion"} and source[2]["completion"]["default"] is None


def test_replay_of_v1_records_with_and_without_header_and_of_v2_records():
    event = invoice_event(payments=[payment(1, "50.00")])
    v1_bytes = _bare(1, event)
    # v1 with its single-object header; v1 as the release before wrote it (no header at all).
    for payload in (b"\xc3\x01" + _fingerprint(1) + v1_bytes, v1_bytes):
        decoded = decode_invoice_event(payload)
        assert decoded == event and decoded.source.completion is None
        assert str(decoded.computed.total) == str(event.computed.total)
    # v2, the current writer, including the field v1 does not have.
    with_completion = event.model_copy(update={"source": event.source.model_copy(update={"completion": "snapshot"})})
    v2_payload = encode_invoice_event(with_completion)
    assert v2_payload[2:10] == _fingerprint(2)
    assert decode_invoice_event(v2_payload).source.completion == "snapshot"
    # A v1 reader (a process of the release before, in a rolling upgrade) reads the v2 body.
    old = fastavro.schemaless_reader(io.BytesIO(v2_payload[10:]), _schema(2), _schema(1))
    assert old["invoice_id"] == event.invoice_id and "completion" not in old["source"]


def test_unknown_fingerprint_and_undecodable_bytes_are_refused_with_a_reason():
    event = invoice_event()
    body = encode_invoice_event(event)[10:]
    with pytest.raises(CanonicalDecodeError, match="unknown writer schema"):
        decode_invoice_event(b"\xc3\x01" + b"\x01" * 8 + body)
    with pytest.raises(CanonicalDecodeError, match="undecodable"):
        decode_invoice_event(b"\xc3\x01" + _fingerprint(2) + body[:20])
    with pytest.raises(CanonicalDecodeError, match="undecodable"):
        decode_invoice_event(b"\x02\xff\xff")


class _Producer:
    def __init__(self) -> None:
        self.produced: list[dict] = []

    def produce(self, topic, key=None, value=None, headers=None):
        self.produced.append({"topic": topic, "key": key, "value": value, "headers": dict(headers or [])})

    def poll(self, timeout):
        return 0


def _failures(target: str, reason: str) -> float:
    return REGISTRY.get_sample_value("ledgerwire_canonical_decode_failures_total",
                                     {"target": target, "reason": reason}) or 0.0


def test_sink_dead_letters_an_unknown_fingerprint_and_the_partition_goes_on():
    worker, connector, ledger = make_worker({"mode": "realtime"}, Clock(datetime(2026, 11, 2, tzinfo=timezone.utc)))
    producer = worker._dlq_producer = _Producer()
    before = _failures(worker.target.name, "unknown_schema")
    good = [encode_invoice_event(invoice_event(n)) for n in (1001, 1002)]
    unknown = b"\xc3\x01" + b"\x07" * 8 + good[0][10:]
    records = [_Record(0, 0, good[0]), _Record(0, 2, unknown), _Record(0, 4, good[1])]
    worker._process_batch(0, records, PartitionLease(0, None))
    assert connector.posted == [(1001, 1), (1002, 1)], "the records around the bad one are delivered"
    assert max(ledger.offsets_set[0]) == 5, "the stored offset moves past the dead-lettered record"
    assert len(producer.produced) == 1
    dead = producer.produced[0]
    assert dead["value"] == unknown and dead["headers"]["ledgerwire-stage"] == b"canonical-decode"
    assert b"unknown writer schema" in dead["headers"]["ledgerwire-reason"]
    assert dead["headers"]["ledgerwire-origin"] == f"{worker.topic}/0/2".encode()
    assert _failures(worker.target.name, "unknown_schema") == before + 1


def test_sink_dead_letters_undecodable_bytes_at_the_end_of_a_batch():
    worker, connector, ledger = make_worker({"mode": "realtime"}, Clock(datetime(2026, 11, 2, tzinfo=timezone.utc)))
    producer = worker._dlq_producer = _Producer()
    before = _failures(worker.target.name, "undecodable")
    records = [_Record(0, 0, encode_invoice_event(invoice_event(1001))), _Record(0, 2, b"\x00garbage")]
    worker._process_batch(0, records, PartitionLease(0, None))
    assert connector.posted == [(1001, 1)]
    assert max(ledger.offsets_set[0]) == 3
    assert len(producer.produced) == 1 and _failures(worker.target.name, "undecodable") == before + 1
    assert canonical.CanonicalDecodeError is CanonicalDecodeError
