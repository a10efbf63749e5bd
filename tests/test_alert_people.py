"""Alerts name people by any of their tools' identities: an OpsGenie username or id, a PagerDuty
user id, a GitHub login in ``details`` … Genie resolves each to the one person it names (never a
guess), mentions them in the alert's Slack message, and DMs an assignee.

Driven like the outside world: the OpsGenie-compatible API over HTTP, signed Slack clicks, and
what the fake Slack was asked to post. Accounts are seeded through the external_accounts service."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from bot.blocks.alerts import AlertView, PersonRef, alert_message
from bot.services import alerts, external_accounts, teams, users
from bot.services.audit import Who
from bot.services.external_accounts import ReportedAccount
from tests.conftest import Genie, eventually
from tests.fake_slack import TEAM_ID
from tests.helpers import block_text, walk
from tests.slack_driver import SlackUser
from tests.test_alert_api import Api, envelope
from tests.test_alert_gate import _click

ALICE, BOB = SlackUser("U0ALICE"), SlackUser("U0BOB")
OTHER_WORKSPACE = "T0OTHER99"
BOB_OPSGENIE_ID = "4513b7ea-3b91-438f-b7e4-e3e54af9147c"
WHO = Who.cli("test seed")


async def _account(
    session,
    person_email: str | None,
    provider: str,
    external_id: str,
    *,
    tenant: str = "",
    handle: str | None = None,
    email: str | None = None,
    name: str | None = None,
) -> None:
    """Record an account as its tool reports it and (when a person is given) connect it."""
    account = await external_accounts.upsert(
        session,
        ReportedAccount(
            provider=provider, external_id=external_id, tenant=tenant, handle=handle, email=email, display_name=name
        ),
    )
    if person_email is not None:
        await external_accounts.connect(
            session, account, await users.require_user(session, person_email), via="admin", who=WHO
        )


@pytest.fixture
async def world(genie: Genie) -> Api:
    """Payments (channel C0PAY in workspace T0GENIE01): Alice, Bob, Carol. Alice and Bob are
    linked in that workspace; Carol only in another one. Alice is asmith@og.example in OpsGenie
    and alice-s on GitHub; Bob is PXPGF42 in PagerDuty and an OpsGenie id; Carol and Dana are
    both "sam" in Jira (two sites), so "sam" names two people."""
    for email, name in [
        ("alice@example.com", "Alice Smith"),
        ("bob@example.com", "Bob Jones"),
        ("carol@example.com", "Carol Diaz"),
        ("dana@example.com", "Dana Ng"),
    ]:
        await genie.add_user(email, name)
    async with genie.sessionmaker.begin() as s:
        key = await alerts.team_key(s, await teams.add_team(s, "Payments", "C0PAY", workspace=TEAM_ID))
        for email in ("alice@example.com", "bob@example.com", "carol@example.com"):
            await teams.add_member(s, "Payments", email)
        await _account(s, "alice@example.com", "slack", "U0ALICE", tenant=TEAM_ID, name="Alice Smith")
        await _account(s, "bob@example.com", "slack", "U0BOB", tenant=TEAM_ID, name="Bob Jones")
        await _account(s, "carol@example.com", "slack", "U0CAROL", tenant=OTHER_WORKSPACE, name="Carol Diaz")
        await _account(s, "alice@example.com", "opsgenie", "og-alice", tenant="acme", handle="asmith@og.example")
        await _account(s, "bob@example.com", "opsgenie", BOB_OPSGENIE_ID, tenant="acme", handle="bjones@og.example")
        await _account(s, "bob@example.com", "pagerduty", "PXPGF42", tenant="acme.pagerduty.com")
        await _account(s, "alice@example.com", "github", "1001", handle="alice-s")
        await _account(s, None, "github", "1002", handle="nobody-s-login")  # recorded, connected to nobody
        await _account(s, "carol@example.com", "jira", "j-1", tenant="a.atlassian.net", handle="sam")
        await _account(s, "dana@example.com", "jira", "j-2", tenant="b.atlassian.net", handle="sam")
    return Api(genie, {"Payments": key})


async def _posted(api: Api, tiny: str) -> dict:
    """The post of alert ``tiny`` in the team's channel, once it is there (an earlier alert's
    post being there already says nothing about this one's)."""
    api.genie.rt.wake_outbox()

    async def found() -> dict | None:
        calls = api.genie.fake.calls("chat.postMessage")
        return next((c.args for c in calls if c.args.get("channel") == "C0PAY" and f"#{tiny} " in c.args["text"]), None)

    return await eventually(found, timeout=10)


