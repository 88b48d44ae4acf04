"""The console's pages and actions (server-rendered Jinja2, plain HTML forms, no JavaScript).

Pages: invoices (search, per-target state, history), needs attention (dead letters by reason with advice,
Retry / Drop, paused targets), reconcile (run, differences, CSV), cash (aging, payments). Every page and
action needs a session (``auth.py``); every action carries the session's CSRF token and is written to
``console_actions`` — and, when it concerns an invoice, to the hash-chained audit trail — with its user.
Customer names are shown on the pages but never logged.
"""

from __future__ import annotations

import csv
import io
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import jinja2
import structlog
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from daemon.operations.bookkeeping import RECONCILE_FIELDS, drop_dead_letter, reconcile_differences, retry_dead_letter
from daemon.config import AppConfig, TargetConfig
from daemon.console import queries
from daemon.console.advice import advise, document_link, needs_reauthorisation
from daemon.console.auth import COOKIE, ConsoleAuth, Session, secure_cookie
from daemon.sink.ledger import Ledger
from daemon.sink.schedule import DeliveryWindow

log = structlog.get_logger(__name__)

PREFIX = "/console"
HERE = Path(__file__).resolve().parent
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
STATE_LABELS = {"posted": "posted", "differences": "posted, with differences", "voided": "voided",
                "deleted": "deleted", "queued": "queued for the Web Connector", "parked": "parked behind a dead letter",
                "waiting": "waiting for its schedule", "pending": "not posted yet", "dropped": "dropped (not posted)"}


@dataclass
class ReconcileRun:
    id: str
    target: str
    since: date
    until: date
    location: str | None
    by: str
    at: datetime
    rows: list[dict[str, Any]]


