"""What the commands share: settings, the database, passwords from stdin, tables, the parser."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from bot.config import ConfigError, Settings, load_dotenv_file
from bot.services import users
from migrations.apply import upgrade
from storage.session import make_engine, make_sessionmaker


class UserError(Exception):
    """Reported as one line on stderr with exit status 1."""


def load_settings(socket_mode: bool = False) -> Settings:
    load_dotenv_file()
    settings = Settings.from_env(socket_mode=socket_mode)
    users.use_password_hashing(settings.password_hashing)
    return settings


def admin_settings() -> Settings:
    """The other commands only use the database: a configuration that ``genie serve`` or
    ``genie serve --socket-mode`` (no signing secret) would accept will do."""
    try:
        return load_settings()
    except ConfigError:
        if not os.environ.get("SLACK_APP_TOKEN"):
            raise
        try:
            return load_settings(socket_mode=True)
        except ConfigError:
            pass
        raise


async def with_engine(settings: Settings, work: Callable[[AsyncEngine], Awaitable[Any]], migrate: bool = True) -> Any:
    """Open the database (migrating it first, so a fresh machine just works) and run
    ``work(engine)``."""
    engine = make_engine(settings.database_url)
    try:
        try:
            if migrate:
                await upgrade(engine)
        except OSError as err:  # e.g. PostgreSQL not reachable
            raise UserError(f"cannot reach the database (DATABASE_URL): {err}") from None
        return await work(engine)
    finally:
        await engine.dispose()


async def with_db(work: Callable[..., Any], migrate: bool = True) -> Any:
    """``work(session)`` in one transaction of the database (migrated first)."""

    async def in_session(engine: AsyncEngine) -> Any:
        async with make_sessionmaker(engine).begin() as session:
            return await work(session)

    return await with_engine(admin_settings(), in_session, migrate)


def read_password(from_stdin: bool) -> str | None:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise UserError("--password-stdin: no password on standard input")
        return password
    if sys.stdin.isatty():
        first = getpass.getpass("Password (empty: the user cannot sign in yet): ")
        if not first:
            return None
        if getpass.getpass("Repeat password: ") != first:
            raise UserError("the passwords do not match")
        return first
    return None


def print_table(rows: list[dict], columns: Sequence[str]) -> None:
    if not rows:
        print("(none)")
        return
    widths = {c: max(len(c), *(len(str(r[c] if r[c] is not None else "")) for r in rows)) for c in columns}
    print("  ".join(c.upper().ljust(widths[c]) for c in columns).rstrip())
    for r in rows:
        print("  ".join(str(r[c] if r[c] is not None else "").ljust(widths[c]) for c in columns).rstrip())


def emit(rows: list[dict], columns: Sequence[str], as_json: bool) -> None:
    if as_json:
        print(json.dumps(rows, indent=2, default=str))
    else:
        print_table(rows, columns)


class Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs) -> None:
        # No abbreviations: `--password x` must never be read as `--password-stdin` + a stray word.
        super().__init__(*args, **{**kwargs, "allow_abbrev": False})

    def error(self, message: str) -> None:  # one line, exit 1 (argparse's default is 2 + usage)
        self.exit(1, f"genie: {message} (see {self.prog} --help)\n")
