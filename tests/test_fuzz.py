"""Property-based fuzzing (hypothesis) of every entry point: Slack payloads to /slack/events,
the OpsGenie-compatible alert API, the web forms and the link-token paths.

The property, for every generated request: the answer is a 4xx or a polite Slack answer
(200, never a 5xx), nothing is logged at ERROR (an exception swallowed after Slack's ack is a
crash too), and the database is unchanged — except for exactly what a refused request may
legitimately write, which ``_allowed`` spells out table by table:

- a denied click: its ``denied`` row on the alert's timeline, and for an unconnected clicker the
  one-time Connect link offered in the refusal (a ``link_request`` of *that* Slack identity,
  superseding that identity's older ones);
- ``/genie connect`` by an unconnected identity: the same link request;
- an event: its ``event_id`` in ``slack_event`` (retries are deduplicated on it); a click or a
  slash command: the digest of its signed body there too (replays are);
- a refused click or a ``/genie connect``: a ``slack_throttle`` row (the per-identity rate limit);
- a failed sign-in: a ``signin_failure`` row (the rate limit).

Each test runs ``GENIE_FUZZ_EXAMPLES`` examples (default below, sized for CI on both databases)
against one real server; the numbers tried are reported for SECURITY.md. Each promise is also
checked by explicit examples that run whatever hypothesis draws. The bulk of the inputs —
those that must change nothing at all — go through ``test_fuzz_bulk_hostile_inputs_change_nothing``,
in-process (``GENIE_FUZZ_BULK`` per database; ``GENIE_FUZZ_SEED`` replays a run).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import os
import posixpath
import queue
import random
import re
import string
import time
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from bot.services import alerts, teams
from bot.web.limits import DEFAULT_MAX_BODY, SLACK_MAX_BODY
from tests.conftest import SIGNING_SECRET
from tests.fake_slack import TEAM_DOMAIN, TEAM_ID
from tests.hardening import as_dicts, bolt_idle, changes, outbox_idle, report, snapshot
from tests.slack_driver import sign
from tests.test_alert_gate import CHANNEL, _fire, world  # noqa: F401 - the fixture

EXAMPLES = int(os.environ.get("GENIE_FUZZ_EXAMPLES", "0")) or None


async def explore(examples: int, *strategies, body) -> None:
    """Run ``body(*drawn)`` for ``examples`` generated inputs. Hypothesis drives a plain function
    in a worker thread; each example runs as a coroutine on this test's event loop, where the
    server under test runs too (so it keeps serving between examples)."""
    loop = asyncio.get_running_loop()

    @fuzz_settings(examples)
    @given(st.tuples(*strategies))
    def example(drawn):
        # Hypothesis draws only on its own thread: ``st.data()`` draws made by the coroutine are
        # handed over to this thread and answered here while the coroutine waits.
        asked: queue.Queue = queue.Queue()

        class Draws:
            def __init__(self, real) -> None:
                self.real = real

            def draw(self, strategy, label=None):
                answer: concurrent.futures.Future = concurrent.futures.Future()
                asked.put((self.real, strategy, label, answer))
                return answer.result()

        args = [Draws(d) if type(d).__name__ == "DataObject" else d for d in drawn]
        running = asyncio.run_coroutine_threadsafe(body(*args), loop)
        while True:
            try:
                real, strategy, label, answer = asked.get(timeout=0.01)
            except queue.Empty:
                if running.done():
                    break
                continue
            try:
                answer.set_result(real.draw(strategy, label))
            except BaseException as err:  # e.g. hypothesis' StopTest: re-raised in the coroutine
                answer.set_exception(err)
        running.result()

    await loop.run_in_executor(None, example)


def fuzz_settings(default: int):
    return settings(
        max_examples=EXAMPLES or default,
        deadline=None,
        database=None,
        derandomize=False,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
        ],
    )


# --- strategies ------------------------------------------------------------------------------------
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
giant = st.sampled_from([10_000, 100_000, 400_000]).map(lambda n: "x" * n)
hostile_text = st.one_of(
    st.text(max_size=60),
    giant,
    st.sampled_from(
        [
            "",
            " ",
            "\x00",
            "\ud800",
            "'; DROP TABLE alert; --",
            "<script>alert(1)</script>",
            "../../etc/passwd",
            "%00",
            "ｃｏｎｎｅｃｔ",
            "connect " + "x" * 5000,
            "٣",
            "1e309",
            "-1",
            "9" * 40,
        ]
    ),
)

#: Slack identities that may not act on Payments' alerts: Mallory (connected, but in Search), an
#: unconnected person, and Alice's user id from another workspace and from a foreign Grid org.
HOSTILE = [
    {"user": "U0MALLORY", "team": TEAM_ID, "enterprise": None, "linked": True},
    {"user": "U0STRANGER", "team": TEAM_ID, "enterprise": None, "linked": False},
    {"user": "U0ALICE", "team": "T0OTHERWS1", "enterprise": None, "linked": False},
    {"user": "U0ALICE", "team": TEAM_ID, "enterprise": "E0EVILORG1", "linked": False},
]
UNLINKED = [h for h in HOSTILE if not h["linked"]]
ALERT_ACTIONS = ["alert_acknowledge", "alert_close", "alert_assign"]


def _drop_or_mangle(draw, payload: dict, paths: list[tuple]) -> None:
    """Delete a field, or give it a wrong type or a giant value (or leave it alone)."""
    how = draw(st.sampled_from(["keep"] * 5 + ["delete", "wrong_type", "giant"]))
    if how == "keep":
        return
    path = draw(st.sampled_from(paths))
    node = payload
    for key in path[:-1]:
        node = node.get(key) if isinstance(node, dict) else node[key] if isinstance(node, list) and node else None
        if node is None:
            return
    last = path[-1]
    if isinstance(node, list):
        if not node:
            return
        last = 0
    if how == "delete" and isinstance(node, dict):
        node.pop(last, None)
    elif how == "wrong_type":
        node[last] = draw(json_values)
    else:
        node[last] = draw(giant)


@st.composite
def block_actions(
    draw, alert_ids: dict[str, int], user_ids: dict[str, int], avoid: frozenset[int] = frozenset()
) -> tuple[dict, dict]:
    """``avoid``: alert ids some hostile clicker may legitimately act on (Mallory is in Search)."""
    who = draw(st.sampled_from(HOSTILE))
    action_id = draw(
        st.sampled_from(ALERT_ACTIONS * 4 + ["connect_link", "home_disconnect", "alert_delete", ""])
        | st.text(max_size=30)
    )
    if action_id == "home_disconnect" and who["linked"]:
        action_id = "alert_close"  # Mallory disconnecting herself is allowed, not hostile
    target = draw(
        (
            st.sampled_from(list(alert_ids.values()))
            | st.integers(min_value=-5, max_value=10)
            | st.integers(min_value=2**31 - 2, max_value=2**64)
            | st.sampled_from([0, 2**31 - 1, 2**31, 2**53, 2**63])
        ).filter(lambda t: t not in avoid)
    )
    value_kind = draw(st.sampled_from(["forged", "forged", "assign", "json", "text", "giant", "missing"]))
    value: Any = {
        "forged": lambda: json.dumps({"alert": target}),
        "assign": lambda: json.dumps(
            {
                "alert": target,
                "user": draw(
                    st.sampled_from(list(user_ids.values())) | st.integers(min_value=-(2**40), max_value=2**64)
                ),
            }
        ),
        "json": lambda: json.dumps(draw(json_values)),
        "text": lambda: draw(hostile_text),
        "giant": lambda: json.dumps({"alert": target, "pad": "x" * 5000}),
        "missing": lambda: None,
    }[value_kind]()
    action: dict[str, Any] = {
        "action_id": action_id,
        "block_id": draw(st.text(max_size=10)),
        "type": "button",
        "action_ts": f"{time.time():.6f}",
        "text": {"type": "plain_text", "text": "x"},
    }
    if value is not None:
        action["value"] = value
    if action_id == "alert_assign" and draw(st.booleans()):
        action = {
            "action_id": action_id,
            "block_id": "b1",
            "type": "static_select",
            "selected_option": {"text": {"type": "plain_text", "text": "Bob"}, "value": value},
        }
    payload: dict[str, Any] = {
        "type": "block_actions",
        "api_app_id": "A0GENIE",
        "token": "legacy",
        "trigger_id": "1.2.3",
        "team": {
            "id": who["team"],
            "domain": TEAM_DOMAIN,
            **({"enterprise_id": who["enterprise"]} if who["enterprise"] else {}),
        },
        "enterprise": {"id": who["enterprise"], "name": "Evil"} if who["enterprise"] else None,
        "is_enterprise_install": False,
        "user": {"id": who["user"], "username": "x", "team_id": who["team"]},
        "container": {"type": "message", "message_ts": "1700000000.000100", "channel_id": CHANNEL},
        "channel": {"id": CHANNEL, "name": "alerts"},
        "response_url": "RESPONSE_URL",
        "actions": [action],
    }
    _drop_or_mangle(
        draw,
        payload,
        [
            ("actions",),
            ("actions", 0, "action_id"),
            ("actions", 0, "value"),
            ("user",),
            ("user", "id"),
            ("team",),
            ("team", "domain"),
            ("container",),
            ("channel",),
            ("response_url",),
            ("type",),
            ("actions", 0),
        ],
    )
    return who, payload


@st.composite
def slash_commands(draw) -> tuple[dict, dict]:
    who = draw(st.sampled_from(UNLINKED))
    text = draw(st.sampled_from(["connect", "status", "disconnect", "help", "", "CONNECT  now", "link"]) | hostile_text)
    form: dict[str, Any] = {
        "token": "legacy",
        "team_id": who["team"],
        "team_domain": draw(st.sampled_from([TEAM_DOMAIN, ""]) | st.text(max_size=30)),
        "channel_id": "C0GENERAL",
        "user_id": who["user"],
        "user_name": "x",
        "command": draw(st.sampled_from(["/genie", "/genie", "/other", ""])),
        "text": text,
        "api_app_id": "A0GENIE",
        "response_url": "RESPONSE_URL",
        "trigger_id": "1.2.3",
    }
    if who["enterprise"]:
        form["enterprise_id"] = who["enterprise"]
    # Any field may go missing, except enterprise_id: without it a foreign org's U0ALICE *is*
    # Alice of this workspace, who is linked and may legitimately run /genie connect.
    for key in draw(st.lists(st.sampled_from(sorted(k for k in form if k != "enterprise_id")), max_size=3)):
        form.pop(key, None)
    return who, form


@st.composite
def events(draw) -> dict:
    who = draw(st.sampled_from(UNLINKED + HOSTILE[:1]))
    event: Any = {
        "type": draw(
            st.sampled_from(["app_home_opened", "message", "app_uninstalled", "tokens_revoked", "app_mention"])
            | st.text(max_size=20)
        ),
        "user": who["user"],
        "channel": "D0HOME",
        "tab": draw(st.sampled_from(["home", "messages", ""]) | st.text(max_size=10)),
        "event_ts": "1.0",
    }
    envelope: dict[str, Any] = {
        "token": "legacy",
        "team_id": who["team"],
        "api_app_id": "A0GENIE",
        "event": event,
        "type": draw(
            st.sampled_from(["event_callback", "event_callback", "url_verification", "app_rate_limited"])
            | st.text(max_size=20)
        ),
        "event_id": draw(st.text(min_size=1, max_size=30) | st.sampled_from(["Ev0SAME", "x" * 100]) | json_values),
        "event_time": int(time.time()),
        "challenge": draw(st.text(max_size=20)),
        "authorizations": [{"team_id": who["team"], "user_id": "U0GENIEBOT", "is_bot": True}],
    }
    if event["type"] in ("app_uninstalled", "tokens_revoked"):
        event["type"] = "app_home_opened"  # these would really uninstall: not hostile input
    _drop_or_mangle(
        draw,
        envelope,
        [
            ("event",),
            ("event", "type"),
            ("event", "user"),
            ("team_id",),
            ("event_id",),
            ("authorizations",),
            ("type",),
            ("event", "tab"),
        ],
    )
    return envelope


# --- checking one request ----------------------------------------------------------------------------
def _allowed(diff: dict[str, tuple[list, list]], clicker: dict | None) -> list[str]:
    """What in ``diff`` a refused request may not write (empty: all of it is allowed)."""
    problems = []
    for table, (added, removed) in diff.items():
        new, gone = as_dicts(table, added), as_dicts(table, removed)
        if table == "alert_event" and not gone and all(r["outcome"] == "denied" and r["via"] == "slack" for r in new):
            continue
        if table in ("slack_event", "slack_throttle") and not gone:  # seen ids and bodies; rate-limit counts
            continue
        if table == "signin_failure" and not gone:
            continue
        if table == "link_request" and clicker is not None and not clicker["linked"]:
            workspace = clicker["enterprise"] or clicker["team"]
            ours = all(r["workspace_id"] == workspace and r["slack_user_id"] == clicker["user"] for r in new + gone)
            fresh = all(r["consumed_at"] is None for r in new)
            superseded = len(gone) <= len([r for r in new if r["superseded_at"] is not None])
            if ours and fresh and superseded:
                continue
        problems.append(f"{table}: added {new} removed {gone}")
    return problems


class Checker:
    """Runs one generated request: snapshot, send, wait for Genie's work after the ack,
    snapshot; checks the answer, the log and the database."""

    def __init__(self, genie, caplog) -> None:
        self.genie, self.caplog = genie, caplog
        self.tried = 0
        self.statuses: dict[int, int] = {}

    async def __call__(self, send, clicker: dict | None = None, ok=(200,), may_write: bool = True):
        genie = self.genie
        await outbox_idle(genie)  # the worker's own writes (earlier posts) are not this request's
        genie.fake.clear()
        self.caplog.clear()
        before = await snapshot(genie.sessionmaker)
        response = await send()
        await bolt_idle()
        after = await snapshot(genie.sessionmaker)
        self.before, self.after = before, after
        self.tried += 1
        self.statuses[response.status_code] = self.statuses.get(response.status_code, 0) + 1
        assert response.status_code < 500, (response.status_code, response.text[:300])
        assert response.status_code in ok or 400 <= response.status_code < 500, response.status_code
        errors = [f"{r.name}: {r.getMessage()}" for r in self.caplog.records if r.levelno >= logging.ERROR]
        assert not errors, errors
        diff = changes(before, after)
        if callable(may_write):
            problems = may_write(diff)
        else:
            problems = _allowed(diff, clicker) if may_write else [f"{t}: {d}" for t, d in diff.items()]
        assert not problems, problems
        return response


def _form(fields: dict[str, Any]) -> bytes:
    """Form-encoded as a browser or Slack would, lone surrogates and all (as their UTF-8 bytes)."""
    return urlencode({k: str(v) for k, v in fields.items()}, encoding="utf-8", errors="surrogatepass").encode()


def _signed(body: str, content_type: str, secret: str = SIGNING_SECRET) -> dict[str, str]:
    ts = int(time.time())
    return {
        "Content-Type": content_type,
        "X-Slack-Request-Timestamp": str(ts),
        "X-Slack-Signature": sign(secret, ts, body),
    }


@pytest.fixture
async def fuzz_world(world):
    """Two open alerts (Payments and Search) posted to Slack, and the people's ids."""
    payments, _ = await _fire(world)
    search, _ = await _fire(world, message="Index lag", team="Search")
    users = dict((email, uid) for uid, email in await world.rows('SELECT id, email FROM "user"'))
    return world, {"payments": payments, "search": search}, users


