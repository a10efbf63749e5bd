"""Heartbeats, as OpsGenie's Heartbeat API: contract tests over HTTP against the real server
(paths with and without the trailing slash and under the JSM prefix, OpsGenie's bodies, status
codes and envelopes, GenieKey and HTTP Basic), and the expiry: with the server's clock moved on
(``Runtime.now``, the clock the server judges heartbeats by), a missed ping raises one alert that
Slack shows once, and the next ping closes it. Bad input changes nothing (the heartbeat table is
compared before and after)."""

from __future__ import annotations

import asyncio
import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from bot.services import alerts, heartbeats, teams
from tests.conftest import ALICE, MALLORY, Genie, eventually
from tests.helpers import ack_json, block_text, link_person
from tests.test_alert_api import envelope
from tests.test_cli import (
    Cli,
    _with_session,
    as_json,
    cli,  # noqa: F401  (the fixture)
    ok,
    user_error,
)

JSM = "/jsm/ops/integration"
START = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


class Clock:
    """The server's heartbeat clock (``rt.now``), moved by the test."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at

    def move(self, **delta: float) -> datetime:
        self.at += timedelta(**delta)
        return self.at


class World:
    def __init__(self, genie: Genie, keys: dict[str, str], clock: Clock) -> None:
        self.genie, self.keys, self.clock = genie, keys, clock

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        team: str = "Payments",
        headers: dict[str, str] | None = None,
        **kw,
    ) -> httpx.Response:
        headers = {"Authorization": f"GenieKey {self.keys[team]}", **(headers or {})}
        if body is not None:
            kw["json"] = body
        return await self.genie.http.request(method, path, headers=headers, **kw)

    async def create(self, team: str = "Payments", **body: Any) -> dict:
        body = {"name": "nightly-backup", "interval": 10, "intervalUnit": "minutes", "enabled": True, **body}
        return envelope(await self.call("POST", "/v2/heartbeats", body, team=team), 201)["data"]

    async def get(self, name: str, team: str = "Payments") -> dict:
        return envelope(await self.call("GET", f"/v2/heartbeats/{name}", team=team), 200)["data"]

    async def ping(self, name: str = "nightly-backup", team: str = "Payments", method: str = "GET") -> None:
        answer = envelope(await self.call(method, f"/v2/heartbeats/{name}/ping", team=team), 202)
        assert answer["result"] == "PONG - Heartbeat received"

    async def table(self) -> list[tuple]:
        return await self.genie.rows("SELECT * FROM heartbeat ORDER BY id")

    async def expiry(self) -> None:
        """Let the server's monitor look now (as its poll would within seconds)."""
        self.genie.rt.heartbeats.wake()


@pytest.fixture
async def world(genie: Genie) -> World:
    """Payments (C0PAY: Alice, Bob) and Search (C0SEARCH: Mallory), each with its key; Alice and
    Mallory linked in Slack; the server's heartbeat clock at START."""
    for email, name in [
        ("alice@example.com", "Alice Smith"),
        ("bob@example.com", "Bob Jones"),
        ("mallory@example.com", "Mallory Evil"),
    ]:
        await genie.add_user(email, name)
    keys = {}
    async with genie.sessionmaker.begin() as s:
        for name, channel in [("Payments", "C0PAY"), ("Search", "C0SEARCH")]:
            keys[name] = await alerts.team_key(s, await teams.add_team(s, name, channel))
        await teams.add_member(s, "Payments", "alice@example.com")
        await teams.add_member(s, "Payments", "bob@example.com")
        await teams.add_member(s, "Search", "mallory@example.com")
    await link_person(genie, "U0ALICE", "alice@example.com")
    await link_person(genie, "U0MALLORY", "mallory@example.com")
    clock = Clock(START)
    genie.rt.now = clock
    return World(genie, keys, clock)


