"""Domain exceptions. Each carries the text a person should read; the Slack error handler,
the web pages and the CLI show it as is."""

from __future__ import annotations


class GenieError(Exception):
    """Base: ``str(err)`` is a complete, person-facing sentence."""


class NotFound(GenieError):
    pass


class AlreadyExists(GenieError):
    pass


class InvalidInput(GenieError):
    pass