def _polite(response) -> None:
    """A Slack answer: empty, or JSON an ephemeral message / Slack understands."""
    if response.status_code == 200 and response.content and "json" in response.headers.get("content-type", ""):
        body = response.json()
        assert isinstance(body, dict)
        assert body.get("response_type", "ephemeral") == "ephemeral" or "challenge" in body


# --- Slack ---------------------------------------------------------------------------------------------
async def test_fuzz_slack_interactivity(fuzz_world, caplog):
    genie, alert_ids, users = fuzz_world
    check = Checker(genie, caplog)

    async def run(data):
        # Only Payments' alert: none of the hostile clickers may act on it (Mallory is in Search).
        who, payload = data.draw(
            block_actions({"payments": alert_ids["payments"]}, users, avoid=frozenset({alert_ids["search"]}))
        )
        body = urlencode({"payload": json.dumps(payload).replace("RESPONSE_URL", genie.fake.response_url("fz"))})
        response = await check(
            lambda: genie.http.post(
                "/slack/events", content=body.encode(), headers=_signed(body, "application/x-www-form-urlencoded")
            ),
            clicker=who,
        )
        _polite(response)

    await explore(150, st.data(), body=run)
    # Always tried, whatever hypothesis draws: ids around the databases' INTEGER limit.
    for value in (2**31 - 1, 2**31, 2**40, 2**53 - 1, 2**63, -1, 0):
        for action_id in ("alert_close", "alert_assign"):
            payload = {
                "type": "block_actions",
                "team": {"id": TEAM_ID, "domain": TEAM_DOMAIN},
                "user": {"id": "U0MALLORY", "team_id": TEAM_ID},
                "response_url": genie.fake.response_url("fz"),
                "container": {"type": "message", "message_ts": "1.2", "channel_id": CHANNEL},
                "actions": [
                    {
                        "action_id": action_id,
                        "block_id": "b",
                        "type": "button",
                        "value": json.dumps({"alert": value, "user": value}),
                    }
                ],
            }
            body = urlencode({"payload": json.dumps(payload)})
            await check(
                lambda: genie.http.post(
                    "/slack/events", content=body.encode(), headers=_signed(body, "application/x-www-form-urlencoded")
                ),
                clicker=HOSTILE[0],
            )
    # Nothing hostile acted: Payments' alert is as it was posted.
    assert (
        await genie.scalar(
            "SELECT count(*) FROM alert WHERE acknowledged = :t OR status <> 'open' OR owner_user_id IS NOT NULL",
            t=True,
        )
        == 0
    )
    report("test_fuzz::slack_interactivity", inputs=check.tried, statuses=check.statuses)


