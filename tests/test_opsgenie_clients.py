"""OpsGenie's own clients against Genie, unchanged but for the host: each test replays the
exact requests a client sends (method, path with and without the trailing slash, headers,
body — read from their senders' code: prometheus/alertmanager ``notify/opsgenie``,
grafana/alerting ``receivers/opsgenie``, zabbix ``templates/media/opsgenie``) and checks
OpsGenie's answers and what the team then sees in Slack (the fake Slack's channel). The last
test drives OpsGenie's Python SDK (``opsgenie-sdk``) through every AlertApi call Genie serves,
reading each answer through the SDK's models."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import socket
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.conftest import eventually
from tests.hardening import outbox_idle
from tests.helpers import block_text
from tests.test_alert_api import Api, api, envelope  # noqa: F401 - the fixture

AM_HEADERS = {"Content-Type": "application/json", "User-Agent": "Alertmanager/0.27.0"}


def _key(api: Api, team: str = "Payments") -> dict[str, str]:
    return {"Authorization": f"GenieKey {api.keys[team]}"}


async def _send(api: Api, method: str, url: str, body: dict | None, headers: dict[str, str]) -> httpx.Response:
    """As Go's json.Encoder writes it: compact, with a newline at the end."""
    content = (json.dumps(body, separators=(",", ":")) + "\n").encode() if body is not None else None
    return await api.genie.http.request(method, url, content=content, headers=headers)


async def _slack_message(api: Api, channel: str = "C0PAY") -> tuple[str, str]:
    """``(fallback text, everything a person reads)`` of the channel's one alert message,
    once every queued change has reached Slack."""
    await outbox_idle(api.genie)
    [message] = api.genie.fake.messages(channel)
    return message["text"], block_text(message["blocks"])


# --- Prometheus Alertmanager -----------------------------------------------------------------------
@pytest.mark.parametrize("base", ["/", "/jsm/ops/integration/"])
async def test_alertmanager_with_update_alerts_fire_change_resolve(api: Api, base: str):
    """``opsgenie_configs: [{api_url: <genie>/, api_key: …, update_alerts: true}]``: create, then
    PUT message and PUT description by alias after every notification; resolve closes."""
    headers = {**AM_HEADERS, **_key(api)}
    alias = hashlib.sha256(b'{}:{alertname="DiskFull"}').hexdigest()

    def create(summary: str, description: str) -> dict:
        return {
            "alias": alias,
            "message": f"[FIRING:1] DiskFull ({summary})",
            "description": description,
            "details": {"alertname": "DiskFull", "instance": "db-1", "severity": "page"},
            "source": "http://alertmanager:9093/#/alerts?receiver=genie",
            "tags": ["db", "disk"],
            "priority": "P2",
        }

    async def notify(summary: str, description: str) -> None:
        body = create(summary, description)
        envelope(await _send(api, "POST", f"{base}v2/alerts", body, headers), 202)
        for field in ("message", "description"):
            response = await _send(
                api, "PUT", f"{base}v2/alerts/{alias}/{field}?identifierType=alias", {field: body[field]}, headers
            )
            assert envelope(response, 202)["result"] == "Request will be processed"

    await notify("disk 91% full", "db-1: / is 91% full")
    text, seen = await _slack_message(api)
    assert "[P2]" in text and "DiskFull (disk 91% full)" in text and "db-1: / is 91% full" in seen

    await notify("disk 97% full", "db-1: / is 97% full")  # the same group, its summary changed
    alert = envelope(await api.genie.http.get(f"{base}v2/alerts/{alias}?identifierType=alias", headers=headers), 200)[
        "data"
    ]
    assert (alert["message"], alert["description"], alert["count"]) == (
        "[FIRING:1] DiskFull (disk 97% full)",
        "db-1: / is 97% full",
        2,
    )
    text, seen = await _slack_message(api)
    assert "DiskFull (disk 97% full)" in text and "db-1: / is 97% full" in seen and "91%" not in seen

    # Unchanged summaries (every repeat_interval) change nothing and add nothing to the timeline.
    events = await api.genie.scalar("SELECT count(*) FROM alert_event")
    for field, value in (("message", alert["message"]), ("description", alert["description"])):
        envelope(
            await _send(api, "PUT", f"{base}v2/alerts/{alias}/{field}/?identifierType=alias", {field: value}, headers),
            202,
        )
    assert await api.genie.scalar("SELECT count(*) FROM alert_event") == events

    response = await _send(
        api,
        "POST",
        f"{base}v2/alerts/{alias}/close?identifierType=alias",
        {"source": "http://alertmanager:9093/#/alerts?receiver=genie"},
        headers,
    )
    envelope(response, 202)
    text, seen = await _slack_message(api)
    assert "(closed)" in text and "Closed" in seen


