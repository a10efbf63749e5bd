"""No value from outside Genie becomes live Slack markup, in any text Genie sends to Slack.

Hostile values (``<!channel>``, ``<!here>``, ``<@U0CEO>``, ``<#C0SECRET>``,
``<https://evil.example|Reset your SSO password>``, pre-escaped ``&lt;!here&gt;``) go in
through every door — alert message, description, details, tags, source, entity and ``user``
over the API, a team name, a person's name, a Slack workspace name — and come out through every
path: the channel post and its updates (blocks *and* the fallback ``text`` that push and
desktop notifications show), DMs, ephemeral answers, slash-command answers and the Home tab.
What the fake Slack received is then read: the only markup allowed is what Genie rendered
itself from ids it resolved (a linked person, the clicker, the team's channel, a date).

The second half is the API's ``user`` field: it is a plain name, stored as one, shown escaped,
and can no longer pass for the anonymous-actor mention Genie draws from a click's own Slack id.
"""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa
from alembic import command

from bot.services import alerts, slack_links, teams, users
from bot.services.slack_links import SlackIdentity, SlackProfile
from migrations.apply import alembic_config, upgrade
from storage.session import make_engine
from tests.conftest import POSTGRES_URL, _pg_create, _pg_drop, eventually
from tests.fake_slack import TEAM_ID
from tests.helpers import ack_json, buttons, walk
from tests.slack_driver import SlackUser
from tests.test_alert_api import Api, envelope
from tests.test_alert_gate import _click

EVIL = "<!channel> <!here> <@U0CEO> <#C0SECRET> <https://evil.example|Reset your SSO password> &lt;!here&gt;"
EVIL_SHORT = "<!here><@U0CEO>"  # fits a tag (50)
EVIL_NAME = "<!here> Eve <@U0CEO> <https://evil.example|SSO>"
EVIL_TEAM = "<!channel> Payments & <#C0SECRET>"
EVIL_DOMAIN = "acme<!here>"
CHANNEL = "C0PAY"
ALICE, EVE, STRANGER = SlackUser("U0ALICE"), SlackUser("U0EVE"), SlackUser("U0STRANGER", team_domain=EVIL_DOMAIN)

#: Genie's own date markup: ``<!date^1700000000^{date_short_pretty} at {time}|2023-11-14 22:13 UTC>``.
_DATE = re.compile(r"!date\^\d+\^\{date_short_pretty\} at \{time\}\|\d{4}-\d\d-\d\d \d\d:\d\d UTC")


def live_markup(
    text: str, mentions: set[str], channels: set[str] = frozenset({CHANNEL}), genie_url: str = ""
) -> list[str]:
    """Every ``<…>`` in ``text`` that is not Genie's own: a mention of a resolved Slack user, a
    link to the team's channel, a date, the "Open in Genie" link to the alert's page."""
    own_link = re.compile(re.escape(genie_url) + r"/alerts/\d+\|Open in Genie") if genie_url else None
    bad = []
    for token in re.findall(r"<([^<>]*)>", text):
        if (
            _DATE.fullmatch(token)
            or (own_link is not None and own_link.fullmatch(token))
            or (token[:1] == "@" and token[1:] in mentions)
            or (token[:1] == "#" and token[1:] in channels)
        ):
            continue
        bad.append(token)
    return bad + (["unbalanced <"] if text.count("<") != text.count(">") else [])


def texts(message: dict) -> list[str]:
    """Every text Slack reads as markup in a message, view or ack: the fallback ``text`` and each
    text of its blocks that is not ``plain_text`` (which Slack never parses for markup)."""
    found = [message["text"]] if isinstance(message.get("text"), str) else []
    blocks = message.get("blocks") or (message.get("view") or {}).get("blocks") or []
    for d in walk(blocks):
        if isinstance(d.get("text"), str) and d.get("type") != "plain_text":
            found.append(d["text"])
    return found