async def test_fuzz_slack_commands_and_events(fuzz_world, caplog):
    genie, _, _ = fuzz_world
    check = Checker(genie, caplog)

    async def run(data):
        kind = data.draw(st.sampled_from(["command", "event", "raw"]))
        who = None
        if kind == "command":
            who, form = data.draw(slash_commands())
            body = _form(
                {k: str(v).replace("RESPONSE_URL", genie.fake.response_url("fz")) for k, v in form.items()}
            ).decode()
            headers = _signed(body, "application/x-www-form-urlencoded")
        elif kind == "event":
            body = json.dumps(data.draw(events()))
            headers = _signed(body, "application/json")
        else:  # anything at all, correctly signed
            body = data.draw(
                st.text(max_size=300)
                | st.sampled_from(
                    [
                        "payload=",
                        "payload=%7B%7D",
                        "payload=null",
                        "payload=%5B1%5D",
                        "payload=x",
                        "{}",
                        "[]",
                        "null",
                        "payload=" + "7B" * 3000,
                    ]
                )
            )
            headers = _signed(
                body,
                data.draw(st.sampled_from(["application/json", "application/x-www-form-urlencoded", "text/plain", ""])),
            )
        response = await check(
            lambda: genie.http.post("/slack/events", content=body.encode("utf-8", "surrogatepass"), headers=headers),
            clicker=who,
        )
        _polite(response)

    await explore(120, st.data(), body=run)
    report("test_fuzz::slack_commands_events_raw", inputs=check.tried, statuses=check.statuses)


async def test_fuzz_unsigned_and_wrongly_signed_slack_requests(fuzz_world, caplog):
    """Without a valid signature nothing is even parsed: 401 and no change, whatever the body."""
    genie, alert_ids, users = fuzz_world
    check = Checker(genie, caplog)

    async def run(data):
        _, payload = data.draw(block_actions({"payments": alert_ids["payments"]}, users))
        body = urlencode({"payload": json.dumps(payload)})
        how = data.draw(st.sampled_from(["other_secret", "stale", "garbage", "missing", "future"]))
        ts = int(time.time()) + {"stale": -400, "future": 400}.get(how, 0)
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Slack-Request-Timestamp": str(ts),
            "X-Slack-Signature": sign("an-attackers-guess" if how == "other_secret" else SIGNING_SECRET, ts, body),
        }
        if how == "garbage":
            headers["X-Slack-Signature"] = data.draw(
                st.text(alphabet=string.ascii_letters + string.digits + "=-_", max_size=80)
            )
        if how == "missing":
            del headers["X-Slack-Signature"]
        response = await check(
            lambda: genie.http.post("/slack/events", content=body.encode(), headers=headers), ok=(), may_write=False
        )
        # A body over the cap is refused while it streams in, before its signature is read.
        assert response.status_code == (413 if len(body.encode()) > SLACK_MAX_BODY else 401)

    await explore(40, st.data(), body=run)
    report("test_fuzz::slack_unsigned", inputs=check.tried, statuses=check.statuses)


# --- the alert API -----------------------------------------------------------------------------------
FIELD_LIMITS = {name: limit for name, limit in alerts.LIMITS.items() if name != "note"} | {"note": 25000}


def _text_near(limit: int):
    return st.sampled_from([0, 1, limit - 1, limit, limit + 1]).flatmap(
        lambda n: st.sampled_from(["a" * n, "é" * n, ("x" * max(n - 1, 0)) + "\x00", " " * n])
    )


@st.composite
def create_bodies(draw) -> dict:
    body: dict[str, Any] = {}
    for name, limit in FIELD_LIMITS.items():
        if draw(st.booleans()):
            body[name] = draw(_text_near(limit) | json_values)
    if draw(st.booleans()):
        body["message"] = draw(st.text(min_size=1, max_size=20).filter(str.strip))  # often valid
    if draw(st.booleans()):
        body["priority"] = draw(st.sampled_from(["P1", "P3", "P5", "p1", "P6", "", None]) | json_values)
    if draw(st.booleans()):
        n = draw(st.sampled_from([0, 1, 19, 20, 21]))
        size = draw(st.sampled_from([1, 49, 50, 51]))
        body["tags"] = draw(
            st.sampled_from([["t%0*d" % (size - 1, i) for i in range(n)], ["dup"] * n])
            | st.lists(json_values, max_size=3)
        )
    if draw(st.booleans()):
        total = draw(st.sampled_from([10, 7999, 8000, 8001]))
        body["details"] = draw(
            st.sampled_from([{"k": "v" * (total - 1)}, {"k": 1, "b": True, "f": 1.5}])
            | st.dictionaries(st.text(max_size=5), json_values, max_size=3)
            | json_values
        )
    if draw(st.booleans()):
        body["responders"] = draw(
            st.sampled_from(
                [
                    [{"type": "team", "name": "Payments"}],
                    [{"type": "team", "name": "Search"}],
                    [{"type": "team", "name": "Nope"}],
                    [{"type": "team", "id": "99999999999"}],
                    [{"type": "user", "username": "a@b.c"}] * 51,
                ]
            )
            | st.lists(json_values, max_size=3)
        )
    return body


def _expect_valid(body: dict) -> bool:
    """An oracle written from the README's limits, independent of the code under test."""
    message = body.get("message")
    if not isinstance(message, str) or not message.strip() or len(message) > 130:
        return False
    for name, limit in FIELD_LIMITS.items():
        value = body.get(name)
        if name != "message" and value is not None and (not isinstance(value, str) or len(value) > limit):
            return False
    if body.get("priority") is not None and body["priority"] not in ("P1", "P2", "P3", "P4", "P5"):
        return False
    tags = body.get("tags")
    if tags and (
        not isinstance(tags, list) or len(tags) > 20 or not all(isinstance(t, str) and len(t) <= 50 for t in tags)
    ):
        return False
    details = body.get("details")
    if details:
        if not isinstance(details, dict) or not all(isinstance(v, (str, int, float, bool)) for v in details.values()):
            return False
        as_text = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in details.items()}
        if sum(len(k) + len(v) for k, v in as_text.items()) > 8000:
            return False
    responders = body.get("responders")
    if responders:
        if (
            not isinstance(responders, list)
            or len(responders) > 50
            or not all(
                isinstance(r, dict)
                and r.get("type") in ("team", "user", "escalation", "schedule")
                and any(isinstance(r.get(k), str) and 0 < len(r[k]) <= 512 for k in ("id", "name", "username"))
                for r in responders
            )
        ):
            return False
        teams = [r for r in responders if r.get("type") == "team"]
        if teams and teams[0].get("name") != "Payments":
            return False  # another team (403) or no such team (422)

    def storable(v: Any) -> bool:
        if isinstance(v, str):
            return "\x00" not in v and not any(0xD800 <= ord(c) <= 0xDFFF for c in v)
        if isinstance(v, dict):
            return all(storable(k) and storable(x) for k, x in v.items())
        if isinstance(v, list):
            return all(storable(x) for x in v)
        return True

    return storable(body)