# --- the API contract --------------------------------------------------------------------------
async def test_create_get_list_update_enable_disable_delete_as_opsgenie_answers(world: World):
    payments_id = await world.genie.scalar("SELECT id FROM team WHERE name = 'Payments'")
    created = await world.create(
        description="The database backup",
        alertMessage="Backups stopped",
        alertTags=["backup", "db"],
        alertPriority="P2",
        ownerTeam={"name": "an OpsGenie team"},
    )  # the key's team owns it
    expected = {
        "name": "nightly-backup",
        "description": "The database backup",
        "interval": 10,
        "enabled": True,
        "intervalUnit": "minutes",
        "expired": False,
        "ownerTeam": {"id": str(payments_id), "name": "Payments"},
        "alertMessage": "Backups stopped",
        "alertTags": ["backup", "db"],
        "alertPriority": "P2",
    }
    assert created == expected  # no lastPingTime before the first ping
    for path in (
        "/v2/heartbeats/nightly-backup",
        "/v2/heartbeats/nightly-backup/",
        f"{JSM}/v2/heartbeats/nightly-backup",
        f"{JSM}/v2/heartbeats/nightly-backup/",
    ):
        assert envelope(await world.call("GET", path), 200)["data"] == expected, path

    # Defaults: enabled, message "<name> is expired", P3, no tags.
    other = await world.create(name="hourly-export", interval=2, intervalUnit="hours", enabled=None)
    assert other["enabled"] is True and other["alertMessage"] == "hourly-export is expired"
    assert other["alertPriority"] == "P3" and other["alertTags"] == [] and other["description"] == ""

    for path in ("/v2/heartbeats", "/v2/heartbeats/", f"{JSM}/v2/heartbeats", f"{JSM}/v2/heartbeats/"):
        listed = envelope(await world.call("GET", path), 200)["data"]["heartbeats"]
        assert [h["name"] for h in listed] == ["hourly-export", "nightly-backup"], path

    patched = envelope(
        await world.call(
            "PATCH",
            "/v2/heartbeats/nightly-backup/",
            {
                "interval": 1,
                "intervalUnit": "hours",
                "description": "Nightly",
                "alertPriority": "P1",
                "name": "nightly-backup",
            },
        ),
        200,
    )
    assert patched["data"] == {"name": "nightly-backup", "enabled": True, "expired": False}
    got = await world.get("nightly-backup")
    assert (got["interval"], got["intervalUnit"], got["description"], got["alertPriority"], got["alertMessage"]) == (
        1,
        "hours",
        "Nightly",
        "P1",
        "Backups stopped",
    )

    disabled = envelope(await world.call("POST", f"{JSM}/v2/heartbeats/nightly-backup/disable"), 200)
    assert disabled["data"] == {"name": "nightly-backup", "enabled": False, "expired": False}
    assert (await world.get("nightly-backup"))["enabled"] is False
    enabled = envelope(await world.call("POST", "/v2/heartbeats/nightly-backup/enable/"), 200)
    assert enabled["data"] == {"name": "nightly-backup", "enabled": True, "expired": False}

    deleted = envelope(await world.call("DELETE", "/v2/heartbeats/hourly-export"), 200)
    assert deleted["result"] == "Deleted"
    assert envelope(await world.call("GET", "/v2/heartbeats/hourly-export"), 404)["message"] == (
        "Heartbeat with name [hourly-export] does not exist"
    )
    assert await world.genie.scalar("SELECT count(*) FROM heartbeat") == 1


