"""Test harness: a real database (SQLite, and PostgreSQL when ``GENIE_TEST_POSTGRES_URL`` is
set), the fake Slack on loopback, and Genie's real ASGI app served by uvicorn on a loopback
port. Tests talk to it over HTTP like Slack and browsers do."""

from __future__ import annotations

import asyncio
import html
import os
import re
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import uvicorn
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.config import LOOPBACK_HOSTS, Settings
from bot.server import build_asgi_app, make_runtime, uvicorn_config
from bot.services import users
from migrations.apply import upgrade
from storage.base import Base
from storage.session import make_engine, make_sessionmaker
from tests.fake_slack import FakeSlack
from tests.loopback import loopback_socket
from tests.processes import UNPACED
from tests.slack_driver import SlackDriver, SlackUser

SIGNING_SECRET = "test-signing-secret-0123456789abcdef"
SECRET_KEY = "test-secret-key-0123456789abcdefghij"
PASSWORD = "correct horse battery staple"

POSTGRES_URL = os.environ.get("GENIE_TEST_POSTGRES_URL", "").strip()
BACKENDS = ["sqlite"] + (["postgres"] if POSTGRES_URL else [])


# --- databases -------------------------------------------------------------------------------
@dataclass
class Database:
    backend: str
    template: str  # sqlite: path of a migrated file; postgres: URL of a migrated database


def _pg_admin_url(url: str) -> str:
    return make_url(url).set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)


async def _pg_create(url: str, name: str) -> str:
    engine = make_engine(_pg_admin_url(url), isolation_level="AUTOCOMMIT")
    async with engine.connect() as conn:
        await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
    await engine.dispose()
    return make_url(_pg_admin_url(url)).set(database=name).render_as_string(hide_password=False)


async def _pg_drop(url: str, name: str) -> None:
    engine = make_engine(_pg_admin_url(url), isolation_level="AUTOCOMMIT")
    async with engine.connect() as conn:
        await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    await engine.dispose()


async def _migrate(url: str) -> None:
    engine = make_engine(url)
    await upgrade(engine)
    await engine.dispose()


@pytest.fixture(scope="session", params=BACKENDS)
def database(request, tmp_path_factory) -> Any:
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("template") / "genie.db"
        asyncio.run(_migrate(f"sqlite+aiosqlite:///{path}"))
        yield Database("sqlite", str(path))
        return
    name = f"genie_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    url = asyncio.run(_pg_create(POSTGRES_URL, name))
    asyncio.run(_migrate(url))
    yield Database("postgres", url)
    asyncio.run(_pg_drop(POSTGRES_URL, name))


@pytest.fixture
async def db_url(database: Database, tmp_path: Path) -> str:
    """A fresh, migrated, empty database for this test."""
    if database.backend == "sqlite":
        path = tmp_path / "genie.db"
        shutil.copy(database.template, path)
        return f"sqlite+aiosqlite:///{path}"
    engine = make_engine(database.template)
    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    async with engine.begin() as conn:
        await conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    await engine.dispose()
    return database.template


# --- fake Slack --------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def fake_slack_server() -> Any:
    fake = FakeSlack().start()
    yield fake
    fake.stop()


@pytest.fixture
def fake_slack(fake_slack_server: FakeSlack) -> FakeSlack:
    fake_slack_server.clear()
    fake_slack_server._failures.clear()
    fake_slack_server.oauth_grants.clear()
    fake_slack_server.users.clear()
    fake_slack_server.users_page_size = None
    fake_slack_server.org_teams.clear()
    fake_slack_server.token_scopes = None
    fake_slack_server.limit_per_channel(None)
    fake_slack_server.add_user("U0ALICE", "Alice Smith", "alice@example.com")
    fake_slack_server.add_user("U0BOB", "Bob Jones", "bob@example.com")
    fake_slack_server.add_user("U0MALLORY", "Mallory Evil", "mallory@evil.example")
    return fake_slack_server


# --- a browser without a browser ---------------------------------------------------------------
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


class Browser:
    """An httpx client that keeps cookies and fills in the CSRF token of the page it last saw."""

    def __init__(self, base_url: str) -> None:
        self.http = httpx.AsyncClient(base_url=base_url, follow_redirects=False, timeout=30)
        self.last_csrf: str | None = None

    async def get(self, path: str, **kw) -> httpx.Response:
        response = await self.http.get(path, **kw)
        if match := _CSRF.search(response.text):
            self.last_csrf = html.unescape(match.group(1))
        return response

    async def post(self, path: str, data: dict[str, str] | None = None, *, csrf: bool = True, **kw) -> httpx.Response:
        form = dict(data or {})
        if csrf and self.last_csrf and "csrf_token" not in form:
            form["csrf_token"] = self.last_csrf
        response = await self.http.post(path, data=form, **kw)
        if match := _CSRF.search(response.text):
            self.last_csrf = html.unescape(match.group(1))
        elif (
            response.status_code == 303
            and "genie_session=" in response.headers.get("set-cookie", "")
            and response.headers.get("location", "").startswith("/")
        ):
            # Signed in or out: CSRF tokens are bound to the session, so pick up the next page's
            # token by following the redirect, as a browser does.
            await self.get(str(response.request.url.join(response.headers["location"])))
        return response

    async def login(self, email: str, password: str = PASSWORD, next_path: str = "/account") -> httpx.Response:
        await self.get(f"/login?next={next_path}")
        return await self.post("/login", {"email": email, "password": password, "next": next_path})

    async def aclose(self) -> None:
        await self.http.aclose()


