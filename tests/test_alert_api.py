"""The OpsGenie-compatible Alert API v2, driven over HTTP against the real server, as
Alertmanager, Grafana and OpsGenie scripts drive it: same paths, bodies, status codes and
envelopes. Bad input gets an OpsGenie-style answer and changes nothing (row counts are
compared before and after); state changes happen exactly once under real concurrency."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import event

from bot.blocks.alerts import ButtonValue
from bot.ids import Action
from bot.services import alerts, group_commit, ingest_batch, teams, users
from tests import helpers
from tests.conftest import SECRET_KEY, Genie, eventually, genie_env
from tests.processes import GenieServer, clean_env, free_port
from tests.slack_driver import SlackUser
from tests.test_cli import base_env, ok
from tests.test_cli import genie as run_genie

TABLES = ("alert", "alert_event", "outbox", "api_request")
_UNSET: Any = object()


@dataclass
class Api:
    """An OpsGenie client for Genie: one key per team."""

    genie: Genie
    keys: dict[str, str]

    async def call(
        self,
        method: str,
        path: str,
        body: Any = _UNSET,
        *,
        team: str | None = "Payments",
        key: str | None = None,
        headers: dict[str, str] | None = None,
        **kw,
    ) -> httpx.Response:
        headers = dict(headers or {})
        if key is None and team is not None:
            key = self.keys[team]
        if key is not None:
            headers.setdefault("Authorization", f"GenieKey {key}")
        if body is not _UNSET:
            kw["json"] = body
        return await self.genie.http.request(method, path, headers=headers, **kw)

    async def create(self, team: str = "Payments", **body: Any) -> dict:
        """Create; return the request status (``alertId``, ``alias``, ``status`` …)."""
        body.setdefault("message", "Disk full on db-1")
        answer = envelope(await self.call("POST", "/v2/alerts", body, team=team), 202)
        assert answer["result"] == "Request will be processed"
        return await self.status(answer["requestId"], team)

    async def status(self, request_id: str, team: str = "Payments") -> dict:
        return envelope(await self.call("GET", f"/v2/alerts/requests/{request_id}", team=team), 200)["data"]

    async def get(self, identifier: str, kind: str = "id", team: str = "Payments") -> dict:
        response = await self.call("GET", f"/v2/alerts/{identifier}", team=team, params={"identifierType": kind})
        return envelope(response, 200)["data"]

    async def act(
        self,
        identifier: str,
        action: str,
        body: Any = _UNSET,
        kind: str = "id",
        team: str = "Payments",
        expect: int = 202,
    ) -> dict:
        """An action (acknowledge, close, assign, notes); return its request status."""
        response = await self.call(
            "POST", f"/v2/alerts/{identifier}/{action}", body, team=team, params={"identifierType": kind}
        )
        answer = envelope(response, expect)
        if expect == 202:
            assert answer["result"] == "Request will be processed"
            return await self.status(answer["requestId"], team)
        return answer

    async def list(self, team: str = "Payments", **params: Any) -> dict:
        return envelope(await self.call("GET", "/v2/alerts", team=team, params=params), 200)


def envelope(response: httpx.Response, status: int) -> dict:
    """OpsGenie's envelope: the status, ``took`` (seconds) and a uuid4 ``requestId`` on every answer."""
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert isinstance(body["took"], (int, float)) and 0 <= body["took"] < 30, body
    assert uuid.UUID(body["requestId"]).version == 4, body
    assert response.headers["x-request-id"] == body["requestId"]
    if status >= 400:
        assert isinstance(body["message"], str) and body["message"], body
    return body


async def counts(genie: Genie) -> dict[str, int]:
    return {table: await genie.scalar(f"SELECT count(*) FROM {table}") for table in TABLES}


async def events(genie: Genie, tiny_id: str | int) -> list[tuple]:
    return await genie.rows(
        "SELECT action, outcome, actor_name, reason, note FROM alert_event WHERE alert_id = :a ORDER BY id",
        a=int(tiny_id),
    )


@pytest.fixture
async def api(genie: Genie) -> Api:
    """Payments (C0PAY: Alice, Bob), Ops (C0OPS, whose key may also post for Payments),
    Search (C0SEARCH: Mallory); Carol is in no team."""
    for email, name in [
        ("alice@example.com", "Alice Smith"),
        ("bob@example.com", "Bob Jones"),
        ("mallory@example.com", "Mallory Evil"),
        ("carol@example.com", "Carol Diaz"),
    ]:
        await genie.add_user(email, name)
    keys = {}
    async with genie.sessionmaker.begin() as s:
        for name, channel in [("Payments", "C0PAY"), ("Ops", "C0OPS"), ("Search", "C0SEARCH")]:
            keys[name] = await alerts.team_key(s, await teams.add_team(s, name, channel))
        await teams.add_member(s, "Payments", "alice@example.com")
        await teams.add_member(s, "Payments", "bob@example.com")
        await teams.add_member(s, "Search", "mallory@example.com")
        await alerts.grant_post(s, await teams.require_team(s, "Ops"), await teams.require_team(s, "Payments"))
    return Api(genie, keys)


# --- create, get, request status ---------------------------------------------------------------
async def test_create_with_every_field_then_get_returns_them(api: Api):
    body = {
        "message": "Checkout error rate above 5%",
        "alias": "checkout-errors",
        "description": "See the dashboard.",
        "responders": [{"type": "team", "name": "Payments"}, {"type": "user", "username": "alice@example.com"}],
        "tags": ["checkout", "P1-candidate", "checkout"],
        "details": {"region": "eu-west-1", "rate": 5.2, "ok": False},
        "entity": "checkout-service",
        "source": "prometheus",
        "priority": "P1",
        "user": "Alertmanager",
        "note": "Paging the on-call",
        "actions": ["Restart"],
        "visibleTo": [{"type": "team", "name": "Payments"}],
    }
    status = await api.create(**body)
    assert status["success"] is True and status["isSuccess"] is True
    assert status["action"] == "Create" and status["status"] == "Created alert"
    assert status["alias"] == "checkout-errors" and status["processedAt"].endswith("Z")
    payments_id = await api.genie.scalar("SELECT id FROM team WHERE name = 'Payments'")
    alice_id = await api.genie.scalar("SELECT id FROM \"user\" WHERE email = 'alice@example.com'")
    assert status["integrationId"] == str(payments_id)

    alert = await api.get(status["alertId"])
    assert alert["id"] == status["alertId"] and alert["tinyId"].isdigit()
    expected = {
        "alias": "checkout-errors",
        "message": "Checkout error rate above 5%",
        "status": "open",
        "acknowledged": False,
        "isSeen": False,
        "tags": ["checkout", "P1-candidate"],
        "snoozed": False,
        "count": 1,
        "source": "prometheus",
        "owner": "",
        "priority": "P1",
        "entity": "checkout-service",
        "description": "See the dashboard.",
        "details": {"region": "eu-west-1", "rate": "5.2", "ok": "false"},
        "actions": [],
        "report": {},
        "integration": {"id": str(payments_id), "name": "Payments", "type": "API"},
        "ownerTeamId": str(payments_id),
        # As OpsGenie returns them: each with its id (clients that model responders require it).
        "responders": [
            {"type": "team", "id": str(payments_id), "name": "Payments"},
            {"type": "user", "id": str(alice_id), "username": "alice@example.com"},
        ],
    }
    assert {k: alert[k] for k in expected} == expected
    for stamp in ("createdAt", "updatedAt", "lastOccurredAt"):
        assert alert[stamp].endswith("Z") and "T" in alert[stamp]
    assert await api.get("checkout-errors", "alias") == alert
    assert await api.get(alert["tinyId"], "tiny") == alert

    # Committed before the 202, with its timeline row (with the note), who the user responder
    # was resolved to (tests/test_alert_people.py), and its Slack post queued.
    assert await events(api.genie, alert["tinyId"]) == [
        ("create", "applied", "Alertmanager", None, "Paging the on-call"),
        ("resolve", "applied", "Alertmanager", "responder alice@example.com → Alice Smith (alice@example.com)", None),
    ]
    assert await api.genie.rows("SELECT kind, channel FROM outbox WHERE alert_id = :a", a=int(alert["tinyId"])) == [
        ("alert.post", "C0PAY")
    ]
    notes = envelope(await api.call("GET", f"/v2/alerts/{alert['id']}/notes"), 200)
    assert [(n["note"], n["owner"]) for n in notes["data"]] == [("Paging the on-call", "Alertmanager")]


async def test_request_status_is_per_key_and_unknown_is_404(api: Api):
    status = await api.create(alias="a1")
    request_id = (await api.genie.rows("SELECT request_id FROM api_request"))[0][0]
    assert (await api.status(request_id))["alertId"] == status["alertId"]
    for team in ("Search", "Ops"):
        answer = envelope(await api.call("GET", f"/v2/alerts/requests/{request_id}", team=team), 404)
        assert "does not exist" in answer["message"]
    envelope(await api.call("GET", f"/v2/alerts/requests/{uuid.uuid4()}"), 404)
    envelope(await api.call("GET", "/v2/alerts/requests/" + "x" * 500), 404)


