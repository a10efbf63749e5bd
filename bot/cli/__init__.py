"""The ``genie`` command (also ``python -m bot``).

Exit status 0 on success; 1 on a user error, with one clear line on stderr and never a
traceback. Passwords are read from stdin (``--password-stdin``) or a terminal prompt, never
from the command line, where ``ps`` and shell history would show them.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from sqlalchemy.exc import DBAPIError

from bot.cli import (
    accounts,
    alerts,
    apply,
    audit,
    db,
    escalation,
    heartbeats,
    imports,
    links,
    outbox,
    schedules,
    serve,
    slack,
    teams,
    users,
    worker,
    workspaces,
)
from bot.cli.common import Parser, UserError
from bot.config import ConfigError
from bot.services.errors import GenieError

#: The nouns, in the order ``genie --help`` lists them; each module has ``register(subparsers)``.
NOUNS = (
    serve,
    worker,
    db,
    users,
    teams,
    links,
    workspaces,
    slack,
    alerts,
    heartbeats,
    schedules,
    escalation,
    apply,
    outbox,
    imports,
    accounts,
    audit,
)


def build_parser() -> Parser:
    parser = Parser(prog="genie", description="Genie: incident alerting whose home is Slack.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for noun in NOUNS:
        noun.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (UserError, GenieError, ConfigError) as err:
        print(f"genie: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except DBAPIError as err:
        print(
            f"genie: cannot use the database (DATABASE_URL): {str(err.orig).splitlines()[0] if err.orig else err}",
            file=sys.stderr,
        )
        return 1
    except OSError as err:  # e.g. the database file's folder is not writable, the port is taken
        print(f"genie: {err.strerror or err}", file=sys.stderr)
        return 1
