"""Keep secrets out of logs, whoever logs and at whatever level.

Link tokens travel in URL paths, which access logs print, and in the link URLs of Slack
messages, which Bolt and slack-sdk print at DEBUG; the aiosqlite driver prints every SQL
statement *with its parameters* (nonces, API keys) at DEBUG. ``install_log_redaction()`` puts a
log-record factory in front of every logger, so each record is scrubbed once, when it is made:

- ``/link/<token>``, ``/invite/<token>``, ``/account/email/<token>``, ``?apiKey=…``/``?token=…``, ``GenieKey <key>`` and PagerDuty's
  ``Token token=<key>`` become ``[redacted]``;
- aiosqlite's records keep the statement and lose the parameters;
- a traceback is formatted and scrubbed the same way.

``genie serve`` and ``build_asgi_app`` install it; installing twice is harmless.
"""

from __future__ import annotations

import functools
import logging
import re

_LINK_PATH = re.compile(r"(/(?:link|invite|account/email)/)[^\s/?\"'\\<>]+")
#: Keys some OpsGenie clients put in URLs (Genie refuses them, but the access log would print them).
_QUERY_KEY = re.compile(r"([?&](?:apiKey|apikey|api_key|token)=)[^\s&\"']+")
_GENIE_KEY = re.compile(r"(GenieKey\s+)[^\s\"',}]+", re.IGNORECASE)
#: PagerDuty's ``Authorization: Token token=<key>`` (the PagerDuty importer sends it).
_PAGERDUTY_KEY = re.compile(r"(Token\s+token=)[^\s\"',}]+", re.IGNORECASE)


#: Where any of the above could begin (a superset, in one pass): most log texts have none of
#: them, and four substitutions each cost ~4 µs of every request's access-log record.
_MAYBE_SECRET = re.compile(
    r"/(?:link|invite|account/email)/|[?&](?:apiKey|apikey|api_key|token)=|GenieKey|Token\s+token=", re.IGNORECASE
)


def redact(text: str) -> str:
    if _MAYBE_SECRET.search(text) is None:
        return text
    text = _PAGERDUTY_KEY.sub(r"\1[redacted]", text)
    return _GENIE_KEY.sub(r"\1[redacted]", _QUERY_KEY.sub(r"\1[redacted]", _LINK_PATH.sub(r"\1[redacted]", text)))


def _without_parameters(value: object) -> object:
    """aiosqlite logs ``functools.partial(cursor.execute, sql, parameters)``: keep the SQL only."""
    if isinstance(value, functools.partial):
        sql = next((a for a in value.args if isinstance(a, str)), "")
        return f"{getattr(value.func, '__name__', 'call')}({sql!r}, [parameters not logged])"
    return value


def _scrub(record: logging.LogRecord) -> None:
    if record.name == "aiosqlite" and isinstance(record.args, tuple):
        record.args = tuple(_without_parameters(a) for a in record.args)
    if isinstance(record.msg, str):
        record.msg = redact(record.msg)
    if isinstance(record.args, tuple):
        record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
    elif isinstance(record.args, dict):
        record.args = {k: redact(v) if isinstance(v, str) else v for k, v in record.args.items()}
    if record.exc_info and record.exc_info[0] is not None and not record.exc_text:
        record.exc_text = redact(logging.Formatter().formatException(record.exc_info))


def install_log_redaction() -> None:
    """Scrub every log record as it is made (see the module docstring)."""
    current = logging.getLogRecordFactory()
    if getattr(current, "genie_redacts", False):
        return

    def factory(*args, **kwargs) -> logging.LogRecord:
        record = current(*args, **kwargs)
        _scrub(record)
        return record

    factory.genie_redacts = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)
