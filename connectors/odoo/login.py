"""The Odoo user the connector works as: the uid ``authenticate`` gives the configured login with the API key
from the credential store (read at every call: ``ledgerwire credentials set`` replaces it), asked once and kept
until a call is refused."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from connectors.base import AuthError, CredentialSource


class OdooLogin:
    def __init__(self, authenticate: Callable[..., Any], db: str, login: str, credentials: CredentialSource) -> None:
        self.authenticate = authenticate  # ``common.authenticate(db, login, key, {})`` over the client's transport
        self.db = db
        self.login = login
        self.credentials = credentials
        self._uid: int | None = None
        self._lock = threading.Lock()
        self.authentications = 0

    def api_key(self) -> str:
        key = self.credentials.get().get("api_key")
        if not key:
            raise AuthError("Odoo: the credential document has no api_key")
        return key

    def uid(self) -> int:
        with self._lock:
            if self._uid is None:
                uid = self.authenticate(self.db, self.login, self.api_key(), {})
                self.authentications += 1
                if not uid:
                    raise AuthError(f"Odoo: authentication failed for the configured login on database {self.db!r}")
                self._uid = int(uid)
            return self._uid

    def forget(self) -> None:
        """A refused uid: the key may have been replaced (or the user re-created), so authenticate again."""
        with self._lock:
            self._uid = None
