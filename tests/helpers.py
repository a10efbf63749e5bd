"""Small readers of what Genie said, shared by the tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from sqlalchemy import text

from storage.session import make_engine


def walk(blocks: Any) -> Iterator[dict]:
    """Every dict inside a Block Kit structure."""
    if isinstance(blocks, dict):
        yield blocks
        for value in blocks.values():
            yield from walk(value)
    elif isinstance(blocks, list):
        for item in blocks:
            yield from walk(item)


def block_text(blocks: Any) -> str:
    """All the text a person would read in these blocks."""
    return " ".join(d["text"] for d in walk(blocks) if isinstance(d.get("text"), str))


def buttons(blocks: Any) -> dict[str, dict]:
    """Buttons by action_id."""
    return {d["action_id"]: d for d in walk(blocks) if d.get("type") == "button"}


def ack_json(response: httpx.Response) -> dict:
    assert response.status_code == 200, (response.status_code, response.text)
    return response.json() if response.content else {}


def connect_url(response: httpx.Response) -> str:
    body = ack_json(response)
    return buttons(body["blocks"])["connect_link"]["url"]


# --- people and their Slack links, as the tests set them up -----------------------------------------
async def signed_in(genie, email: str, path: str = "/account"):
    """A browser of ``genie`` signed in as ``email`` (password ``conftest.PASSWORD``), landed on ``path``."""
    browser = genie.browser()
    assert (await browser.login(email, next_path=path)).status_code == 303
    return browser


async def link_slack_user(
    session, user, slack_user_id: str, team_id: str | None = None, *, profile=None, replace: bool = True
) -> None:
    """Link ``slack_user_id`` (of ``team_id``, the fake Slack's workspace by default) to ``user``
    through the linking service — issue and redeem a link request in ``session`` — for tests
    that need a linked person but not the journey (``link_through_slack`` is the journey)."""
    from bot.services import slack_links
    from bot.services.slack_links import SlackIdentity, SlackProfile
    from tests.fake_slack import TEAM_ID

    request = await slack_links.issue_link(
        session, SlackIdentity(team_id or TEAM_ID, slack_user_id), profile or SlackProfile(), 600
    )
    await slack_links.redeem(session, request.nonce, user, replace=replace, ownership_confirmed=True)


async def link_person(genie, slack_user_id: str, email: str) -> None:
    """Link ``slack_user_id`` to the person with ``email`` (``link_slack_user`` in its own transaction)."""
    from bot.services import users

    async with genie.sessionmaker.begin() as session:
        await link_slack_user(session, await users.require_user(session, email), slack_user_id)


async def link_through_slack(genie, who, email: str, name: str | None = None, *, wait_home: bool = True):
    """``/genie connect`` → sign in → confirm, as the person does (a person with ``email`` is
    added first when there is none); returns the signed-in browser. Waits for the confirm's DM
    (and Home refresh) so later waits see only their own calls."""
    from urllib.parse import urlsplit

    from tests.conftest import page_text

    if not await genie.scalar('SELECT count(*) FROM "user" WHERE email = :e', e=email):
        await genie.add_user(email, name or email.split("@")[0].title() + " Person")
    path = urlsplit(connect_url(await genie.slack.command(who, "connect"))).path
    browser = genie.browser()
    await browser.login(email, next_path=path)
    await browser.get(path)
    done = await browser.post(path, {"replace": "yes", "mine": "yes"})
    assert done.status_code == 200, page_text(done)
    await genie.fake.wait_for("chat.postMessage", channel=who.user_id)
    if wait_home:
        await genie.fake.wait_for("views.publish", user_id=who.user_id)
    return browser


@asynccontextmanager
async def database_held(database_url: str, pg_table: str) -> AsyncIterator[None]:
    """Another connection holds what a writer's transaction needs (SQLite: the write lock;
    PostgreSQL: ``pg_table``), so that what is written meanwhile waits for one batch."""
    engine = make_engine(database_url)
    try:
        async with engine.begin() as conn:  # SQLite: BEGIN IMMEDIATE (storage.session)
            if conn.dialect.name == "postgresql":
                await conn.execute(text(f"LOCK TABLE {pg_table} IN ACCESS EXCLUSIVE MODE"))
            yield
    finally:
        await engine.dispose()


@asynccontextmanager
async def refusing_rows(database_url: str, table: str, condition: str, error: str) -> AsyncIterator[None]:
    """A trigger that makes the database refuse (with ``error``) each row inserted into
    ``table`` for which ``condition`` (SQL on ``NEW``, the same on both databases) holds: bad
    data that only the database catches."""
    engine = make_engine(database_url)
    try:
        async with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                await conn.execute(
                    text(
                        "CREATE FUNCTION refuse_rows() RETURNS trigger AS $$ BEGIN "
                        f"IF {condition} THEN RAISE EXCEPTION '{error}'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql"
                    )
                )
                await conn.execute(
                    text(
                        f"CREATE TRIGGER refuse_rows BEFORE INSERT ON {table} FOR EACH ROW EXECUTE FUNCTION refuse_rows()"
                    )
                )
            else:
                await conn.execute(
                    text(
                        f"CREATE TRIGGER refuse_rows BEFORE INSERT ON {table} WHEN {condition} "
                        f"BEGIN SELECT RAISE(ABORT, '{error}'); END"
                    )
                )
        yield
    finally:
        async with engine.begin() as conn:
            postgres = conn.dialect.name == "postgresql"
            await conn.execute(text("DROP TRIGGER refuse_rows" + (f" ON {table}" if postgres else "")))
            if postgres:
                await conn.execute(text("DROP FUNCTION refuse_rows()"))
        await engine.dispose()
