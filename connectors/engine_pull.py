"""The engine's pull driver (issue #12): a platform that fetches its work — QuickBooks Desktop's Web Connector
asks for one request, carries it to QuickBooks and brings the answer back later — runs the same planner, intents
and closed-period rules as a push connector. The apply loop (``engine.run``) is split into its halves, not forked:

* send — the loop runs from the invoice's durable state (``base``) until an operation needs the platform: the
  connector's operation calls ``ask(request)``, which has no answer yet and raises ``AwaitAnswer``. By then the
  loop has recorded and checkpointed the write's intent; that checkpoint is kept and the request goes out.
* answer — the answer is appended to the run's answer log. The next send runs the loop again from ``base``:
  every request asked again gets its logged answer (the n-th identical request the n-th identical-request
  answer: a read repeated after a refusal is asked afresh, a write already answered is never sent again), so
  the loop records the write's effect, closes its intent and goes on to the next request. The planner is pure
  and the loop deterministic, so the replay is exact; the log is the run's memory, dropped when the run ends.
* lost — a request sent and never answered (the client or this daemon died, the session broke, the platform
  could not process it): the run ends at its newest checkpoint, intent open, and the next run resolves that
  intent by ``find`` first — exactly what a push connector's retry does after a timeout.

``PullDriver`` does this over a ``connectors.pull_queue.PullQueue`` for one target; the platform's protocol
(SOAP for QuickBooks Desktop) only asks it for the next request and hands it the answers.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import structlog

from connectors.base import DeliveryError, DocumentState, ErrorClass, ExternalRef, PermanentError
from connectors.engine import PlatformOps, run
from connectors.pull_queue import PullQueue, Work
from daemon.canonical import InvoiceEvent

log = structlog.get_logger(__name__)
# Runs in a row that end on a retryable refusal (QuickBooks' 3180 "error saving", 3175/3176 "in use") without
# the invoice's state moving: then the step cannot progress and the version is dead-lettered with the refusal.
# Sessions come every few minutes, so this is a bookkeeper's lunch break of "in use", not a crash loop forever.
MAX_TRANSIENT_RUNS = 8
# One run asking the same request more often than this (a planner that keeps looking for what the platform keeps
# answering "not found", e.g. a customer under a name it does not have) cannot progress: the run ends in a dead
# letter saying so, and the Web Connector's session ends, instead of carrying the same query thousands of times.
MAX_SAME_REQUEST_PER_RUN = 20


class AwaitAnswer(Exception):
    """An operation needs the platform's answer to ``request``: the run stops here until it comes."""

    def __init__(self, request: str, digest: str) -> None:
        super().__init__(digest)
        self.request, self.digest = request, digest


class _Exchange:
    """The answers of the run in progress, in arrival order, handed out in the order requests are asked."""

    def __init__(self, answers: list[list[Any]], dialect: str = "") -> None:
        self.answers, self.asked, self.dialect = answers, {}, dialect

    def ask(self, request: str) -> Any:
        digest = hashlib.sha256(request.encode()).hexdigest()[:24]
        nth = self.asked.get(digest, 0)
        self.asked[digest] = nth + 1
        if nth >= MAX_SAME_REQUEST_PER_RUN:
            kind = request[request.find("<QBXMLMsgsRq"):][:160] if "<QBXMLMsgsRq" in request else request[:160]
            raise PermanentError(f"the same request was asked {nth + 1} times in one run without progress, a step "
                                 f"that cannot progress: {kind}")
        matching = [answer for key, answer in self.answers if key == digest]
        if nth < len(matching):
            return matching[nth]
        raise AwaitAnswer(request, digest)


_EXCHANGE: ContextVar[_Exchange | None] = ContextVar("pull_exchange", default=None)


def dialect() -> str:
    """The protocol version the run in progress speaks (QuickBooks Desktop: the qbXML version negotiated with the
    Web Connector when the run started); "" outside a run. Pinned to the run, so its replay asks the very same
    requests even when a later session negotiates another version."""
    exchange = _EXCHANGE.get()
    return exchange.dialect if exchange is not None else ""


def ask(request: str) -> Any:
    """The platform's answer to ``request`` (as the connector stored it), or ``AwaitAnswer``."""
    exchange = _EXCHANGE.get()
    if exchange is None:
        raise RuntimeError("a pull platform's operation called outside the pull driver")
    return exchange.ask(request)


class _PullContext:
    """The ``DeliveryContext`` of a run driven by the platform: checkpoints stay in memory until the turn ends
    (the base and the answer log make every one of them again)."""

    def __init__(self, target: str, event: InvoiceEvent, entities: Any) -> None:
        self.target, self.event, self.entities, self.attempt = target, event, entities, 1
        self.last: DocumentState | None = None

    def checkpoint(self, doc: DocumentState) -> None:
        self.last = doc.model_copy(deep=True)

    def idempotency_key(self, *parts: object) -> str:
        raw = ":".join(str(p) for p in (self.target, self.event.invoice_id, self.event.version, *parts))
        return hashlib.sha256(raw.encode()).hexdigest()[:32]