async def test_create_is_deduplicated_on_alias_while_open(api: Api):
    first = await api.create(alias="db-1-disk", message="Disk full on db-1")
    second = await api.create(alias="db-1-disk", message="Disk full on db-1 (again)")
    assert second["alertId"] == first["alertId"] and second["isSuccess"] is True
    assert second["status"] == "Alert is deduplicated"
    alert = await api.get(first["alertId"])
    assert alert["count"] == 2 and alert["message"] == "Disk full on db-1"
    assert await api.genie.scalar("SELECT count(*) FROM alert") == 1
    tiny = int(alert["tinyId"])
    # Only ONE Slack post for the alert; the repeat only updates the message in place.
    assert (
        await api.genie.scalar("SELECT count(*) FROM outbox WHERE alert_id = :a AND kind = 'alert.post'", a=tiny) == 1
    )
    assert (
        await api.genie.scalar("SELECT count(*) FROM outbox WHERE alert_id = :a AND kind = 'alert.update'", a=tiny) >= 1
    )
    assert [e[:2] for e in await events(api.genie, tiny)] == [("create", "applied"), ("deduplicate", "applied")]

    # Another team's open alert with the same alias is a different alert.
    other = await api.create(team="Search", alias="db-1-disk")
    assert other["alertId"] != first["alertId"]


async def test_alias_can_be_reused_after_close(api: Api):
    first = await api.create(alias="flappy")
    assert (await api.act("flappy", "close", {"source": "alertmanager"}, kind="alias"))["isSuccess"] is True
    second = await api.create(alias="flappy")
    assert second["alertId"] != first["alertId"] and second["status"] == "Created alert"
    assert (await api.get(first["alertId"]))["status"] == "closed"
    assert (await api.get("flappy", "alias"))["id"] == second["alertId"]  # the open one
    assert await api.genie.scalar("SELECT count(*) FROM outbox WHERE kind = 'alert.post'") == 2


async def test_responders_choose_the_owning_team_within_the_keys_grants(api: Api):
    # Ops' key may post for Payments: the alert belongs to Payments, in Payments' channel.
    status = await api.create(team="Ops", responders=[{"type": "team", "name": "payments"}])
    alert = await api.get(status["alertId"], team="Payments")
    assert alert["integration"]["name"] == "Payments"
    assert await api.genie.rows("SELECT channel FROM outbox WHERE alert_id = :a", a=int(alert["tinyId"])) == [
        ("C0PAY",)
    ]
    payments_id = await api.genie.scalar("SELECT id FROM team WHERE name = 'Payments'")
    by_id = await api.create(team="Ops", responders=[{"type": "team", "id": str(payments_id)}])
    assert (await api.get(by_id["alertId"]))["integration"]["name"] == "Payments"
    # Without responders the alert belongs to the key's own team; Ops reads only its own.
    own = await api.create(team="Ops")
    assert (await api.get(own["alertId"], team="Ops"))["integration"]["name"] == "Ops"
    envelope(await api.call("GET", f"/v2/alerts/{own['alertId']}", team="Payments"), 404)

    before = await counts(api.genie)
    forbidden = envelope(
        await api.call(
            "POST", "/v2/alerts", {"message": "m", "responders": [{"type": "team", "name": "Search"}]}, team="Ops"
        ),
        403,
    )
    assert (
        forbidden["message"]
        == "this key (team Ops) may not post alerts for team 'Search'; it may post for: Ops, Payments"
    )
    envelope(
        await api.call(
            "POST", "/v2/alerts", {"message": "m", "responders": [{"type": "team", "name": "Ops"}]}, team="Payments"
        ),
        403,
    )  # grants are one way
    # A team that does not exist is refused in the same words: a key can't probe for team names.
    unknown = envelope(
        await api.call(
            "POST", "/v2/alerts", {"message": "m", "responders": [{"type": "team", "name": "Nobody"}]}, team="Ops"
        ),
        403,
    )
    assert unknown["message"] == forbidden["message"].replace("'Search'", "'Nobody'")
    assert await counts(api.genie) == before


# --- bad input changes nothing -----------------------------------------------------------------
M = {"message": "Disk full"}
BAD_CREATES: list[tuple[str, dict]] = [
    ("message", {"message": "m" * 131}),
    ("message", {"message": ""}),
    ("message", {"message": "   "}),
    ("message", {"alias": "no-message"}),
    ("message", {"message": 42}),
    ("alias", M | {"alias": "a" * 513}),
    ("alias", M | {"alias": ["x"]}),
    ("description", M | {"description": "d" * 15001}),
    ("entity", M | {"entity": "e" * 513}),
    ("source", M | {"source": "s" * 101}),
    ("user", M | {"user": "u" * 101}),
    ("note", M | {"note": "n" * 25001}),
    ("tags", M | {"tags": [f"t{i}" for i in range(21)]}),
    ("tags", M | {"tags": ["t" * 51]}),
    ("tags", M | {"tags": "a,b"}),
    ("tags", M | {"tags": [1, 2]}),
    ("details", M | {"details": {"k": "v" * 8000}}),
    ("details", M | {"details": {"k": {"nested": "no"}}}),
    ("details", M | {"details": ["k", "v"]}),
    ("priority", M | {"priority": "P6"}),
    ("priority", M | {"priority": "critical"}),
    ("priority", M | {"priority": 1}),
    ("responders", M | {"responders": "Payments"}),
    ("responders", M | {"responders": [{"name": "Payments"}]}),
    ("responders", M | {"responders": [{"type": "team"}]}),
    ("responders", M | {"responders": [{"type": "squad", "name": "Payments"}]}),
    ("responders", M | {"responders": [{"type": "team", "name": "x" * 513}]}),
    ("responders", M | {"responders": [{"type": "user", "username": f"u{i}@example.com"} for i in range(51)]}),
]


async def test_every_field_limit_is_a_422_that_changes_nothing(api: Api):
    before = await counts(api.genie)
    for field, body in BAD_CREATES:
        answer = envelope(await api.call("POST", "/v2/alerts", body), 422)
        assert answer["message"] == "Request body is not processable. Please check the errors.", (field, answer)
        assert field in answer["errors"], (field, answer)
        assert isinstance(answer["errors"][field], str) and answer["errors"][field], (field, answer)
    assert await counts(api.genie) == before

    # Exactly at every limit is fine.
    status = await api.create(
        message="m" * 130,
        alias="a" * 512,
        description="d" * 15000,
        entity="e" * 512,
        source="s" * 100,
        user="u" * 100,
        note="n" * 25000,
        tags=[f"{i:02d}" + "t" * 48 for i in range(20)],
        details={"k": "v" * 7999},
        priority="P5",
        responders=[{"type": "user", "username": f"u{i}@example.com"} for i in range(50)],
    )
    alert = await api.get(status["alertId"])
    assert len(alert["message"]) == 130 and len(alert["alias"]) == 512 and len(alert["tags"]) == 20
    assert alert["priority"] == "P5"