def _fields(blocks: list[dict]) -> dict[str, str]:
    """The message's facts as the reader sees them: "*Responders*\\n…" → {"Responders": "…"}."""
    found = {}
    for d in walk(blocks):
        if d.get("type") == "mrkdwn" and d["text"].startswith("*") and "*\n" in d["text"]:
            title, _, value = d["text"][1:].partition("*\n")
            found[title] = value
    return found


async def _logs(api: Api, alert_id: str) -> list[str]:
    answer = envelope(await api.call("GET", f"/v2/alerts/{alert_id}/logs", params={"order": "asc"}), 200)
    return [entry["log"] for entry in answer["data"]]


async def _dms(api: Api, slack_user: str) -> list[str]:
    return [c.args["text"] for c in api.genie.fake.calls("chat.postMessage") if c.args.get("channel") == slack_user]


# --- the message names people ------------------------------------------------------------------
async def test_names_from_every_tool_become_mentions_and_the_rest_are_shown_as_given(world: Api):
    async with world.genie.sessionmaker.begin() as s:  # both "sam"s in Payments: two people
        await teams.add_member(s, "Payments", "dana@example.com")
    status = await world.create(
        message="Checkout 502s",
        user="asmith@og.example",
        responders=[
            {"type": "team", "name": "Payments"},
            {"type": "user", "username": "asmith@og.example"},  # OpsGenie username → Alice
            {"type": "user", "id": BOB_OPSGENIE_ID},  # OpsGenie user id → Bob
            {"type": "user", "username": "carol@example.com"},  # an email → Carol (no link here)
            {"type": "user", "username": "bob-gh & <co>"},  # nobody: as given, escaped
            {"type": "user", "username": "<@U0BOB>"},
        ],  # not a way to mention Bob
        details={
            "pagerduty_user": "PXPGF42",
            "github_user": "alice-s",
            "jira_user": "sam",
            "assignee": "nobody-s-login",
            "region": "eu-west-1",
        },
    )
    alert = await world.get(status["alertId"])
    post = await _posted(world, alert["tinyId"])
    facts = _fields(post["blocks"])
    assert facts["Reported by"] == "<@U0ALICE>"
    assert facts["Responders"] == (
        "<@U0ALICE>, <@U0BOB>, Carol Diaz, bob-gh &amp; &lt;co&gt; (unresolved), &lt;@U0BOB&gt; (unresolved)"
    )
    assert facts["pagerduty_user"] == "<@U0BOB>"
    assert facts["github_user"] == "<@U0ALICE>"
    assert facts["jira_user"] == "sam (unresolved)"  # two people are "sam": never a guess
    assert facts["assignee"] == "nobody-s-login (unresolved)"  # a login connected to nobody
    assert facts["region"] == "eu-west-1"
    # Carol is linked only in another workspace: her name, not a mention of a stranger's user.
    assert "U0CAROL" not in json.dumps(post["blocks"])
    # The API still answers with what the tool sent, each with the id and username OpsGenie's
    # clients require: a Genie person's id when the username is their email, else what was given.
    carol_id = await world.genie.scalar("SELECT id FROM \"user\" WHERE email = 'carol@example.com'")
    assert alert["responders"][1:] == [
        {"type": "user", "id": "asmith@og.example", "username": "asmith@og.example"},
        {"type": "user", "id": BOB_OPSGENIE_ID, "username": BOB_OPSGENIE_ID},
        {"type": "user", "id": str(carol_id), "username": "carol@example.com"},
        {"type": "user", "id": "bob-gh & <co>", "username": "bob-gh & <co>"},
        {"type": "user", "id": "<@U0BOB>", "username": "<@U0BOB>"},
    ]
    assert alert["details"]["github_user"] == "alice-s"

    # The timeline says who each name was resolved to, and why the others were not.
    people = next(line for line in await _logs(world, alert["id"]) if line.startswith("People named"))
    for part in (
        "People named by asmith@og.example via the API: ",
        "reporter asmith@og.example → Alice Smith (alice@example.com)",
        f"responder {BOB_OPSGENIE_ID} → Bob Jones (bob@example.com)",
        "responder carol@example.com → Carol Diaz (carol@example.com)",
        "responder bob-gh & <co>: unresolved (nobody)",
        "pagerduty_user PXPGF42 → Bob Jones (bob@example.com)",
        "jira_user sam: unresolved (2 people)",
    ):
        assert part in people, (part, people)


