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

import asyncio
import functools
import http
import logging
import re
import sys
from typing import TextIO

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


#: The reason phrase uvicorn's access-log line prints after each status.
_PHRASES = {status.value: status.phrase for status in http.HTTPStatus}


class AccessLog:
    """The access log ``genie serve`` prints — one line per answered request, uvicorn's own
    format (``INFO:     1.2.3.4:5678 - "POST /v2/alerts HTTP/1.1" 202 Accepted``) — written in
    batches, as nginx's ``access_log … buffer= flush=``: the lines of up to ``FLUSH_S`` go out
    together, as records of the logger ``genie.access`` of at most ``CHUNK_BYTES`` each
    (``genie serve`` prints their messages as they are, to stdout, as uvicorn does), scrubbed
    when made as every record is (``install_log_redaction``: link tokens and keys in paths and
    query strings).

    uvicorn's own access log made a record, formatted it and wrote it to stdout for every
    request on the event loop, ~96 µs of CPU each (measured in ``genie serve`` during a storm;
    bench/RESULTS.md): a tenth of an alert's cost, on every route. Here a request costs one
    formatted string; a line is printed at most ``FLUSH_S`` after its request was answered, all
    of them when the server stops, and a process killed with SIGKILL loses at most that much."""

    FLUSH_S = 0.5
    #: Lines held at most: more are printed at once.
    MAX_LINES = 1000
    #: The most one record holds, in bytes with its newline: Linux's ``PIPE_BUF`` (4,096) less
    #: room for anything a formatter adds.
    CHUNK_BYTES = 4000

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger or logging.getLogger("genie.access")
        self._lines: list[str] = []
        self._timer: asyncio.TimerHandle | None = None

    def answered(self, scope: dict, status: int) -> None:
        """Note one request (its ASGI scope) answered with ``status``."""
        if not self.logger.isEnabledFor(logging.INFO):
            return
        client = scope.get("client")
        path = scope.get("root_path", "") + scope["path"]
        query = scope.get("query_string")
        if query:
            path = f"{path}?{query.decode('ascii', 'replace')}"
        self._lines.append(
            f"INFO:     {f'{client[0]}:{client[1]}' if client else '-'} - "
            f'"{scope["method"]} {path} HTTP/{scope.get("http_version", "1.1")}" '
            f"{status} {_PHRASES.get(status, '')}".rstrip()
        )
        if len(self._lines) >= self.MAX_LINES:
            self.flush()
        elif self._timer is None:
            try:
                self._timer = asyncio.get_running_loop().call_later(self.FLUSH_S, self.flush)
            except RuntimeError:  # no loop running (not under a server): print it now
                self.flush()

    def flush(self) -> None:
        """Print the lines held: one record per ``CHUNK_BYTES`` of them at most, so that each is
        one write a pipe keeps whole (``PIPE_BUF``) — ``genie serve --workers N`` processes
        share one stdout, and a longer write could be cut into by another's."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        lines, self._lines = self._lines, []
        chunk: list[str] = []
        size = 0
        for line in lines:
            length = len(line.encode()) + 1
            if chunk and size + length > self.CHUNK_BYTES:
                self.logger.info("%s", "\n".join(chunk))
                chunk, size = [], 0
            chunk.append(line)
            size += length
        if chunk:
            self.logger.info("%s", "\n".join(chunk))


def print_access_log_as_is(stream: TextIO | None = None) -> None:
    """``genie serve``: ``genie.access``'s records printed as they are (each a block of lines
    already in uvicorn's format), to stdout, where uvicorn printed its access log."""
    logger = logging.getLogger("genie.access")
    if any(getattr(h, "genie_access", False) for h in logger.handlers):
        return
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.genie_access = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