def _created_only(diff) -> list[str]:
    """An accepted create writes the alert (or its de-duplication), its timeline, its Slack
    post and the request's status — nothing else."""
    return [table for table in diff if table not in {"alert", "alert_event", "outbox", "api_request"}]


async def _team_key(genie, team: str) -> str:
    async with genie.sessionmaker.begin() as s:
        return await alerts.team_key(s, await teams.require_team(s, team))


async def test_fuzz_alert_api_create(fuzz_world, caplog):
    genie, _, _ = fuzz_world
    key = await _team_key(genie, "Payments")
    check = Checker(genie, caplog)
    accepted = refused = 0

    async def run(body, encoding, raw):
        nonlocal accepted, refused
        content = json.dumps(body).encode() if encoding == "json" else raw
        valid = encoding == "json" and _expect_valid(body)
        response = await check(
            lambda: genie.http.post(
                "/v2/alerts",
                content=content,
                headers={"Authorization": f"GenieKey {key}", "Content-Type": "application/json"},
            ),
            ok=(202,),
            may_write=_created_only if valid else False,
        )
        if valid:
            assert response.status_code == 202, (body, response.text)
            accepted += 1
        else:
            assert 400 <= response.status_code < 500, (body, response.status_code, response.text)
            refused += 1
        assert response.json().get("requestId")

    await explore(
        150, create_bodies(), st.sampled_from(["json", "json", "json", "raw"]), st.binary(max_size=60), body=run
    )
    report(
        "test_fuzz::alert_api_create", inputs=check.tried, accepted=accepted, refused=refused, statuses=check.statuses
    )


async def test_fuzz_alert_api_other_keys_paths_and_queries(fuzz_world, caplog):
    """Another team's key, no key, odd keys; every action on every identifier form; random
    query strings: 4xx or a read, and nothing written."""
    genie, alert_ids, users = fuzz_world
    search_key = await _team_key(genie, "Search")
    await _team_key(genie, "Payments")
    payments_uid = await genie.scalar("SELECT uid FROM alert WHERE id = :a", a=alert_ids["payments"])
    check = Checker(genie, caplog)

    async def run(data):
        key = data.draw(
            st.sampled_from(
                [f"GenieKey {search_key}"] * 6
                + [
                    "GenieKey " + "0" * 36,
                    "",
                    "Basic abc",
                    f"GenieKey {search_key}x",
                    "GenieKey",
                    f"genie {search_key}",
                ]
            )
            | st.text(alphabet=string.ascii_letters + string.digits + " -", max_size=50).map(str.strip)
        )
        ident = data.draw(
            st.sampled_from([payments_uid, str(alert_ids["payments"]), "Checkout error", "%00", "..", "x" * 600])
            | st.text(max_size=30)
        )
        id_type = data.draw(st.sampled_from(["id", "tiny", "alias", "", "other"]))
        action = data.draw(
            st.sampled_from(["acknowledge", "close", "assign", "notes", "", "logs", "snooze"] + NEW_ACTIONS)
        )
        method = data.draw(st.sampled_from(["POST", "GET", "PUT", "DELETE"]))
        if method != "GET" and key.split()[-1:] == [search_key]:  # Search's key on Payments' alert only
            ident = data.draw(st.sampled_from([payments_uid, str(alert_ids["payments"]), "Checkout error"]))
        params = {
            "identifierType": id_type,
            **data.draw(
                st.dictionaries(
                    st.sampled_from(["query", "limit", "offset", "sort", "order", "direction"]),
                    st.text(max_size=20),
                    max_size=3,
                )
            ),
        }
        path = (
            data.draw(st.sampled_from(["", "/jsm/ops/integration"]))
            + f"/v2/alerts/{quote(ident, safe='')}"
            + (f"/{action}" if action else "")
            + data.draw(st.sampled_from(["", "/"]))
        )
        if data.draw(st.booleans()):
            path = data.draw(st.sampled_from(["/v2/alerts", "/v2/alerts/", "/v2/alerts/count"]))
        body = data.draw(
            st.sampled_from(
                [
                    {"user": "x", "note": "n"},
                    {"owner": {"username": "bob@example.com"}},
                    {"owner": {"id": str(users["bob@example.com"])}},
                ]
            )
            | json_values
        )
        if path.startswith("/v2/alerts") and path.count("/") <= 3 and not path.endswith("/count"):
            method = "GET"  # creating with Search's own key is allowed: test_fuzz_alert_api_create covers it
        headers = {"Authorization": key} if key else {}

        async def send():
            return await genie.http.request(
                method,
                path,
                params=params,
                content=json.dumps(body).encode(),
                headers={**headers, "Content-Type": "application/json"},
            )

        response = await check(send, ok=(200,), may_write=False)
        if response.status_code == 200:
            assert method in ("GET", "HEAD") and key.split()[-1:] == [search_key]
            assert payments_uid not in response.text  # Search's key never sees Payments' alert

    # Explicit examples, whatever hypothesis draws: Search's key on every read and action of
    # Payments' alert, by every identifier form — each "not found", nothing written.
    for ident, id_type in [(payments_uid, "id"), (str(alert_ids["payments"]), "tiny"), ("Checkout error", "alias")]:
        for method, action, body in [
            ("GET", "", None),
            ("GET", "/notes", None),
            ("GET", "/logs", None),
            ("POST", "/acknowledge", {}),
            ("POST", "/close", {}),
            ("POST", "/notes", {"note": "n"}),
            ("POST", "/assign", {"owner": {"username": "bob@example.com"}}),
        ]:

            async def send(method=method, action=action, body=body, ident=ident, id_type=id_type):
                return await genie.http.request(
                    method,
                    f"/v2/alerts/{quote(ident, safe='')}{action}",
                    params={"identifierType": id_type},
                    headers={"Authorization": f"GenieKey {search_key}"},
                    **({"json": body} if body is not None else {}),
                )

            response = await check(send, ok=(), may_write=False)
            assert response.status_code == 404 and payments_uid not in response.text, (ident, action)
    await explore(120, st.data(), body=run)
    assert (
        await genie.scalar(
            "SELECT count(*) FROM alert WHERE acknowledged = :t OR status <> 'open' OR owner_user_id IS NOT NULL",
            t=True,
        )
        == 0
    )
    report("test_fuzz::alert_api_keys_paths_queries", inputs=check.tried, statuses=check.statuses)


#: The calls on one alert beyond acknowledge / close / assign / notes (method, path after the id).
NEW_ROUTES = [
    ("POST", "unacknowledge"),
    ("POST", "snooze"),
    ("POST", "escalate"),
    ("POST", "responders"),
    ("POST", "teams"),
    ("POST", "tags"),
    ("DELETE", "tags"),
    ("POST", "details"),
    ("DELETE", "details"),
    ("PUT", "message"),
    ("PUT", "description"),
    ("PUT", "priority"),
    ("GET", "recipients"),
    ("POST", "actions/Restart"),
    ("POST", "actions/" + "x" * 101),
]
NEW_ACTIONS = sorted({path for _, path in NEW_ROUTES})


