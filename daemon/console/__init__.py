"""The bookkeeper's console: what was posted where, what failed and why, reconciliation and cash, served by
the daemon at ``/console`` when ``console.enabled`` (``routes.py`` pages and actions, ``queries.py`` the
ledger reads, ``advice.py`` reasons in plain words, ``auth.py`` login/CSRF, ``password.py`` hashes)."""

from daemon.console.routes import PREFIX, build_console

__all__ = ["PREFIX", "build_console"]
