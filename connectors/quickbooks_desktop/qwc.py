"""The .qwc file a bookkeeper opens in the QuickBooks Web Connector (``ledgerwire qwc TARGET``).

Fields as the QBWC Programmer's Guide describes them: AppName, AppID, AppURL (https, or http://localhost),
AppDescription, AppSupport, UserName, OwnerID and FileID (GUIDs that tie the application to the company
file), QBType (QBFS = QuickBooks Financial Software), Scheduler/RunEveryNMinutes, IsReadOnly.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from lxml import etree

GUID = re.compile(r"^\{[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}\}$")


def render_qwc(*, app_name: str, app_url: str, username: str, owner_id: str, file_id: str,
               run_every_minutes: int) -> str:
    if not GUID.match(owner_id) or not GUID.match(file_id):
        raise ValueError("OwnerID and FileID must be GUIDs in braces, e.g. {57F3B9B1-86F1-4fcc-B1EE-566DE1813D20}")
    if run_every_minutes < 1:
        raise ValueError("run_every_minutes must be at least 1")
    parts = urlsplit(app_url)
    if parts.scheme != "https" and parts.hostname not in ("localhost", "127.0.0.1"):
        raise ValueError("the Web Connector accepts https AppURLs (plain http only for localhost)")
    root = etree.Element("QBWCXML")
    support = f"{parts.scheme}://{parts.netloc}/"
    for tag, text in (("AppName", app_name[:31] if len(app_name) > 31 else app_name), ("AppID", ""),
                      ("AppURL", app_url), ("AppDescription", "Ledgerwire: shop invoices and payments into QuickBooks"),
                      ("AppSupport", support), ("UserName", username), ("OwnerID", owner_id),
                      ("FileID", file_id), ("QBType", "QBFS")):
        etree.SubElement(root, tag).text = text
    scheduler = etree.SubElement(root, "Scheduler")
    etree.SubElement(scheduler, "RunEveryNMinutes").text = str(run_every_minutes)
    etree.SubElement(root, "IsReadOnly").text = "false"
    return etree.tostring(root, xml_declaration=True, encoding="utf-8", pretty_print=True).decode()