@st.composite
def new_route_bodies(draw, users: dict[str, int]) -> dict:
    """Bodies shaped like each new route's (right field, wrong type, at and past its limits,
    other teams and unknown people) and anything at all."""
    field = draw(
        st.sampled_from(
            [
                "tags",
                "details",
                "message",
                "description",
                "priority",
                "endTime",
                "team",
                "responder",
                "escalation",
                "user",
                "note",
            ]
        )
    )
    value = draw(
        st.one_of(
            json_values,
            hostile_text,
            _text_near(130),
            _text_near(15000),
            st.sampled_from(
                [
                    "P1",
                    "P9",
                    "2099-01-01T00:00:00Z",
                    "2020-01-01T00:00:00Z",
                    "9999-12-31T23:59:59+14:00",
                    "0001-01-01T00:00:00-12:00",
                    "tomorrow",
                ]
            ),
            st.lists(st.sampled_from(["a", "b" * 50, "c" * 51, "", " "]), max_size=25),
            st.dictionaries(
                st.sampled_from(["k", "x" * 9000, ""]), st.sampled_from(["v", 1, True, None, "y" * 8001]), max_size=3
            ),
            st.sampled_from(
                [
                    {"name": "Search"},
                    {"name": "Nope"},
                    {"id": "99999999999"},
                    {"id": "1"},
                    {"type": "team", "name": "Search"},
                    {"type": "user", "username": "mallory@example.com"},
                    {"type": "user", "id": str(users.get("mallory@example.com", 0))},
                    {"type": "user", "username": "nobody@example.com"},
                    {"type": "schedule", "id": "x"},
                ]
            ),
        )
    )
    body = {field: value}
    if draw(st.booleans()):
        body.update(draw(st.dictionaries(st.sampled_from(["user", "note", "source"]), hostile_text, max_size=2)))
    return body


async def test_fuzz_alert_api_new_routes_with_the_owning_key(fuzz_world, caplog):
    """Payments' own key on Payments' alert, every new route (with and without the slash,
    under /v2 and the JSM prefix), hostile bodies and query strings: a refusal is a 4xx that
    changes nothing; an accepted change writes only the alert, its timeline, its Slack update
    and the request status."""
    genie, alert_ids, users = fuzz_world
    key = await _team_key(genie, "Payments")
    uid = await genie.scalar("SELECT uid FROM alert WHERE id = :a", a=alert_ids["payments"])
    check = Checker(genie, caplog)
    done: dict[int, int] = {}

    async def run(data):
        method, action = data.draw(st.sampled_from(NEW_ROUTES))
        path = (
            data.draw(st.sampled_from(["", "/jsm/ops/integration"]))
            + f"/v2/alerts/{uid}/{action}"
            + data.draw(st.sampled_from(["", "/"]))
        )
        params = data.draw(
            st.dictionaries(
                st.sampled_from(["tags", "keys", "user", "note", "source"]),
                hostile_text.filter(lambda t: len(t) <= 10_000)  # URLs have a limit
                | st.sampled_from(["a,b", ",,,", "x" * 60, "a," * 60]),
                max_size=3,
            )
        )
        raw = data.draw(st.sampled_from(["json", "json", "json", "bytes"]))
        content = (
            json.dumps(data.draw(new_route_bodies(users))).encode()
            if raw == "json"
            else data.draw(st.binary(max_size=40))
        )

        query = urlencode(params, encoding="utf-8", errors="surrogatepass")  # lone surrogates as their bytes

        async def send():
            return await genie.http.request(
                method,
                f"{path}?{query}",
                content=content,
                headers={"Authorization": f"GenieKey {key}", "Content-Type": "application/json"},
            )

        response = await check(send, ok=(200, 202), may_write=_created_only)
        if response.status_code >= 400:
            assert not changes(check.before, check.after), (method, path, response.text)
        done[response.status_code] = done.get(response.status_code, 0) + 1

    await explore(100, st.data(), body=run)
    assert done.get(202), done  # some changes were accepted: the oracle saw both kinds
    report("test_fuzz::alert_api_new_routes", inputs=check.tried, statuses=check.statuses)


# --- web forms and token paths --------------------------------------------------------------------------
async def test_fuzz_web_forms_and_token_paths(fuzz_world, caplog):
    genie, alert_ids, users = fuzz_world
    browser = genie.browser()
    assert (await browser.login("alice@example.com")).status_code == 303
    alice_link = await genie.scalar(
        "SELECT l.id FROM slack_link l JOIN \"user\" u ON u.id = l.user_id WHERE u.email = 'alice@example.com'"
    )
    others = [i for (i,) in await genie.rows("SELECT id FROM slack_link WHERE id <> :a", a=alice_link)]
    await browser.get("/account")
    csrf = browser.last_csrf
    check = Checker(genie, caplog)
    tokens = (
        st.text(min_size=1, max_size=80)
        | st.sampled_from(["x" * 513, "x" * 5000, "a.b.c", "..", "%2e%2e", "%00", "Ik5vbmNlIg.ZZZ.abc", "%F0%9F%92%A9"])
    ).filter(lambda t: t not in (".", ".."))  # the client would resolve those to another path

    async def run(data):
        form_kind = data.draw(st.sampled_from(["login", "link_get", "link_post", "disconnect", "raw"]))
        address = data.draw(st.ip_addresses()).exploded
        headers = {"X-Forwarded-For": address}
        if form_kind == "login":
            form = {
                "csrf_token": csrf,
                "email": data.draw(hostile_text | st.emails()),
                "password": data.draw(hostile_text),
                "next": data.draw(
                    hostile_text
                    | st.sampled_from(["//evil.example", "https://evil.example/", "/\\evil.example", "/account"])
                ),
            }
            if data.draw(st.booleans()):
                form.pop(data.draw(st.sampled_from(sorted(form))))
            body = _form(form)
            response = await check(
                lambda: browser.http.post(
                    "/login", content=body, headers={**headers, "Content-Type": "application/x-www-form-urlencoded"}
                ),
                ok=(),
            )
            # Over the web routes' cap (bot.web.limits): 413 before anything reads it.
            assert response.status_code in ((413,) if len(body) > DEFAULT_MAX_BODY else (401, 403, 429)), (
                response.status_code
            )
        elif form_kind in ("link_get", "link_post"):
            token = quote(data.draw(tokens), safe="")
            if form_kind == "link_get":
                response = await check(lambda: browser.http.get(f"/link/{token}"), ok=(), may_write=False)
            else:
                form = {"csrf_token": csrf, "replace": data.draw(st.sampled_from(["yes", "no", ""]) | hostile_text)}
                response = await check(
                    lambda: browser.http.post(
                        f"/link/{token}",
                        content=_form(form),
                        headers={"Content-Type": "application/x-www-form-urlencoded"},
                    ),
                    ok=(),
                    may_write=False,
                )
            # 403: a form over 16 KiB is refused like a forged one ("reload the page and try again").
            assert response.status_code in (400, 403, 404, 405, 410, 413), response.status_code  # no redirects
        elif form_kind == "disconnect":
            link_id = data.draw(
                (
                    st.sampled_from([str(i) for i in others])
                    | st.sampled_from(["0", "-1", "9" * 30, "١٢", "1e3", " 1", "0x1", str(2**31), str(2**63)])
                    | st.text(min_size=1, max_size=20)
                ).filter(lambda s: not (re.fullmatch(r"[0-9]{1,9}", s) and int(s) == alice_link))
            )
            # (Alice's own link id, however it is spelled, would be a legitimate disconnect.)
            response = await check(
                lambda: browser.http.post(
                    f"/account/links/{quote(link_id, safe='')}/disconnect", data={"csrf_token": csrf}
                ),
                ok=(),
                may_write=False,
            )
            assert response.status_code in (404, 405), response.status_code
        else:
            raw = data.draw(
                st.binary(max_size=400)
                | st.sampled_from([b"csrf_token=" + csrf.encode() + b"&" * 5000, b"--x\r\n" * 50, b"a=" + b"b" * 20000])
            )
            ctype = data.draw(
                st.sampled_from(
                    [
                        "application/x-www-form-urlencoded",
                        "multipart/form-data; boundary=x",
                        "multipart/form-data",
                        "text/plain",
                        "application/json",
                    ]
                )
            )
            where = data.draw(
                st.sampled_from(["/login", "/logout", "/link/abc", f"/account/links/{others[0]}/disconnect"])
            )
            if where == "/logout" and raw.startswith(b"csrf_token="):
                raw = raw[1:]  # a valid form would sign Alice out: allowed, not hostile
            response = await check(
                lambda: browser.http.post(where, content=raw, headers={"Content-Type": ctype}), ok=()
            )
            assert response.status_code in (400, 401, 403, 404, 410, 413, 429), response.status_code
        location = response.headers.get("location", "")
        assert not location or (location.startswith("/") and not location.startswith("//")), location

    # Explicit examples, whatever hypothesis draws: Alice, signed in with a valid form, asks to
    # disconnect each other person's link — 404, nothing removed; hostile `next` targets on a
    # failed sign-in never redirect.
    for other in others:
        response = await check(
            lambda: browser.http.post(f"/account/links/{other}/disconnect", data={"csrf_token": csrf}),
            ok=(),
            may_write=False,
        )
        assert response.status_code == 404, other
    for target in ["https://evil.example/x", "//evil.example", "/\\evil.example", "javascript:alert(1)"]:
        form = {"csrf_token": csrf, "email": "alice@example.com", "password": "wrong", "next": target}
        response = await check(
            lambda: browser.http.post(
                "/login",
                content=_form(form),
                headers={"Content-Type": "application/x-www-form-urlencoded", "X-Forwarded-For": "198.51.100.7"},
            ),
            ok=(),
        )
        assert response.status_code in (401, 429) and "location" not in response.headers, target
    await explore(120, st.data(), body=run)
    # Alice's own session and link are intact, and nobody else's link was removed.
    assert (await browser.get("/account")).status_code == 200
    assert await genie.scalar("SELECT count(*) FROM slack_link") == len(others) + 1
    report("test_fuzz::web_forms_tokens", inputs=check.tried, statuses=check.statuses)