async def test_malformed_requests_get_the_opsgenie_envelope_and_change_nothing(api: Api):
    await api.create(alias="exists")
    before = await counts(api.genie)
    post = api.genie.http.post
    auth = {"Authorization": f"GenieKey {api.keys['Payments']}", "Content-Type": "application/json"}

    answer = envelope(await post("/v2/alerts", content=b'{"message": "x",', headers=auth), 400)
    assert "Could not parse request body" in answer["message"]
    envelope(await post("/v2/alerts", content=b"\xff\xfe not utf-8", headers=auth), 400)
    envelope(await post("/v2/alerts", content=b"[" * 5000 + b"]" * 5000, headers=auth), 400)
    for not_an_object in (b"[]", b'"text"', b"42", b"null", b"true"):
        answer = envelope(await post("/v2/alerts", content=not_an_object, headers=auth), 422)
        assert "body" in answer["errors"] or "message" in answer["errors"], answer
    answer = envelope(await post("/v2/alerts", content=b"", headers=auth), 422)
    assert answer["errors"]["message"] == "Message can not be empty."
    big = b'{"message": "m", "description": "' + b"d" * (1024 * 1024 + 1) + b'"}'
    envelope(await post("/v2/alerts", content=big, headers=auth), 413)

    # Keys: missing, wrong scheme, empty, unknown, from a rotated-away team key.
    body = {"message": "should not be created"}
    for headers, message in [
        ({}, "Key format is not valid!"),
        ({"Authorization": f"Bearer {api.keys['Payments']}"}, "Key format is not valid!"),
        ({"Authorization": "GenieKey"}, "Key format is not valid!"),
        ({"Authorization": "GenieKey " + "k" * 500}, "Key format is not valid!"),
        ({"Authorization": f"GenieKey {uuid.uuid4()}"}, "Could not authenticate"),
        ({"Authorization": f"geniekey {api.keys['Payments']}x"}, "Could not authenticate"),
    ]:
        for method, path in [
            ("POST", "/v2/alerts"),
            ("GET", "/v2/alerts"),
            ("GET", "/v2/alerts/exists"),
            ("POST", "/v2/alerts/exists/close"),
            ("GET", f"/v2/alerts/requests/{uuid.uuid4()}"),
        ]:
            response = await api.call(
                method,
                path,
                body if method == "POST" else _UNSET,
                team=None,
                headers=headers,
                params={"identifierType": "alias"},
            )
            assert envelope(response, 401)["message"] == message, (headers, method, path)
    # A key in the query string is not accepted (it would end up in access logs).
    envelope(await api.call("GET", "/v2/alerts", team=None, params={"apiKey": api.keys["Payments"]}), 401)

    # Unknown alerts, identifier types, action bodies.
    for path in [
        "/v2/alerts/nope",
        "/v2/alerts/nope/acknowledge",
        "/v2/alerts/nope/close",
        "/v2/alerts/nope/notes",
        "/v2/alerts/nope/assign",
    ]:
        method = "GET" if path == "/v2/alerts/nope" else "POST"
        send = {"note": "n", "owner": {"username": "alice@example.com"}} if method == "POST" else _UNSET
        answer = envelope(await api.call(method, path, send), 404)
        assert answer["message"] == "Alert with given id does not exist", path
    envelope(await api.call("GET", "/v2/alerts/999999", params={"identifierType": "tiny"}), 404)
    envelope(await api.call("GET", "/v2/alerts/x1", params={"identifierType": "tiny"}), 404)
    assert (
        envelope(await api.call("GET", "/v2/alerts/nope", params={"identifierType": "alias"}), 404)["message"]
        == "Alert with given alias does not exist"
    )
    answer = envelope(await api.call("GET", "/v2/alerts/exists", params={"identifierType": "name"}), 422)
    assert "identifierType" in answer["errors"]
    envelope(
        await api.call("POST", "/v2/alerts/exists/acknowledge", {"note": "n"}, params={"identifierType": "nickname"}),
        422,
    )
    for action, bad, field in [
        ("acknowledge", {"user": "u" * 101}, "user"),
        ("close", {"source": "s" * 101}, "source"),
        ("close", {"note": "n" * 25001}, "note"),
        ("acknowledge", {"user": 7}, "user"),
        ("notes", {}, "note"),
        ("notes", {"note": "  "}, "note"),
        ("notes", {"note": "n" * 25001}, "note"),
        ("assign", {}, "owner"),
        ("assign", {"owner": "alice@example.com"}, "owner"),
        ("assign", {"owner": {"username": "nobody@example.com"}}, "owner"),
        ("assign", {"owner": {"id": "424242"}}, "owner"),
        ("assign", {"owner": {"id": True}}, "owner"),
    ]:
        answer = await api.act("exists", action, bad, kind="alias", expect=422)
        assert field in answer["errors"], (action, bad, answer)
    envelope(await post("/v2/alerts/exists/close?identifierType=alias", content=b"{oops", headers=auth), 400)
    envelope(await post("/v2/alerts/exists/close?identifierType=alias", content=b"[1]", headers=auth), 422)

    # List parameters.
    for params in [
        {"limit": "0"},
        {"limit": "101"},
        {"limit": "ten"},
        {"offset": "-1"},
        {"offset": "1e3"},
        {"sort": "color"},
        {"order": "up"},
        {"query": "colour:red"},
        {"query": "status:maybe"},
        {"query": "acknowledged:yes"},
        {"query": "priority:P9"},
        {"query": "tinyId:abc"},
        {"query": 'message:"unbalanced'},
        {"query": "status:open OR status:closed"},
        {"query": "alias:"},
    ]:
        answer = envelope(await api.call("GET", "/v2/alerts", params=params), 422)
        assert answer["errors"], (params, answer)
    assert (
        "colour"
        in envelope(await api.call("GET", "/v2/alerts", params={"query": "colour:red"}), 422)["errors"]["query"]
    )
    for params in [{"limit": "0"}, {"order": "sideways"}, {"direction": "up"}, {"offset": "abc"}]:
        envelope(await api.call("GET", "/v2/alerts/exists/logs", params=params | {"identifierType": "alias"}), 422)

    # Endpoints Genie does not have: the same envelope, never a 500.
    answer = envelope(await api.call("PATCH", "/v2/alerts/exists", params={"identifierType": "alias"}), 405)
    assert "GET" in answer["message"] and "DELETE" in answer["message"]
    for method, path in [
        ("PATCH", "/v2/alerts/exists/message"),
        ("POST", "/v2/alerts/exists/logs"),
        ("PUT", "/v2/alerts/exists/unacknowledge"),
        ("PUT", "/v2/alerts"),
    ]:
        answer = envelope(await api.call(method, path, {"message": "new"}, params={"identifierType": "alias"}), 405)
        assert answer["message"].startswith(f"Genie does not implement {method} {path}"), answer
    for method, path in [
        ("GET", "/v2/alerts/saved-searches"),
        ("POST", "/v2/alerts/saved-searches/"),
        ("GET", "/v2/alerts/exists/attachments"),
        ("DELETE", "/v2/alerts/exists/attachments/1"),
    ]:
        answer = envelope(await api.call(method, path, params={"identifierType": "alias"}), 404)
        assert "saved searches and attachments" in answer["message"], answer
    envelope(await api.call("GET", "/v2/schedules"), 404)  # heartbeats are served: tests/test_heartbeats.py
    assert await counts(api.genie) == before


async def test_hostile_text_and_numbers_get_4xx_never_500(api: Api):
    """Text a database can't store (NUL, lone surrogates), digits that aren't ASCII or don't
    fit an integer, oversized queries: each is a clean 4xx and nothing is written."""
    await api.create(alias="exists")
    before = await counts(api.genie)
    auth = {"Authorization": f"GenieKey {api.keys['Payments']}"}
    for method, path, content, status in [
        ("POST", "/v2/alerts", rb'{"message": "nul \u0000 inside"}', 422),
        ("POST", "/v2/alerts", rb'{"message": "m", "alias": "\ud800"}', 422),
        ("POST", "/v2/alerts", rb'{"message": "m", "details": {"\u0000": "v"}}', 422),
        # The same without a \u escape: a surrogate encoded as UTF-8 (which ``json`` decodes), and
        # a UTF-16 body (which it also takes) holding one.
        ("POST", "/v2/alerts", b'{"message": "m", "tags": ["\xed\xa0\x80"]}', 422),
        (
            "POST",
            "/v2/alerts",
            '{"message": "m", "alias": "?"}'.encode("utf-16-le").replace(b"?\x00", b"\x00\xd8"),
            422,
        ),
        (
            "POST",
            "/v2/alerts",
            rb'{"message": "m", "responders": [{"type": "team", "id": "\u00b2"}]}',
            403,
        ),  # no such team
        (
            "POST",
            "/v2/alerts",
            b'{"message": "m", "responders": [{"type": "team", "id": "99999999999999999999"}]}',
            403,
        ),
        ("POST", "/v2/alerts", b'{"message": "m", "responders": [{"type": "team", "id": "x", "name": 7}]}', 403),
        ("POST", "/v2/alerts/exists/notes?identifierType=alias", rb'{"note": "\u0000"}', 422),
        ("POST", "/v2/alerts/exists/assign?identifierType=alias", rb'{"owner": {"id": "\u00b2"}}', 422),
        ("POST", "/v2/alerts/exists/assign?identifierType=alias", b'{"owner": {"id": 99999999999999999999}}', 422),
        ("GET", "/v2/alerts/%C2%B2?identifierType=tiny", None, 404),
        ("GET", "/v2/alerts/99999999999?identifierType=tiny", None, 404),
        ("GET", "/v2/alerts/%00?identifierType=alias", None, 404),
        ("GET", "/v2/alerts/%00", None, 404),
        ("GET", "/v2/alerts/requests/%00", None, 404),
        ("GET", "/v2/alerts?query=alias:%00", None, 422),
        ("GET", "/v2/alerts?query=tinyId:99999999999", None, 422),
        ("GET", "/v2/alerts?query=" + "message:x%20" * 21, None, 422),
        ("GET", "/v2/alerts?query=" + "x" * 2001, None, 422),
        ("GET", "/v2/alerts?limit=99999999999999999999", None, 422),
        ("GET", "/v2/alerts/exists/logs?identifierType=alias&offset=99999999999", None, 422),
    ]:
        response = await api.genie.http.request(method, path, content=content, headers=auth)
        envelope(response, status)
    assert await counts(api.genie) == before