@dataclass
class ConsoleState:
    config: AppConfig
    ledger: Ledger
    runtime: Any
    sink_for: Callable[[str], Any]
    auth: ConsoleAuth
    templates: jinja2.Environment
    flashes: dict[str, list[str]] = field(default_factory=dict)
    runs: OrderedDict[str, ReconcileRun] = field(default_factory=OrderedDict)
    # Reconcile's latest differences per target and invoice number, for the invoices page.
    differences: dict[str, dict[str, str]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def flash(self, session: Session, message: str) -> None:
        with self.lock:
            self.flashes.setdefault(session.id, []).append(message)

    def take_flashes(self, session: Session) -> list[str]:
        with self.lock:
            return self.flashes.pop(session.id, [])


def _templates() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    env.globals["prefix"] = PREFIX
    env.globals["state_label"] = lambda s: STATE_LABELS.get(s, s)
    env.filters["money"] = lambda v: "-" if v is None else f"{v:,.2f}"
    env.filters["when"] = lambda v: "-" if v is None else v.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    env.filters["q"] = lambda v: quote(str(v), safe="")
    return env


def _date(value: str | None) -> date | None:
    try:
        return date.fromisoformat(value) if value else None
    except ValueError:
        return None


# --- page builders (run in the thread pool: psycopg and the connectors are synchronous) -----------------


def _target_state(state: ConsoleState, target: TargetConfig, doc: dict[str, Any] | None,
                  open_letters: list[dict[str, Any]], location: str | None, number: str,
                  dropped: bool) -> queries.TargetState | None:
    if open_letters:
        newest = max(open_letters, key=lambda d: d["version"])
        first = min(open_letters, key=lambda d: d["id"])
        return queries.TargetState(target.name, "parked", f"{first['reason']} ({len(open_letters)} version(s) held, "
                                   f"newest v{newest['version']})",
                                   external_id=doc["external_id"] if doc else None,
                                   link=document_link(target.platform, target.base_url, doc["external_id"]) if doc else None,
                                   delivered_version=doc["delivered_version"] if doc else 0)
    if doc is not None and doc["status"] != "none":
        extra = doc["state"].get("extra", {})
        difference = state.differences.get(target.name, {}).get(number)
        kind, detail = doc["status"], ""
        platform_difference = extra.get("tax_difference") or extra.get("total_difference")
        if kind == "posted" and (difference or platform_difference):
            kind = "differences"
            detail = difference or f"the platform computed tax/total differently by {platform_difference}"
        return queries.TargetState(target.name, kind, detail, doc["external_id"],
                                   document_link(target.platform, target.base_url, doc["external_id"]),
                                   doc["delivered_version"], doc["updated_at"])
    if location is not None and not target.routes(location):
        return None
    if dropped:
        return queries.TargetState(target.name, "dropped", "its dead letter was dropped")
    window = DeliveryWindow(target.schedule)
    if not window.realtime:
        opens = window.local(window.next_open(datetime.now(timezone.utc)))
        return queries.TargetState(target.name, "waiting", f"{window.describe()}; next window {opens:%Y-%m-%d %H:%M %Z}")
    return queries.TargetState(target.name, "pending", "in flight, or a draft the shop has not issued")


def invoice_rows(state: ConsoleState, ids: list[int], search: queries.InvoiceSearch | None = None
                 ) -> list[queries.InvoiceRow]:
    if not ids:
        return []
    docs = queries.documents_for(state.ledger, ids)
    letters = queries.dead_letters_for(state.ledger, invoice_ids=ids, statuses=("open", "parked", "dropped"))
    names = queries.shop_customer_names(state.config.source.shop_dsn, ids) if state.config.source.shop_dsn else {}
    facts = queries.event_facts(state.ledger, sorted({d["invoice_id"] for d in letters} - {d["invoice_id"] for d in docs}))
    rows: list[queries.InvoiceRow] = []
    for invoice_id in ids:
        mine = [d for d in docs if d["invoice_id"] == invoice_id]
        my_letters = [d for d in letters if d["invoice_id"] == invoice_id]
        if mine:
            first = mine[0]
            number, issued, location = first["invoice_number"], first["issue_date"], first["location_code"]
            customer = names.get(invoice_id)
        else:
            issued, location, customer = facts[invoice_id]
            number = my_letters[-1]["invoice_number"]
            customer = names.get(invoice_id, customer)
            if search and ((search.date_from and (issued is None or issued < search.date_from))
                           or (search.date_to and (issued is None or issued > search.date_to))):
                continue
        row = queries.InvoiceRow(invoice_id, number, issued, location, customer)
        for target in state.config.targets:
            doc = next((d for d in mine if d["target"] == target.name), None)
            open_letters = [d for d in my_letters if d["target"] == target.name and d["status"] in ("open", "parked")]
            dropped = any(d["target"] == target.name and d["status"] == "dropped" for d in my_letters)
            ts = _target_state(state, target, doc, open_letters, location, number, dropped)
            if ts is not None:
                row.targets.append(ts)
        rows.append(row)
    return rows


def page_invoices(state: ConsoleState, request: Request) -> dict[str, Any]:
    params = request.query_params
    page_raw = params.get("page", "0")
    search = queries.InvoiceSearch(number=params.get("number", "")[:64], customer=params.get("customer", "")[:100],
                                   date_from=_date(params.get("from")), date_to=_date(params.get("to")),
                                   page=min(int(page_raw), 10_000) if page_raw.isdigit() else 0)
    notes = []
    customer_ids = None
    if search.customer.strip():
        if state.config.source.shop_dsn:
            customer_ids = queries.shop_customer_ids(state.config.source.shop_dsn, search.customer)
        else:
            notes.append("Searching by customer needs read access to the shop database (source.shop_dsn in the "
                         "configuration): the ledger keeps no customer names.")
            customer_ids = []
    ids, more = queries.find_invoice_ids(state.ledger, search, len(state.config.targets), customer_ids)
    if not state.config.source.shop_dsn:
        notes.append("Customer names come from the shop database; set source.shop_dsn to show them.")
    query = {k: v for k, v in (("number", search.number), ("customer", search.customer),
                                ("from", params.get("from", "")), ("to", params.get("to", ""))) if v}
    return {"search": search, "rows": invoice_rows(state, ids, search), "more": more, "notes": notes,
            "next_page": urlencode(query | {"page": search.page + 1}),
            "prev_page": urlencode(query | {"page": search.page - 1}) if search.page else None}


def page_invoice(state: ConsoleState, number: str) -> dict[str, Any] | None:
    letters = queries.dead_letters_for(state.ledger, number=number, statuses=("open", "parked", "retried", "dropped"))
    history, intact, broken_at = queries.invoice_history(state.ledger, number)
    with state.ledger.pool.connection() as conn:
        ids = [r[0] for r in conn.execute("SELECT DISTINCT invoice_id FROM documents WHERE invoice_number=%s",
                                          (number,)).fetchall()]
    ids = sorted(set(ids) | {d["invoice_id"] for d in letters})
    if not ids:
        return None
    rows = invoice_rows(state, ids)
    return {"number": number, "rows": rows, "history": history, "letters": letters, "intact": intact,
            "broken_at": broken_at}


def page_attention(state: ConsoleState) -> dict[str, Any]:
    letters = queries.dead_letters_for(state.ledger)
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    by_invoice: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for d in letters:
        by_invoice.setdefault((d["target"], d["invoice_id"]), []).append(d)
    for (target, _), versions in by_invoice.items():
        first = min(versions, key=lambda d: d["id"])
        advice = advise(first["reason"])
        group = groups.setdefault((advice.key, queries.reason_group(first["reason"])),
                                  {"advice": advice, "reason": first["reason"], "invoices": []})
        group["invoices"].append({"letter": first, "versions": sorted(v["version"] for v in versions),
                               "newest": max(v["version"] for v in versions)})
    paused = []
    for p in queries.paused_targets(state.ledger):
        paused.append({**p, "reauthorise": needs_reauthorisation(p["reason"] or "")})
    return {"groups": sorted(groups.values(), key=lambda g: -len(g["invoices"])), "paused": paused,
            "actions": queries.recent_actions(state.ledger), "open": len(letters)}


def page_cash(state: ConsoleState, request: Request) -> dict[str, Any]:
    names = [t.name for t in state.config.targets]
    chosen = request.query_params.get("target") or (names[0] if names else None)
    if chosen not in names:
        return {"targets": names, "figures": None, "chosen": None}
    figures = queries.cash_figures(state.ledger, chosen, date.today(), state.config.source.shop_dsn)
    return {"targets": names, "figures": figures, "chosen": chosen, "buckets": queries.AGING_BUCKETS}


# --- actions ---------------------------------------------------------------------------------------------


def act_dead_letter(state: ConsoleState, session: Session, form: dict[str, str], action: str) -> str:
    try:
        row = state.ledger.dead_letter_row(int(form.get("dead_letter", "")))
    except ValueError:
        row = None
    if row is None or row["status"] not in ("open", "parked"):
        return "That dead letter is no longer open (someone may have dealt with it already)."
    try:
        target = state.config.target(row["target"])
    except KeyError:
        return f"Target {row['target']} is not in this daemon's configuration."
    if action == "retry":
        outcome = retry_dead_letter(state.config, state.ledger, state.runtime, target, row, state.sink_for(target.name))
    else:
        outcome = drop_dead_letter(state.ledger, target, row)
    result = "ok" if outcome.ok else "failed"
    queries.record_action(state.ledger, actor=session.user, action=f"dlq-{action}", outcome=result, target=target.name,
                          invoice_number=outcome.invoice_number, detail={"dead_letter": row["id"],
                                                                         "message": outcome.message})
    queries.append_audit_action(state.ledger, target=target.name, invoice_id=outcome.invoice_id,
                                invoice_number=outcome.invoice_number, version=outcome.version,
                                action=f"console-{action}", actor=session.user,
                                detail={"dead_letter": row["id"], "outcome": result, "resolved": outcome.resolved})
    log.info("console_action", action=f"dlq-{action}", target=target.name, invoice_id=outcome.invoice_id,
             version=outcome.version, outcome=result, user=session.user)
    return outcome.message


def act_reconcile(state: ConsoleState, session: Session, form: dict[str, str]) -> tuple[str, str | None]:
    since, until = _date(form.get("since")), _date(form.get("until"))
    if since is None or until is None or since > until:
        return "Give the period as two dates, the first not after the second.", None
    try:
        target = state.config.target(form.get("target", ""))
    except KeyError:
        return "Choose one of the configured targets.", None
    location = (form.get("location") or "").strip() or None
    worker = state.sink_for(target.name)
    if worker is not None:
        connector, own = worker.connector, False
    else:
        from connectors.registry import connector_class

        connector, own = connector_class(target.platform)(target, state.runtime), True
    try:
        rows = reconcile_differences(state.config, state.ledger, connector, target, since, until, location)
    except Exception as exc:  # noqa: BLE001 - any failure is shown to the user and recorded, never a 500
        queries.record_action(state.ledger, actor=session.user, action="reconcile", outcome="failed",
                              target=target.name, detail={"since": str(since), "until": str(until),
                                                          "error": type(exc).__name__})
        log.warning("console_reconcile_failed", target=target.name, error=type(exc).__name__)
        return f"Reconcile could not run: {type(exc).__name__}: {str(exc)[:200]}", None
    finally:
        if own:
            connector.close()
    run = ReconcileRun(secrets.token_urlsafe(9), target.name, since, until, location, session.user,
                       datetime.now(timezone.utc), rows)
    with state.lock:
        state.runs[run.id] = run
        while len(state.runs) > 20:
            state.runs.popitem(last=False)
        state.differences[target.name] = {r["invoice"]: f"{r['kind']}: {r['detail']}" for r in rows}
    queries.record_action(state.ledger, actor=session.user, action="reconcile", outcome=f"{len(rows)} differences",
                          target=target.name, detail={"since": str(since), "until": str(until), "location": location})
    log.info("console_action", action="reconcile", target=target.name, differences=len(rows), user=session.user)
    return f"Reconciled {target.name} for {since} to {until}: {len(rows)} difference(s).", run.id


# --- the app --------------------------------------------------------------------------------------------


def _build_summary(ledger: Ledger) -> None:
    try:
        queries.refresh_receivables(ledger)
    except Exception:  # noqa: BLE001 - the cash page refreshes it again; the daemon must not care
        log.warning("console_summary_build_failed", exc_info=True)


def build_console(config: AppConfig, ledger: Ledger, runtime: Any,
                  sink_for: Callable[[str], Any] = lambda _name: None) -> Starlette:
    """The console as an ASGI app, to be mounted at ``/console`` of the daemon's HTTP server."""
    queries.ensure_console_schema(ledger)
    # The receivables summary's first build reads every document once: do it now, not on the first visit.
    threading.Thread(target=_build_summary, args=(ledger,), name="console-summary", daemon=True).start()
    state = ConsoleState(config, ledger, runtime, sink_for, ConsoleAuth(config), _templates())

    def render(request: Request, session: Session | None, template: str, context: dict[str, Any],
               status: int = 200) -> HTMLResponse:
        page = state.templates.get_template(template).render(
            **context, user=session.user if session else None, csrf=session.csrf if session else "",
            flashes=state.take_flashes(session) if session else [], auth=config.console.auth,
            targets_configured=[t.name for t in config.targets])
        return HTMLResponse(page, status_code=status, headers=SECURITY_HEADERS)

    def finish(request: Request, response: Response, session: Session | None, created: bool) -> Response:
        if created and session is not None:
            response.set_cookie(COOKIE, session.id, max_age=config.console.session_minutes * 60, path=PREFIX,
                                httponly=True, samesite="strict", secure=secure_cookie(request, config.console))
        return response

    def page(builder: Callable[[Request], tuple[str, dict[str, Any]] | Response]):
        async def endpoint(request: Request) -> Response:
            session, created = state.auth.session(request)
            if session is None:
                if config.console.auth == "password":
                    return RedirectResponse(f"{PREFIX}/login?next={quote(request.url.path)}", status_code=303)
                return PlainTextResponse("authentication required", status_code=401, headers=SECURITY_HEADERS)
            result = await run_in_threadpool(builder, request)
            if isinstance(result, Response):
                return finish(request, result, session, created)
            template, context = result
            return finish(request, render(request, session, template, context), session, created)
        return endpoint

    def action(handler: Callable[[Session, dict[str, str]], str]):
        async def endpoint(request: Request) -> Response:
            session, _ = state.auth.session(request)
            if session is None:
                return PlainTextResponse("authentication required", status_code=401, headers=SECURITY_HEADERS)
            form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
            if not state.auth.csrf_ok(request, session, form.get("csrf")):
                log.warning("console_csrf_refused", path=request.url.path)
                return PlainTextResponse("refused: the form's CSRF token is missing or wrong; reload the page",
                                         status_code=403, headers=SECURITY_HEADERS)
            return await run_in_threadpool(handler, session, form)
        return endpoint

    # pages
    def invoices(request: Request):
        return "invoices.html", page_invoices(state, request)

    def invoice(request: Request):
        context = page_invoice(state, request.path_params["number"])
        if context is None:
            return HTMLResponse(state.templates.get_template("not_found.html").render(
                what=f"invoice {request.path_params['number']}", user=None, csrf="", flashes=[],
                auth=config.console.auth, targets_configured=[]), status_code=404, headers=SECURITY_HEADERS)
        return "invoice.html", context

    def attention(_: Request):
        return "attention.html", page_attention(state)

    def reconcile(request: Request):
        run = state.runs.get(request.query_params.get("run", ""))
        return "reconcile.html", {"run": run, "runs": list(reversed(state.runs.values())),
                                  "today": date.today(), "first_of_month": date.today().replace(day=1)}

    def reconcile_csv(request: Request):
        run = state.runs.get(request.path_params["run"])
        if run is None:
            return PlainTextResponse("no such reconcile run (runs are kept in memory; run it again)", status_code=404)
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=RECONCILE_FIELDS)
        writer.writeheader()
        writer.writerows(run.rows)
        filename = f"reconcile-{run.target}-{run.since}-{run.until}.csv"
        return Response(out.getvalue(), media_type="text/csv",
                        headers={**SECURITY_HEADERS, "Content-Disposition": f'attachment; filename="{filename}"'})

    def cash(request: Request):
        return "cash.html", page_cash(state, request)

    def verify(_: Request):
        ok, bad, count = queries.verify_chain(state.ledger)
        return "verify.html", {"ok": ok, "bad": bad, "count": count}

    # actions
    def retry(session: Session, form: dict[str, str]) -> Response:
        state.flash(session, act_dead_letter(state, session, form, "retry"))
        return RedirectResponse(f"{PREFIX}/attention", status_code=303)

    def drop(session: Session, form: dict[str, str]) -> Response:
        state.flash(session, act_dead_letter(state, session, form, "drop"))
        return RedirectResponse(f"{PREFIX}/attention", status_code=303)

    def run_reconcile(session: Session, form: dict[str, str]) -> Response:
        message, run_id = act_reconcile(state, session, form)
        state.flash(session, message)
        return RedirectResponse(f"{PREFIX}/reconcile" + (f"?run={run_id}" if run_id else ""), status_code=303)

    def logout(session: Session, _: dict[str, str]) -> Response:
        state.auth.sessions.drop(session.id)
        queries.record_action(ledger, actor=session.user, action="logout", outcome="ok")
        response = RedirectResponse(f"{PREFIX}/login" if config.console.auth == "password" else f"{PREFIX}/invoices",
                                    status_code=303)
        response.delete_cookie(COOKIE, path=PREFIX)
        return response

    # login (password mode)
    async def login(request: Request) -> Response:
        if config.console.auth != "password":
            return RedirectResponse(f"{PREFIX}/invoices", status_code=303)
        target = request.query_params.get("next", f"{PREFIX}/invoices")
        if not target.startswith(f"{PREFIX}/") or target.startswith("//"):
            target = f"{PREFIX}/invoices"
        if request.method == "GET":
            if state.auth.sessions.get(request.cookies.get(COOKIE)) is not None:
                return RedirectResponse(target, status_code=303)
            return render(request, None, "login.html", {"next": target, "error": None})
        form = await request.form()
        client = request.client.host if request.client else "?"
        if state.auth.throttled(client):
            return render(request, None, "login.html", {"next": target, "error": "Too many failed logins; wait five "
                                                                                  "minutes."}, status=429)
        session = await run_in_threadpool(state.auth.login, client, str(form.get("username", "")),
                                          str(form.get("password", "")))
        await run_in_threadpool(queries.record_action, ledger, actor=str(form.get("username", ""))[:64] or "?",
                                action="login", outcome="ok" if session else "refused")
        if session is None:
            log.warning("console_login_refused")
            return render(request, None, "login.html", {"next": target, "error": "Wrong user name or password."},
                          status=401)
        log.info("console_login", user=session.user)
        return finish(request, RedirectResponse(target, status_code=303), session, True)

    routes = [
        Route("/", lambda request: RedirectResponse(f"{PREFIX}/invoices", status_code=303)),
        Route("/login", login, methods=["GET", "POST"]),
        Route("/logout", action(logout), methods=["POST"]),
        Route("/invoices", page(invoices)),
        Route("/invoices/{number:path}", page(invoice)),
        Route("/attention", page(attention)),
        Route("/attention/retry", action(retry), methods=["POST"]),
        Route("/attention/drop", action(drop), methods=["POST"]),
        Route("/reconcile", page(reconcile)),
        Route("/reconcile/run", action(run_reconcile), methods=["POST"]),
        Route("/reconcile/{run}.csv", page(reconcile_csv)),
        Route("/cash", page(cash)),
        Route("/audit", page(verify)),
        Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
    ]
    return Starlette(routes=routes)
