"""Keep secrets out of logs. Link tokens travel in URL paths, which access logs print."""

from __future__ import annotations

import logging
import re

_LINK_PATH = re.compile(r"(/link/)[^\s/?\"']+")
#: Keys some OpsGenie clients put in URLs (Genie refuses them, but the access log would print them).
_QUERY_KEY = re.compile(r"([?&](?:apiKey|apikey|api_key|token)=)[^\s&\"']+")


def redact(text: str) -> str:
    return _QUERY_KEY.sub(r"\1[redacted]", _LINK_PATH.sub(r"\1[redacted]", text))


class RedactLinkTokens(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return True


def install_log_redaction() -> None:
    """Attach the filter to uvicorn's access logger and to our own."""
    for name in ("uvicorn.access", "uvicorn.error", "bot"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactLinkTokens) for f in logger.filters):
            logger.addFilter(RedactLinkTokens())