@dataclass
class Turn:
    doc: DocumentState  # the newest checkpoint, or the delivered state
    request: str | None = None  # what to send now
    digest: str | None = None
    error: DeliveryError | None = None

    @property
    def done(self) -> bool:
        return self.request is None and self.error is None


def advance(ops: PlatformOps, event: InvoiceEvent, base: DocumentState, answers: list[list[Any]], target: str,
            entities: Any, dialect: str = "") -> Turn:
    """Run the engine's loop from ``base`` with the answers so far: the next request, the error, or done."""
    ctx = _PullContext(target, event, entities)
    token = _EXCHANGE.set(_Exchange(answers, dialect))
    try:
        return Turn(run(ops, event, base, ctx))
    except AwaitAnswer as waiting:
        return Turn(ctx.last or base, waiting.request, waiting.digest)
    except DeliveryError as exc:
        return Turn(ctx.last or base, error=exc)
    finally:
        _EXCHANGE.reset(token)


@dataclass
class Next:
    invoice_id: int | None = None
    request: str | None = None  # None: nothing to send now (``error`` says why, when something went wrong)
    completed: int = 0  # invoices brought up to date while looking for the request
    error: str | None = None


class PullDriver:
    """One target's queue turned into requests. The queue row's ``state`` holds ``doc`` (the newest checkpoint),
    ``base`` + ``answers`` + ``run`` (the run in progress: its event and version) and ``inflight`` (the digest of
    the request sent, and the ``ticket`` of the session that carries it)."""

    def __init__(self, ops: PlatformOps, queue: PullQueue, target: str, entities: Any, lease_s: float,
                 report: Callable[[InvoiceEvent, DeliveryError], None],
                 legacy: Callable[[dict[str, Any]], DocumentState] = lambda state: DocumentState()) -> None:
        self.ops, self.queue, self.target, self.entities, self.lease_s = ops, queue, target, entities, lease_s
        self.report, self.legacy = report, legacy

    def document(self, state: dict[str, Any]) -> DocumentState:
        """The newest state of a queued invoice (a row written before the engine is converted)."""
        if "doc" not in state:
            return self.legacy(state) if state else DocumentState()
        return DocumentState.model_validate(state["doc"])

    def next_request(self, ticket: str, invoice_id: int | None, dialect: str = "") -> Next:
        """The next request for session ``ticket`` (which was working on ``invoice_id``); ``dialect``: the protocol
        version this session negotiated, which a run starting now keeps (``dialect()``)."""
        out = Next()
        for _ in range(100):
            if invoice_id is None or not self.queue.renew(ticket, invoice_id, self.lease_s):
                invoice_id = self.queue.claim(ticket, self.lease_s)
                if invoice_id is None:
                    return out
            work = self.queue.load(invoice_id)
            if work is None or work.queued_version <= max(work.done_version, work.failed_version):
                invoice_id = None
                continue
            state = work.state if "doc" in work.state else {"doc": self.document(work.state).model_dump(mode="json")}
            if state.get("inflight"):  # asked for again before its answer came (a new session, a lost call):
                state = self._end_run(state, state["doc"], "the answer never came")  # resolved by find now
            turn = self._turn(work, state, dialect)
            if turn.request is not None and work.queued_version > state["run"]["version"]:
                # A newer version was queued: the write not sent yet is planned again for it.
                state = self._end_run(state, turn.doc.model_dump(mode="json"), "a newer version was queued")
                turn = self._turn(work, state, dialect)
            if turn.request is not None:
                state.update(doc=turn.doc.model_dump(mode="json"), inflight=turn.digest, ticket=ticket)
                self.queue.save_state(invoice_id, state)
                out.invoice_id, out.request = invoice_id, turn.request
                return out
            event = InvoiceEvent.model_validate_json(state["run"]["event"])
            done = self._end_run(state, turn.doc.model_dump(mode="json"), "")
            if turn.done:
                self.queue.complete(invoice_id, event.version, done)
                out.completed += 1
                log.info("pull_invoice_up_to_date", target=self.target, invoice_id=invoice_id, version=event.version,
                         external_id=turn.doc.external_id)
            elif turn.error is not None and turn.error.error_class is ErrorClass.PERMANENT:
                self.queue.fail(invoice_id, event.version, turn.error.reason[:500], done)
                self.report(event, turn.error)  # refused after ``deliver`` queued it: a dead letter, never silent
                log.warning("pull_invoice_refused", target=self.target, invoice_id=invoice_id, version=event.version,
                            reason=turn.error.reason[:300])
            elif (stuck := self._refused_again(state, done, turn.error)) >= MAX_TRANSIENT_RUNS:
                # The same request refused as "try again" run after run: it cannot progress. A dead letter with
                # the platform's reason (``dlq retry`` queues it again), never a request sent in a loop forever.
                error = PermanentError(f"{turn.error.reason} (refused the same way in {stuck} sessions in a row)",
                                       status=turn.error.status, platform_code=turn.error.platform_code,
                                       detail=turn.error.detail)
                self.queue.fail(invoice_id, event.version, error.reason[:500], {"doc": done["doc"]})
                self.report(event, error)
                log.warning("pull_invoice_stuck", target=self.target, invoice_id=invoice_id, version=event.version,
                            sessions=stuck, reason=turn.error.reason[:300])
            else:  # the platform is busy or unreachable: end this session, the next one runs it again
                self.queue.save_state(invoice_id, done)
                out.error = turn.error.reason if turn.error else "retry"
                return out
            invoice_id = None
        return out

    def answer(self, invoice_id: int, ticket: str, answer: Any) -> None:
        """The answer to the request session ``ticket`` carried for ``invoice_id``."""
        work = self.queue.load(invoice_id)
        if work is None or not work.state.get("inflight") or work.state.get("ticket") != ticket:
            return  # not ours (a session that lost its lease): the request is looked up again instead
        state = work.state
        state["answers"] = [*state.get("answers", []), [state["inflight"], answer]]
        state.update(inflight=None, ticket=None)
        self.queue.save_state(invoice_id, state)

    def lost(self, invoice_id: int) -> None:
        """The request in flight for ``invoice_id`` will get no answer (the platform could not process it)."""
        work = self.queue.load(invoice_id)
        if work is not None and work.state.get("inflight"):
            self.queue.save_state(invoice_id, self._end_run(work.state, work.state["doc"], "no answer"))

    def _turn(self, work: Work, state: dict[str, Any], dialect: str) -> Turn:
        if not state.get("run"):
            state.update(base=state["doc"], answers=[], run={"version": work.queued_version, "event": work.event,
                                                             "dialect": dialect})
        event = InvoiceEvent.model_validate_json(state["run"]["event"])
        return advance(self.ops, event, DocumentState.model_validate(state["base"]), state["answers"], self.target,
                       self.entities, state["run"].get("dialect", ""))

    @staticmethod
    def _refused_again(state: dict[str, Any], done: dict[str, Any], error: DeliveryError | None) -> int:
        """How many runs in a row ended on a refusal of this same request (kept in ``done``); 0 when the run
        did not end on an answered refusal (busy, unreachable: nothing was asked of the platform)."""
        answers = state.get("answers") or []
        if error is None or not answers:
            return 0
        refused = answers[-1][0]  # the digest of the request whose answer was the refusal
        previous = state.get("refused") or {}
        count = previous.get("count", 0) + 1 if previous.get("digest") == refused else 1
        done["refused"] = {"digest": refused, "count": count}
        return count

    def _end_run(self, state: dict[str, Any], doc: dict[str, Any], why: str) -> dict[str, Any]:
        if why:
            log.info("pull_run_ended", target=self.target, reason=why)
        return {"doc": doc}