async def test_opsgenie_python_sdk_every_heartbeat_call(world: World):
    """``opsgenie_sdk.HeartbeatApi`` with ``configuration.host`` set to Genie: all eight calls it
    offers, each answer read through the SDK's own models (which refuse a missing or mistyped
    field), and a ping as Genie's expiry then sees it."""
    import opsgenie_sdk

    conf = opsgenie_sdk.configuration.Configuration()
    conf.api_key["Authorization"] = world.keys["Payments"]
    conf.host = world.genie.url
    conf.retry_enabled = False
    beats = opsgenie_sdk.HeartbeatApi(api_client=opsgenie_sdk.api_client.ApiClient(configuration=conf))

    def run() -> None:
        created = beats.create_heartbeat(
            opsgenie_sdk.CreateHeartbeatPayload(
                name="sdk-job",
                description="made by opsgenie-sdk",
                interval=15,
                interval_unit="minutes",
                enabled=True,
                alert_message="sdk-job missed its ping",
                alert_tags=["sdk"],
                alert_priority="P2",
            )
        ).data
        assert (created.name, created.interval, created.interval_unit, created.enabled) == (
            "sdk-job",
            15,
            "minutes",
            True,
        )
        got = beats.get_heartbeat("sdk-job").data
        assert (got.description, got.expired) == ("made by opsgenie-sdk", False)
        assert [h.name for h in beats.list_heart_beats().data.heartbeats] == ["sdk-job"]
        assert beats.ping("sdk-job").result == "PONG - Heartbeat received"
        assert isinstance(beats.get_heartbeat("sdk-job").data.last_ping_time, datetime)
        updated = beats.update_heartbeat(
            "sdk-job",
            update_heartbeat_payload=opsgenie_sdk.UpdateHeartbeatPayload(
                interval=2, interval_unit="hours", description="nightly"
            ),
        ).data
        assert (updated.name, updated.enabled, updated.expired) == ("sdk-job", True, False)
        assert beats.disable_heartbeat("sdk-job").data.enabled is False
        assert beats.enable_heartbeat("sdk-job").data.enabled is True
        got = beats.get_heartbeat("sdk-job").data
        assert (got.interval, got.interval_unit, got.description) == (2, "hours", "nightly")
        try:
            beats.get_heartbeat("no-such-job")
            raise AssertionError("an unknown heartbeat was found")
        except opsgenie_sdk.ApiException as err:
            assert err.status == 404
        assert beats.delete_heartbeat("sdk-job").result == "Deleted"
        assert beats.list_heart_beats().data.heartbeats == []

    await asyncio.to_thread(run)  # the SDK is blocking; the server runs in this event loop
    assert await world.genie.scalar("SELECT count(*) FROM heartbeat") == 0


async def test_ping_by_genie_key_by_basic_auth_and_by_every_method(world: World):
    await world.create()
    key = world.keys["Payments"]
    times = []
    for method in ("GET", "POST", "PUT", "PATCH"):
        world.clock.move(minutes=1)
        await world.ping(method=method)
        times.append(world.clock.at)
        assert (await world.get("nightly-backup"))["lastPingTime"] == world.clock.at.strftime("%Y-%m-%dT%H:%M:%S.000Z")

    # HEAD: the same ping, no body.
    world.clock.move(minutes=1)
    head = await world.call("HEAD", "/v2/heartbeats/nightly-backup/ping")
    assert head.status_code == 202 and head.content == b""
    assert (await world.get("nightly-backup"))["lastPingTime"].startswith(world.clock.at.strftime("%Y-%m-%dT%H:%M"))

    # HTTP Basic with the key as the password (Alertmanager's webhook, curl https://x:KEY@host/…),
    # and OpsGenie's own "Basic base64(key)"; with and without the slash, and under JSM.
    http = world.genie.http
    for auth, path in [
        (httpx.BasicAuth("alertmanager", key), "/v2/heartbeats/nightly-backup/ping"),
        (httpx.BasicAuth("", key), "/v2/heartbeats/nightly-backup/ping/"),
        (None, f"{JSM}/v2/heartbeats/nightly-backup/ping"),
    ]:
        world.clock.move(minutes=1)
        headers = {} if auth else {"Authorization": "Basic " + base64.b64encode(key.encode()).decode()}
        response = await http.post(path, auth=auth, headers=headers, json={"receiver": "watchdog", "alerts": []})
        assert envelope(response, 202)["result"] == "PONG - Heartbeat received", path
        assert (await world.get("nightly-backup"))["lastPingTime"].startswith(
            world.clock.at.strftime("%Y-%m-%dT%H:%M")
        ), path

    # A wrong password, a broken Basic header, no key: 401, no ping recorded.
    before = await world.table()
    for headers, auth in [
        ({}, httpx.BasicAuth("alertmanager", "not-the-key")),
        ({"Authorization": "Basic %%%not-base64"}, None),
        ({"Authorization": "Basic " + base64.b64encode(b"user:").decode()}, None),
        ({}, None),
    ]:
        world.clock.move(minutes=1)
        response = await http.get("/v2/heartbeats/nightly-backup/ping", headers=headers, auth=auth)
        assert envelope(response, 401)["message"] in ("Could not authenticate", "Key format is not valid!")
    assert await world.table() == before


