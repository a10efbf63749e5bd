"""Prometheus metrics, served at ``GET /metrics`` (every name is listed in the README).

They live in a registry of their own (``REGISTRY``), not prometheus_client's global default:
the process exposes exactly Genie's metrics, and a test process that builds many apps does not
trip over duplicate registrations. Values are per process; the outbox gauges read the shared
database, so every process reports the same depth.

    from bot import metrics
    metrics.OUTBOX_DELIVERED.labels(kind="alert.post").inc()
    metrics.count_request("GET", "/link/{token}", 200, 0.004)   # the route's template, never its path
    metrics.count_decision("acknowledge", "noop", "member")
"""

from __future__ import annotations

import re
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

REGISTRY = CollectorRegistry(auto_describe=True)

OUTBOX_DELIVERED = Counter(
    "genie_outbox_delivered", "Slack messages delivered from the outbox, by kind.", ["kind"], registry=REGISTRY
)
OUTBOX_ERRORS = Counter(
    "genie_outbox_errors",
    "Failed Slack delivery attempts, by error (Slack's error code, http_NNN, timeout, connection, unexpected).",
    ["error"],
    registry=REGISTRY,
)
OUTBOX_FAILED = Counter(
    "genie_outbox_failed", "Slack messages given up on (a permanent error, or out of attempts).", registry=REGISTRY
)
OUTBOX_DEPTH = Gauge("genie_outbox_depth", "Slack messages waiting in the outbox.", registry=REGISTRY)
OUTBOX_OLDEST_AGE = Gauge(
    "genie_outbox_oldest_pending_age_seconds",
    "Age of the oldest Slack message waiting in the outbox.",
    registry=REGISTRY,
)
OUTBOX_FAILED_MESSAGES = Gauge(
    "genie_outbox_failed_messages",
    "Slack messages in the outbox marked failed (kept for operators).",
    registry=REGISTRY,
)

HTTP_REQUESTS = Counter(
    "genie_http_requests",
    "HTTP requests answered, by method, route template (/link/{token}, never the path itself: tokens are in "
    "paths) and status.",
    ["method", "route", "status"],
    registry=REGISTRY,
)
HTTP_DURATION = Histogram(
    "genie_http_request_duration_seconds",
    "Time to answer an HTTP request, by route template.",
    ["route"],
    registry=REGISTRY,
)
GATE_DECISIONS = Counter(
    "genie_gate_decisions",
    "Alert buttons clicked in Slack, by action, outcome (applied, noop: someone got there first, denied, "
    "invalid) and reason (why the gate allowed or refused: member, assignee, admin, anonymous, not_linked, "
    "inactive, not_member, no_team, …).",
    ["action", "outcome", "reason"],
    registry=REGISTRY,
)

#: Route label of a request that matched no route (its path is not a label: it is unbounded).
UNMATCHED = "unmatched"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

_LABEL = re.compile(r"[^a-z0-9_.]")


def error_label(code: str) -> str:
    """A bounded label value: Slack's error codes are short snake_case words; anything else is cut."""
    return _LABEL.sub("_", code.lower())[:40] or "unknown"


#: ``count_request``'s children of ``HTTP_REQUESTS`` and ``HTTP_DURATION`` by their labels, as
#: ``.labels()`` would find them (it checks and locks on every call: ~10 µs of every request).
#: Bounded as the label sets are.
_REQUEST_CHILDREN: dict[tuple[str, str, int], tuple[Any, Any]] = {}


def count_request(method: str, route: str, status: int, seconds: float) -> None:
    """One answered HTTP request; ``route`` is a template, so the label set stays small."""
    children = _REQUEST_CHILDREN.get((method, route, status))
    if children is None:
        children = (
            HTTP_REQUESTS.labels(method=method if method in _METHODS else "other", route=route, status=str(status)),
            HTTP_DURATION.labels(route=route),
        )
        if method in _METHODS:  # (any other method is counted as "other", and not kept here)
            _REQUEST_CHILDREN[(method, route, status)] = children
    children[0].inc()
    children[1].observe(seconds)


def count_decision(action: str, outcome: str, reason: str) -> None:
    """One click through the gate, once its outcome is committed to the alert's timeline."""
    GATE_DECISIONS.labels(action=action, outcome=outcome, reason=reason).inc()


def exposition() -> tuple[bytes, str]:
    """``(body, content type)`` for the /metrics response."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
