"""The screen's body parser (``bot.slack.screening.parse_body``) gives Bolt exactly what Bolt's
own would: the same pairs as ``urllib.parse.parse_qsl(keep_blank_values=True)`` on adversarial
form bodies (invalid, truncated, overlong and surrogate UTF-8 escapes, bad hex, ``+``, ``&``,
``=``, literal non-ASCII text), the same body, and the same ``AsyncBoltRequest`` attribute by
attribute — so Bolt's signature check, matchers and context see the request they would have
built themselves."""

from __future__ import annotations

import json
import time
from urllib.parse import parse_qsl, quote, urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.request.internals import parse_body as bolt_parse_body
from yarl import query_to_pairs

from bot import jsontext
from bot.slack.screening import bolt_request, parse_body, screen
from tests.conftest import SIGNING_SECRET
from tests.slack_driver import sign

#: Pieces a hostile or broken form body is made of: every byte as an escape (both cases), UTF-8
#: sequences whole, truncated, overlong, surrogate and past U+10FFFF, escapes cut short or with
#: bad hex, the form's own delimiters, and literal text of every width.
_TOKENS = [
    "%", "%%", "%2", "%0", "%zz", "%g0", "%0g", "%25", "%2B", "%2b", "%26", "%3D", "%3d", "%20", "%00", "%7F",
    "%C3%A9", "%c3%a9", "%C3", "%A9", "%E2%82%AC", "%E2%82", "%E2", "%82%AC", "%F0%9F%98%80", "%F0%9F%98", "%F0%9F",
    "%F0", "%ED%A0%80", "%ED%9F%BF", "%EE%80%80", "%C0%80", "%C1%BF", "%E0%80%80", "%E0%A0%80", "%F0%80%80%80",
    "%F4%8F%BF%BF", "%F4%90%80%80", "%F5", "%FF", "%FE", "%80", "%BF", "%EF%BB%BF", "%EF%BF%BD",
    "+", "++", "&", "&&", "=", "==", ";", "payload", "payload=", "a", "0", "é", "€", "😀", "\u2028", "\x00", " ", "\t",
]  # fmt: skip
_piece = st.one_of(
    st.sampled_from(_TOKENS),
    st.integers(0, 255).map(lambda b: f"%{b:02X}"),
    st.integers(0, 255).map(lambda b: f"%{b:02x}"),
    st.text(max_size=3),
)
hostile_forms = st.lists(_piece, max_size=40).map("".join)


def _outcome(parse, *args):
    try:
        return "ok", parse(*args)
    except Exception as err:  # noqa: BLE001 - the kind of failure is what is compared
        return "raised", type(err)


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile_forms)
def test_query_to_pairs_is_parse_qsl_with_blank_values_on_hostile_input(text):
    assert query_to_pairs(text) == parse_qsl(text, keep_blank_values=True)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        hostile_forms,
        hostile_forms.map(lambda s: "payload=" + s),
        st.dictionaries(
            st.sampled_from(["payload", "command", "text", "user_id", "a b", "é"]), st.text(), max_size=4
        ).map(urlencode),
        _json_values.map(lambda v: urlencode({"payload": json.dumps(v)})),
        _json_values.map(lambda v: urlencode({"payload": json.dumps(v, ensure_ascii=False)}, quote_via=quote)),
        _json_values.map(json.dumps),
    ),
    st.sampled_from([None, "application/x-www-form-urlencoded", "application/json", "text/plain"]),
)
def test_the_screens_parse_is_bolts_on_any_body(text, content_type):
    assert _outcome(parse_body, text, content_type) == _outcome(bolt_parse_body, text, content_type)


_edgy_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)  # past 64 bits: orjson would make floats of them
    | st.floats(allow_nan=False)  # (infinities included: json writes them, orjson refuses them)
    | st.text(),  # lone surrogates included: json escapes them, orjson refuses them
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@pytest.mark.parametrize(
    "text",
    [
        "[18446744073709551615, 18446744073709551616, -9223372036854775808, -9223372036854775809]",
        '{"n": 123456789012345678901234567890, "s": "x"}',
        '["\\ud800", "\\udfff\\ud800"]',
        "[1e400, -1e400]",
        "NaN",
        "[1.5, -0, -0.0, 1E2, 0.1]",
        '{"a": 1, "a": 2, "b": {"a": 3}}',
        '["000000000000000000000", 7]',  # a run of digits in a string: json reads it (the same)
        "[" * 3000 + "]" * 3000,  # deeper than either reads
        '{"a": 1',
        "",
    ],
)
def test_jsontext_loads_is_json_loads_where_orjson_differs(text):
    assert _as_text(_outcome(jsontext.loads, text)) == _as_text(_outcome(json.loads, text))