async def test_another_teams_key_can_neither_see_nor_ping_nor_change_a_heartbeat(world: World):
    await world.create()
    # Search may have its own heartbeat of the same name: names are per team.
    await world.create(team="Search", interval=1, intervalUnit="days")
    before = await world.table()
    search = "Search"
    assert [
        h["interval"]
        for h in envelope(await world.call("GET", "/v2/heartbeats", team=search), 200)["data"]["heartbeats"]
    ] == [1]
    await world.call("DELETE", "/v2/heartbeats/nightly-backup", team=search)  # deletes Search's own
    after_own_delete = await world.table()
    assert [r for r in before if r not in after_own_delete] == [before[1]]
    for method, path, body in [
        ("GET", "/v2/heartbeats/nightly-backup", None),
        ("GET", "/v2/heartbeats/nightly-backup/ping", None),
        ("PATCH", "/v2/heartbeats/nightly-backup", {"interval": 99}),
        ("POST", "/v2/heartbeats/nightly-backup/disable", None),
        ("DELETE", "/v2/heartbeats/nightly-backup", None),
    ]:
        response = await world.call(method, path, body, team=search)
        assert envelope(response, 404)["message"] == "Heartbeat with name [nightly-backup] does not exist", path
    assert await world.table() == after_own_delete
    assert envelope(await world.call("GET", "/v2/heartbeats", team=search), 200)["data"]["heartbeats"] == []