# --- Grafana's OpsGenie contact point ---------------------------------------------------------------
@pytest.mark.parametrize("url", ["/v2/alerts", "/jsm/ops/integration/v2/alerts"])
async def test_grafana_contact_point_creates_and_auto_closes(api: Api, url: str):
    """Grafana's "Alert API URL" is the full ``…/v2/alerts``; it sends tags as ``key:value``,
    ``details.url``, ``og_priority`` as the priority, and closes ``{url}/{alias}/close``."""
    headers = {"Content-Type": "application/json", **_key(api)}
    alias = hashlib.sha256(b"grafana group key").hexdigest()
    body = {
        "alias": alias,
        "message": "[FIRING:1] HighLatency checkout",
        "description": "**Firing**\n\nValue: A=2.3\nLabels:\n - alertname = HighLatency",
        "details": {"url": "http://grafana:3000/alerting/list", "alertname": "HighLatency", "og_priority": "P1"},
        "source": "Grafana",
        "tags": ["alertname:HighLatency", "og_priority:P1", "team:payments"],
        "priority": "P1",
        "responders": [{"name": "Payments", "type": "team"}],
    }
    envelope(await _send(api, "POST", url, body, headers), 202)
    text, seen = await _slack_message(api)
    assert "[P1]" in text and "HighLatency checkout" in text and "alertname:HighLatency" in seen

    listed = envelope(
        await api.genie.http.get(f"{url}/", params={"query": "tag:team:payments status:open"}, headers=headers), 200
    )["data"]
    assert [a["alias"] for a in listed] == [alias]
    assert listed[0]["responders"][0] == {"type": "team", "id": listed[0]["ownerTeamId"], "name": "Payments"}

    envelope(await _send(api, "POST", f"{url}/{alias}/close?identifierType=alias", {"source": "Grafana"}, headers), 202)
    text, _ = await _slack_message(api)
    assert "(closed)" in text


# --- Zabbix's OpsGenie media type -------------------------------------------------------------------
async def test_zabbix_media_type_problem_ack_note_recovery(api: Api):
    """``opsgenie_api`` = ``<genie>/v2/alerts``: Zabbix adds a ``/``, POSTs there, polls
    ``requests/{id}`` until ``data.success`` (or a status with "Alert is already"), and acts by
    alias (the event id) with ``user`` and ``note``."""
    api_url = "/v2/alerts/"
    headers = {"Content-Type": "application/json", **_key(api)}

    async def request_and_poll(method: str, query: str, fields: dict) -> dict:
        response = await _send(api, method.upper(), api_url + query, fields, headers)
        answer = envelope(response, 202)
        assert isinstance(answer["result"], str)
        status = await api.genie.http.get(f"{api_url}requests/{answer['requestId']}", headers=headers)
        return envelope(status, 200)["data"]

    problem = {
        "message": "Problem: High CPU on web-1",
        "alias": "4711",
        "description": "Problem started at 10:00",
        "priority": "P2",
        "source": "Zabbix",
        "details": {"Zabbix server": "http://zabbix/", "Problem": "http://zabbix/tr_events.php?eventid=4711"},
        "responders": [{"type": "team", "name": "Payments"}],
        "tags": ["service:web", "scope:performance"],
    }
    created = await request_and_poll("post", "", problem)
    assert created["success"] is True and created["alertId"]  # Zabbix keeps it as the issue key

    acked = await request_and_poll(
        "post", "4711/acknowledge?identifierType=alias", {"user": "Zabbix Admin", "note": "Looking"}
    )
    assert acked["success"] is True
    noted = await request_and_poll(
        "post", "4711/notes?identifierType=alias", {"user": "Zabbix Admin", "note": "Restarted nginx"}
    )
    assert noted["success"] is True
    unacked = await request_and_poll(
        "post", "4711/unacknowledge?identifierType=alias", {"user": "Zabbix Admin", "note": "Not mine"}
    )
    assert unacked["success"] is True
    closed = await request_and_poll("post", "4711/close?identifierType=alias", {"user": "", "note": "Resolved"})
    assert closed["success"] is True
    again = await request_and_poll("post", "4711/close?identifierType=alias", {"user": "", "note": "Resolved"})
    assert again["success"] is False and "Alert is already" in again["status"]  # benign for Zabbix

    alert = envelope(await api.genie.http.get(f"/v2/alerts/{created['alertId']}", headers=headers), 200)["data"]
    assert alert["status"] == "closed" and alert["acknowledged"] is False
    text, _ = await _slack_message(api)
    assert "(closed)" in text