# --- actions -----------------------------------------------------------------------------------
async def test_acknowledge_close_assign_and_notes_by_id_alias_and_tiny(api: Api):
    one = await api.get((await api.create(alias="one", message="One"))["alertId"])
    two = await api.get((await api.create(alias="two", message="Two"))["alertId"])
    three = await api.get((await api.create(alias="three", message="Three"))["alertId"])

    status = await api.act(one["id"], "acknowledge", {"user": "Alice", "note": "on it"})
    assert (status["action"], status["isSuccess"], status["status"]) == ("Acknowledge", True, "Acknowledged alert")
    assert status["alertId"] == one["id"] and status["alias"] == "one"
    status = await api.act("two", "acknowledge", kind="alias")  # no body at all
    assert status["isSuccess"] is True
    await api.act(three["tinyId"], "acknowledge", {}, kind="tiny")
    for alert in (one, two, three):
        shown = await api.get(alert["id"])
        assert shown["acknowledged"] is True and shown["status"] == "open"
        assert shown["report"]["ackTime"] >= 0 and "closeTime" not in shown["report"]
    assert (await api.get(one["id"]))["report"]["acknowledgedBy"] == "Alice"
    assert (await api.get(two["id"]))["report"]["acknowledgedBy"] == "API (Payments)"

    status = await api.act(
        two["tinyId"], "assign", {"owner": {"username": "Bob@Example.com"}, "user": "Alice"}, kind="tiny"
    )
    assert (status["action"], status["isSuccess"]) == ("Assign", True)
    assert (await api.get(two["id"]))["owner"] == "bob@example.com"
    alice_id = await api.genie.scalar("SELECT id FROM \"user\" WHERE email = 'alice@example.com'")
    await api.act("three", "assign", {"owner": {"id": str(alice_id)}}, kind="alias")
    assert (await api.get(three["id"]))["owner"] == "alice@example.com"

    status = await api.act(three["tinyId"], "notes", {"note": "Rebooted db-1", "user": "Bob"}, kind="tiny")
    assert (status["action"], status["isSuccess"], status["status"]) == ("AddNote", True, "Added note")
    await api.act("three", "notes", {"note": "Looks fine now"}, kind="alias")
    notes = envelope(await api.call("GET", "/v2/alerts/three/notes", params={"identifierType": "alias"}), 200)
    assert [(n["note"], n["owner"]) for n in notes["data"]] == [
        ("Looks fine now", "API (Payments)"),
        ("Rebooted db-1", "Bob"),
    ]  # newest first
    assert all(n["createdAt"].endswith("Z") and n["offset"] for n in notes["data"])
    oldest_first = envelope(
        await api.call(
            "GET", f"/v2/alerts/{three['tinyId']}/notes", params={"identifierType": "tiny", "order": "asc", "limit": 1}
        ),
        200,
    )
    assert [n["note"] for n in oldest_first["data"]] == ["Rebooted db-1"] and "next" in oldest_first["paging"]
    following = await api.genie.http.get(
        oldest_first["paging"]["next"].replace(api.genie.settings.base_url, ""),
        headers={"Authorization": f"GenieKey {api.keys['Payments']}"},
    )
    assert [n["note"] for n in envelope(following, 200)["data"]] == ["Looks fine now"]

    status = await api.act("one", "close", {"user": "Alertmanager", "source": "am"}, kind="alias")
    assert (status["action"], status["isSuccess"], status["status"]) == ("Close", True, "Closed alert")
    await api.act(two["tinyId"], "close", kind="tiny")
    await api.act(three["id"], "close", {"note": "fixed"})
    for alert in (one, two, three):
        shown = await api.get(alert["id"])
        assert shown["status"] == "closed" and shown["report"]["closeTime"] >= shown["report"]["ackTime"]
    assert (await api.get(one["id"]))["report"]["closedBy"] == "Alertmanager"
    # Every API change updates the Slack message too.
    for alert in (one, two, three):
        assert (
            await api.genie.scalar(
                "SELECT count(*) FROM outbox WHERE alert_id = :a AND kind = 'alert.update'", a=int(alert["tinyId"])
            )
            >= 2
        )


async def test_acting_twice_is_accepted_and_the_request_status_says_why_not(api: Api):
    alert = await api.get((await api.create(alias="twice"))["alertId"])
    assert (await api.act(alert["id"], "acknowledge", {"user": "Alice"}))["isSuccess"] is True
    again = await api.act(alert["id"], "acknowledge", {"user": "Bob"})
    assert again["isSuccess"] is False and again["success"] is False and again["action"] == "Acknowledge"
    assert "already acknowledged by Alice" in again["status"]
    assert (await api.get(alert["id"]))["report"]["acknowledgedBy"] == "Alice"

    assert (await api.act("twice", "close", kind="alias"))["isSuccess"] is True
    closed_again = await api.act("twice", "close", kind="alias")
    assert closed_again["isSuccess"] is False and "already closed" in closed_again["status"]
    late_ack = await api.act(alert["tinyId"], "acknowledge", kind="tiny")
    assert late_ack["isSuccess"] is False and "already closed" in late_ack["status"]
    late_assign = await api.act(alert["id"], "assign", {"owner": {"username": "alice@example.com"}})
    assert late_assign["isSuccess"] is False and "already closed" in late_assign["status"]
    assert [e[:2] for e in await events(api.genie, alert["tinyId"])] == [
        ("create", "applied"),
        ("acknowledge", "applied"),
        ("acknowledge", "noop"),
        ("close", "applied"),
        ("close", "noop"),
        ("acknowledge", "noop"),
        ("assign", "noop"),
    ]


async def test_assign_only_to_active_members_of_the_owning_team(api: Api):
    alert = await api.get((await api.create(alias="assign-me"))["alertId"])
    before = await counts(api.genie)
    # Another team's person (by email or Genie id), a person in no team, and nobody at all are
    # refused in the same words, naming only what the request gave; nothing is written.
    carol, mallory = [
        await api.genie.scalar('SELECT id FROM "user" WHERE email = :e', e=e)
        for e in ("carol@example.com", "mallory@example.com")
    ]
    for owner, given in [
        ({"username": "carol@example.com"}, "carol@example.com"),
        ({"username": "mallory@example.com"}, "mallory@example.com"),
        ({"id": str(mallory)}, str(mallory)),
        ({"id": carol}, str(carol)),
        ({"username": "nobody@example.com"}, "nobody@example.com"),
        ({"id": "424242"}, "424242"),
    ]:
        answer = await api.act(alert["id"], "assign", {"owner": owner, "user": "Script"}, expect=422)
        assert answer["message"] == "Request body is not processable. Please check the errors."
        assert answer["errors"] == {
            "owner": f"{given} is not an active member of Payments, so can't be assigned this alert."
        }, owner
    assert await counts(api.genie) == before
    assert (await api.get(alert["id"]))["owner"] == ""

    async with api.genie.sessionmaker.begin() as s:  # deactivated members can't be assigned either
        await users.set_active(s, "bob@example.com", False)
    await api.act(alert["id"], "assign", {"owner": {"username": "bob@example.com"}}, expect=422)
    assert (await api.act(alert["id"], "assign", {"owner": {"username": "alice@example.com"}}))["isSuccess"] is True
    again = await api.act(alert["id"], "assign", {"owner": {"username": "alice@example.com"}})
    assert again["isSuccess"] is False and "already assigned to Alice Smith" in again["status"]


async def test_another_teams_key_cannot_see_or_touch_the_alert(api: Api):
    alert = await api.get((await api.create(alias="private", tags=["secret"]))["alertId"])
    before = await counts(api.genie)
    for method, path, body in [
        ("GET", f"/v2/alerts/{alert['id']}", _UNSET),
        ("GET", f"/v2/alerts/{alert['id']}/notes", _UNSET),
        ("GET", f"/v2/alerts/{alert['id']}/logs", _UNSET),
        ("POST", f"/v2/alerts/{alert['id']}/acknowledge", {}),
        ("POST", f"/v2/alerts/{alert['id']}/close", {}),
        ("POST", f"/v2/alerts/{alert['id']}/notes", {"note": "hi"}),
        ("POST", f"/v2/alerts/{alert['id']}/assign", {"owner": {"username": "mallory@example.com"}}),
    ]:
        answer = envelope(await api.call(method, path, body, team="Search"), 404)
        assert answer["message"] == "Alert with given id does not exist", path
    envelope(await api.call("GET", "/v2/alerts/private", team="Search", params={"identifierType": "alias"}), 404)
    envelope(
        await api.call("GET", f"/v2/alerts/{alert['tinyId']}", team="Search", params={"identifierType": "tiny"}), 404
    )
    assert (await api.list(team="Search", query="tag:secret"))["data"] == []
    assert await counts(api.genie) == before