BAD_INPUT = [
    # unknown names, on every route
    ("GET", "/v2/heartbeats/nope/ping", None, 404, "Heartbeat with name [nope] does not exist"),
    ("GET", "/v2/heartbeats/nope", None, 404, "does not exist"),
    ("PATCH", "/v2/heartbeats/nope", {"interval": 5}, 404, "does not exist"),
    ("POST", "/v2/heartbeats/nope/enable", None, 404, "does not exist"),
    ("DELETE", "/v2/heartbeats/nope/", None, 404, "does not exist"),
    # bad intervals and fields
    ("POST", "/v2/heartbeats", {"name": "x", "interval": 0, "intervalUnit": "minutes"}, 422, "interval"),
    ("POST", "/v2/heartbeats", {"name": "x", "interval": -5, "intervalUnit": "minutes"}, 422, "interval"),
    ("POST", "/v2/heartbeats", {"name": "x", "interval": "10", "intervalUnit": "minutes"}, 422, "interval"),
    ("POST", "/v2/heartbeats", {"name": "x", "interval": 1.5, "intervalUnit": "minutes"}, 422, "interval"),
    ("POST", "/v2/heartbeats", {"name": "x", "interval": True, "intervalUnit": "minutes"}, 422, "interval"),
    ("POST", "/v2/heartbeats", {"name": "x", "interval": 10**12, "intervalUnit": "days"}, 422, "interval"),
    ("POST", "/v2/heartbeats", {"name": "x", "interval": 10, "intervalUnit": "weeks"}, 422, "intervalUnit"),
    ("POST", "/v2/heartbeats", {"name": "x", "interval": 10}, 422, "intervalUnit"),
    ("POST", "/v2/heartbeats", {"interval": 10, "intervalUnit": "minutes"}, 422, "name"),
    ("POST", "/v2/heartbeats", {"name": "a/b", "interval": 10, "intervalUnit": "minutes"}, 422, "name"),
    ("POST", "/v2/heartbeats", {"name": "x" * 201, "interval": 10, "intervalUnit": "minutes"}, 422, "name"),
    (
        "POST",
        "/v2/heartbeats",
        {"name": "x", "interval": 1, "intervalUnit": "days", "alertPriority": "P9"},
        422,
        "alertPriority",
    ),
    (
        "POST",
        "/v2/heartbeats",
        {"name": "x", "interval": 1, "intervalUnit": "days", "alertMessage": "m" * 131},
        422,
        "alertMessage",
    ),
    (
        "POST",
        "/v2/heartbeats",
        {"name": "x", "interval": 1, "intervalUnit": "days", "alertTags": "db"},
        422,
        "alertTags",
    ),
    ("POST", "/v2/heartbeats", {"name": "x", "interval": 1, "intervalUnit": "days", "enabled": "yes"}, 422, "enabled"),
    (
        "POST",
        "/v2/heartbeats",
        {"name": "nightly-backup", "interval": 1, "intervalUnit": "days"},
        409,
        "already exists",
    ),
    ("PATCH", "/v2/heartbeats/nightly-backup", {"interval": 0}, 422, "interval"),
    ("PATCH", "/v2/heartbeats/nightly-backup", {"interval": 400, "intervalUnit": "days"}, 422, "366 days"),
    ("PATCH", "/v2/heartbeats/nightly-backup", {"name": "renamed"}, 422, "renamed"),
    # malformed bodies
    ("POST", "/v2/heartbeats", b'{"name": "x", "interval": ', 400, "not valid JSON"),
    ("PATCH", "/v2/heartbeats/nightly-backup", b"{nope", 400, "not valid JSON"),
    ("POST", "/v2/heartbeats", b'["name", "x"]', 422, "JSON object"),
    ("POST", "/v2/heartbeats", b'{"name": "x\\u0000y", "interval": 1, "intervalUnit": "days"}', 422, "processable"),
    # methods no route serves
    ("DELETE", "/v2/heartbeats/nightly-backup/ping", None, 405, "this path answers"),
    ("PUT", "/v2/heartbeats/nightly-backup", None, 405, "this path answers"),
    ("GET", "/v2/heartbeats/nightly-backup/snooze", None, 404, "does not implement"),
]


async def test_bad_input_is_refused_clearly_and_changes_nothing(world: World):
    await world.create(alertTags=["db"])
    world.clock.move(minutes=3)
    await world.ping()
    before = await world.table()
    for method, path, body, status, words in BAD_INPUT:
        kw: dict[str, Any] = {}
        if isinstance(body, bytes):
            kw["content"] = body
        elif body is not None:
            kw["json"] = body
        response = await world.genie.http.request(
            method, path, headers={"Authorization": f"GenieKey {world.keys['Payments']}"}, **kw
        )
        answer = envelope(response, status)
        assert words in answer["message"] + str(answer.get("errors", "")), (method, path, body, answer)
        if status == 405:
            assert response.headers["allow"], (method, path)
        assert await world.table() == before, (method, path, body)
    assert await world.genie.scalar("SELECT count(*) FROM alert") == 0


# --- expiry ------------------------------------------------------------------------------------
async def _alerts(world: World) -> list[tuple]:
    return await world.genie.rows(
        "SELECT id, message, alias, priority, tags, status, count, team_id, closed_by FROM alert ORDER BY id"
    )