# --- every route, with and without the slash, and under the JSM prefix ---------------------------------
async def test_every_route_answers_with_and_without_a_trailing_slash(api: Api):
    headers = _key(api)
    uid = (await api.create(alias="slashes"))["alertId"]
    for prefix in ("", "/jsm/ops/integration"):
        for slash in ("", "/"):
            assert (
                envelope(
                    await api.genie.http.get(
                        f"{prefix}/v2/alerts{slash}", params={"query": "status:open"}, headers=headers
                    ),
                    200,
                )["data"][0]["id"]
                == uid
            )
            assert envelope(await api.genie.http.get(f"{prefix}/v2/alerts/count{slash}", headers=headers), 200)[
                "data"
            ] == {"count": 1}
            assert (
                envelope(await api.genie.http.get(f"{prefix}/v2/alerts/{uid}{slash}", headers=headers), 200)["data"][
                    "id"
                ]
                == uid
            )
            for what in ("notes", "logs", "recipients"):
                envelope(await api.genie.http.get(f"{prefix}/v2/alerts/{uid}/{what}{slash}", headers=headers), 200)
            for action in ("acknowledge", "unacknowledge"):
                envelope(
                    await api.genie.http.post(
                        f"{prefix}/v2/alerts/slashes/{action}{slash}?identifierType=alias", json={}, headers=headers
                    ),
                    202,
                )
    # Never a redirect (clients drop Authorization on one); unknown paths are OpsGenie-style 404s.
    response = await api.genie.http.get("/v2/alerts/saved-searches/", headers=headers)
    assert envelope(response, 404)["message"].startswith("Genie does not implement")
    response = await api.genie.http.patch(f"/v2/alerts/{uid}/", headers=headers)
    assert envelope(response, 405)["message"] and "DELETE" in response.headers["allow"]