def page_text(response: httpx.Response) -> str:
    """The visible text of an HTML page, whitespace collapsed (what a person reads)."""
    body = re.sub(r"<(script|style)[^>]*>.*?</\1>", " ", response.text, flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", body))).strip()


# --- Genie itself ------------------------------------------------------------------------------
@dataclass
class Genie:
    url: str
    settings: Settings
    sessionmaker: async_sessionmaker[AsyncSession]
    fake: FakeSlack
    slack: SlackDriver
    http: httpx.AsyncClient
    rt: Any
    _browsers: list[Browser] = field(default_factory=list)
    #: The ASGI app the server runs, for tests that drive it in-process (httpx.ASGITransport).
    app: Any = None

    def browser(self) -> Browser:
        b = Browser(self.url)
        self._browsers.append(b)
        return b

    async def add_user(self, email: str, name: str, password: str | None = PASSWORD, admin: bool = False):
        async with self.sessionmaker.begin() as session:
            return await users.add_user(session, email, name, password, is_admin=admin)

    async def scalar(self, sql: str, **params) -> Any:
        async with self.sessionmaker() as session:
            return (await session.execute(text(sql), params)).scalar()

    async def rows(self, sql: str, **params) -> list[Any]:
        async with self.sessionmaker() as session:
            return list((await session.execute(text(sql), params)).all())


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 5.0) -> Any:
    """Poll ``check`` until it returns something truthy (for work Genie does after acking)."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def genie_env(db_url: str, fake: FakeSlack, base_url: str, **extra: str) -> dict[str, str]:
    env = {
        "DATABASE_URL": db_url,
        "GENIE_SECRET_KEY": SECRET_KEY,
        "GENIE_BASE_URL": base_url,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_BOT_TOKEN": "xoxb-test-token",
        "SLACK_API_URL": fake.api_url,
        **UNPACED,
    }
    env.update(extra)
    if "GENIE_PASSWORD_HASHING" not in env and urlsplit(env["GENIE_BASE_URL"] or "").hostname in LOOPBACK_HOSTS:
        # argon2id at its cheapest: hundreds of people are made and sign in across the suite, and
        # argon2's deliberate ~0.1 s of CPU each was a good part of its time. The tests of
        # argon2's cost itself ask for the standard hashing.
        env["GENIE_PASSWORD_HASHING"] = "test"
    return {k: v for k, v in env.items() if v is not None}


@pytest.fixture
def genie_settings() -> dict[str, str]:
    """Override in a test module to change the environment Genie starts with."""
    return {}


@pytest.fixture
async def genie(db_url: str, fake_slack: FakeSlack, genie_settings: dict[str, str]) -> AsyncIterator[Genie]:
    sock = loopback_socket()  # TCP_NODELAY on accepted connections (tests.loopback)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    settings = Settings.from_env(genie_env(db_url, fake_slack, url, **genie_settings))
    engine = make_engine(settings.database_url)
    sessionmaker = make_sessionmaker(engine)
    rt = await make_runtime(settings, sessionmaker)
    app = build_asgi_app(rt)
    # uvicorn as `genie serve` runs it for keep-alive (a browser's idle connection is not closed
    # under it while a test pauses), but believing X-Forwarded-For from loopback, so tests can
    # stand for clients at other addresses.
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            log_level="warning",
            lifespan="on",
            timeout_keep_alive=uvicorn_config(app, settings, "", 0).timeout_keep_alive,
        )
    )
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    http = httpx.AsyncClient(base_url=url, timeout=30)
    g = Genie(url, settings, sessionmaker, fake_slack, SlackDriver(http, SIGNING_SECRET, fake_slack), http, rt, app=app)
    try:
        yield g
    finally:
        await http.aclose()
        for b in g._browsers:
            await b.aclose()
        server.should_exit = True
        await asyncio.wait_for(task, timeout=10)
        await engine.dispose()
        sock.close()


ALICE = SlackUser("U0ALICE")
BOB = SlackUser("U0BOB")
MALLORY = SlackUser("U0MALLORY")