@pytest.mark.parametrize(
    "named, field, shown",
    [
        ({"user": "asmith@og.example"}, "Reported by", "<@U0ALICE>"),
        ({"responders": [{"type": "user", "id": BOB_OPSGENIE_ID}]}, "Responders", "<@U0BOB>"),
        ({"details": {"pagerduty_user": "PXPGF42"}}, "pagerduty_user", "<@U0BOB>"),
    ],
    ids=["reporter", "user-responder", "detail"],
)
async def test_each_kind_of_name_alone_is_resolved(world: Api, named: dict, field: str, shown: str):
    """An alert is looked at for names only when it carries one (most carry none, and then no
    query is built for them: ``alert_people.names_nobody``): a reporter, a user responder or a
    tool's user in ``details``, each alone, is still resolved to its person."""
    status = await world.create(message=f"Only a {field}", **named)
    alert = await world.get(status["alertId"])
    post = await _posted(world, alert["tinyId"])
    assert _fields(post["blocks"])[field] == shown
    assert any(line.startswith("People named") for line in await _logs(world, alert["id"]))


async def test_what_was_resolved_is_kept_and_later_renders_do_not_resolve_again(world: Api):
    status = await world.create(
        message="Disk full",
        responders=[{"type": "user", "username": "github:alice-s"}],
        details={"github_user": "alice-s"},
    )
    alert = await world.get(status["alertId"])
    post = await _posted(world, alert["tinyId"])
    assert _fields(post["blocks"])["Responders"] == "<@U0ALICE>"
    alice_id = await world.genie.scalar("SELECT id FROM \"user\" WHERE email = 'alice@example.com'")
    stored = await world.genie.scalar("SELECT people FROM alert WHERE id = :a", a=int(alert["tinyId"]))
    stored = json.loads(stored) if isinstance(stored, str) else stored
    assert stored["details"]["github_user"] == {
        "as": "alice-s",
        "lookup": "github",
        "user_id": alice_id,
        "name": "Alice Smith",
        "slack": "U0ALICE",
    }

    # alice-s is moved to Bob; the alert keeps naming whom it named when it fired.
    async with world.genie.sessionmaker.begin() as s:
        account = await external_accounts.require_account(s, "github", "alice-s")
        await external_accounts.connect(
            s, account, await users.require_user(s, "bob@example.com"), via="admin", who=WHO, replace=True
        )
    await world.act(alert["id"], "acknowledge", {"user": "Script"})
    world.genie.rt.wake_outbox()
    update = (await world.genie.fake.wait_for("chat.update"))[-1].args
    assert "Acknowledged* by Script" in block_text(update["blocks"])
    facts = _fields(update["blocks"])
    assert facts["github_user"] == "<@U0ALICE>" and facts["Responders"] == "<@U0ALICE>"
    # A new alert naming alice-s now names Bob.
    again = await world.get(
        (await world.create(message="Disk full again", details={"github_user": "alice-s"}))["alertId"]
    )
    assert _fields((await _posted(world, again["tinyId"]))["blocks"])["github_user"] == "<@U0BOB>"


