"""EXPLAIN what Genie asks the database on a click and in the outbox worker's loop.

    python bench/explain.py DATABASE_URL SLACK_USER_ID ALERT_ID     # prints JSON

Runs the click's use case (``actions.act``, Acknowledge) once in a transaction that is rolled
back, and the queries the outbox worker runs on every pass (``heads``, or ``due_heads`` and
``next_due_at`` in older checkouts, and ``stats``) and, where the checkout has them, for every
message (``claim_next``, ``later_updates``, ``current_view``), captures every statement with its
parameters, and EXPLAINs each on the same database (``EXPLAIN QUERY PLAN`` on SQLite). A full
scan of a table of 1,000 rows or more is flagged. Self-contained (no ``bench`` imports), so
that ``run.py --genie-src`` can run it with another checkout's ``bot`` and ``storage``.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from typing import Any

SMALL_TABLE = 1000


async def explain(url: str, slack_user_id: str, alert_id: int, workspace: str = "T0GENIE01") -> dict[str, list[dict]]:
    from sqlalchemy import event, text

    from bot.services import actions, outbox
    from bot.services.slack_links import SlackIdentity
    from storage.base import utcnow
    from storage.session import make_engine, make_sessionmaker

    engine = make_engine(url)
    captured: list[tuple[str, Any]] = []

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def capture(conn, cursor, statement, parameters, context, executemany):  # noqa: ARG001
        if statement.lstrip().upper().startswith(("SELECT", "UPDATE", "INSERT", "DELETE", "WITH")):
            captured.append((statement, parameters))

    sessionmaker = make_sessionmaker(engine)
    groups: dict[str, list[tuple[str, Any]]] = {}
    async with sessionmaker() as session:
        result = await actions.act(
            session,
            SlackIdentity(team_id=workspace, user_id=slack_user_id),
            "acknowledge",
            alert_id,
            anonymous_default=False,
        )
        await session.flush()  # the rows a commit would write (a transition leaves them to it)
        await session.rollback()
    groups["click"], captured[:] = list(captured), []
    async with sessionmaker() as session:
        if hasattr(outbox, "heads"):  # the worker's one look at the outbox
            await outbox.heads(session, utcnow())
        else:  # an older checkout (--genie-src): its two
            await outbox.due_heads(session, utcnow())
            await outbox.next_due_at(session)
        await outbox.stats(session)
        if hasattr(outbox, "claim_next"):  # per message, in checkouts that have them
            from bot.slack.render import current_view

            claimed = await outbox.claim_next(session, "C0PAY", utcnow())
            if claimed is not None:
                await outbox.later_updates(session, claimed)
            await current_view(session, alert_id)
        await session.rollback()
    groups["outbox loop"] = list(captured)
    event.remove(engine.sync_engine, "before_cursor_execute", capture)

    sqlite = engine.dialect.name == "sqlite"
    out: dict[str, list[dict]] = {}
    async with engine.connect() as conn:
        sizes: dict[str, int] = {}

        async def rows_in(table: str) -> int:
            if table not in sizes:
                known = (
                    "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = :t"
                    if sqlite
                    else "SELECT count(*) FROM pg_class WHERE relname = :t AND relkind = 'r'"
                )
                if not (await conn.execute(text(known), {"t": table})).scalar():
                    sizes[table] = 0  # a CTE's rows (a loose index scan's steps), not a table
                else:
                    sizes[table] = (await conn.execute(text(f'SELECT count(*) FROM "{table}"'))).scalar()
            return sizes[table]

        for group, statements in groups.items():
            plans = []
            for statement, params in statements:
                prefix = "EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN "
                lines = [
                    str(r[-1]) if sqlite else str(r[0])
                    for r in (await conn.exec_driver_sql(prefix + statement, params)).all()
                ]
                scans = []
                for line in lines:
                    m = re.search(r"\bSCAN (\w+)", line) if sqlite else re.search(r'Seq Scan on "?(\w+)', line)
                    if m and m.group(1) != "CONSTANT" and not (sqlite and "USING" in line):
                        scans.append(m.group(1))
                big = [t for t in scans if await rows_in(t) >= SMALL_TABLE]
                plans.append(
                    {
                        "sql": " ".join(statement.split()),
                        "plan": lines,
                        "unindexed": big,
                        "small_scans": [t for t in scans if t not in big],
                    }
                )
            out[group] = plans
        await conn.rollback()
    await engine.dispose()
    if not result.applied:
        out["click"].append({"sql": f"(the click was not applied: {result.text})", "plan": [], "unindexed": ["?"]})
    return out


def main() -> None:
    url, user, alert = sys.argv[1], sys.argv[2], int(sys.argv[3])
    print(json.dumps(asyncio.run(explain(url, user, alert))))


if __name__ == "__main__":
    main()