async def test_a_missed_ping_raises_one_alert_posted_once_and_the_next_ping_closes_it(world: World):
    fake, rt = world.genie.fake, world.genie.rt
    await world.create(alertMessage="Nightly backup did not run", alertTags=["backup"], alertPriority="P2")
    world.clock.move(minutes=5)
    await world.ping()

    # 9 minutes after the ping: not late. Nothing raised however often the monitor looks.
    world.clock.move(minutes=9)
    assert await rt.heartbeats.run_once() == 0
    assert (await world.get("nightly-backup"))["expired"] is False

    # 11 minutes after: late. The server's own monitor raises the alert, once.
    world.clock.move(minutes=2)
    await world.expiry()
    await eventually(lambda: _alerts(world))
    for _ in range(3):
        assert await rt.heartbeats.run_once() == 0
    await world.expiry()
    post = (await fake.wait_for("chat.postMessage", channel="C0PAY"))[0].args
    [(alert_id, message, alias, priority, tags, status, count, team_id, _)] = await _alerts(world)
    payments_id = await world.genie.scalar("SELECT id FROM team WHERE name = 'Payments'")
    assert (message, alias, priority, status, count, team_id) == (
        "Nightly backup did not run",
        "heartbeat:nightly-backup",
        "P2",
        "open",
        1,
        payments_id,
    )
    assert "backup" in str(tags)
    assert f"#{alert_id}" in post["text"] and "Nightly backup did not run" in block_text(post["blocks"])
    assert (await world.get("nightly-backup"))["expired"] is True
    description = await world.genie.scalar("SELECT description FROM alert WHERE id = :a", a=alert_id)
    assert "no ping since 2026-11-25 09:05:00 UTC" in description and "every 10 minutes" in description
    await asyncio.sleep(0)
    assert len(fake.calls("chat.postMessage")) == 1

    # The next ping closes it, and the timeline says why.
    world.clock.move(minutes=30)
    await world.ping(method="POST")
    assert (await _alerts(world))[0][5] == "closed"
    reason = await world.genie.scalar(
        "SELECT reason FROM alert_event WHERE alert_id = :a AND action = 'close'", a=alert_id
    )
    assert reason == "the heartbeat nightly-backup was pinged again (POST ping) at 2026-11-25 09:46:00 UTC"
    update = (await fake.wait_for("chat.update"))[-1].args
    assert "Closed* by Heartbeat nightly-backup" in block_text(update["blocks"])
    got = await world.get("nightly-backup")
    assert got["expired"] is False and got["lastPingTime"] == "2026-11-25T09:46:00.000Z"
    assert len(fake.calls("chat.postMessage")) == 1

    # Missed again later: a new alert (the first one is closed).
    world.clock.move(minutes=10, seconds=1)
    await world.expiry()
    await eventually(lambda: _count(world, "SELECT count(*) FROM alert WHERE status = 'open'"))
    assert [r[5] for r in await _alerts(world)] == ["closed", "open"]


async def _count(world: World, sql: str) -> int:
    return await world.genie.scalar(sql)


async def test_a_disabled_heartbeat_is_never_late_and_enabling_starts_afresh(world: World):
    await world.create(enabled=False)
    world.clock.move(days=3)
    assert await world.genie.rt.heartbeats.run_once() == 0
    assert (await world.get("nightly-backup"))["expired"] is False
    envelope(await world.call("POST", "/v2/heartbeats/nightly-backup/enable"), 200)
    world.clock.move(minutes=9)
    assert await world.genie.rt.heartbeats.run_once() == 0
    world.clock.move(minutes=2)
    assert await world.genie.rt.heartbeats.run_once() == 1
    assert await world.genie.scalar("SELECT count(*) FROM alert") == 1


async def test_monitors_racing_for_the_same_late_heartbeats_raise_each_once(world: World):
    """Several monitors (as in several processes) look at once: the conditional UPDATE that
    claims an expiry lets exactly one raise each alert, and none de-duplicates into another."""
    names = [f"job-{i}" for i in range(5)]
    for name in names:
        await world.create(name=name)
    world.clock.move(minutes=11)
    monitors = [heartbeats.HeartbeatMonitor(world.genie.sessionmaker, world.clock) for _ in range(6)]
    raised = await asyncio.gather(*(m.run_once() for m in monitors))
    assert sum(raised) == 5, raised
    rows = await _alerts(world)
    assert sorted(r[2] for r in rows) == [f"heartbeat:{n}" for n in names]
    assert {r[6] for r in rows} == {1}  # count 1: nobody raised it a second time into the same alias
    assert await world.genie.scalar("SELECT count(*) FROM alert_event WHERE action = 'deduplicate'") == 0


