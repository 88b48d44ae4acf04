"""Settings of a NetSuite target, shared by the REST and the SuiteTalk SOAP connectors (``targets[].settings``).

The line items, tax codes, deposit accounts, location/department/class and terms come from the target's
``mapping`` (``items``, ``tax_codes``, ``payment_accounts``, ``location_tracking``, ``payment_terms``: NetSuite
internal ids); these settings add what only NetSuite has. The token-based-auth secrets are never settings: they
are the target's credential document (``TBA_CREDENTIAL_FIELDS``), read on use by ``connectors.auth.OAuth1TokenAuth``.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, SecretStr

# An account id as NetSuite writes it: ``1234567``, a sandbox ``1234567_SB1`` (``1234567-sb1`` in host names).
ACCOUNT_ID = r"^[0-9A-Za-z]+([_-][0-9A-Za-z]+)?$"
TBA_CREDENTIAL_FIELDS = ("consumer_key", "consumer_secret", "token_id", "token_secret")


class TbaCredentials(BaseModel):
    """The credential document of token-based auth: the integration record's consumer key and secret and the
    user/role's token id and secret (OAuth 1.0a; tokens do not expire until revoked)."""

    model_config = ConfigDict(extra="forbid")
    consumer_key: SecretStr
    consumer_secret: SecretStr
    token_id: SecretStr
    token_secret: SecretStr


class NetSuiteSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    account_id: str = Field(pattern=ACCOUNT_ID)  # also the OAuth ``realm`` (upper case, ``_SB1``)
    # OneWorld accounts: the subsidiary our customers (and so their transactions) belong to.
    subsidiary_id: str | None = Field(None, min_length=1)
    # ISO code -> NetSuite currency internal id, overriding the look-up of the account's currency records by ISO
    # code (``netsuite_common.currency``); for a role that may not read them.
    currency_ids: dict[str, str] = Field(default_factory=dict)
    # The item a refund's or an adjustment's money line posts on when the refunded line's kind has none in
    # ``mapping.items`` (a NetSuite transaction line is always an item line).
    adjustment_item_id: str | None = Field(None, min_length=1)
    # Concurrency governance: the account's limit by service tier (+10 per SuiteCloud Plus licence), shared by
    # every integration of the account; 5 is the smallest tier's ("shared").
    concurrency: int = Field(5, ge=1)


def realm(account_id: str) -> str:
    """The OAuth ``realm`` of an account: its id upper case with ``_`` (``1234567_SB1``)."""
    return account_id.replace("-", "_").upper()


def host_label(account_id: str) -> str:
    """The account's label in NetSuite host names: lower case with ``-`` (``1234567-sb1``)."""
    return account_id.replace("_", "-").lower()


def suitetalk_host(account_id: str) -> str:
    return f"https://{host_label(account_id)}.suitetalk.api.netsuite.com"


def is_sandbox_account(account_id: str) -> bool:
    return re.search(r"[_-]SB\d*$", account_id, re.IGNORECASE) is not None
