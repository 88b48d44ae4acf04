"""XML-RPC with exact money, on top of the standard library's ``xmlrpc.client`` marshaller.

XML-RPC has no decimal type: Odoo's monetary and float fields travel as ``<double>``. Ledgerwire keeps
money as ``Decimal`` everywhere; the one place a Decimal becomes wire text is :func:`money_to_wire`, and
every ``<double>`` read back is parsed straight from its digits into a ``Decimal`` (never through a binary
float). Everything else (ints, strings, booleans, lists, structs, faults, the envelope) is the stdlib's own
marshalling.
"""

from __future__ import annotations

import xmlrpc.client
from decimal import Decimal
from typing import Any

from daemon.canonical import CENT

Fault = xmlrpc.client.Fault


def money_to_wire(value: Decimal) -> str:
    """THE Decimal → XML-RPC ``<double>`` conversion (amounts, prices, quantities, percentages).

    Writes the Decimal's exact digits in plain decimal-point notation, which is what the XML-RPC spec
    allows for a double ("a plus or a minus, numeric characters, a period, numeric characters"); Odoo
    parses it into the float its field holds. Non-finite values have no XML-RPC form and are refused.
    """
    if not value.is_finite():
        raise ValueError(f"cannot send {value} as an XML-RPC double")
    text = f"{value:f}"
    return text if "." in text else text + ".0"


class _Marshaller(xmlrpc.client.Marshaller):
    dispatch = dict(xmlrpc.client.Marshaller.dispatch)

    def _dump_decimal(self, value: Decimal, write) -> None:
        write("<value><double>")
        write(money_to_wire(value))
        write("</double></value>\n")

    dispatch[Decimal] = _dump_decimal


class _Unmarshaller(xmlrpc.client.Unmarshaller):
    dispatch = dict(xmlrpc.client.Unmarshaller.dispatch)

    def _end_double(self, data: str) -> None:
        self.append(Decimal(data.strip()))
        self._value = 0

    dispatch["double"] = _end_double
    dispatch["bigdecimal"] = _end_double


def _envelope(kind: str, inner: str, methodname: str | None = None) -> bytes:
    # The same wrapping xmlrpc.client.dumps() applies around the marshalled params.
    head = "<?xml version='1.0'?>\n"
    if kind == "call":
        text = f"{head}<methodCall>\n<methodName>{xmlrpc.client.escape(methodname or '')}</methodName>\n{inner}</methodCall>\n"
    else:
        text = f"{head}<methodResponse>\n{inner}</methodResponse>\n"
    return text.encode("utf-8")


def encode_call(method: str, params: tuple[Any, ...]) -> bytes:
    """A ``<methodCall>``; Decimals become doubles through :func:`money_to_wire`."""
    return _envelope("call", _Marshaller("utf-8", allow_none=False).dumps(params), method)


def encode_response(value: Any) -> bytes:
    """A successful ``<methodResponse>`` (None answers False, as Odoo's server does)."""
    return _envelope("response", _Marshaller("utf-8", allow_none=False).dumps((_no_none(value),)))


def encode_fault(code: int, message: str) -> bytes:
    return _envelope("response", _Marshaller("utf-8", allow_none=False).dumps(Fault(code, message)))


def decode(data: bytes) -> tuple[tuple[Any, ...], str | None]:
    """(params, method name) of a call or response; raises ``Fault`` for a fault response.
    Doubles come back as exact Decimals of their wire digits."""
    target = _Unmarshaller(use_builtin_types=True)
    parser = xmlrpc.client.ExpatParser(target)
    parser.feed(data)
    parser.close()
    return target.close(), target.getmethodname()


def _no_none(value: Any) -> Any:
    if value is None:
        return False
    if isinstance(value, dict):
        return {k: _no_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_no_none(v) for v in value]
    return value


def shape(value: Any) -> Any:
    """Tuples travel as XML-RPC arrays: recorded as lists, as the wire carries them."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [shape(v) for v in value]
    return value


def money(value: Any) -> Decimal | None:
    """A monetary field as Odoo answers it, in exact cents; None for an empty one (Odoo's False)."""
    return None if value is None or value is False else Decimal(str(value)).quantize(CENT)