def everything_sent(fake) -> list[tuple[str, dict]]:
    """What the fake Slack received, by path: posts and DMs, updates, views, ephemeral answers."""
    return [
        (f"{c.method} {c.args.get('channel') or c.args.get('user_id') or ''}".strip(), c.args)
        for c in fake.calls()
        if c.method
        in {
            "chat.postMessage",
            "chat.update",
            "chat.postEphemeral",
            "views.publish",
            "views.open",
            "views.update",
            "response_url",
        }
    ]


@pytest.fixture
async def world(genie) -> Api:
    """Team "<!channel> Payments & <#C0SECRET>" (channel C0PAY) with Alice and Eve, whose name
    is hostile; both linked in Slack. Carol has a Genie account and no team."""
    await genie.add_user("alice@example.com", "Alice Smith")
    await genie.add_user("eve@example.com", EVIL_NAME)
    await genie.add_user("carol@example.com", "Carol Diaz")
    async with genie.sessionmaker.begin() as s:
        key = await alerts.team_key(s, await teams.add_team(s, EVIL_TEAM, CHANNEL))
        for email in ("alice@example.com", "eve@example.com"):
            await teams.add_member(s, EVIL_TEAM, email)
        for uid, email in [("U0ALICE", "alice@example.com"), ("U0EVE", "eve@example.com")]:
            req = await slack_links.issue_link(
                s, SlackIdentity(TEAM_ID, uid), SlackProfile(workspace_name=EVIL_DOMAIN), 600
            )
            await slack_links.redeem(
                s, req.nonce, await users.require_user(s, email), replace=True, ownership_confirmed=True
            )
    genie.fake.add_user("U0STRANGER", EVIL_NAME, None)
    return Api(genie, {EVIL_TEAM: key})


async def test_hostile_values_never_become_live_markup_on_any_path(world: Api):
    genie, fake = world.genie, world.genie.fake
    status = await world.create(
        team=EVIL_TEAM,
        message=EVIL,
        description=EVIL * 10,
        tags=[EVIL_SHORT, "db"],
        source=EVIL[:100],
        entity=EVIL,
        user=EVIL[:100],
        details={"host": EVIL, EVIL_SHORT: EVIL, "github_user": "<@U0CEO>"},
    )
    alert = await world.get(status["alertId"], team=EVIL_TEAM)
    tiny = int(alert["tinyId"])
    genie.rt.wake_outbox()
    [post] = await fake.wait_for("chat.postMessage", channel=CHANNEL)
    assert "&lt;!channel&gt;" in post.args["text"] and "&amp;lt;!here&amp;gt;" in post.args["text"]

    # Eve acknowledges and assigns to Alice (a DM "by <Eve>"); Alice's late click is told who won.
    await _click(genie, EVE, tiny, "alert_acknowledge")
    await fake.wait_for("chat.update")
    await _click(genie, EVE, tiny, "alert_assign", option="Alice Smith")
    await fake.wait_for("chat.postMessage", channel="U0ALICE")
    await _click(genie, ALICE, tiny, "alert_acknowledge", value=json.dumps({"alert": tiny}), blocks=post.args["blocks"])
    [late] = await fake.wait_for("response_url")
    assert "already acknowledged by &lt;!here&gt; Eve" in late.args["text"]

    # Someone not connected, in a workspace whose name is hostile: refused, offered Connect.
    await _click(genie, STRANGER, tiny, "alert_close", blocks=post.args["blocks"])
    refusal = (await fake.wait_for("response_url", count=2))[-1]
    url = buttons(refusal.args["blocks"])["connect_link"]["url"]
    # Slash commands answer in the HTTP response: connect (names the workspace), status (the name).
    acks = [
        ack_json(await genie.slack.command(SlackUser("U0DAVE", team_domain=EVIL_DOMAIN), "connect")),
        ack_json(await genie.slack.command(EVE, "status")),
        ack_json(await genie.slack.command(EVE, "connect")),
        ack_json(await genie.slack.command(EVE, EVIL_SHORT)),
    ]
    assert "acme&lt;!here&gt;" in json.dumps(acks[0]) and "&lt;!here&gt; Eve" in acks[1]["text"]
    # Carol confirms the stranger's link: "You're connected" DM, and the remembered close is
    # refused (Carol is not in the team, whose name the refusal says).
    browser = genie.browser()
    path = urlsplit(url).path
    await browser.login("carol@example.com", next_path=path)
    await browser.get(path)
    assert (await browser.post(path, {"replace": "yes", "mine": "yes"})).status_code == 200
    dms = await fake.wait_for("chat.postMessage", channel="U0STRANGER", count=2)
    assert "was not carried out" in dms[-1].args["text"] and "&lt;!channel&gt; Payments" in dms[-1].args["text"]
    # Home tab: Eve's name, the team's name, the alert's message.
    await genie.slack.open_home(EVE)
    await fake.wait_for("views.publish", user_id="U0EVE")
    # An API close by a "user" that looks like Genie's anonymous mention.
    await world.act(alert["id"], "close", {"user": "<@U0CEO> (anonymous)"}, team=EVIL_TEAM)
    genie.rt.wake_outbox()
    await fake.wait_for("chat.update", count=3)

    sent = everything_sent(fake) + [("slash command ack", a) for a in acks]
    paths = {where.split()[0] for where, _ in sent}
    assert {"chat.postMessage", "chat.update", "views.publish", "response_url", "slash"} <= paths, paths
    assert {"chat.postMessage U0ALICE", "chat.postMessage U0STRANGER"} <= {w for w, _ in sent}
    problems = [
        (where, text, bad)
        for where, message in sent
        for text in texts(message)
        if (bad := live_markup(text, mentions={"U0ALICE", "U0EVE", "U0STRANGER", "U0DAVE"}, genie_url=genie.url))
    ]
    assert problems == []
    everything = "\n".join(text for _, message in sent for text in texts(message))
    assert "<@U0CEO>" not in everything and "<!channel>" not in everything and "<!here>" not in everything
    final = (await fake.wait_for("chat.update", count=3))[-1].args
    assert "Closed* by &lt;@U0CEO&gt; (anonymous)" in json.dumps(final["blocks"])
    assert (await world.get(alert["id"], team=EVIL_TEAM))["report"]["closedBy"] == "<@U0CEO> (anonymous)"


