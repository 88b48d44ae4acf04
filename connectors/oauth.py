"""OAuth2 with rotating refresh tokens — kept as an import path; the schemes live in ``connectors.auth``."""

from connectors.auth import REFRESH_MARGIN_S, AuthError, OAuth2RefreshAuth

__all__ = ["OAuth2RefreshAuth", "AuthError", "REFRESH_MARGIN_S"]