async def test_a_posting_grant_lets_a_key_post_and_nothing_more(api: Api):
    """Ops may post for Payments (``genie team grant Ops Payments``): posting, not reading or
    acting. Not even the alert Ops posted is Ops' to read; its own request status answers."""
    posted = await api.create(
        team="Ops",
        alias="from-ops",
        description="card numbers leak in db-1 logs",
        responders=[{"type": "team", "name": "Payments"}],
    )
    assert posted["isSuccess"] is True and posted["status"] == "Created alert" and posted["alertId"]
    alert = await api.get(posted["alertId"])  # Payments' key reads it
    assert alert["integration"]["name"] == "Payments"
    await api.create(alias="payments-own", note="secret note")
    before = await counts(api.genie)
    for identifier, kind in [
        (alert["id"], "id"),
        ("from-ops", "alias"),
        (alert["tinyId"], "tiny"),
        ("payments-own", "alias"),
    ]:
        params = {"identifierType": kind}
        for method, action, body in [
            ("GET", "", _UNSET),
            ("GET", "/notes", _UNSET),
            ("GET", "/logs", _UNSET),
            ("POST", "/acknowledge", {}),
            ("POST", "/close", {}),
            ("POST", "/notes", {"note": "hi"}),
            ("POST", "/assign", {"owner": {"username": "alice@example.com"}}),
        ]:
            answer = envelope(
                await api.call(method, f"/v2/alerts/{identifier}{action}", body, team="Ops", params=params), 404
            )
            assert answer["message"] in (
                "Alert with given id does not exist",
                "Alert with given alias does not exist",
            ), (identifier, action)
    assert (await api.list(team="Ops"))["data"] == []
    assert (await api.list(team="Ops", query="alias:from-ops"))["data"] == []
    assert await counts(api.genie) == before
    # Posting again still works (de-duplicated into the open alert), and so does its request status.
    again = await api.create(team="Ops", alias="from-ops", responders=[{"type": "team", "name": "Payments"}])
    assert again["alertId"] == alert["id"] and again["status"] == "Alert is deduplicated"
    assert (await api.get(alert["id"]))["count"] == 2


async def test_a_key_learns_nothing_about_other_teams_people(api: Api):
    """User responders by Genie id 1…N, by email, the reporter and ``details`` resolve among the
    owning team's members only; everyone else is "nobody" — on the timeline, in the logs, in
    the alert and in errors."""
    ids = [row[0] for row in await api.genie.rows('SELECT id FROM "user" ORDER BY id')]
    responders = [{"type": "user", "id": str(i)} for i in [*ids, max(ids) + 1]]
    responders += [
        {"type": "user", "username": e} for e in ("carol@example.com", "mallory@example.com", "alice@example.com")
    ]
    status = await api.create(
        message="probe",
        user="mallory@example.com",
        responders=responders,
        details={"assignee": "carol@example.com", "opsgenie_user": "mallory@example.com"},
    )
    alert = await api.get(status["alertId"])
    logs = envelope(await api.call("GET", f"/v2/alerts/{alert['id']}/logs"), 200)
    text = json.dumps(logs) + json.dumps(alert)
    for outsider in ("Carol", "Diaz", "Mallory", "Evil"):
        assert outsider not in text, outsider
    [people] = [e["log"] for e in logs["data"] if e["log"].startswith("People named")]
    alice, bob = [
        await api.genie.scalar('SELECT id FROM "user" WHERE email = :e', e=e)
        for e in ("alice@example.com", "bob@example.com")
    ]
    for i in ids:
        member = {alice: "Alice Smith (alice@example.com)", bob: "Bob Jones (bob@example.com)"}.get(i)
        assert (f"responder {i} → {member}" if member else f"responder {i}: unresolved (nobody)") in people, i
    assert "responder carol@example.com: unresolved (nobody)" in people
    assert "responder alice@example.com → Alice Smith (alice@example.com)" in people
    assert "assignee carol@example.com: unresolved (nobody)" in people
    assert "reporter" not in people  # the reporter is kept only when it names one of the team
    # Slack's message names the members only.
    api.genie.rt.wake_outbox()
    [post] = await api.genie.fake.wait_for("chat.postMessage", channel="C0PAY")
    assert "Carol" not in json.dumps(post.args) and "Mallory" not in json.dumps(post.args)


# --- list and query ----------------------------------------------------------------------------
async def test_list_with_queries_and_paging(api: Api):
    made = {}
    for alias, message, priority, tags in [
        ("a", "Disk full on db-1", "P1", ["db", "disk"]),
        ("b", "Disk almost full on db-2", "P2", ["db"]),
        ("c", "Checkout latency high", "P1", ["checkout"]),
        ("d", "Cert expires soon", "P4", []),
        ("e", "Queue backlog", "P3", ["queue", "db"]),
    ]:
        source = "grafana" if alias == "e" else "prometheus"
        made[alias] = (
            await api.create(
                alias=alias, message=message, priority=priority, tags=tags, source=source, entity=f"svc-{alias}"
            )
        )["alertId"]
    await api.create(team="Search", alias="s", message="Disk full on search-1", priority="P1", tags=["db"])
    await api.act("b", "acknowledge", kind="alias")
    await api.act("d", "close", kind="alias")
    await api.act("c", "assign", {"owner": {"username": "bob@example.com"}}, kind="alias")

    async def aliases(**params) -> list[str]:
        return [a["alias"] for a in (await api.list(**params))["data"]]

    assert await aliases() == ["e", "d", "c", "b", "a"]  # newest first, only Payments' alerts
    assert await aliases(order="asc") == ["a", "b", "c", "d", "e"]
    assert await aliases(sort="tinyId", order="asc") == ["a", "b", "c", "d", "e"]
    assert await aliases(sort="priority", order="asc") == ["a", "c", "b", "e", "d"]
    assert await aliases(query="status:open") == ["e", "c", "b", "a"]
    assert await aliases(query="status:closed") == ["d"]
    assert await aliases(query="priority:P1") == ["c", "a"]
    assert await aliases(query="priority:p1 AND status:open") == ["c", "a"]
    assert await aliases(query="tag:db") == ["e", "b", "a"]
    assert await aliases(query="tags:db tag:disk") == ["a"]
    assert await aliases(query="tag:d") == []  # a whole tag, not a part of one
    assert await aliases(query="message:DISK") == ["b", "a"]
    assert await aliases(query='message:"almost full"') == ["b"]
    assert await aliases(query="message:%") == []  # LIKE wildcards are literal
    assert await aliases(query="acknowledged:false") == ["e", "d", "c", "a"]
    assert await aliases(query="acknowledged:true AND status:open") == ["b"]
    assert await aliases(query="source=grafana") == ["e"]
    assert await aliases(query="entity:svc-c alias:c") == ["c"]
    assert await aliases(query="owner:bob@example.com") == ["c"]
    tiny_b = (await api.get(made["b"]))["tinyId"]
    assert await aliases(query=f"tinyId:{tiny_b}") == ["b"]

    item = (await api.list(query="alias:a"))["data"][0]
    assert item["id"] == made["a"] and item["tags"] == ["db", "disk"] and item["priority"] == "P1"
    assert "description" not in item and "details" not in item
    assert item["integration"]["name"] == "Payments" and item["count"] == 1

    first = await api.list(limit=2)
    assert [a["alias"] for a in first["data"]] == ["e", "d"]
    assert set(first["paging"]) == {"first", "last", "next"}
    assert first["paging"]["next"].startswith(api.genie.settings.base_url + "/v2/alerts?")
    second = await api.genie.http.get(
        first["paging"]["next"].replace(api.genie.settings.base_url, ""),
        headers={"Authorization": f"GenieKey {api.keys['Payments']}"},
    )
    second = envelope(second, 200)
    assert [a["alias"] for a in second["data"]] == ["c", "b"] and "prev" in second["paging"]
    last = await api.list(limit=2, offset=4)
    assert [a["alias"] for a in last["data"]] == ["a"] and "next" not in last["paging"]
    assert "offset=4" in last["paging"]["last"]
    assert (await api.list(offset=50))["data"] == []
    # The Ops key may post for Payments but lists only its own team's alerts (it has none).
    assert (await api.list(team="Ops"))["data"] == []


