"""JSON on the hot paths, in C (orjson), with exactly the standard library's results.

Two large JSON texts pass through Genie on every click: the click's payload (the whole alert
message as Slack sends it back, ~12 KB with the Assign… select's 100 options), which the screen
decodes (``bot.slack.screening.parse_body``), and the body of the ``chat.update`` that redraws
the message, which slack-sdk hands to aiohttp to encode (the shared session's
``json_serialize``, ``bot.slack.clients``). ``json`` takes ~150 µs and ~65 µs for them here;
orjson ~60 µs and ~25 µs (bench/RESULTS.md, "Issue 14, sixth round").

Neither changes what Genie reads or sends:

- ``loads`` returns what ``json.loads`` returns. orjson refuses some texts ``json`` takes
  (lone surrogate escapes, ``NaN``, nesting deeper than 1,024), and it reads an integer beyond
  64 bits as a float where ``json`` keeps it exact: a text orjson refuses, or with a run of 19
  digits or more anywhere (found in C: the digits mapped to ``0``, the run searched for), goes to
  ``json.loads``, which answers (or raises) as it always did. Otherwise the two agree
  (tests/test_screening.py compares them on hostile payloads).
- ``dumps`` returns JSON text that reads back as ``json.dumps``' does (orjson's is compact and
  UTF-8 rather than ASCII-escaped: the same JSON to Slack). What orjson will not encode the
  same way — a string with a lone surrogate, a key that is not a string, an integer beyond 64
  bits, a dataclass or a datetime — goes to ``json.dumps``, with its errors.
  One difference is kept: an infinite or NaN float is written ``null`` (``json`` writes
  ``Infinity``/``NaN``, which are not JSON and which Slack refuses); nothing Genie sends Slack
  holds a float.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

#: Dataclasses and datetimes are refused (to ``json.dumps``, which refuses them too), not encoded
#: orjson's way.
_AS_JSON_DOES = orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME


#: Digits to ``0``: a run of ``_LONG`` zeros in the mapped text is a run of 19 digits in the text.
_DIGITS = bytes.maketrans(b"123456789", b"000000000")
_LONG = b"0" * 19


def loads(text: str) -> Any:
    try:
        raw = text.encode()
    except UnicodeEncodeError:  # a lone surrogate: not UTF-8, orjson would refuse it
        return json.loads(text)
    if _LONG in raw.translate(_DIGITS):  # maybe an integer beyond 64 bits
        return json.loads(text)
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(text)


def dumps(value: Any) -> str:
    try:
        return orjson.dumps(value, option=_AS_JSON_DOES).decode()
    except TypeError:
        return json.dumps(value)