# --- the rest of the Alert API, and what Slack shows -----------------------------------------------
async def test_updates_tags_details_responders_snooze_and_custom_actions(api: Api):
    alert = await api.get((await api.create(alias="edit", tags=["db"], details={"region": "eu"}))["alertId"])
    ident = alert["id"]

    async def put(field: str, body: dict, expect: int = 202) -> dict:
        return envelope(await api.call("PUT", f"/v2/alerts/{ident}/{field}", body), expect)

    await put("message", {"message": "Disk 99% full on db-1"})
    await put("description", {"description": "Growing 1%/min"})
    await put("priority", {"priority": "P1"})
    assert (await put("priority", {"priority": "P0"}, 422))["errors"]["priority"]
    assert (await put("message", {"message": " "}, 422))["errors"]["message"]
    await api.act(ident, "tags", {"tags": ["disk", "sev1"]})
    await api.act(ident, "details", {"details": {"runbook": "https://wiki/disk"}})
    response = await api.call("DELETE", f"/v2/alerts/{ident}/tags", params={"tags": "db"})
    envelope(response, 202)
    response = await api.call("DELETE", f"/v2/alerts/{ident}/details", params={"keys": "region", "user": "Bob"})
    envelope(response, 202)
    await api.act(ident, "teams", {"team": {"name": "Search"}})
    status = await api.act(ident, "responders", {"responder": {"type": "user", "username": "bob@example.com"}})
    assert (status["action"], status["isSuccess"]) == ("AddResponder", True)
    end = (datetime.now(UTC) + timedelta(hours=2)).replace(microsecond=0)
    status = await api.act(ident, "snooze", {"endTime": end.isoformat().replace("+00:00", "Z")})
    assert (status["action"], status["status"]) == ("Snooze", "Snoozed alert")
    status = await api.act(ident, "actions/Restart", {"user": "Alice", "note": "via runbook"})
    assert status["status"] == "Executed custom action Restart"

    shown = await api.get(ident)
    search_id = await api.genie.scalar("SELECT id FROM team WHERE name = 'Search'")
    bob_id = await api.genie.scalar("SELECT id FROM \"user\" WHERE email = 'bob@example.com'")
    assert (shown["message"], shown["description"], shown["priority"]) == (
        "Disk 99% full on db-1",
        "Growing 1%/min",
        "P1",
    )
    assert shown["tags"] == ["disk", "sev1"] and shown["details"] == {"runbook": "https://wiki/disk"}
    assert shown["responders"][1:] == [
        {"type": "team", "id": str(search_id), "name": "Search"},
        {"type": "user", "id": str(bob_id), "username": "bob@example.com"},
    ]
    assert shown["snoozed"] is True and shown["snoozedUntil"] == end.isoformat(timespec="milliseconds").replace(
        "+00:00", "Z"
    )
    logs = envelope(await api.call("GET", f"/v2/alerts/{ident}/logs", params={"order": "asc"}), 200)["data"]
    assert any("custom action 'Restart'" in entry["log"] for entry in logs)
    assert any(entry["log"].startswith("Alert snoozed by") for entry in logs)

    text, seen = await _slack_message(api)
    assert text.startswith("[P1]") and "Disk 99% full on db-1" in text
    assert "Growing 1%/min" in seen and "sev1" in seen and "runbook" in seen and "region" not in seen
    assert "snoozed until" in seen and "Bob Jones" in seen

    # Escalation needs the team's escalation policy, which this team has not: a clear 422, nothing changed.
    before = await api.genie.scalar("SELECT count(*) FROM alert_event")
    answer = envelope(await api.call("POST", f"/v2/alerts/{ident}/escalate", {"escalation": {"name": "x"}}), 422)
    assert "escalation" in answer["message"] and answer["errors"]
    assert await api.genie.scalar("SELECT count(*) FROM alert_event") == before

    # Recipients: the team's members through the channel message.
    told = envelope(await api.call("GET", f"/v2/alerts/{ident}/recipients"), 200)["data"]
    assert sorted(r["user"]["username"] for r in told) == ["alice@example.com", "bob@example.com"]
    assert {r["state"] for r in told} == {"notified"} and {r["method"] for r in told} == {"Slack channel"}


async def test_delete_removes_the_alert_and_says_so_in_slack(api: Api):
    status = await api.create(alias="gone", message="Short-lived")
    await _slack_message(api)
    response = await api.call("DELETE", "/v2/alerts/gone", params={"identifierType": "alias", "user": "Alice"})
    request_id = envelope(response, 202)["requestId"]
    assert (await api.status(request_id))["status"] == "Deleted alert"
    envelope(await api.call("GET", f"/v2/alerts/{status['alertId']}"), 404)
    text, seen = await _slack_message(api)
    assert "was deleted by Alice" in text and "Short-lived" in seen
    assert await api.genie.scalar("SELECT count(*) FROM alert") == 0


async def test_another_teams_key_cannot_change_or_delete(api: Api):
    """The gate is the same for every new route: Search's key sees no Payments alert, so each
    call is a 404 and nothing changes."""
    uid = (await api.create(alias="theirs"))["alertId"]
    await outbox_idle(api.genie)  # its post in Slack (which records the message's ts) is not this test's
    before = await api.genie.rows("SELECT * FROM alert")
    events = await api.genie.scalar("SELECT count(*) FROM alert_event")
    calls = [
        ("PUT", "message", {"message": "pwned"}),
        ("PUT", "priority", {"priority": "P5"}),
        ("PUT", "description", {"description": "x"}),
        ("POST", "tags", {"tags": ["x"]}),
        ("POST", "details", {"details": {"x": "y"}}),
        ("POST", "unacknowledge", {}),
        ("POST", "snooze", {"endTime": "2099-01-01T00:00:00Z"}),
        ("POST", "teams", {"team": {"name": "Search"}}),
        ("POST", "responders", {"responder": {"type": "team", "name": "Search"}}),
        ("POST", "actions/Restart", {}),
        ("POST", "escalate", {}),
        ("GET", "recipients", None),
        ("DELETE", "tags?tags=db", None),
        ("DELETE", "details?keys=a", None),
        ("DELETE", "", None),
    ]
    for method, what, body in calls:
        path = f"/v2/alerts/{uid}" + (f"/{what}" if what else "")
        kw = {"json": body} if body is not None else {}
        response = await api.call(method, path, team="Search", **kw)
        assert envelope(response, 404)["message"] == "Alert with given id does not exist", (method, what)
    assert await api.genie.rows("SELECT * FROM alert") == before
    assert await api.genie.scalar("SELECT count(*) FROM alert_event") == events