# --- who did what ------------------------------------------------------------------------------
async def test_logs_show_who_did_what_including_denied_slack_clicks(api: Api):
    alert = await api.get((await api.create(alias="story", user="Prometheus", note="first seen"))["alertId"])
    await api.create(alias="story", user="Prometheus")
    await api.act("story", "acknowledge", {"user": "alice", "note": "looking"}, kind="alias")
    await api.act("story", "acknowledge", {"user": "bob"}, kind="alias")
    await api.act("story", "notes", {"note": "it was the cron job", "user": "alice"}, kind="alias")
    await api.act(
        "story", "assign", {"owner": {"username": "carol@example.com"}, "user": "alice"}, kind="alias", expect=422
    )
    await api.act("story", "assign", {"owner": {"username": "bob@example.com"}, "user": "alice"}, kind="alias")
    # A person who has not linked their Slack account clicks Acknowledge in Slack: denied.
    tiny = int(alert["tinyId"])
    clicked = await api.genie.slack.block_action(
        SlackUser("U0STRANGER"), Action.ALERT_ACKNOWLEDGE, ButtonValue(tiny).encode(), container="message"
    )
    assert clicked.status_code == 200
    await eventually(
        lambda: api.genie.scalar(
            "SELECT count(*) FROM alert_event WHERE alert_id = :a AND outcome = 'denied' AND slack_user_id = 'U0STRANGER'",
            a=tiny,
        )
    )
    await api.act("story", "close", {"user": "Alertmanager"}, kind="alias")

    logs = envelope(await api.call("GET", f"/v2/alerts/{alert['id']}/logs", params={"order": "asc"}), 200)
    lines = [entry["log"] for entry in logs["data"]]
    assert lines == [
        "Alert created by Prometheus via the API — note: first seen",
        "Alert de-duplicated by Prometheus via the API — count is now 2",
        "Alert acknowledged by alice via the API — note: looking",
        lines[3],
        "Note added by alice via the API: it was the cron job",
        "Alert assigned by alice via the API — assigned to Bob Jones (bob@example.com)",
        "Acknowledge by Slack user U0STRANGER via Slack was denied — Slack account not linked",  # a plain name
        "Alert closed by Alertmanager via the API",
    ]
    assert lines[3].startswith("Acknowledge by bob via the API changed nothing — ")
    assert "already acknowledged by alice" in lines[3]
    assert [e["type"] for e in logs["data"]] == ["system"] * 4 + ["note"] + ["system"] * 3
    assert [e["owner"] for e in logs["data"]][:3] == ["Prometheus", "Prometheus", "alice"]
    assert all(e["createdAt"].endswith("Z") for e in logs["data"])
    newest_first = envelope(await api.call("GET", f"/v2/alerts/{alert['id']}/logs", params={"limit": 2}), 200)
    assert [e["log"] for e in newest_first["data"]] == [lines[7], lines[6]] and "next" in newest_first["paging"]


# --- the CLI -----------------------------------------------------------------------------------
async def test_genie_team_key_prints_a_working_key_and_rotate_replaces_it(api: Api, tmp_path):
    env = base_env(DATABASE_URL=api.genie.settings.database_url, GENIE_SECRET_KEY=SECRET_KEY)

    async def cli(*args: str):
        return await asyncio.to_thread(run_genie, tmp_path, env, *args)

    async with api.genie.sessionmaker.begin() as s:
        await teams.add_team(s, "Billing", "C0BILL")
    key = ok(await cli("team", "key", "Billing")).stdout.strip()
    assert uuid.UUID(key) and ok(await cli("team", "key", "Billing")).stdout.strip() == key  # stable
    assert ok(await cli("team", "key", "Payments")).stdout.strip() == api.keys["Payments"]
    created = envelope(await api.call("POST", "/v2/alerts", {"message": "from the CLI key"}, key=key), 202)
    envelope(await api.call("GET", f"/v2/alerts/requests/{created['requestId']}", key=key), 200)

    rotated = ok(await cli("team", "key", "Billing", "--rotate")).stdout.strip()
    assert rotated != key and uuid.UUID(rotated)
    assert envelope(await api.call("GET", "/v2/alerts", key=key), 401)["message"] == "Could not authenticate"
    assert len(envelope(await api.call("GET", "/v2/alerts", key=rotated), 200)["data"]) == 1

    # genie team grant: Billing's key may then name Search in responders.
    body = {"message": "for search", "responders": [{"type": "team", "name": "Search"}]}
    envelope(await api.call("POST", "/v2/alerts", body, key=rotated), 403)
    ok(await cli("team", "grant", "Billing", "Search"), "Billing's key may now also post alerts for Search")
    created = envelope(await api.call("POST", "/v2/alerts", body, key=rotated), 202)
    data = envelope(await api.call("GET", f"/v2/alerts/requests/{created['requestId']}", key=rotated), 200)["data"]
    assert (await api.get(data["alertId"], team="Search"))["integration"]["name"] == "Search"

    for args, words in [
        (("team", "key", "Nobody"), "no team named Nobody"),
        (("team", "grant", "Billing", "Nobody"), "no team named Nobody"),
    ]:
        run = await cli(*args)
        assert run.returncode == 1 and words in run.stderr and run.stdout == "", str(run)


# --- exactly once under concurrency ------------------------------------------------------------
async def test_concurrent_creates_with_one_alias_make_one_alert(api: Api):
    body = {"message": "Disk full on db-1", "alias": "storm", "priority": "P2"}
    responses = await asyncio.gather(*(api.call("POST", "/v2/alerts", body) for _ in range(20)))
    request_ids = [envelope(r, 202)["requestId"] for r in responses]
    assert len(set(request_ids)) == 20
    assert await api.genie.rows("SELECT count FROM alert") == [(20,)]
    assert await api.genie.scalar("SELECT count(*) FROM outbox WHERE kind = 'alert.post'") == 1
    assert await api.genie.scalar("SELECT count(*) FROM api_request WHERE success = :t", t=True) == 20
    statuses = [await api.status(r) for r in request_ids]
    assert len({s["alertId"] for s in statuses}) == 1
    assert sorted(s["status"] for s in statuses) == ["Alert is deduplicated"] * 19 + ["Created alert"]


async def test_an_alert_taken_in_costs_its_few_statements_and_wakes_no_idle_loop(api: Api):
    """The ingest's database work (bench/RESULTS.md, "Statements per request"): the key with its
    team, the alert's upsert (de-duplication and the team's escalation policy in the one
    statement), its timeline row, its outbox row and the request's record — new or
    de-duplicated: five statements on SQLite; on PostgreSQL one, in no transaction of its own,
    the key checked in it (``alerts.create_alerts_at_once``). And an alert of a
    team without an escalation policy does not wake the escalation engine or the channel worker
    (each woken turn was 2–3 transactions)."""
    engine = api.genie.sessionmaker.kw["bind"].sync_engine
    expected = 1 if engine.dialect.name == "postgresql" else 5
    by_task: dict[str, list[str]] = {}

    def count(conn, cursor, statement, *args):
        task = asyncio.current_task()
        name = task.get_name() if task is not None else ""
        if not statement.lstrip().upper().startswith(("BEGIN", "SAVEPOINT", "RELEASE")):
            # The request's writes are made by the process's ingest writer (``ingest_batch``).
            loop = name.startswith("genie-") and name != "genie-ingest-writer"
            by_task.setdefault(name if loop else "request", []).append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        for i in range(20):  # a turn of a woken loop per alert would be 40–60 statements
            await api.call("POST", "/v2/alerts", {"message": "Disk full", "alias": f"disk-{i % 10}"})
            if i in (0, 19):  # a new alert, then a de-duplicated one
                assert len(by_task["request"]) == expected, [x[:60] for x in by_task["request"]]
            by_task["request"] = []
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert await api.genie.rows("SELECT count(*), sum(count) FROM alert") == [(10, 20)]
    loops = by_task.get("genie-paging-engine", []) + by_task.get("genie-channel-worker", [])
    assert len(loops) < 20, [x[:60] for x in loops]  # their own polls only (every 5 s and 2 s)


async def test_concurrent_acknowledges_apply_exactly_once(api: Api):
    alert = await api.get((await api.create(alias="race"))["alertId"])
    responses = await asyncio.gather(
        *(api.call("POST", f"/v2/alerts/{alert['id']}/acknowledge", {"user": f"u{i}"}) for i in range(10))
    )
    statuses = [await api.status(envelope(r, 202)["requestId"]) for r in responses]
    assert sorted(s["isSuccess"] for s in statuses) == [False] * 9 + [True]
    winner = next(s for s in statuses if s["isSuccess"])
    assert winner["status"] == "Acknowledged alert"
    acked = await api.genie.rows(
        "SELECT actor_name FROM alert_event WHERE alert_id = :a AND action = 'acknowledge' AND outcome = 'applied'",
        a=int(alert["tinyId"]),
    )
    assert len(acked) == 1
    assert all(f"already acknowledged by {acked[0][0]}" in s["status"] for s in statuses if not s["isSuccess"])
    assert (await api.get(alert["id"]))["report"]["acknowledgedBy"] == acked[0][0]


# --- group commit (bot.services.ingest_batch) ----------------------------------------------------
def database_held(genie: Genie):
    """The ingest writer's first statement waits (on PostgreSQL it reads the key table)."""
    return helpers.database_held(genie.settings.database_url, "team_api_key")