async def test_a_display_name_reporter_is_shown_as_given_and_puts_nothing_on_the_timeline(world: Api):
    status = await world.create(message="Latency", user="Alertmanager <am@infra>")
    alert = await world.get(status["alertId"])
    post = await _posted(world, alert["tinyId"])
    assert _fields(post["blocks"])["Reported by"] == "Alertmanager &lt;am@infra&gt;"
    assert not any(line.startswith("People named") for line in await _logs(world, alert["id"]))


# --- assign tells the assignee -----------------------------------------------------------------
async def test_assign_through_the_api_by_opsgenie_username_dms_the_assignee(world: Api):
    alert = await world.get((await world.create(message="Queue backlog & <growing>", priority="P2"))["alertId"])
    status = await world.act(alert["id"], "assign", {"owner": {"username": "bjones@og.example"}, "user": "Script"})
    assert status["isSuccess"] is True and status["status"] == "Assigned alert to bob@example.com"
    assert (await world.get(alert["id"]))["owner"] == "bob@example.com"
    world.genie.rt.wake_outbox()
    [dm] = await world.genie.fake.wait_for("chat.postMessage", channel="U0BOB")
    assert dm.args["text"] == (
        f"You were assigned alert #{alert['tinyId']}: Queue backlog &amp; &lt;growing&gt; "
        f"(P2 · Payments) by Script. It is in <#C0PAY>."
    )
    assert (
        "Alert assigned by Script via the API — assigned to Bob Jones (bob@example.com), "
        "named as bjones@og.example (opsgenie); told in Slack (U0BOB)"
    ) in await _logs(world, alert["id"])

    # A PagerDuty id names him too (already his: nothing to do, no second DM); an OpsGenie id
    # names Alice.
    again = await world.act(alert["id"], "assign", {"owner": {"username": "pagerduty:PXPGF42"}})
    assert again["isSuccess"] is False and "already assigned to Bob Jones" in again["status"]
    await world.act(alert["id"], "assign", {"owner": {"id": "og-alice"}})
    await world.genie.fake.wait_for("chat.postMessage", channel="U0ALICE")
    assert len(await _dms(world, "U0BOB")) == 1


async def test_assign_to_a_name_that_is_nobody_or_two_members_is_422_and_changes_nothing(world: Api):
    alert = await world.get((await world.create(message="m"))["alertId"])
    # "sam" at Jira is Carol (Payments) and Dana (no team): to Payments' key it names Carol only.
    status = await world.act(alert["id"], "assign", {"owner": {"username": "jira:sam"}})
    assert status["isSuccess"] is True and status["status"] == "Assigned alert to carol@example.com"
    before = await world.genie.scalar("SELECT count(*) FROM outbox")
    async with world.genie.sessionmaker.begin() as s:
        await teams.add_member(s, "Payments", "dana@example.com")
    answer = await world.act(alert["id"], "assign", {"owner": {"username": "jira:sam"}}, expect=422)
    assert answer["errors"]["owner"] == (
        "User does not exist: 'jira:sam' does not name exactly one active member of Payments (it names 2 people)"
    )
    for owner, given in [
        ({"username": "bob-gh"}, "bob-gh"),
        ({"id": "00000000-0000-4000-8000-000000000000"}, "00000000-0000-4000-8000-000000000000"),
    ]:
        answer = await world.act(alert["id"], "assign", {"owner": owner}, expect=422)
        assert (
            answer["errors"]["owner"]
            == f"{given} is not an active member of Payments, so can't be assigned this alert."
        )
    assert (await world.get(alert["id"]))["owner"] == "carol@example.com"
    assert await world.genie.scalar("SELECT count(*) FROM outbox") == before


