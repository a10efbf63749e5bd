"""Prometheus metrics, served at ``GET /metrics``.

They live in a registry of their own (``REGISTRY``), not prometheus_client's global default:
the process exposes exactly Genie's metrics, and a test process that builds many apps does not
trip over duplicate registrations. Values are per process; the outbox gauges read the shared
database, so every process reports the same depth.

    from bot import metrics
    metrics.OUTBOX_DELIVERED.labels(kind="alert.post").inc()
"""

from __future__ import annotations

import re

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest

REGISTRY = CollectorRegistry(auto_describe=True)

OUTBOX_DELIVERED = Counter(
    "genie_outbox_delivered", "Slack messages delivered from the outbox, by kind.", ["kind"], registry=REGISTRY)
OUTBOX_ERRORS = Counter(
    "genie_outbox_errors",
    "Failed Slack delivery attempts, by error (Slack's error code, http_NNN, timeout, connection, unexpected).",
    ["error"], registry=REGISTRY)
OUTBOX_FAILED = Counter(
    "genie_outbox_failed", "Slack messages given up on (a permanent error, or out of attempts).", registry=REGISTRY)
OUTBOX_DEPTH = Gauge(
    "genie_outbox_depth", "Slack messages waiting in the outbox.", registry=REGISTRY)
OUTBOX_OLDEST_AGE = Gauge(
    "genie_outbox_oldest_pending_age_seconds", "Age of the oldest Slack message waiting in the outbox.",
    registry=REGISTRY)
OUTBOX_FAILED_MESSAGES = Gauge(
    "genie_outbox_failed_messages", "Slack messages in the outbox marked failed (kept for operators).",
    registry=REGISTRY)

_LABEL = re.compile(r"[^a-z0-9_.]")


def error_label(code: str) -> str:
    """A bounded label value: Slack's error codes are short snake_case words; anything else is cut."""
    return _LABEL.sub("_", code.lower())[:40] or "unknown"


def exposition() -> tuple[bytes, str]:
    """``(body, content type)`` for the /metrics response."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
