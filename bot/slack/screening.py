"""The screen in front of Bolt for POST /slack/events (``bot.server``): the signature, then
the shape of the body, before any listener sees it."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.request.async_internals import build_async_context
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.request.payload_utils import (
    to_action,
    to_command,
    to_event,
    to_message,
    to_options,
    to_shortcut,
    to_step,
    to_view,
)
from slack_sdk.signature import SignatureVerifier
from yarl import query_to_pairs

from bot import jsontext

logger = logging.getLogger(__name__)


#: Request types Genie's listeners take (slash commands have no type); Bolt itself answers
#: url_verification and ssl_check.
HANDLED_TYPES = {"block_actions", "event_callback"}


def _text(value, *, required: bool = True) -> bool:
    """A string Slack could have sent: not too long, and no NUL (PostgreSQL refuses one in text)."""
    return isinstance(value, str) and (bool(value) or not required) and len(value) <= 4000 and "\x00" not in value


def _event_id(value) -> bool:
    """Slack's ``event_id`` (``Ev0…``): printable ASCII that fits the column recording it."""
    return isinstance(value, str) and 0 < len(value) <= 64 and value.isascii() and value.isprintable()


def malformed(body: dict) -> str | None:
    """What is wrong with a (correctly signed) request that no real Slack would send, or None.

    Bolt's listener matchers index into the payload (``action["action_id"]``,
    ``body["event"]["type"]`` …) and would raise, and an identity without its ids would be
    judged as somebody: so the shape is checked once, here, before any listener sees it."""
    if "event" in body and not isinstance(body["event"], dict):  # Bolt reads event.bot_id of any request
        return "an event that is not an object"
    if "command" in body:
        if not (
            _text(body.get("command"))
            and _text(body.get("user_id"))
            and _text(body.get("team_id"))
            and _text(body.get("text", ""), required=False)
        ):
            return "a slash command without its command, user_id, team_id or text"
        return None
    kind = body.get("type")
    if kind == "block_actions":
        actions = body.get("actions")
        if (
            not isinstance(actions, list)
            or not actions
            or not all(
                isinstance(a, dict) and _text(a.get("action_id")) and _text(a.get("block_id", ""), required=False)
                for a in actions
            )
        ):
            return "block_actions without a list of actions, each with an action_id"
        user, team, enterprise = body.get("user"), body.get("team"), body.get("enterprise")
        if not isinstance(user, dict) or not _text(user.get("id")):
            return "block_actions without the user's id"
        if not (isinstance(team, dict) and _text(team.get("id"))) and not (
            team is None and isinstance(enterprise, dict) and _text(enterprise.get("id"))
        ):
            return "block_actions without the workspace's id"
        if not _text(body.get("response_url", ""), required=False):
            return "block_actions with a response_url that is not text"
        return None
    if kind == "event_callback":
        event = body.get("event")
        if not isinstance(event, dict) or not _text(event.get("type")) or not _event_id(body.get("event_id")):
            return "an event_callback without an event (with a type) and an event_id"
        if not (_text(body.get("team_id")) or _text(body.get("enterprise_id"))):
            return "an event_callback without the workspace's id"
        return None
    return None


def parse_body(text: str, content_type: str | None) -> Any:
    """Bolt's ``parse_body`` (``slack_bolt.request.internals``), step for step, with one change:
    a form-encoded body is split and %-decoded by ``yarl.query_to_pairs`` — the same result as
    the ``urllib.parse.parse_qsl(keep_blank_values=True)`` Bolt calls (tests/test_screening.py
    checks that on adversarial input), in C. A click's body is the whole alert message, ~22 KB
    with ~4,900 %-escapes (the Assign… select's 100 options): urllib's pure-Python ``unquote``
    took 1.1 ms of it, more than the rest of a bare Bolt ack. The payload's JSON is decoded by
    ``bot.jsontext.loads`` (orjson, with ``json.loads``' results)."""
    if not text:
        return {}
    if content_type == "application/json" or text.startswith("{"):
        return jsontext.loads(text)
    params = dict(query_to_pairs(text))
    if "payload" in text:  # (Bolt's test: the text, not the parsed names)
        payload = params.get("payload")
        return jsontext.loads(payload) if payload is not None else {}
    return params


def bolt_request(text: str, headers: Mapping[str, str], query: Mapping[str, str] | None = None) -> AsyncBoltRequest:
    """The ``AsyncBoltRequest`` Bolt's constructor builds from ``text`` (HTTP mode), its body
    parsed by ``parse_body`` above: the raw body (which Bolt's own signature check reads),
    headers, query, content type and context are Bolt's own, built as its ``__init__`` builds
    them (tests/test_screening.py compares the two requests attribute by attribute)."""
    request = AsyncBoltRequest(body="", query=query, headers=headers)  # type: ignore[arg-type]
    request.raw_body = text
    request.body = parse_body(text, request.content_type)
    request.context = build_async_context(AsyncBoltContext({}), request.body)
    return request


def screen(
    raw: bytes, headers: Mapping[str, str], signing_secret: str | None, query: Mapping[str, str] | None = None
) -> tuple[int, str] | AsyncBoltRequest:
    """``(status, text)`` to answer a POST to /slack/events with instead of handing it to Bolt,
    or the ``AsyncBoltRequest`` to hand it (``app.async_dispatch``) — built once
    (``bolt_request``), as Bolt's Starlette adapter would build it: parsing a click's body (the
    whole alert message, form-encoded JSON) is a good part of a click's cost.

    Bolt parses the body and digs into it (``to_action``, ``to_view`` … for every middleware
    and listener call) before its error handling is in place: a body it cannot parse, or a
    payload of an odd shape (``"actions": []``, ``"user": "x"``), is a 500 there. So the
    signature is checked first (401, as Bolt would), then the body is parsed to what Bolt's
    parse gives (``parse_body``) and looked at as Bolt will look at it: what fails is a 400. A well-formed request
    of a kind Genie has no listener for is acknowledged (200) and ignored."""
    try:
        text = raw.decode("utf-8")
        signed = signing_secret is not None and SignatureVerifier(signing_secret).is_valid(
            body=text, timestamp=headers.get("x-slack-request-timestamp"), signature=headers.get("x-slack-signature")
        )
    except (UnicodeDecodeError, ValueError):  # not UTF-8; a timestamp that is not a number
        signed = False
    if not signed:
        return 401, '{"error": "invalid request"}'
    try:
        request = bolt_request(text, headers, query)
        body = request.body
        if not isinstance(body, dict):
            raise TypeError("not an object")
        for look in (to_options, to_shortcut, to_action, to_view, to_command, to_event, to_message, to_step):
            look(body)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as err:
        logger.warning("refused a Slack request Genie cannot read (%s)", type(err).__name__)
        return 400, "Malformed Slack request: it cannot be read."
    problem = malformed(body)
    if problem is not None:
        logger.warning("refused a malformed Slack request: %s", problem)
        return 400, f"Malformed Slack request: {problem}."
    kind = body.get("type")
    if "command" not in body and (not isinstance(kind, str) or kind not in HANDLED_TYPES | {"url_verification"}):
        logger.info("ignored a Slack request of type %r: Genie has no listener for it", str(kind)[:40])
        return 200, ""
    return request
