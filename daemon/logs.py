"""structlog configuration: JSON lines, with invoice id, target and event version bound by the workers.

A last processor drops values of keys that could carry secrets or customer PII, so a careless
``log.info(..., email=…)`` never reaches the log.
"""

from __future__ import annotations

import logging
import sys

import structlog

REDACTED_KEYS = frozenset({
    "access_token", "refresh_token", "client_secret", "password", "secret", "authorization", "token",
    "api_key", "email", "phone", "customer_name", "name", "billing_address", "address",
})


class _CurrentStderr:
    """Writes to whatever ``sys.stderr`` is now (tests and tools swap it), never to a closed old one."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def _redact(_logger, _method, event_dict):
    for key in list(event_dict):
        if key.lower() in REDACTED_KEYS:
            event_dict[key] = "[redacted]"
    return event_dict


def configure_logging(level: str = "INFO", json_output: bool = True, log_file=None) -> None:
    """JSON lines to stderr (or to ``log_file``, as the demo does to keep its console readable)."""
    stream = open(log_file, "a", buffering=1) if log_file is not None else _CurrentStderr()
    logging.basicConfig(stream=stream, level=getattr(logging, level.upper(), logging.INFO), format="%(message)s",
                        force=True)
    # httpx logs every request line at INFO, query strings included (which may carry a customer's email
    # in a platform query): keep it, and the servers' access logs, out of the log.
    for noisy in ("httpx", "httpcore", "uvicorn.access", "uvicorn.error"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    renderer = structlog.processors.JSONRenderer() if json_output else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            _redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper(), logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