async def test_list_queries_teams_free_text_and_count(api: Api):
    await api.create(alias="a", message="Disk full on db-1", priority="P1")
    await api.create(alias="b", message="CPU high on web-2", description="nginx workers")
    await api.create(team="Search", alias="c", message="Index lag")
    await api.create(team="Ops", alias="d", message="Disk full on ops-1")

    async def aliases(query: str, team: str = "Payments") -> list[str]:
        return sorted(a["alias"] for a in (await api.list(team=team, query=query))["data"])

    assert await aliases("disk") == ["a"]  # free text, case-insensitive: Payments' own only
    assert await aliases("nginx") == ["b"]  # … in the description too
    assert await aliases('"full on" priority:P1') == ["a"]
    assert await aliases("teams:Payments") == ["a", "b"]
    assert await aliases("teams:Search") == []  # another team's: not visible through this key
    assert await aliases("teams:ops", team="Ops") == ["d"]
    count = envelope(await api.call("GET", "/v2/alerts/count", params={"query": "status:open"}), 200)
    assert count["data"] == {"count": 2}
    envelope(await api.call("GET", "/v2/alerts/count", params={"query": "colour:red"}), 422)


# --- OpsGenie's Python SDK ----------------------------------------------------------------------------
async def test_opsgenie_python_sdk_every_alert_call_genie_serves(api: Api):
    """``opsgenie_sdk.AlertApi`` with ``configuration.host`` set to Genie: every call it offers
    that Genie serves, each answer read through the SDK's own models (it raises on a field of
    the wrong type or a missing required one)."""
    import opsgenie_sdk

    conf = opsgenie_sdk.configuration.Configuration()
    conf.api_key["Authorization"] = api.keys["Payments"]
    conf.host = api.genie.url
    conf.retry_enabled = False
    client = opsgenie_sdk.api_client.ApiClient(configuration=conf)
    alerts = opsgenie_sdk.AlertApi(api_client=client)
    bob_id = await api.genie.scalar("SELECT id FROM \"user\" WHERE email = 'bob@example.com'")

    def run() -> dict:
        seen: dict = {}
        created = alerts.create_alert(
            opsgenie_sdk.CreateAlertPayload(
                message="SDK alert",
                alias="sdk-1",
                description="made by opsgenie-sdk",
                tags=["sdk"],
                details={"k": "v"},
                priority="P2",
                source="sdk",
                user="Script",
                responders=[{"type": "team", "name": "Payments"}],
            )
        )
        status = alerts.get_request_status(created.request_id).data
        assert status.is_success and status.action == "Create" and status.alert_id
        uid = seen["uid"] = status.alert_id

        def ok(result) -> None:
            assert result.result == "Request will be processed" and result.request_id
            assert alerts.get_request_status(result.request_id).data.is_success, result.request_id

        got = alerts.get_alert(uid).data
        assert (got.message, got.tiny_id, got.priority, got.details) == ("SDK alert", got.tiny_id, "P2", {"k": "v"})
        assert got.responders[0].type == "team" and got.responders[0].id
        assert isinstance(got.created_at, datetime)
        assert alerts.get_alert("sdk-1", identifier_type="alias").data.id == uid
        assert alerts.get_alert(got.tiny_id, identifier_type="tiny").data.id == uid
        listed = alerts.list_alerts(query="status:open tag:sdk", limit=10, sort="createdAt", order="desc")
        assert [a.id for a in listed.data] == [uid]
        assert alerts.count_alerts(query="status:open").data.count == 1

        ok(
            alerts.acknowledge_alert(
                uid, acknowledge_alert_payload=opsgenie_sdk.AcknowledgeAlertPayload(user="Script", note="ack")
            )
        )
        ok(alerts.un_acknowledge_alert(uid, un_acknowledge_alert_payload=opsgenie_sdk.UnAcknowledgeAlertPayload()))
        ok(alerts.assign_alert(uid, opsgenie_sdk.AssignAlertPayload(owner={"username": "bob@example.com"})))
        ok(
            alerts.add_responder(
                uid, opsgenie_sdk.AddResponderToAlertPayload(responder={"type": "user", "id": str(bob_id)})
            )
        )
        ok(alerts.add_team(uid, opsgenie_sdk.AddTeamToAlertPayload(team={"name": "Search"})))
        ok(alerts.add_tags(uid, opsgenie_sdk.AddTagsToAlertPayload(tags=["more"])))
        ok(alerts.remove_tags(uid, tags=["sdk"]))
        ok(alerts.add_details(uid, opsgenie_sdk.AddDetailsToAlertPayload(details={"x": "1"})))
        ok(alerts.remove_details(uid, keys=["k"]))
        ok(alerts.update_alert_message(uid, opsgenie_sdk.UpdateAlertMessagePayload(message="SDK alert v2")))
        ok(alerts.update_alert_description(uid, opsgenie_sdk.UpdateAlertDescriptionPayload(description="d2")))
        ok(alerts.update_alert_priority(uid, opsgenie_sdk.UpdateAlertPriorityPayload(priority="P4")))
        ok(alerts.snooze_alert(uid, opsgenie_sdk.SnoozeAlertPayload(end_time=datetime.now(UTC) + timedelta(hours=1))))
        ok(alerts.add_note(uid, opsgenie_sdk.AddNoteToAlertPayload(note="a note", user="Script")))
        ok(
            alerts.execute_custom_alert_action(
                uid,
                "Restart",
                execute_custom_alert_action_payload=(opsgenie_sdk.ExecuteCustomAlertActionPayload(note="restarting")),
            )
        )
        try:
            alerts.escalate_alert(uid, opsgenie_sdk.EscalateAlertToNextPayload(escalation={"name": "Default"}))
            raise AssertionError("escalate was accepted")
        except opsgenie_sdk.exceptions.ConfigurationException as err:  # the SDK's class for a 422
            assert err.status == 422 and "escalation" in json.loads(err.body)["message"]

        got = alerts.get_alert(uid).data
        assert (got.message, got.description, got.priority, got.owner) == (
            "SDK alert v2",
            "d2",
            "P4",
            "bob@example.com",
        )
        assert got.tags == ["more"] and got.details == {"x": "1"} and got.snoozed is True
        assert [(r.type, r.id) for r in got.responders][1:] == [("user", str(bob_id)), ("team", got.responders[2].id)]
        notes = alerts.list_notes(uid, limit=10).data
        assert [n.note for n in notes] == ["restarting", "a note", "ack"] and all(
            isinstance(n.created_at, datetime) for n in notes
        )
        logs = alerts.list_logs(uid, limit=100, order="asc").data
        assert logs[0].log.startswith("Alert created by Script") and isinstance(logs[0].created_at, datetime)
        recipients = alerts.list_recipients(uid).data
        assert {r.user.username for r in recipients} >= {"bob@example.com"}

        ok(alerts.close_alert(uid, close_alert_payload=opsgenie_sdk.CloseAlertPayload(note="done")))
        assert alerts.get_alert(uid).data.report.closed_by == "API (Payments)"
        deleted = alerts.delete_alert(uid, user="Script")
        assert deleted.result == "Request will be processed"
        try:
            alerts.get_alert(uid)
            raise AssertionError("a deleted alert was found")
        except opsgenie_sdk.ApiException as err:
            assert err.status == 404
        return seen

    await asyncio.to_thread(run)  # the SDK is blocking; the server runs in this event loop
    assert await api.genie.scalar("SELECT count(*) FROM alert") == 0