async def in_one_batch(api: Api, bodies: list[tuple[str | None, Any]]) -> tuple[list[httpx.Response], int]:
    """POST each ``(key, body)`` so that all of them are taken by the writer together: a first
    alert keeps the writer waiting on the held database while the others queue behind it.
    Returns the answers and how many transactions committed them."""
    await api.create(alias="wake-the-writer")  # the process's writer exists from its first alert
    batcher = api.genie.app.state.ingest_batcher
    batches, taken = batcher.batches, batcher.taken + 1
    async with database_held(api.genie):
        first = asyncio.create_task(api.call("POST", "/v2/alerts", {"message": "ahead", "alias": "ahead"}))
        await eventually(lambda: _true(batcher.taken == taken and batcher.waiting == 0))
        assert not first.done()
        posted = [asyncio.create_task(api.call("POST", "/v2/alerts", body, key=key)) for key, body in bodies]
        await eventually(lambda: _true(batcher.waiting == len(bodies)))
        assert batcher.taken == taken
    responses = await asyncio.gather(first, *posted)
    envelope(responses[0], 202)
    return list(responses[1:]), batcher.batches - batches - 1  # (the first, "ahead", alone)


async def _true(value: Any) -> Any:
    return value


async def test_alerts_of_one_moment_share_a_transaction_and_dedupe_exactly_within_it(api: Api):
    """Four alerts with one alias in one batch: the first creates it, the next three count it
    (2, 3, 4) with their timeline rows in order, as four requests one after the other would; an
    unknown key (401), a bad body (422) and another team's alert in the same batch are answered
    as alone, and only the de-duplication's alert is posted to Slack once."""
    before = await counts(api.genie)
    key = api.keys["Payments"]
    bodies: list[tuple[str | None, Any]] = [
        (key, {"message": "Disk full", "alias": "disk"}),
        (key, {"message": "Disk full", "alias": "disk"}),
        ("not-a-key", {"message": "Disk full", "alias": "disk"}),
        (api.keys["Search"], {"message": "Disk full", "alias": "disk"}),
        (key, {"alias": "disk"}),  # no message: 422
        (key, {"message": "Disk full", "alias": "disk"}),
        (key, {"message": "Disk full", "alias": "disk", "note": "fourth"}),
    ]
    responses, transactions = await in_one_batch(api, bodies)
    assert transactions == 1
    assert [r.status_code for r in responses] == [202, 202, 401, 202, 422, 202, 202]
    assert envelope(responses[2], 401)["message"] == "Could not authenticate"
    assert envelope(responses[4], 422)["errors"] == {"message": "Message can not be empty."}
    statuses = [await api.status(envelope(responses[i], 202)["requestId"]) for i in (0, 1, 5, 6)]
    assert [s["status"] for s in statuses] == ["Created alert"] + ["Alert is deduplicated"] * 3
    assert len({s["alertId"] for s in statuses}) == 1
    alert = await api.get(statuses[0]["alertId"])
    assert alert["count"] == 4
    assert [(e[0], e[3]) for e in await events(api.genie, alert["tinyId"])] == [
        ("create", None),
        ("deduplicate", "count is now 2"),
        ("deduplicate", "count is now 3"),
        ("deduplicate", "count is now 4"),
    ]
    search = await api.status(envelope(responses[3], 202)["requestId"], team="Search")
    assert (await api.get(search["alertId"], team="Search"))["count"] == 1  # its own team's alias
    after = await counts(api.genie)
    # wake-the-writer, ahead, Payments' disk, Search's disk; 8 timeline rows; 4 posts, 3 updates.
    assert {t: after[t] - before[t] for t in TABLES} == {
        "alert": 4,
        "alert_event": 7,
        "outbox": 7,
        "api_request": 7,
    }
    await eventually(lambda: _true(len(api.genie.fake.messages("C0PAY")) == 3))
    await asyncio.sleep(0.3)
    assert len(api.genie.fake.messages("C0PAY")) == 3  # wake-the-writer, ahead, disk: once each


async def test_eight_alerts_in_one_batch_cost_the_statements_of_one(api: Api):
    """The batch's database work does not grow with its size: its keys in one statement, its
    alerts in one upsert, then the timeline, the Slack posts and the request records — one
    executemany each on SQLite (five statements for one alert or for eight); on PostgreSQL one
    statement for all of it, keys included, whose rows keep the batch's order."""
    engine = api.genie.sessionmaker.kw["bind"].sync_engine
    per_batch = 1 if engine.dialect.name == "postgresql" else 5
    writes: list[str] = []

    def count(conn, cursor, statement, *args):
        task = asyncio.current_task()
        if task is not None and task.get_name() == "genie-ingest-writer":
            if not statement.lstrip().upper().startswith(("BEGIN", "SAVEPOINT", "RELEASE")):
                writes.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        key = api.keys["Payments"]
        responses, transactions = await in_one_batch(
            api, [(key, {"message": f"Disk {i} full", "alias": f"disk-{i}"}) for i in range(8)]
        )
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert transactions == 1 and [r.status_code for r in responses] == [202] * 8
    # wake-the-writer alone, "ahead" alone, then the eight: the same statements each
    assert len(writes) == 3 * per_batch, "\n".join(w[:40] for w in writes)
    assert await api.genie.scalar("SELECT count(*) FROM outbox WHERE kind = 'alert.post'") == 10
    # In the batch's order, as its alerts were written: each table's ids follow it (an outbox's
    # order is its ids).
    order = await api.genie.rows(
        "SELECT e.id, o.id FROM alert a JOIN alert_event e ON e.alert_id = a.id "
        "JOIN outbox o ON o.alert_id = a.id WHERE a.alias LIKE 'disk-%' ORDER BY a.id"
    )
    assert len(order) == 8
    assert [e for e, _ in order] == sorted(e for e, _ in order), order
    assert [o for _, o in order] == sorted(o for _, o in order), order
    answered = [envelope(r, 202)["requestId"] for r in responses]
    recorded = await api.genie.rows("SELECT request_id, status FROM api_request WHERE alias LIKE 'disk-%'")
    assert sorted(recorded) == sorted((r, "Created alert") for r in answered)


async def test_a_batch_stores_every_value_as_the_orm_stores_it(api: Api):
    """A batch's rows are written on the driver (SQLite: ``repo.insert_rows``, ``repo.driver_statement``; PostgreSQL:
    arrays) with SQLAlchemy's own bind processors for this database: read back raw, an alert,
    its timeline row, its Slack post and its request record written by the batch equal the same
    values written by the ORM. Above all the timestamps — SQLite compares them as text, and a
    moment with no microseconds written another way ('03:04:05' against '03:04:05.000000') would
    sort before its own second — and JSON (an absent list, ``null``) and booleans."""
    from datetime import UTC, datetime

    from storage.models import Alert, AlertEvent, ApiRequest, OutboxMessage

    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)  # no microseconds
    body = {"message": "Disk full", "alias": "raw", "tags": ["disk"], "details": {"host": "db-1"}, "note": "n"}
    async with api.genie.sessionmaker.begin() as session:
        team = await teams.team_by_name(session, "Payments")
        data = alerts.parse_create(body)
        [created] = await alerts.create_alerts(session, [alerts.NewAlert(team, data, "request-batch")], now=now)
        values = alerts._row_values(data, str(uuid.uuid4()), now, None) | {"alias": "raw-orm"}
        orm_alert = Alert(**values, team_id=team.id, slack_channel=team.slack_channel_id)
        session.add(orm_alert)
        await session.flush()
        actor = alerts.Actor(via="api", label=f"API ({team.name})")
        event = alerts._event_row(orm_alert.id, "create", actor, now, note="n", request_id="request-orm")
        post = alerts._outbox_row(team.slack_channel_id, "alert.post", orm_alert.id, team, "post", now)
        request = dict(
            request_id="request-orm",
            team_id=team.id,
            action="Create",
            alert_id=orm_alert.id,
            alias="raw",
            success=True,
            status="Created alert",
            processed_at=now,
        )
        session.add_all([AlertEvent(**event), OutboxMessage(**post), ApiRequest(**request)])
        await session.flush()
        connection = await session.connection()

        async def raw(table: str, column: str, ids: tuple[Any, Any], skip: set[str]) -> list[dict[str, Any]]:
            quoted = ", ".join(f"'{i}'" if isinstance(i, str) else str(i) for i in ids)
            result = await connection.exec_driver_sql(f"SELECT * FROM {table} WHERE {column} IN ({quoted})")
            rows = [dict(zip(result.keys(), row, strict=True)) for row in result.all()]
            return [
                {k: v for k, v in r.items() if k not in skip} for r in sorted(rows, key=lambda r: ids.index(r[column]))
            ]

        pair = (created.alert_id, orm_alert.id)
        stored = {
            "alert": await raw("alert", "id", pair, {"id", "uid", "alias", "tiny_id"}),
            "alert_event": await raw("alert_event", "alert_id", pair, {"id", "alert_id", "request_id"}),
            "outbox": await raw("outbox", "alert_id", pair, {"id", "alert_id"}),
            "api_request": await raw(
                "api_request", "request_id", ("request-batch", "request-orm"), {"id", "request_id", "alert_id"}
            ),
        }
    for table, (batch, orm) in stored.items():
        assert batch == orm, table
    assert created.created and len(stored["alert"]) == 2


