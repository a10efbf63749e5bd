"""The ``genie`` command as an operator runs it: a real subprocess (``python -m bot``) in its own
working directory, configured only by the environment and ``.env``, against a real database.

Each subprocess costs about a second, so the tests are scenarios: one per area, many steps."""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import pytest

from bot.services import users
from bot.services.slack_links import SlackProfile
from storage.session import make_engine, make_sessionmaker
from tests import forkserver
from tests.conftest import SECRET_KEY
from tests.helpers import link_slack_user

PASSWORD = "Tr0ub4dor&3-not-on-the-command-line"
OTHER_PASSWORD = "a-second-password-for-bob"


@dataclass
class Run:
    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    def __str__(self) -> str:  # shown by pytest when an assertion about this run fails
        return f"genie {' '.join(self.args)} -> {self.returncode}\nstdout: {self.stdout!r}\nstderr: {self.stderr!r}"


def base_env(**extra: str | None) -> dict[str, str]:
    """The caller's environment without anything Genie reads, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "GENIE_")) and k != "DATABASE_URL"}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update({k: v for k, v in extra.items() if v is not None})
    return env


def genie(cwd: Path, env: dict[str, str], *args: str, stdin: str | None = None, timeout: float = 60) -> Run:
    done = forkserver.run(args, cwd=cwd, env=env, input=stdin if stdin is not None else "", timeout=timeout)
    run = Run(tuple(args), done.returncode, done.stdout, done.stderr)
    for secret in (PASSWORD, OTHER_PASSWORD, SECRET_KEY):
        assert secret not in run.stdout and secret not in run.stderr, f"a secret was printed:\n{run}"
    assert "Traceback" not in run.stderr, str(run)
    return run


def ok(run: Run, *words: str) -> Run:
    assert run.returncode == 0, str(run)
    assert run.stderr == "", str(run)
    for word in words:
        assert word in run.stdout, f"{word!r} not in output:\n{run}"
    return run


def user_error(run: Run, *words: str) -> str:
    """Exit status 1, exactly one line on stderr that starts with ``genie:`` and says ``words``."""
    assert run.returncode == 1, str(run)
    assert run.stdout == "", str(run)
    lines = run.stderr.splitlines()
    assert len(lines) == 1 and run.stderr.endswith("\n"), str(run)
    assert lines[0].startswith("genie: "), str(run)
    for word in words:
        assert word in lines[0], f"{word!r} not in the error line:\n{run}"
    return lines[0]


def as_json(run: Run):
    ok(run)
    return json.loads(run.stdout)


class Cli:
    """``genie`` bound to one database and working directory."""

    def __init__(self, db_url: str, cwd: Path) -> None:
        self.cwd = cwd
        self.env = base_env(DATABASE_URL=db_url, GENIE_SECRET_KEY=SECRET_KEY)

    def __call__(self, *args: str, stdin: str | None = None) -> Run:
        return genie(self.cwd, self.env, *args, stdin=stdin)

    def users(self) -> dict[str, dict]:
        return {u["email"]: u for u in as_json(self("user", "list", "--json"))}


@pytest.fixture
def cli(db_url: str, tmp_path: Path) -> Cli:
    work = tmp_path / "work"
    work.mkdir()
    return Cli(db_url, work)


async def _with_session(db_url: str, work):
    engine = make_engine(db_url)
    try:
        async with make_sessionmaker(engine).begin() as session:
            return await work(session)
    finally:
        await engine.dispose()


# --- users -------------------------------------------------------------------------------------
async def test_user_add_list_password_and_activation(cli: Cli, db_url: str):
    ok(
        cli("user", "add", "alice@example.com", "--name", "Alice Smith", "--password-stdin", stdin=PASSWORD + "\n"),
        "added user alice@example.com",
    )
    bob = ok(
        cli("user", "add", "Bob@Example.COM", "--name", "Bob Jones", "--admin"),
        "added user bob@example.com (admin)",
        "set-password",
    )

    listed = cli.users()
    assert listed == {
        "alice@example.com": {
            "email": "alice@example.com",
            "name": "Alice Smith",
            "admin": False,
            "active": True,
            "can_sign_in": True,
            "slack": [],
        },
        "bob@example.com": {
            "email": "bob@example.com",
            "name": "Bob Jones",
            "admin": True,
            "active": True,
            "can_sign_in": False,
            "slack": [],
        },
    }, bob

    # Every mistake: exit 1, one line, nothing changed.
    user_error(cli("user", "add", "alice@example.com", "--name", "Alice Again"), "already exists", "alice@example.com")
    user_error(
        cli(
            "user",
            "add",
            "ALICE@example.com ",
            "--name",
            "Alice Again",
            "--password-stdin",
            stdin=OTHER_PASSWORD + "\n",
        ),
        "already exists",
    )
    user_error(cli("user", "add", "not-an-email", "--name", "Nobody"), "not an email address")
    user_error(
        cli("user", "add", "carol@example.com", "--name", "Carol", "--password-stdin", stdin=""),
        "--password-stdin",
        "no password",
    )
    user_error(
        cli("user", "add", "dave@example.com", "--name", "Dave", "--password-stdin", stdin="short\n"),
        "at least 8 characters",
    )
    user_error(cli("user", "set-password", "bob@example.com"), "no password")
    user_error(
        cli("user", "set-password", "nobody@example.com", "--password-stdin", stdin=OTHER_PASSWORD + "\n"),
        "no user",
        "nobody@example.com",
    )
    assert set(cli.users()) == {"alice@example.com", "bob@example.com"}

    ok(
        cli("user", "set-password", "bob@example.com", "--password-stdin", stdin=OTHER_PASSWORD + "\r\n"),
        "password set for bob@example.com",
    )
    ok(cli("user", "deactivate", "alice@example.com"), "alice@example.com is now deactivated")

    listed = cli.users()
    assert listed["bob@example.com"]["can_sign_in"] is True
    assert listed["alice@example.com"]["active"] is False

    # The passwords really are the ones given on stdin (without the line ending), and a
    # deactivated user cannot sign in.
    async def sign_in(session):
        return (
            await users.authenticate(session, "alice@example.com", PASSWORD),
            await users.authenticate(session, "bob@example.com", OTHER_PASSWORD),
        )

    alice, bob_user = await _with_session(db_url, sign_in)
    assert alice is None and bob_user is not None and bob_user.email == "bob@example.com"

    ok(cli("user", "activate", "alice@example.com"), "alice@example.com is now active")
    alice, _ = await _with_session(db_url, sign_in)
    assert alice is not None and alice.email == "alice@example.com"

    table = ok(cli("user", "list")).stdout.splitlines()
    assert table[0].split() == ["EMAIL", "NAME", "ADMIN", "ACTIVE", "SLACK"]
    assert table[1].startswith("alice@example.com") and "Alice Smith" in table[1]
    assert table[2].startswith("bob@example.com") and "True" in table[2]


# --- teams -------------------------------------------------------------------------------------
async def test_teams_channels_and_members(cli: Cli):
    ok(cli("user", "add", "alice@example.com", "--name", "Alice Smith"))
    ok(cli("user", "add", "bob@example.com", "--name", "Bob Jones"))

    ok(cli("team", "add", "Payments", "--channel", "C0123ABC"), "added team Payments (channel C0123ABC)")
    ok(cli("team", "add", "Search"), "added team Search")
    user_error(cli("team", "add", "Broken", "--channel", "#general"), "not a Slack channel id")
    user_error(cli("team", "add", "payments"), "already exists")

    ok(cli("team", "set-channel", "Search", "C0SEARCH1"), "team Search now posts to C0SEARCH1")
    user_error(cli("team", "set-channel", "Nope", "C0123ABC"), "no team named Nope")

    ok(cli("team", "add-member", "Payments", "alice@example.com"), "added alice@example.com to Payments")
    ok(cli("team", "add-member", "Payments", "bob@example.com"), "added bob@example.com to Payments")
    ok(cli("team", "add-member", "Search", "bob@example.com"), "added bob@example.com to Search")
    user_error(
        cli("team", "add-member", "Payments", "Alice@Example.com"), "alice@example.com", "already a member of Payments"
    )
    user_error(cli("team", "add-member", "Nope", "alice@example.com"), "no team named Nope")
    user_error(cli("team", "add-member", "Payments", "carol@example.com"), "no user with email carol@example.com")

    ok(cli("team", "remove-member", "Payments", "bob@example.com"), "removed bob@example.com from Payments")
    user_error(
        cli("team", "remove-member", "Payments", "bob@example.com"), "bob@example.com", "not a member of Payments"
    )

    assert as_json(cli("team", "list", "--json")) == [
        {"name": "Payments", "channel": "C0123ABC", "members": ["alice@example.com"]},
        {"name": "Search", "channel": "C0SEARCH1", "members": ["bob@example.com"]},
    ]
    table = ok(cli("team", "list")).stdout.splitlines()
    assert table[0].split() == ["NAME", "CHANNEL", "MEMBERS"]
    assert table[1].split() == ["Payments", "C0123ABC", "alice@example.com"]
    assert table[2].split() == ["Search", "C0SEARCH1", "bob@example.com"]
    assert len(table) == 3


# --- Slack links -------------------------------------------------------------------------------
async def _link(db_url: str, email: str, name: str, slack_user: str, team: str = "T0GENIE01") -> None:
    async def work(session):
        user = await users.add_user(session, email, name, PASSWORD)
        await link_slack_user(
            session,
            user,
            slack_user,
            team,
            profile=SlackProfile(name=name, email=email, workspace_name="acme"),
            replace=False,
        )

    await _with_session(db_url, work)


async def test_link_list_and_remove(cli: Cli, db_url: str):
    assert as_json(cli("link", "list", "--json")) == []
    user_error(cli("link", "remove", "alice@example.com"), "no Slack link for alice@example.com")
    user_error(cli("link", "remove", "U0NOBODY"), "no Slack link for U0NOBODY")

    await _link(db_url, "alice@example.com", "Alice Smith", "U0ALICE")
    await _link(db_url, "bob@example.com", "Bob Jones", "U0BOB")
    await _link(db_url, "carol@example.com", "Carol White", "U0CAROL", team="T0OTHER01")

    links = as_json(cli("link", "list", "--json"))
    assert [(l["email"], l["workspace"], l["slack_team"], l["slack_user"], l["slack_name"]) for l in links] == [
        ("alice@example.com", "T0GENIE01", "T0GENIE01", "U0ALICE", "Alice Smith"),
        ("bob@example.com", "T0GENIE01", "T0GENIE01", "U0BOB", "Bob Jones"),
        ("carol@example.com", "T0OTHER01", "T0OTHER01", "U0CAROL", "Carol White"),
    ]
    assert all(l["since"] for l in links)
    only_bob = as_json(cli("link", "list", "--email", "Bob@Example.com", "--json"))
    assert [l["slack_user"] for l in only_bob] == ["U0BOB"]
    assert cli.users()["alice@example.com"]["slack"] == ["T0GENIE01/U0ALICE"]

    ok(cli("link", "remove", "alice@example.com"), "removed link T0GENIE01/U0ALICE -> alice@example.com")
    ok(cli("link", "remove", "U0BOB"), "removed link T0GENIE01/U0BOB -> bob@example.com")
    user_error(cli("link", "remove", "U0BOB"), "no Slack link for U0BOB")

    remaining = as_json(cli("link", "list", "--json"))
    assert [l["slack_user"] for l in remaining] == ["U0CAROL"]
    listed = cli.users()
    assert listed["alice@example.com"]["slack"] == [] and listed["bob@example.com"]["slack"] == []
    assert listed["alice@example.com"]["can_sign_in"] is True  # removing a link keeps the account


# --- usage errors and the database -------------------------------------------------------------
@pytest.mark.parametrize(
    "args, words",
    [
        (("bogus",), ["invalid choice", "bogus"]),
        ((), ["required", "command"]),
        (("user", "frobnicate", "x@example.com"), ["invalid choice"]),
        (("user", "add", "x@example.com"), ["--name"]),
        (("team", "add"), ["name"]),
        (("link", "remove"), ["EMAIL|SLACK_USER_ID"]),
        (("serve", "--port", "eighty"), ["--port", "eighty"]),
    ],
)
def test_usage_errors_are_one_line(tmp_path: Path, args, words):
    env = base_env(DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'genie.db'}", GENIE_SECRET_KEY=SECRET_KEY)
    run = genie(tmp_path, env, *args)
    line = user_error(run, *words)
    assert "usage:" not in line
    assert not (tmp_path / "genie.db").exists()  # nothing ran


async def test_db_upgrade(cli: Cli, tmp_path: Path):
    ok(cli("db", "upgrade"), "database is up to date")
    ok(cli("db", "upgrade"), "database is up to date")  # again: nothing to do, still fine

    fresh = tmp_path / "fresh.db"
    env = base_env(DATABASE_URL=f"sqlite+aiosqlite:///{fresh}", GENIE_SECRET_KEY=SECRET_KEY)
    ok(genie(tmp_path, env, "db", "upgrade"), "database is up to date")
    with sqlite3.connect(fresh) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"alembic_version", "user", "team", "slack_link"} <= tables


def test_default_database_is_genie_db_in_the_working_directory(tmp_path: Path):
    env = base_env(GENIE_SECRET_KEY=SECRET_KEY)  # no DATABASE_URL
    ok(
        genie(
            tmp_path,
            env,
            "user",
            "add",
            "alice@example.com",
            "--name",
            "Alice",
            "--password-stdin",
            stdin=PASSWORD + "\n",
        ),
        "added user alice@example.com",
    )
    db = tmp_path / "genie.db"
    assert db.is_file()
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchone()
        row = conn.execute('SELECT email, name, password_hash FROM "user"').fetchone()
    assert row[:2] == ("alice@example.com", "Alice")
    assert row[2] and PASSWORD not in row[2]  # hashed, not stored
    assert [u["email"] for u in as_json(genie(tmp_path, env, "user", "list", "--json"))] == ["alice@example.com"]


def test_dotenv_in_the_working_directory_is_read_and_the_environment_wins(tmp_path: Path):
    from_dotenv = tmp_path / "from-dotenv.db"
    (tmp_path / ".env").write_text(
        f'# Genie settings\nDATABASE_URL=sqlite+aiosqlite:///{from_dotenv}\nGENIE_SECRET_KEY="{SECRET_KEY}"\n'
    )
    env = base_env()
    ok(genie(tmp_path, env, "user", "add", "alice@example.com", "--name", "Alice"))
    assert from_dotenv.is_file() and not (tmp_path / "genie.db").exists()
    assert [u["email"] for u in as_json(genie(tmp_path, env, "user", "list", "--json"))] == ["alice@example.com"]

    # A real environment variable wins over .env.
    from_env = tmp_path / "from-env.db"
    env_wins = base_env(DATABASE_URL=f"sqlite+aiosqlite:///{from_env}")
    assert as_json(genie(tmp_path, env_wins, "user", "list", "--json")) == []
    assert from_env.is_file()

    # A bad setting in .env stops the command with one line naming it.
    with (tmp_path / ".env").open("a") as f:
        f.write("GENIE_LINK_TTL=ten minutes\n")
    user_error(genie(tmp_path, env, "user", "list"), "GENIE_LINK_TTL")


def test_bad_database_settings_are_one_line(tmp_path: Path):
    wrong_driver = base_env(DATABASE_URL="postgresql://postgres@127.0.0.1/genie")
    user_error(genie(tmp_path, wrong_driver, "user", "list"), "DATABASE_URL", "postgresql+asyncpg://")
    unopenable = base_env(DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'missing-dir' / 'genie.db'}")
    user_error(genie(tmp_path, unopenable, "db", "upgrade"), "DATABASE_URL")
