"""Odoo's error answers as the engine's error classes. Odoo answers errors as XML-RPC Faults inside an HTTP 200:
they are classified from the fault code and the Python exception text Odoo puts in ``faultString``
(odoo/service + rpc controller: 1 = any other exception with its traceback, 2 = UserError/ValidationError/
MissingError/RedirectWarning message, 3 = AccessDenied, 4 = AccessError); a front proxy's HTTP answers by status.
"""

from __future__ import annotations

import httpx

from connectors.base import AuthError, ClosedPeriodError, DeliveryError, RateLimitedError, RetryableError
from connectors.errors import When, classify_by, facts_of
from connectors.odoo import wire

FAULT_APPLICATION = 1
FAULT_RULES = (When(AuthError, on={"code:3"}),  # AccessDenied
               When(AuthError, text=("accessdenied",)),
               When(RetryableError, text=("could not serialize access", "serializationfailure", "concurrent update",
                                          "deadlock detected", "lock not available")),
               When(ClosedPeriodError, on={"code:2"},  # a UserError naming the lock date
                    text=("lock date", "locked period", "period is locked", "lock_date")))
# HTTP-level answers (a front proxy's 429/502/503, Odoo.sh rate limiting); faults come as 200.
HTTP_RULES = (When(RateLimitedError, on={"http:429"}), When(RetryableError, on={"http:502", "http:503", "http:504"}))


def fault_message(fault: wire.Fault) -> str:
    """Odoo's own message: for a traceback (code 1), its last line ("module.Error: message")."""
    text = str(fault.faultString or "").strip()
    if fault.faultCode == FAULT_APPLICATION and "Traceback" in text:
        lines = [ln for ln in text.splitlines() if ln.strip()]
        return lines[-1].strip() if lines else text
    return text


def classify_fault(fault: wire.Fault) -> DeliveryError:
    return classify_by(FAULT_RULES, f"Odoo: {fault_message(fault)}"[:2000], facts=facts_of(None, fault.faultCode),
                       message=str(fault.faultString), code=fault.faultCode,
                       detail={"faultCode": fault.faultCode, "faultString": str(fault.faultString)[:4000]})


def classify_http(response: httpx.Response) -> DeliveryError | None:
    facts = facts_of(response.status_code)
    if not any(rule.matches(facts, "") for rule in HTTP_RULES):
        return None
    reason = "Odoo: too many requests" if response.status_code == 429 else f"Odoo: HTTP {response.status_code}"
    return classify_by(HTTP_RULES, reason, facts=facts, response=response, detail=response.text[:500])