@pytest.mark.parametrize("genie_settings", [{"GENIE_ALLOW_ANONYMOUS_ACTIONS": "true"}])
async def test_only_genie_draws_the_anonymous_mention_and_the_api_returns_plain_names(world: Api):
    genie, fake = world.genie, world.genie.fake
    mine = await world.get((await world.create(team=EVIL_TEAM, message="Disk full"))["alertId"], team=EVIL_TEAM)
    genie.rt.wake_outbox()
    await fake.wait_for("chat.postMessage", channel=CHANNEL)
    await _click(genie, SlackUser("U0STRANGER"), int(mine["tinyId"]), "alert_acknowledge")
    update = (await fake.wait_for("chat.update"))[-1].args
    assert "*Acknowledged* by <@U0STRANGER> (anonymous)" in json.dumps(update["blocks"])
    shown = await world.get(mine["id"], team=EVIL_TEAM)
    assert shown["report"]["acknowledgedBy"] == "Slack user U0STRANGER (anonymous)"
    logs = envelope(
        await world.call("GET", f"/v2/alerts/{mine['id']}/logs", team=EVIL_TEAM, params={"order": "asc"}), 200
    )["data"]
    assert any(
        e["log"].startswith("Alert acknowledged by Slack user U0STRANGER (anonymous) via Slack") for e in logs
    ), logs
    assert (
        await genie.scalar("SELECT acknowledged_by_slack FROM alert WHERE id = :a", a=int(mine["tinyId"]))
        == "U0STRANGER"
    )

    # The same words through the API's "user" are a name: escaped, never a mention.
    other = await world.get((await world.create(team=EVIL_TEAM, message="CPU hot"))["alertId"], team=EVIL_TEAM)
    genie.rt.wake_outbox()
    await fake.wait_for("chat.postMessage", channel=CHANNEL, count=2)
    await world.act(other["id"], "acknowledge", {"user": "<@U0CEO> (anonymous)"}, team=EVIL_TEAM)
    genie.rt.wake_outbox()

    async def drawn():
        return [c for c in fake.calls("chat.update") if f"#{other['tinyId']} " in c.args["text"]]

    update = (await eventually(drawn))[-1].args
    assert "*Acknowledged* by &lt;@U0CEO&gt; (anonymous)" in json.dumps(update["blocks"])
    assert await genie.scalar("SELECT acknowledged_by_slack FROM alert WHERE id = :a", a=int(other["tinyId"])) is None


