"""``genie escalation``: a team's escalation policy (one per team)."""

from __future__ import annotations

import argparse
import asyncio

from bot.cli.common import Parser, UserError, emit, with_db
from bot.services import escalation
from bot.services.escalation import StepSpec


def step(text: str) -> StepSpec:
    """``DELAY:KIND[:TARGET]``: ``0:schedule:payments``, ``10:user:bob@example.com``, ``20:team``,
    ``30:channel:C0PAYMENTS``."""
    delay, _, rest = text.partition(":")
    kind, _, target = rest.partition(":")
    try:
        minutes = int(delay)
    except ValueError:
        raise UserError(f"--step {text!r}: give MINUTES:KIND[:TARGET], e.g. 0:schedule:payments or 20:team") from None
    return StepSpec(minutes, kind.strip(), target.strip() or None)


def cmd_escalation_set(args: argparse.Namespace) -> int:
    steps = [step(s) for s in args.step or []]

    async def work(session):
        await escalation.set_policy(
            session, args.team, args.name, steps, args.repeat, args.description, args.repeat_after
        )
        _, policy = await escalation.require_policy(session, args.team)
        return policy, await escalation.policy_steps(session, policy)

    policy, stored = asyncio.run(with_db(work))
    print(
        f"set escalation policy {policy.name} of team {args.team.strip()}: {len(stored)} step(s), repeat {policy.repeat}"
    )
    for s in stored:
        print(f"  {s.position + 1}. {s.describe()}")
    return 0


def cmd_escalation_show(args: argparse.Namespace) -> int:
    async def work(session):
        team, policy = await escalation.require_policy(session, args.team)
        return team, policy, await escalation.policy_steps(session, policy)

    team, policy, stored = asyncio.run(with_db(work))
    if args.json:
        emit(
            [
                {
                    "team": team.name,
                    "name": policy.name,
                    "repeat": policy.repeat,
                    "repeat_after": policy.repeat_after_minutes,
                    "description": policy.description,
                    "steps": [{"after": s.delay_minutes, "notify": s.kind, "describe": s.describe()} for s in stored],
                }
            ],
            [],
            True,
        )
        return 0
    print(f"escalation policy {policy.name} of team {team.name}")
    for s in stored:
        print(f"  {s.position + 1}. {s.describe()}")
    if policy.repeat:
        print(f"  then again {policy.repeat} more time(s), {policy.repeat_after_minutes} min after the last step")
    return 0


def cmd_escalation_remove(args: argparse.Namespace) -> int:
    async def work(session):
        await escalation.delete_policy(session, args.team)

    asyncio.run(with_db(work))
    print(f"removed the escalation policy of team {args.team.strip()}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    es = sub.add_parser("escalation", help="a team's escalation policy: who is paged, when").add_subparsers(
        dest="escalation_command", required=True, parser_class=Parser
    )
    p = es.add_parser("set", help="create or replace the team's policy")
    p.add_argument("--team", required=True)
    p.add_argument("--name", default="default")
    p.add_argument(
        "--step",
        action="append",
        help="MINUTES:KIND[:TARGET], in order (repeatable): 0:schedule:payments, 10:user:bob@example.com, "
        "20:team, 30:channel:C0PAYMENTS",
    )
    p.add_argument("--repeat", type=int, default=0, help="run the whole policy again N more times (0-10)")
    p.add_argument("--repeat-after", type=int, default=escalation.REPEAT_AFTER, help="minutes after the last step")
    p.add_argument("--description")
    p.set_defaults(func=cmd_escalation_set)
    p = es.add_parser("show")
    p.add_argument("--team", required=True)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_escalation_show)
    p = es.add_parser("remove")
    p.add_argument("--team", required=True)
    p.set_defaults(func=cmd_escalation_remove)