# --- the real Prometheus Alertmanager (Debian's prometheus-alertmanager; .ci/run installs it) ---------
ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")


async def test_real_alertmanager_with_update_alerts(api: Api, tmp_path):
    """Alertmanager itself, ``update_alerts: true``, re-notifying every second: fire, change
    the summary, resolve → the alert's message changes in Genie and in Slack, then it closes."""
    assert ALERTMANAGER, "prometheus-alertmanager is not installed (apt-get install prometheus-alertmanager)"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = tmp_path / "alertmanager.yml"
    config.write_text(f"""
route:
  receiver: genie
  group_by: [alertname]
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 1s
receivers:
  - name: genie
    opsgenie_configs:
      - api_url: {api.genie.url}/
        api_key: {api.keys["Payments"]}
        update_alerts: true
        send_resolved: true
        message: '{{{{ .CommonAnnotations.summary }}}}'
        description: '{{{{ .CommonAnnotations.description }}}}'
        priority: P2
""")
    process = await asyncio.create_subprocess_exec(
        ALERTMANAGER,
        f"--config.file={config}",
        f"--storage.path={tmp_path / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
        "--log.level=warn",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    am = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10)
    try:

        async def ready() -> bool:
            try:
                return (await am.get("/-/ready")).status_code == 200
            except httpx.TransportError:
                return False

        await eventually(ready, timeout=20)

        async def fire(summary: str, resolved: bool = False) -> None:
            now = datetime.now(UTC)
            alert = {
                "labels": {"alertname": "DiskFull", "instance": "db-1"},
                "annotations": {"summary": summary, "description": f"db-1: {summary}"},
                "startsAt": (now - timedelta(minutes=1)).isoformat(),
            }
            if resolved:
                alert["endsAt"] = now.isoformat()
            (await am.post("/api/v2/alerts", json=[alert])).raise_for_status()

        async def alert_in_genie() -> tuple | None:
            rows = await api.genie.rows("SELECT message, description, status, priority FROM alert")
            return rows[0] if rows else None

        await fire("Disk 91% full")
        assert await eventually(alert_in_genie, timeout=20) == ("Disk 91% full", "db-1: Disk 91% full", "open", "P2")
        await fire("Disk 97% full")

        async def changed() -> bool:
            return (await alert_in_genie())[:2] == ("Disk 97% full", "db-1: Disk 97% full")

        await eventually(changed, timeout=20)
        await outbox_idle(api.genie)
        text, seen = await _slack_message(api)
        assert "Disk 97% full" in text and "db-1: Disk 97% full" in seen

        await fire("Disk 97% full", resolved=True)

        async def closed() -> bool:
            return (await alert_in_genie())[2] == "closed"

        await eventually(closed, timeout=20)
        text, _ = await _slack_message(api)
        assert "(closed)" in text
        assert await api.genie.scalar("SELECT count(*) FROM alert") == 1  # one alert, de-duplicated by alias
    finally:
        await am.aclose()
        process.terminate()
        _, errors = await process.communicate()
        assert b"level=error" not in errors, errors.decode(errors="replace")[-2000:]