# --- the migration moves Genie's old markup out of the names --------------------------------------
@pytest.fixture(params=["sqlite"] + (["postgres"] if POSTGRES_URL else []))
async def bare_db(request, tmp_path: Path):
    """An empty database (no migrations applied yet)."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
        return
    name = f"genie_mig_{uuid.uuid4().hex[:8]}"
    url = await _pg_create(POSTGRES_URL, name)
    yield url
    await _pg_drop(POSTGRES_URL, name)


async def test_migration_0011_moves_genie_mentions_out_of_stored_names_and_back(bare_db):
    engine = make_engine(bare_db)
    await upgrade(engine, "0007")
    now = "2026-11-20 10:00:00"
    async with engine.begin() as conn:
        await conn.execute(
            sa.text(
                f"INSERT INTO alert (id, uid, message, alias, tags, details, responders, priority, "
                f"status, acknowledged, count, created_at, updated_at, last_occurred_at, "
                f"acknowledged_by, closed_by) VALUES "
                f"(1, 'u1', 'm', 'a1', '[]', '{{}}', '[]', 'P3', 'closed', :t, 1, '{now}', '{now}', "
                f"'{now}', '<@U0ANON> (anonymous)', '<@U0CEO> (anonymous)')"
            ),
            {"t": True},
        )
        rows = [  # (action, outcome, via, actor_name, slack_user_id, anonymous)
            ("acknowledge", "applied", "slack", "<@U0ANON> (anonymous)", "U0ANON", True),
            ("close", "applied", "api", "<@U0CEO> (anonymous)", None, False),  # the API's "user": text
            ("close", "denied", "slack", "<@U0NOBODY>", "U0NOBODY", False),
            ("close", "denied", "slack", "<@U0OTHER>", "U0NOBODY", False),  # not its own id: untouched
        ]
        for i, (action, outcome, via, name, slack, anonymous) in enumerate(rows, start=1):
            await conn.execute(
                sa.text(
                    f"INSERT INTO alert_event (id, alert_id, at, action, outcome, via, actor_name, slack_user_id, "
                    f"anonymous) VALUES (:i, 1, '{now}', :a, :o, :v, :n, :s, :an)"
                ),
                {"i": i, "a": action, "o": outcome, "v": via, "n": name, "s": slack, "an": anonymous},
            )
    await upgrade(engine, "head")

    async def state():
        async with engine.connect() as conn:
            alert = (
                await conn.execute(
                    sa.text("SELECT acknowledged_by, acknowledged_by_slack, closed_by, closed_by_slack FROM alert")
                )
            ).one()
            names = (await conn.execute(sa.text("SELECT actor_name FROM alert_event ORDER BY id"))).scalars().all()
        return tuple(alert), list(names)

    assert await state() == (
        ("Slack user U0ANON (anonymous)", "U0ANON", "<@U0CEO> (anonymous)", None),
        ["Slack user U0ANON (anonymous)", "<@U0CEO> (anonymous)", "Slack user U0NOBODY", "<@U0OTHER>"],
    )

    def down(sync_conn):
        cfg = alembic_config(bare_db)
        cfg.attributes["connection"] = sync_conn
        command.downgrade(cfg, "0007")

    async with engine.begin() as conn:
        await conn.run_sync(down)
    async with engine.connect() as conn:
        alert = (await conn.execute(sa.text("SELECT acknowledged_by, closed_by FROM alert"))).one()
        names = (await conn.execute(sa.text("SELECT actor_name FROM alert_event ORDER BY id"))).scalars().all()
    assert tuple(alert) == ("<@U0ANON> (anonymous)", "<@U0CEO> (anonymous)")
    assert list(names) == [r[3] for r in rows]
    await engine.dispose()