# --- heartbeats (OpsGenie's Heartbeat API) -----------------------------------------------------------
HEARTBEAT_UNITS = {"minutes": 1, "hours": 60, "days": 1440}


@st.composite
def heartbeat_bodies(draw) -> dict:
    body: dict[str, Any] = {}
    if draw(st.booleans()):  # often a valid create, then some fields changed below
        body = {
            "name": draw(st.text(alphabet=string.ascii_letters + "-_. é", min_size=1, max_size=30)),
            "interval": draw(st.integers(1, 600)),
            "intervalUnit": "minutes",
        }
    if draw(st.integers(0, 3)) == 0:
        body["name"] = draw(
            st.sampled_from(
                [
                    "nightly-backup",
                    "job-x",
                    "a/b",
                    " padded ",
                    "x" * 200,
                    "x" * 201,
                    "",
                    "tab\there",
                    "nul\x00",
                    "\ud800",
                ]
            )
            | st.text(min_size=1, max_size=12)
            | json_values
        )
    if draw(st.integers(0, 3)) == 0:
        body["interval"] = draw(st.sampled_from([0, 1, 10, 527040, 527041, -1, 1.5, True, "10", 10**12]) | json_values)
    if draw(st.integers(0, 3)) == 0:
        body["intervalUnit"] = draw(st.sampled_from(["minutes", "hours", "days", "weeks", "Minutes", ""]) | json_values)
    for name, limit in [("description", 10000), ("alertMessage", 130)]:
        if draw(st.integers(0, 3)) == 0:
            body[name] = draw(_text_near(limit) | json_values)
    if draw(st.integers(0, 3)) == 0:
        body["enabled"] = draw(st.sampled_from([True, False, None, "true", 1]) | json_values)
    if draw(st.integers(0, 3)) == 0:
        n = draw(st.sampled_from([0, 1, 20, 21]))
        size = draw(st.sampled_from([1, 50, 51]))
        body["alertTags"] = draw(
            st.sampled_from([["t%0*d" % (size - 1, i) for i in range(n)]]) | st.lists(json_values, max_size=3)
        )
    if draw(st.integers(0, 3)) == 0:
        body["alertPriority"] = draw(st.sampled_from(["P1", "P5", "p1", "P6", "", None]) | json_values)
    if draw(st.integers(0, 3)) == 0:
        body["ownerTeam"] = draw(st.sampled_from([{"name": "Search"}, {"id": "1"}, {}, {"name": 5}]) | json_values)
    return body


def _heartbeat_valid(body: dict, create: bool, existing: set[str], current: tuple[int, str]) -> bool:
    """An oracle written from the README's heartbeat rules, independent of the code under test."""

    def storable(v: Any) -> bool:
        if isinstance(v, str):
            return "\x00" not in v and not any(0xD800 <= ord(c) <= 0xDFFF for c in v)
        if isinstance(v, dict):
            return all(storable(k) and storable(x) for k, x in v.items())
        if isinstance(v, list):
            return all(storable(x) for x in v)
        return True

    if not storable(body):
        return False
    if create or "name" in body:
        name = body.get("name")
        if (
            not isinstance(name, str)
            or not name.strip()
            or len(name) > 200
            or name != name.strip()
            or "/" in name
            or any(ord(c) < 32 or ord(c) == 127 for c in name)
        ):
            return False
        if create and name in existing:
            return False  # 409
        if not create and name != "nightly-backup":
            return False  # no renaming
    interval, unit = body.get("interval"), body.get("intervalUnit")
    if create and (interval is None or unit is None):
        return False
    if interval is not None and (isinstance(interval, bool) or not isinstance(interval, int) or interval < 1):
        return False
    if unit is not None and (not isinstance(unit, str) or unit not in HEARTBEAT_UNITS):
        return False
    minutes = (interval if interval is not None else current[0]) * HEARTBEAT_UNITS[unit or current[1]]
    if minutes > 366 * 1440:
        return False
    for name, limit in [("description", 10000), ("alertMessage", 130)]:
        value = body.get(name)
        if value is not None and (not isinstance(value, str) or len(value) > limit):
            return False
    if body.get("enabled") is not None and not isinstance(body["enabled"], bool):
        return False
    tags = body.get("alertTags")
    if tags is not None and (
        not isinstance(tags, list) or len(tags) > 20 or not all(isinstance(t, str) and len(t) <= 50 for t in tags)
    ):
        return False
    if body.get("alertPriority") is not None and body["alertPriority"] not in ("P1", "P2", "P3", "P4", "P5"):
        return False
    owner = body.get("ownerTeam")
    if owner is not None and not (
        isinstance(owner, dict) and all(isinstance(owner.get(k), (str, type(None))) for k in ("id", "name"))
    ):
        return False
    return True


async def test_fuzz_heartbeat_api_bodies(fuzz_world, caplog):
    """Create and PATCH with every field at, below and above its limit, wrong types, NUL and lone
    surrogates, invalid JSON: accepted exactly when the oracle says valid (only the heartbeat
    table changes), else a 4xx that changes nothing."""
    genie, _, _ = fuzz_world
    key = await _team_key(genie, "Payments")
    headers = {"Authorization": f"GenieKey {key}", "Content-Type": "application/json"}
    assert (
        await genie.http.post(
            "/v2/heartbeats",
            headers=headers,
            json={"name": "nightly-backup", "interval": 10, "intervalUnit": "minutes", "enabled": True},
        )
    ).status_code == 201
    check = Checker(genie, caplog)
    accepted = refused = 0

    async def run(body, create, encoding, raw):
        nonlocal accepted, refused
        existing = {n for (n,) in await genie.rows("SELECT name FROM heartbeat")}
        [current] = await genie.rows("SELECT interval, interval_unit FROM heartbeat WHERE name = 'nightly-backup'")
        content = json.dumps(body).encode() if encoding == "json" else raw
        if encoding == "raw":  # random bytes: an empty body is {} (an empty PATCH changes nothing but is fine)
            try:
                body = json.loads(raw) if raw.strip() else {}
            except (ValueError, RecursionError):
                body = None
        valid = isinstance(body, dict) and _heartbeat_valid(body, create, existing, tuple(current))
        method, path = ("POST", "/v2/heartbeats") if create else ("PATCH", "/v2/heartbeats/nightly-backup")
        response = await check(
            lambda: genie.http.request(method, path, content=content, headers=headers),
            ok=(200, 201),
            may_write=(lambda diff: [t for t in diff if t != "heartbeat"]) if valid else False,
        )
        if valid:
            assert response.status_code == (201 if create else 200), (body, response.text)
            accepted += 1
        else:
            assert 400 <= response.status_code < 500, (body, response.status_code, response.text)
            refused += 1
        assert response.json().get("requestId")

    await explore(
        120,
        heartbeat_bodies(),
        st.booleans(),
        st.sampled_from(["json", "json", "json", "raw"]),
        st.binary(max_size=60),
        body=run,
    )
    report(
        "test_fuzz::heartbeat_api_bodies",
        inputs=check.tried,
        accepted=accepted,
        refused=refused,
        statuses=check.statuses,
    )