async def test_assign_from_slack_dms_the_assignee_but_not_someone_assigning_themselves(world: Api):
    alert = await world.get((await world.create(message="Checkout 502s"))["alertId"])
    tiny = int(alert["tinyId"])
    await _posted(world, alert["tinyId"])
    await _click(world.genie, ALICE, tiny, "alert_assign", option="Bob Jones")
    [dm] = await world.genie.fake.wait_for("chat.postMessage", channel="U0BOB")
    assert (
        dm.args["text"] == f"You were assigned alert #{tiny}: Checkout 502s (P3 · Payments) by Alice Smith. "
        f"It is in <#C0PAY>."
    )
    # Bob takes it back to Alice... and Alice then assigns it to herself: she is not DMed for that.
    await _click(world.genie, BOB, tiny, "alert_assign", option="Alice Smith")
    await world.genie.fake.wait_for("chat.postMessage", channel="U0ALICE")
    await _click(world.genie, BOB, tiny, "alert_assign", option="Bob Jones")  # Bob self-assigns

    async def three_assigns() -> bool:
        return (
            await world.genie.scalar(
                "SELECT count(*) FROM alert_event WHERE alert_id = :a AND action = 'assign' AND outcome = 'applied'",
                a=tiny,
            )
            == 3
        )

    await eventually(three_assigns)
    assert await world.genie.scalar("SELECT count(*) FROM outbox WHERE channel = 'U0BOB'") == 1
    assert await world.genie.scalar("SELECT count(*) FROM outbox WHERE channel = 'U0ALICE'") == 1


async def test_an_assignee_linked_only_in_another_workspace_gets_no_dm_there(world: Api):
    alert = await world.get((await world.create(message="m"))["alertId"])
    status = await world.act(alert["id"], "assign", {"owner": {"username": "carol@example.com"}})
    assert status["isSuccess"] is True
    assert await world.genie.scalar("SELECT count(*) FROM outbox WHERE channel = 'U0CAROL'") == 0
    assert any(line.endswith("assigned to Carol Diaz (carol@example.com)") for line in await _logs(world, alert["id"]))
    # The message names her (no Slack user of hers there to mention).
    world.genie.rt.wake_outbox()

    async def named() -> bool:
        texts = [block_text(c.args.get("blocks")) for c in world.genie.fake.calls("chat.update")]
        return any("Assigned to Carol Diaz" in t for t in texts) and not any("<@U0CAROL>" in t for t in texts)

    await eventually(named, timeout=10)


async def test_a_deactivated_person_is_not_named(world: Api):
    async with world.genie.sessionmaker.begin() as s:
        await users.set_active(s, "bob@example.com", False)
    alert = await world.get((await world.create(message="m", details={"pagerduty_user": "PXPGF42"}))["alertId"])
    assert _fields((await _posted(world, alert["tinyId"]))["blocks"])["pagerduty_user"] == "PXPGF42 (unresolved)"
    assert any(
        "pagerduty_user PXPGF42: unresolved (an inactive person)" in line for line in await _logs(world, alert["id"])
    )


def test_a_long_list_of_responders_fits_slacks_field_and_says_how_many_more():
    many = [PersonRef(f"<{i:02d}>" + "x" * 400) for i in range(50)]
    mixed = [PersonRef("alice-s", "U0ALICE", "Alice Smith"), *many]
    for refs in (many, mixed):
        view = AlertView(id=7, message="m", priority="P3", status="open", created_at=datetime.now(UTC), responders=refs)
        _, blocks = alert_message(view)  # slack_sdk validates the field length (2,000)
        [responders] = [v for k, v in _fields(blocks).items() if k == "Responders"]
        assert responders.endswith(" more") and "&lt;00&gt;" in responders and "<0" not in responders
    assert responders.startswith("<@U0ALICE>, &lt;00&gt;")