# --- Slack: App Home and /genie status -----------------------------------------------------------
async def test_home_and_status_show_the_late_heartbeats_of_the_viewers_teams(world: World):
    fake = world.genie.fake
    await world.create()
    await world.create(name="search-indexer", team="Search", interval=1, intervalUnit="hours")

    status = ack_json(await world.genie.slack.command(ALICE, "status"))
    assert "connected to Genie as *Alice Smith*" in status["text"] and "Late heartbeats" not in status["text"]

    world.clock.move(minutes=12)  # Payments' heartbeat is late; Search's is not
    await world.expiry()
    await eventually(lambda: _count(world, "SELECT count(*) FROM alert"))

    status = ack_json(await world.genie.slack.command(ALICE, "status"))
    assert (
        "Late heartbeats of your teams:*\n• nightly-backup (Payments): never pinged — expected every 10 minutes"
        in status["text"]
    )
    await world.genie.slack.open_home(ALICE)
    home = (await fake.wait_for("views.publish", user_id="U0ALICE"))[-1].args["view"]
    assert "nightly-backup (Payments): never pinged — expected every 10 minutes" in block_text(home["blocks"])

    # Mallory's team's heartbeat is on time, and Payments' is not hers to see.
    mallory = ack_json(await world.genie.slack.command(MALLORY, "status"))
    assert "Late heartbeats" not in mallory["text"]
    await world.genie.slack.open_home(MALLORY)
    home = (await fake.wait_for("views.publish", user_id="U0MALLORY"))[-1].args["view"]
    assert "nightly-backup" not in block_text(home["blocks"]) and "Late heartbeats" not in block_text(home["blocks"])

    # After a ping it is no longer late.
    world.clock.move(minutes=1)
    await world.ping()
    status = ack_json(await world.genie.slack.command(ALICE, "status"))
    assert "Late heartbeats" not in status["text"]


# --- the command line ----------------------------------------------------------------------------
async def test_heartbeat_commands(cli: Cli, db_url: str):  # noqa: F811
    async def team(session):
        await teams.add_team(session, "Payments", "C0PAY")

    await _with_session(db_url, team)
    ok(
        cli(
            "heartbeat",
            "add",
            "nightly-backup",
            "--team",
            "Payments",
            "--interval",
            "10m",
            "--message",
            "Backups stopped",
            "--tags",
            "backup, db",
            "--priority",
            "P2",
            "--description",
            "The nightly dump",
        ),
        "added heartbeat nightly-backup of team Payments",
        "every 10 minutes",
    )
    ok(cli("heartbeat", "add", "weekly-report", "--team", "Payments", "--interval", "7d"))
    [nightly, weekly] = as_json(cli("heartbeat", "list", "--json"))
    assert {
        k: nightly[k]
        for k in (
            "name",
            "team",
            "interval",
            "state",
            "enabled",
            "message",
            "priority",
            "tags",
            "description",
            "last_ping",
        )
    } == {
        "name": "nightly-backup",
        "team": "Payments",
        "interval": "10 minutes",
        "state": "ok",
        "enabled": True,
        "message": "Backups stopped",
        "priority": "P2",
        "tags": ["backup", "db"],
        "description": "The nightly dump",
        "last_ping": None,
    }
    assert weekly["name"] == "weekly-report" and weekly["interval"] == "7 days"

    user_error(cli("heartbeat", "add", "x", "--team", "Payments", "--interval", "10"), "--interval", "10m")
    user_error(cli("heartbeat", "add", "x", "--team", "Nope", "--interval", "5m"), "no team named Nope")
    user_error(cli("heartbeat", "add", "nightly-backup", "--team", "Payments", "--interval", "5m"), "already exists")

    ok(cli("heartbeat", "disable", "nightly-backup", "--team", "Payments"), "disabled heartbeat nightly-backup")
    ok(cli("heartbeat", "remove", "weekly-report", "--team", "Payments"), "removed heartbeat weekly-report")
    rows = as_json(cli("heartbeat", "list", "--team", "Payments", "--json"))
    assert [(h["name"], h["state"]) for h in rows] == [("nightly-backup", "disabled")]