async def test_a_busy_writer_gathers_the_clients_it_answered_into_one_batch(monkeypatch):
    """Clients that post again as soon as they are answered (Alertmanager's, the benchmark's):
    without gathering, the writer takes the first one back alone while the others are still on
    their way, and batches go 1, 7, 1, 7 …; gathering (``group_commit.GATHER_S``) waits for them,
    so each transaction carries all eight. (The transaction is a stand-in here: the policy is
    what is tested; the database's part is the tests above.)"""
    sizes: list[int] = []

    async def transaction(self, batch):
        sizes.append(len(batch))
        await asyncio.sleep(0.005)  # the batch's round trips and commit
        return [alerts.Created(len(sizes), True, None, False) for _ in batch]

    monkeypatch.setattr(ingest_batch.IngestBatcher, "_transaction", transaction)
    # Turnarounds of 0–3 ms here, so a window that a loaded test machine cannot miss.
    monkeypatch.setattr(group_commit, "GATHER_S", 0.05)
    batcher = ingest_batch.IngestBatcher(lambda: None)  # type: ignore[arg-type]

    async def client(i: int) -> None:
        for n in range(12):
            await batcher.create("key", ValueError(), f"{i}-{n}")
            await asyncio.sleep(0.001 * (i % 4))  # the answer's way back, and the next request's

    await asyncio.gather(*(client(i) for i in range(8)))
    assert sum(sizes) == 96 and batcher.written == 96
    assert sum(sizes[1:]) / len(sizes[1:]) >= 7, sizes  # ungathered: 4 (1, 7, 1, 7 …)


def poisoned(genie: Genie, message: str):
    """The database refuses an alert with this message: bad data that only the database catches."""
    return helpers.refusing_rows(genie.settings.database_url, "alert", f"NEW.message = '{message}'", "poisoned alert")


async def test_one_alert_the_database_refuses_fails_alone_in_its_batch(api: Api):
    """The batch's transaction fails on it; the batch is written again one alert at a time: the
    bad one is a 503 with nothing of it written, the others are accepted once each."""
    before = await counts(api.genie)
    key = api.keys["Payments"]
    bodies: list[tuple[str | None, Any]] = [(key, {"message": f"fine {i}", "alias": f"fine-{i}"}) for i in range(5)]
    bodies.insert(2, (key, {"message": "poison", "alias": "poison"}))
    async with poisoned(api.genie, "poison"):
        responses, transactions = await in_one_batch(api, bodies)
    assert transactions == 5  # the batch failed; then each good one in its own
    assert [r.status_code for r in responses] == [202, 202, 503, 202, 202, 202]
    assert "please retry" in envelope(responses[2], 503)["message"]
    for i in (0, 1, 3, 4, 5):
        status = await api.status(envelope(responses[i], 202)["requestId"])
        assert status["status"] == "Created alert"
    assert await api.genie.scalar("SELECT count(*) FROM alert WHERE message = 'poison'") == 0
    after = await counts(api.genie)
    assert {t: after[t] - before[t] for t in TABLES} == {t: 7 for t in TABLES}  # 5 + ahead + wake-the-writer
    assert await api.genie.scalar("SELECT count(*) FROM api_request WHERE alias = 'poison'") == 0


async def test_alerts_written_at_once_stay_accepted_when_the_rest_of_their_batch_fails(api: Api):
    """PostgreSQL writes most of a batch in one statement, committed on its own, and the rest (here
    the second alert with one alias) in a transaction after. When that transaction fails, the
    ones already written are still answered 202 (written again, they would be refused as
    duplicate requests: a 503 for an alert that is in), and only the failing one is a 503.
    SQLite (one transaction, written again one by one) answers the same."""
    key = api.keys["Payments"]
    bodies: list[tuple[str | None, Any]] = [
        (key, {"message": "Disk full", "alias": "split-x"}),
        (key, {"message": "Disk full", "alias": "split-x"}),
        (key, {"message": "CPU hot", "alias": "split-y"}),
    ]
    refused = helpers.refusing_rows(
        api.genie.settings.database_url, "alert_event", "NEW.action = 'deduplicate'", "no duplicates today"
    )
    async with refused:
        responses, _ = await in_one_batch(api, bodies)
    assert [r.status_code for r in responses] == [202, 503, 202]
    for i in (0, 2):
        assert (await api.status(envelope(responses[i], 202)["requestId"]))["status"] == "Created alert"
    assert await api.genie.rows("SELECT alias, count FROM alert WHERE alias LIKE 'split-%' ORDER BY alias") == [
        ("split-x", 1),
        ("split-y", 1),
    ]
    recorded = await api.genie.rows("SELECT alias FROM api_request WHERE alias LIKE 'split-%' ORDER BY alias")
    assert recorded == [("split-x",), ("split-y",)]
    posts = await api.genie.scalar(
        "SELECT count(*) FROM outbox o JOIN alert a ON a.id = o.alert_id WHERE a.alias LIKE 'split-%'"
    )
    assert posts == 2


async def test_a_connection_lost_under_the_batch_statement_is_never_handed_out_again(db_url: str):
    """PostgreSQL runs the API's batch on the asyncpg connection itself (``repo.driver_fetch``).
    When the server drops that connection (a failover, a restart), the statement fails as
    SQLAlchemy's own execution would — a ``DBAPIError``, the connection invalidated — and the
    pool opens a new one for the next batch instead of handing the dead one out again (with one
    connection in the pool, none idle long enough to be pinged, every batch after would fail)."""
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite: the batch runs in a transaction on its one connection, never on asyncpg")
    from sqlalchemy import exc, text

    from storage import repositories as repo
    from storage.session import make_engine, make_sessionmaker

    engine, killer = make_engine(db_url, pool_size=1, max_overflow=0), make_engine(db_url)
    sessionmaker = make_sessionmaker(engine)
    pid_now = text("SELECT pg_backend_pid() AS pid")

    async def backend() -> int:
        async with sessionmaker() as session:
            await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
            return (await repo.driver_fetch(session, pid_now, {}))[0][0]

    try:
        first = await backend()
        async with killer.connect() as conn:
            assert (await conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": first})).scalar()
        with pytest.raises(exc.DBAPIError) as lost:
            await backend()
        assert lost.value.connection_invalidated
        assert await backend() not in (first, None)  # a new connection
        # In a transaction — even as its first statement, which the adapter begins it for — it
        # runs in that transaction: now() is the transaction's moment, not the statement's.
        async with sessionmaker.begin() as session:
            began = (await repo.driver_fetch(session, text("SELECT now()"), {}))[0][0]
            await asyncio.sleep(0.01)
            assert await session.scalar(text("SELECT now()")) == began
    finally:
        await engine.dispose()
        await killer.dispose()


async def test_a_rotated_key_is_refused_at_once_by_every_process(api: Api, tmp_path):
    """Two processes on one database (this one and a ``genie serve``): the key is rotated (by a
    third connection) and the very next alert with the old key is a 401 in both — the key is
    read in each batch's own transaction, never remembered — and the new key works in both."""
    port = free_port()
    other = GenieServer.start(
        clean_env(**genie_env(api.genie.settings.database_url, api.genie.fake, f"http://127.0.0.1:{port}")),
        port,
        cwd=tmp_path,
    )
    try:
        await other.wait_healthy(timeout=60)
        old = api.keys["Payments"]
        async with httpx.AsyncClient(base_url=other.url, timeout=10) as there:

            async def post(client: httpx.AsyncClient, key: str, alias: str) -> int:
                response = await client.post(
                    "/v2/alerts", headers={"Authorization": f"GenieKey {key}"}, json={"message": "m", "alias": alias}
                )
                return response.status_code

            for client in (api.genie.http, there):  # both have taken (and could remember) the key
                assert [await post(client, old, f"before-{i}") for i in range(3)] == [202] * 3
            async with api.genie.sessionmaker.begin() as s:
                new = await alerts.team_key(s, await teams.require_team(s, "Payments"), rotate=True)
            assert await post(there, old, "after") == 401
            assert await post(api.genie.http, old, "after") == 401
            assert await post(there, new, "new-there") == 202
            assert await post(api.genie.http, new, "new-here") == 202
            assert await api.genie.scalar("SELECT count(*) FROM alert WHERE alias = 'after'") == 0
    finally:
        other.stop()