async def test_fuzz_heartbeat_api_other_keys_names_and_methods(fuzz_world, caplog):
    """Another team's key, no key, odd keys and Basic headers; hostile names; every method on every
    heartbeat path, with and without the slash and under the JSM prefix: 4xx (or Search's own
    empty reads), nothing written, Payments' heartbeat never seen or pinged."""
    genie, _, _ = fuzz_world
    search_key = await _team_key(genie, "Search")
    payments_key = await _team_key(genie, "Payments")
    assert (
        await genie.http.post(
            "/v2/heartbeats",
            headers={"Authorization": f"GenieKey {payments_key}"},
            json={"name": "nightly-backup", "interval": 10, "intervalUnit": "minutes", "enabled": True},
        )
    ).status_code == 201
    import base64

    basic = lambda text: "Basic " + base64.b64encode(text.encode("utf-8", "surrogatepass")).decode()  # noqa: E731
    check = Checker(genie, caplog)

    async def run(data):
        key = data.draw(
            st.sampled_from(
                [f"GenieKey {search_key}"] * 4
                + [
                    basic(f"alertmanager:{search_key}"),
                    basic(search_key),
                    basic(f"x:{payments_key}x"),
                    basic("x:"),
                    basic(":"),
                    "Basic %%%",
                    "Basic " + "A" * 5000,
                    "GenieKey " + "0" * 36,
                    "",
                    "Bearer abc",
                    "GenieKey",
                    basic("u:\x00"),
                ]
            )
            | st.text(alphabet=string.ascii_letters + string.digits + " -:=", max_size=50)
        )
        key = key.strip()  # HTTP drops a header value's surrounding blanks (httpx will not send them)
        name = data.draw(
            st.sampled_from(["nightly-backup", "NIGHTLY-BACKUP", "%00", "..", "x" * 600, " ", "a b"])
            | st.text(max_size=30)
        )
        action = data.draw(st.sampled_from(["", "ping", "enable", "disable", "snooze", "ping/extra"]))
        method = data.draw(st.sampled_from(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]))
        prefix = data.draw(st.sampled_from(["", "/jsm/ops/integration"]))
        path = f"{prefix}/v2/heartbeats/{quote(name, safe='')}" + (f"/{action}" if action else "")
        if data.draw(st.booleans()):
            path += "/"
        if data.draw(st.integers(0, 5)) == 0:
            path = f"{prefix}/v2/heartbeats" + ("/" if data.draw(st.booleans()) else "")
            if method == "POST" and search_key in key:
                method = "GET"  # Search creating its own heartbeat is allowed (the bodies test covers it)
        body = data.draw(json_values)

        async def send():
            return await genie.http.request(
                method,
                path,
                content=json.dumps(body).encode(),
                headers={"Authorization": key, "Content-Type": "application/json"} if key else {},
            )

        response = await check(send, ok=(200,), may_write=False)
        if response.status_code == 200:
            assert method in ("GET", "HEAD"), (method, path)
            assert "nightly-backup" not in response.text

    await explore(120, st.data(), body=run)
    assert await genie.scalar("SELECT count(*) FROM heartbeat WHERE last_ping_at IS NOT NULL") == 0
    report("test_fuzz::heartbeat_api_keys_names_methods", inputs=check.tried, statuses=check.statuses)


# --- the bulk: thousands of hostile inputs that must change nothing, driven in-process ----------------
#: Hostile inputs per database in CI (hypothesis draws SEEDS per kind; the rest are cheap
#: mutations of those draws). GENIE_FUZZ_BULK overrides.
BULK = int(os.environ.get("GENIE_FUZZ_BULK", "0")) or 4400
SEEDS = 30
#: Spliced into mutated bodies and paths: the texts hostile input is made of.
SPLICE = [
    b"\x00",
    b"\xff\xfe",
    b"%00",
    b"%",
    b"&",
    b"=",
    b"{",
    b"}",
    b"[",
    b"]",
    b'"',
    b"\\",
    b"../",
    b"//",
    b"<script>",
    b"<!channel>",
    b"<@U0ADMIN>",
    b"' OR 1=1 --",
    "\u0663".encode(),
    b"\xed\xa0\x80",
    b"9" * 40,
    b"-1",
    b"1e309",
    b"null",
    b"true",
    b"[]",
    b"{}",
    b"x" * 3000,
]


def _mutate(data: bytes, rng) -> bytes:
    """One to three byte-level mutations: flip, delete a slice, duplicate a slice, splice a
    hostile text in, truncate."""
    data = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        how = rng.randrange(5)
        at = rng.randint(0, len(data))
        if how == 0 and data:
            data[min(at, len(data) - 1)] ^= 1 << rng.randrange(8)
        elif how == 1:
            del data[at : at + rng.randint(1, 16)]
        elif how == 2:
            data[at:at] = data[at : at + rng.randint(1, 32)]
        elif how == 3:
            data[at:at] = rng.choice(SPLICE)
        else:
            del data[at:]
    return bytes(data)


def _variants(seeds: list[tuple], n: int, rng, keep) -> list[tuple]:
    """``n`` mutations of the seeds (body, or path and body) that ``keep`` accepts."""
    out: list[tuple] = []
    while len(out) < n:
        kind, method, path, headers, content = rng.choice(seeds)
        if rng.random() < 0.3:
            path = _mutate(path.encode(), rng).decode("latin-1")
            path = "/" + quote(path.lstrip("/"), safe="/?=&%")
        if content is not None:
            content = _mutate(content, rng)
        candidate = (kind, method, path, headers, content)
        if keep(candidate):
            out.append(candidate)
    return out


