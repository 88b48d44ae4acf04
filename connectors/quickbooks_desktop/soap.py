"""SOAP 1.1 document/literal envelopes of the QBWebConnectorSvc contract (namespace http://developer.intuit.com/,
elements as in the WSDL: ``authenticate``/``authenticateResponse``/``authenticateResult``…)."""

from __future__ import annotations

from lxml import etree

SOAP_NS = "http://schemas.xmlsoap.org/soap/envelope/"
TNS = "http://developer.intuit.com/"
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)


def parse_request(body: bytes) -> tuple[str, dict[str, str]]:
    """(operation, {child element: text}) of a SOAP request envelope."""
    root = etree.fromstring(body, _PARSER)
    soap_body = root.find(f"{{{SOAP_NS}}}Body")
    if soap_body is None or len(soap_body) == 0:
        raise ValueError("no SOAP Body")
    op = soap_body[0]
    name = etree.QName(op).localname
    return name, {etree.QName(child).localname: (child.text or "") for child in op}


def envelope(operation: str, params: list[tuple[str, str | list[str]]]) -> bytes:
    """A SOAP envelope whose body is ``<operation xmlns=tns>`` with the children ``params`` in order;
    a list value becomes ``<string>`` items (the WSDL's ArrayOfString)."""
    env = etree.Element(f"{{{SOAP_NS}}}Envelope", nsmap={"soap": SOAP_NS})
    body = etree.SubElement(env, f"{{{SOAP_NS}}}Body")
    op = etree.SubElement(body, f"{{{TNS}}}{operation}", nsmap={None: TNS})
    for name, value in params:
        child = etree.SubElement(op, f"{{{TNS}}}{name}")
        if isinstance(value, list):
            for item in value:
                etree.SubElement(child, f"{{{TNS}}}string").text = item
        else:
            child.text = value
    return etree.tostring(env, xml_declaration=True, encoding="utf-8")


def parse_response(body: bytes) -> tuple[str, str | list[str] | None]:
    """(operation response element, result) — the result's text, or the list of ``string`` items."""
    root = etree.fromstring(body, _PARSER)
    soap_body = root.find(f"{{{SOAP_NS}}}Body")
    op = soap_body[0]
    name = etree.QName(op).localname
    if etree.QName(op).localname == "Fault":
        raise ValueError(f"SOAP fault: {op.findtext('faultstring')}")
    result = op[0] if len(op) else None
    if result is None:
        return name, None
    strings = result.findall(f"{{{TNS}}}string")
    if strings or name == "authenticateResponse":
        return name, [s.text or "" for s in strings]
    return name, result.text or ""


def fault(message: str) -> bytes:
    env = etree.Element(f"{{{SOAP_NS}}}Envelope", nsmap={"soap": SOAP_NS})
    body = etree.SubElement(env, f"{{{SOAP_NS}}}Body")
    f = etree.SubElement(body, f"{{{SOAP_NS}}}Fault")
    etree.SubElement(f, "faultcode").text = "soap:Client"
    etree.SubElement(f, "faultstring").text = message
    return etree.tostring(env, xml_declaration=True, encoding="utf-8")


def credentials_match(given_username: str, given_password: str, username: str, password: str) -> bool:
    """Constant-time comparison of a Web Connector login, on UTF-8 bytes: ``hmac.compare_digest`` refuses
    non-ASCII ``str`` (TypeError), and a password may be anything the bookkeeper typed. Both comparisons
    always run, so the time taken does not tell whether the username was right; an empty stored password
    never matches."""
    import hmac

    user_ok = hmac.compare_digest(given_username.encode("utf-8"), username.encode("utf-8"))
    password_ok = hmac.compare_digest(given_password.encode("utf-8"), password.encode("utf-8"))
    return user_ok and password_ok and bool(password)