async def test_new_routes_refuse_bad_input_and_change_nothing(api: Api):
    """Each limit of the new routes is a 422 naming the field, and nothing changes."""
    uid = (await api.create(alias="limits", tags=["t0"]))["alertId"]
    await outbox_idle(api.genie)
    tables = ("alert", "alert_event", "outbox", "api_request")
    before = {t: await api.genie.rows(f"SELECT * FROM {t}") for t in tables}
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    too_far = (datetime.now(UTC) + timedelta(days=400)).isoformat()
    refusals = [
        ("POST", "snooze", {"endTime": past}, "endTime"),
        ("POST", "snooze", {"endTime": too_far}, "endTime"),
        ("POST", "snooze", {"endTime": "tomorrow"}, "endTime"),
        ("POST", "snooze", {}, "endTime"),
        ("POST", "tags", {"tags": [f"t{i}" for i in range(1, 21)]}, "tags"),  # 21 in all
        ("POST", "tags", {"tags": ["x" * 51]}, "tags"),
        ("POST", "tags", {"tags": []}, "tags"),
        ("POST", "details", {"details": {"k": "v" * 8000}}, "details"),
        ("POST", "details", {"details": "x"}, "details"),
        ("POST", "teams", {"team": {"name": "Nope"}}, "team"),
        ("POST", "teams", {"team": "Search"}, "team"),
        ("POST", "responders", {"responder": {"type": "user", "username": "nobody@example.com"}}, "responder"),
        ("POST", "responders", {"responder": {"type": "escalation", "name": "x"}}, "responder"),
        ("POST", "actions/" + "x" * 101, {}, "action"),
        ("PUT", "message", {"message": "m" * 131}, "message"),
        ("PUT", "message", {"message": 5}, "message"),
        ("PUT", "description", {"description": "d" * 15001}, "description"),
        ("PUT", "priority", {"priority": "p1"}, "priority"),
        ("PUT", "priority", {}, "priority"),
        ("DELETE", "tags", None, "tags"),
        ("DELETE", "details?keys=,,", None, "keys"),
    ]
    for method, what, body, field in refusals:
        kw = {"json": body} if body is not None else {}
        answer = envelope(await api.call(method, f"/v2/alerts/{uid}/{what}", **kw), 422)
        assert field in answer["errors"], (method, what, answer)
    assert {t: await api.genie.rows(f"SELECT * FROM {t}") for t in tables} == before