class QueueEntities:
    """The engine's ``EntityStore`` on a pull queue's entity table (customers, items at the platform)."""

    def __init__(self, queue: PullQueue) -> None:
        self.queue, self._locks, self._guard = queue, {}, threading.Lock()

    def get(self, kind: str, key: str) -> ExternalRef | None:
        found = self.queue.entity(kind, key)
        if found is None:
            return None
        # ``edit_seq``/``hash``: rows QuickBooks Desktop's connector wrote before the engine.
        return ExternalRef(external_id=found["list_id"], token=found.get("token", found.get("edit_seq")),
                           status=found.get("status", found.get("hash")))

    def put(self, kind: str, key: str, ref: ExternalRef) -> None:
        self.queue.put_entity(kind, key, ref.external_id, {"token": ref.token, "status": ref.status})

    @contextmanager
    def lock(self, kind: str, key: str) -> Iterator[None]:
        with self._guard:  # one process answers one target's client at a time: a process-wide lock suffices
            lock = self._locks.setdefault((kind, key), threading.Lock())
        with lock:
            yield


class _Answering(_Exchange):
    def __init__(self, answer: Callable[[str], Any]) -> None:
        super().__init__([])
        self.answer = answer

    def ask(self, request: str) -> Any:
        return self.answer(request)


@contextmanager
def answering(answer: Callable[[str], Any]) -> Iterator[None]:
    """Operations outside the driver answered by ``answer(request)``: a preview's recorder, a test's direct line."""
    token = _EXCHANGE.set(_Answering(answer))
    try:
        yield
    finally:
        _EXCHANGE.reset(token)