def _generate(strategy, n: int) -> list:
    """``n`` draws of ``strategy`` (hypothesis' generator, no shrinking: each draw is reported
    as it was sent when it fails)."""
    drawn: list = []

    @settings(
        max_examples=n,
        deadline=None,
        database=None,
        derandomize=False,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(value):
        drawn.append(value)

    collect()
    return drawn


@st.composite
def unsigned_slack_requests(draw, alert_ids, users) -> tuple:
    kind = draw(st.sampled_from(["click", "command", "event", "raw"]))
    if kind == "click":
        body = urlencode({"payload": json.dumps(draw(block_actions(alert_ids, users))[1])})
    elif kind == "command":
        body = _form(draw(slash_commands())[1]).decode()
    elif kind == "event":
        body = json.dumps(draw(events()))
    else:
        body = draw(st.text(max_size=200))
    how = draw(st.sampled_from(["other_secret", "stale", "future", "garbage", "missing", "no_timestamp"]))
    # An hour off: still outside Slack's 5-minute window when sent, minutes after it was drawn.
    ts = int(time.time()) + {"stale": -3600, "future": 3600}.get(how, 0)
    headers = {
        "Content-Type": draw(st.sampled_from(["application/x-www-form-urlencoded", "application/json"])),
        "X-Slack-Request-Timestamp": str(ts),
        "X-Slack-Signature": sign("an-attackers-guess" if how == "other_secret" else SIGNING_SECRET, ts, body),
    }
    if how == "garbage":
        headers["X-Slack-Signature"] = "v0=" + draw(st.text(alphabet="0123456789abcdef", max_size=64))
    elif how == "missing":
        del headers["X-Slack-Signature"]
    elif how == "no_timestamp":
        del headers["X-Slack-Request-Timestamp"]
    return ("slack", "POST", "/slack/events", headers, body.encode("utf-8", "surrogatepass"))


@st.composite
def other_key_requests(draw, search_key: str, payments_uid: str, payments_tiny: int) -> tuple:
    key = draw(
        st.sampled_from(
            [f"GenieKey {search_key}"] * 6
            + ["GenieKey " + "0" * 36, "", "Basic abc", f"GenieKey {search_key}x", "GenieKey", f"genie {search_key}"]
        )
        | st.text(alphabet=string.ascii_letters + string.digits + " -", max_size=50).map(str.strip)
    )
    ident = draw(
        st.sampled_from([payments_uid, str(payments_tiny), "Checkout error", "%00", "..", "x" * 600])
        | st.text(max_size=30)
    )
    id_type = draw(st.sampled_from(["id", "tiny", "alias", "", "other"]))
    action = draw(st.sampled_from(["acknowledge", "close", "assign", "notes", "", "logs", "snooze"]))
    method = draw(st.sampled_from(["POST", "GET", "PUT", "DELETE"]))
    params = {
        "identifierType": id_type,
        **draw(
            st.dictionaries(
                st.sampled_from(["query", "limit", "offset", "sort", "order", "direction"]),
                st.text(max_size=20),
                max_size=3,
            )
        ),
    }
    path = (
        "/v2/alerts"
        if draw(st.booleans())
        else f"/v2/alerts/{quote(ident, safe='')}" + (f"/{action}" if action else "")
    )
    if path == "/v2/alerts":
        method = "GET"
    if method == "POST" and key.split()[-1:] == [search_key]:
        key = "GenieKey " + "0" * 36  # Search may act on its own alerts; here only on no one's
    body = draw(st.sampled_from([{"user": "x", "note": "n"}, {"owner": {"username": "bob@example.com"}}]) | json_values)
    headers = {"Content-Type": "application/json", **({"Authorization": key} if key else {})}
    return ("api", method, f"{path}?{urlencode(params, errors='surrogatepass')}", headers, json.dumps(body).encode())


@st.composite
def invalid_creates(draw, payments_key: str) -> tuple:
    body = draw(create_bodies().filter(lambda b: not _expect_valid(b)))
    return (
        "create",
        "POST",
        "/v2/alerts",
        {"Authorization": f"GenieKey {payments_key}", "Content-Type": "application/json"},
        json.dumps(body).encode(),
    )


@st.composite
def hostile_page_posts(draw, csrf: str, others: list[int]) -> tuple:
    token = quote(
        draw(
            st.text(min_size=1, max_size=80).filter(lambda t: t not in (".", ".."))
            | st.sampled_from(["x" * 513, "a.b.c", "%00", "Ik5vbmNlIg.ZZZ.abc"])
        ),
        safe="",
    )
    where = draw(
        st.sampled_from(
            [
                f"/link/{token}",
                f"/link/{token}",
                f"/account/links/{others[0]}/disconnect",
                "/account/links/" + quote(draw(st.text(min_size=1, max_size=12)), safe="") + "/disconnect",
            ]
        )
    )
    method = "GET" if where.startswith("/link/") and draw(st.booleans()) else "POST"
    form = {
        "csrf_token": draw(st.sampled_from([csrf, csrf, "forged", ""])),
        "replace": draw(st.sampled_from(["yes", "no", ""]) | st.text(max_size=20)),
    }
    content = _form(form) if draw(st.booleans()) else draw(st.binary(max_size=200))
    return (
        "web",
        method,
        where,
        {"Content-Type": "application/x-www-form-urlencoded"},
        None if method == "GET" else content,
    )


async def test_fuzz_bulk_hostile_inputs_change_nothing(fuzz_world, caplog):
    """Thousands of inputs that must change nothing — unsigned or wrongly signed Slack requests
    of every kind, another team's and odd keys on every API path, invalid alert bodies, forged
    and foreign web forms — sent to the server's own ASGI app in-process (the same app uvicorn
    serves; only the socket is skipped), so each costs milliseconds. Checked per input: never a
    5xx, the promised status, no off-site redirect, never a sight of Payments' alert; and for
    the whole run: no ERROR logged and not one row of the database changed (one snapshot before
    and one after: an input that wrote anything fails the test, and the run says which kinds)."""
    import httpx

    genie, alert_ids, users = fuzz_world
    search_key, payments_key = await _team_key(genie, "Search"), await _team_key(genie, "Payments")
    payments_uid = await genie.scalar("SELECT uid FROM alert WHERE id = :a", a=alert_ids["payments"])
    browser = genie.browser()
    assert (await browser.login("alice@example.com")).status_code == 303
    await browser.get("/account")
    alice_link = await genie.scalar(
        "SELECT l.id FROM slack_link l JOIN \"user\" u ON u.id = l.user_id WHERE u.email = 'alice@example.com'"
    )
    others = [i for (i,) in await genie.rows("SELECT id FROM slack_link WHERE id <> :a", a=alice_link)]
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    kinds = [
        unsigned_slack_requests({"payments": alert_ids["payments"]}, users),
        other_key_requests(search_key, payments_uid, alert_ids["payments"]),
        invalid_creates(payments_key),
        hostile_page_posts(browser.last_csrf, others),
    ]
    seeds = [x for kind in kinds for x in await loop.run_in_executor(None, _generate, kind, SEEDS)]
    seed = int(os.environ.get("GENIE_FUZZ_SEED") or time.time_ns() % 10**9)  # a failure prints it: rerun with it
    rng = random.Random(seed)

    def keep(candidate: tuple) -> bool:
        kind, method, path, _, content = candidate
        if kind == "create":  # still invalid (else it would rightly be accepted and written)
            if rng.random() > 0.35:  # each costs a transaction: fewer of these, more of the cheap kinds
                return False
            try:
                body = json.loads(content)
            except (ValueError, RecursionError):
                return True
            return not isinstance(body, dict) or not _expect_valid(body)
        if kind == "web":  # Alice's own link, however a mutation spells it, is hers to disconnect
            if not path.startswith(("/link/", "/account/links/")):
                return False
            match = re.match(r"^/account/links/([^/]*)/disconnect", path)
            return not (match and re.fullmatch(r"0*" + str(alice_link), match.group(1)))
        if kind == "api":  # the alert API under another path prefix is not this test's business (nor
            # a path whose dot segments the client resolves out of it: "/v2/../alerts/…" is a web page)
            return path.startswith("/v2/") and posixpath.normpath(path).startswith("/v2/")
        return path == "/slack/events"

    inputs = seeds + _variants(seeds, max(0, BULK - len(seeds)), rng, keep)
    generated = time.monotonic() - started
    await outbox_idle(genie)
    before = await snapshot(genie.sessionmaker)
    caplog.clear()
    statuses: dict[str, dict[int, int]] = {}
    spent: dict[str, float] = {}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=genie.app, client=("203.0.113.9", 4711)),
        base_url=genie.url,
        cookies=browser.http.cookies,
    ) as client:
        for kind, method, path, headers, content in inputs:
            sent = time.monotonic()
            response = await client.request(method, path, headers=headers, content=content)
            spent[kind] = spent.get(kind, 0.0) + time.monotonic() - sent
            code = response.status_code
            statuses.setdefault(kind, {}).setdefault(code, 0)
            statuses[kind][code] += 1
            where = (
                f"GENIE_FUZZ_SEED={seed}",
                kind,
                method,
                path[:120],
                content[:200] if content else None,
                code,
                response.text[:200],
            )
            assert code < 500, where
            if kind == "slack":
                assert code == 401, where
            elif kind == "api":
                assert code in (200, 400, 401, 404, 405, 413, 422), where
                if code == 200:
                    assert method == "GET" and search_key in headers.get("Authorization", ""), where
                    assert payments_uid not in response.text, where
            elif kind == "create":
                assert 400 <= code < 500, where
            else:
                assert code in (400, 403, 404, 405, 410, 413), where
            location = response.headers.get("location", "")
            assert not location or (location.startswith("/") and not location.startswith("//")), where
    await bolt_idle()
    assert changes(before, await snapshot(genie.sessionmaker)) == {}
    errors = [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, errors[:5]
    assert sum(sum(s.values()) for s in statuses.values()) == len(inputs) >= BULK
    report(
        "test_fuzz::bulk_in_process",
        inputs=len(inputs),
        seed=seed,
        seconds=round(time.monotonic() - started, 1),
        generating=round(generated, 1),
        sending={k: round(v, 1) for k, v in spent.items()},
        statuses=statuses,
    )