@settings(max_examples=800, deadline=None)
@given(_edgy_json)
def test_jsontext_reads_and_writes_json_as_the_standard_library_does(value):
    text = json.dumps(value)
    # (compared as JSON text: 2**64 == float(2**64) in Python, but not on the wire)
    assert json.dumps(jsontext.loads(text)) == json.dumps(json.loads(text))
    written = json.dumps(json.loads(jsontext.dumps(value)))
    # (the one difference: orjson writes an infinity as null — bot/jsontext.py — where json
    # writes Infinity; unless orjson refused the value for another reason and json wrote it)
    assert written in (json.dumps(json.loads(text)), json.dumps(_infinities_as_null(json.loads(text))))


def test_jsontext_dumps_refuses_what_json_refuses():
    import dataclasses
    from datetime import UTC, datetime

    @dataclasses.dataclass
    class Thing:
        a: int

    for value in ({"at": datetime.now(UTC)}, [Thing(1)], {"s": {1, 2}}):
        assert _outcome(jsontext.dumps, value) == _outcome(json.dumps, value) == ("raised", TypeError)
    assert json.loads(jsontext.dumps({1: "a", "\ud800": [2**70]})) == json.loads(
        json.dumps({1: "a", "\ud800": [2**70]})
    )


def _infinities_as_null(value):
    if isinstance(value, float) and value in (float("inf"), float("-inf")):
        return None
    if isinstance(value, list):
        return [_infinities_as_null(v) for v in value]
    if isinstance(value, dict):
        return {k: _infinities_as_null(v) for k, v in value.items()}
    return value


def _as_text(outcome):
    kind, value = outcome
    return (kind, json.dumps(value) if kind == "ok" else value)


def _alert_click(options: int = 100) -> str:
    """A click as Slack sends it: the whole alert message, with its Assign… select."""
    message = {
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": "*[P1] Disk full* on `db-1` — 100% «used» & more"}},
            {
                "type": "actions",
                "elements": [
                    {"type": "button", "action_id": "alert_acknowledge", "value": "v1.5"},
                    {
                        "type": "static_select",
                        "action_id": "alert_assign",
                        "options": [
                            {"text": {"type": "plain_text", "text": f"Person Nümber {i} 😀"}, "value": f"v1.5.{i}"}
                            for i in range(options)
                        ],
                    },
                ],
            },
        ]
    }
    payload = {
        "type": "block_actions",
        "team": {"id": "T0GENIE", "domain": "genie"},
        "user": {"id": "U0ALICE", "team_id": "T0GENIE"},
        "response_url": "https://hooks.slack.com/actions/T0/1/x",
        "container": {"type": "message", "message_ts": "1.2", "channel_id": "C0PAY"},
        "channel": {"id": "C0PAY"},
        "message": message,
        "actions": [{"action_id": "alert_acknowledge", "block_id": "b", "value": "v1.5", "action_ts": "1.3"}],
    }
    return urlencode({"payload": json.dumps(payload)})


def _request_state(request: AsyncBoltRequest) -> dict:
    state = dict(vars(request))
    state["context"] = dict(request.context)
    return state


@pytest.mark.parametrize(
    "text, content_type",
    [
        (_alert_click(), "application/x-www-form-urlencoded"),
        (urlencode({"command": "/genie", "text": "status é+&=", "user_id": "U1", "team_id": "T1"}), None),
        (json.dumps({"type": "event_callback", "team_id": "T1", "event": {"type": "app_mention"}}), "application/json"),
        ("", "application/x-www-form-urlencoded"),
        ("payload=%E2%82&x=%zz+%F0%9F", "application/x-www-form-urlencoded; charset=utf-8"),
    ],
)
def test_the_request_handed_to_bolt_is_the_one_bolt_builds(text, content_type):
    headers = {"content-type": content_type, "x-slack-request-timestamp": "1", "x-slack-signature": "v0=0"}
    headers = {k: v for k, v in headers.items() if v is not None}
    query = {"q": "1"}
    ours = _outcome(lambda: _request_state(bolt_request(text, headers, query)))
    bolts = _outcome(lambda: _request_state(AsyncBoltRequest(body=text, headers=headers, query=query)))
    assert ours == bolts
    if ours[0] == "raised":  # (the last body: its payload is not JSON, for either)
        assert ours[1] is json.JSONDecodeError
        return
    assert ours[1]["raw_body"] == text  # what Bolt's own signature check reads


def test_a_signed_click_goes_through_the_screen_as_bolt_would_parse_it_and_a_tampered_one_does_not():
    text = _alert_click()
    ts = int(time.time())
    headers = {
        "content-type": "application/x-www-form-urlencoded",
        "x-slack-request-timestamp": str(ts),
        "x-slack-signature": sign(SIGNING_SECRET, ts, text),
    }
    request = screen(text.encode(), headers, SIGNING_SECRET)
    assert isinstance(request, AsyncBoltRequest)
    assert _request_state(request) == _request_state(AsyncBoltRequest(body=text, headers=headers))
    # The signature is over the raw body: one byte changed (an escape Bolt would decode the
    # same way) is refused before anything is parsed.
    assert screen(text.replace("%22", "%22", 1).replace("%7B", "%7b", 1).encode(), headers, SIGNING_SECRET) == (
        401,
        '{"error": "invalid request"}',
    )
