"""The alert message the outbox worker sends is the one ``alert_message`` draws: its blocks as
JSON text (``alert_message_json``, options joined from a per-member-list template) decode to the
same blocks, whatever the names hold, and a changed member list is never drawn from a stale
template. Pure: no database, no Slack."""

from __future__ import annotations

import itertools
import json
import logging
from datetime import UTC, datetime, timedelta

import pytest
from slack_sdk.errors import SlackObjectFormationError

from bot.blocks.alerts import MAX_SELECT_OPTIONS, AlertView, PersonRef, alert_message, alert_message_json
from bot.config import Settings
from bot.slack.clients import SlackClients
from bot.slack.delivery import make_delivery_client

NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
HOSTILE = ['Ann "the" Admin', "back\\slash", "<@U123> & *bold*", "émile ✓ 日本", "x" * 90, "tab\tnew\nline", '}]}"]']


def view(**fields) -> AlertView:
    base = dict(
        id=4711,
        message='Disk "full" on <db-1>',
        priority="P2",
        status="open",
        created_at=NOW,
        team_name="Payments",
        description="free space < 1%",
        tags=("disk",),
        details={"host": "db-1"},
        source="prometheus",
        acknowledged_at=NOW + timedelta(minutes=3),
        reported_by=PersonRef("alertmanager"),
    )
    base.update(fields)
    return AlertView(**base)


MEMBER_LISTS = [
    (),
    ((3, "Bob"),),
    tuple((i, name) for i, name in enumerate(HOSTILE, start=1)),
    tuple((i, f"Member {i}") for i in range(1, MAX_SELECT_OPTIONS + 20)),  # more than Slack shows
    [(9, "Zed"), (2, "Amy")],  # a list, as alert_view passes it
]


@pytest.mark.parametrize(
    ("members", "status", "acknowledged", "owner_id", "alert_id"),
    list(itertools.product(MEMBER_LISTS, ["open", "closed"], [False, True], [None, 3, 2], [1, 2_000_000_000])),
)
def test_the_json_blocks_are_alert_messages_blocks(members, status, acknowledged, owner_id, alert_id):
    shown = view(id=alert_id, members=members, status=status, acknowledged=acknowledged, owner_id=owner_id)
    text, blocks = alert_message(shown, "https://genie.example/alerts/1")
    json_text, encoded = alert_message_json(shown, "https://genie.example/alerts/1")
    assert isinstance(encoded, str)
    assert (json_text, json.loads(encoded)) == (text, blocks)


def test_a_changed_member_list_is_drawn_as_it_is_now():
    before = ((1, "Ann"), (2, "Bob"), (3, "Cy"))
    after = ((1, "Ann"), (3, "Cyrus"))  # Bob left, Cy renamed
    for members in (before, after, before):
        _, encoded = alert_message_json(view(members=members))
        options = json.loads(encoded)[-1]["elements"][-1]["options"]
        assert [(o["text"]["text"], json.loads(o["value"])) for o in options] == [
            (name, {"alert": 4711, "user": uid}) for uid, name in members
        ]


def test_an_option_slack_would_refuse_is_refused_as_before():
    with pytest.raises(SlackObjectFormationError):
        alert_message_json(view(members=((1, ""),)))  # an empty label
    with pytest.raises(SlackObjectFormationError):
        alert_message_json(view(message="m" * 3100))  # a section over 3,000 characters


def test_genies_slack_clients_do_not_format_every_call_for_a_debug_log_nobody_reads():
    """slack-sdk formats each request and answer (the whole body) when its logger's own level
    is DEBUG or unset: Genie's clients have a logger whose level says what is enabled."""
    settings = Settings.from_env(
        {
            "DATABASE_URL": "sqlite+aiosqlite:///:memory:",
            "GENIE_SECRET_KEY": "k" * 40,
            "SLACK_SIGNING_SECRET": "s" * 32,
            "SLACK_BOT_TOKEN": "xoxb-test",
        }
    )
    for client in (make_delivery_client(settings), SlackClients(settings).app_client()):
        assert client.logger.level != logging.NOTSET  # slack-sdk tests `logger.level <= DEBUG`
        assert client.logger.name.startswith("slack_sdk.")  # its records go where slack-sdk's go
