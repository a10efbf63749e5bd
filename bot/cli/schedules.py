"""``genie schedule``: a team's on-call schedules and their overrides.

One rotation can be given here (``--participants``, ``--length``, ``--unit``, ``--start``,
``--restrict``); schedules of several layers are declared in YAML with ``genie apply``."""

from __future__ import annotations

import argparse
import asyncio
from datetime import datetime, timedelta

from bot.cli.common import Parser, UserError, emit, with_db
from bot.services import config_as_code, schedules, teams, users
from bot.services.errors import InvalidInput
from bot.services.oncall import schedule as maths
from bot.services.schedules import RotationSpec
from storage.base import utcnow


def when(text: str, tz_name: str, what: str) -> datetime:
    """An ISO date and time; without an offset it is read in ``tz_name``."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UserError(
            f"{what} {text!r}: give a date and time such as 2026-03-06T18:00 or 2026-03-06T18:00+01:00"
        ) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=maths.zone(tz_name, what))
    return value


def windows(texts: list[str] | None) -> list:
    out = []
    for text in texts or []:
        try:
            out.append(config_as_code.parse_window(text))
        except InvalidInput as err:
            raise UserError(f"--restrict: {err}") from None
    return out


def participants(text: str) -> list[str | None]:
    people = [p.strip() for p in text.split(",")]
    if any(not p for p in people):
        raise UserError("--participants: give emails separated by commas (none: a nobody slot)")
    return [None if p.lower() == "none" else p for p in people]


def cmd_schedule_add(args: argparse.Namespace) -> int:
    maths.zone(args.tz, "--tz")
    start = when(args.start, args.tz, "--start")
    spec = RotationSpec(
        args.rotation,
        participants(args.participants),
        args.length,
        args.unit,
        start,
        args.tz,
        when(args.end, args.tz, "--end") if args.end else None,
        windows(args.restrict),
    )

    async def work(session):
        return await schedules.create_schedule(session, args.team, args.name, args.tz, [spec], args.description)

    schedule = asyncio.run(with_db(work))
    print(
        f"added schedule {schedule.name} of team {args.team.strip()} ({args.tz}): rotation {spec.name}, "
        f"{len(spec.participants)} participant(s), every {spec.length} {spec.unit}"
    )
    return 0


def cmd_schedule_show(args: argparse.Namespace) -> int:
    if not 1 <= args.days <= 92:
        raise UserError("--days: give 1 to 92")

    async def work(session):
        team, schedule = await schedules.require_schedule(session, args.team, args.name)
        tz_name = args.tz or schedule.time_zone
        tz = maths.zone(tz_name, "--tz")
        start = when(args.start, tz_name, "--from") if args.start else utcnow()
        found = await schedules.shifts(session, schedule, start, start + timedelta(days=args.days))
        layers = await schedules.rotations(session, schedule)
        return team, schedule, tz, tz_name, start, found, layers

    team, schedule, tz, tz_name, start, found, layers = asyncio.run(with_db(work))
    print(f"schedule {schedule.name} of team {team.name} ({schedule.time_zone})")
    for rotation, members, ws in reversed(layers):
        people = ", ".join(u.email if u else "(nobody)" for u in members)
        restricted = f", only {'; '.join(config_as_code.describe_window(w) for w in ws)}" if ws else ""
        print(
            f"  layer {rotation.layer} {rotation.name}: {people}; every {rotation.length} {rotation.length_unit} from "
            f"{rotation.starts_at.astimezone(maths.zone(rotation.time_zone)):%Y-%m-%d %H:%M} "
            f"{rotation.time_zone}{restricted}"
        )
    print(f"shifts for {args.days} day(s) from {start.astimezone(tz):%a %Y-%m-%d %H:%M} ({tz_name}):")
    for s in found:
        who = s.who.email if s.who is not None else "nobody"
        how = " (override)" if s.override else f" ({s.layer})" if s.layer else ""
        print(f"  {s.start.astimezone(tz):%a %Y-%m-%d %H:%M} – {s.end.astimezone(tz):%a %Y-%m-%d %H:%M}  {who}{how}")
    gaps = maths.describe_gaps(found, tz)
    print("gaps: none" if not gaps else "gaps:")
    for gap in gaps:
        print(f"  {gap}")
    return 0


def cmd_schedule_list(args: argparse.Namespace) -> int:
    async def work(session):
        found = (
            [await teams.require_team(session, args.team)]
            if args.team
            else [t for t, _ in await teams.all_teams_with_members(session)]
        )
        now = utcnow()
        rows = []
        on_call = await schedules.who_is_on_call_many(session, found, now)
        for team in found:
            for schedule, shift in on_call[team.id]:
                rows.append(
                    {
                        "team": team.name,
                        "name": schedule.name,
                        "time_zone": schedule.time_zone,
                        "on_call": shift.who.email if shift.who is not None else None,
                        "until": shift.end.isoformat(),
                        "description": schedule.description,
                    }
                )
        return rows

    rows = asyncio.run(with_db(work))
    emit(rows, ["team", "name", "time_zone", "on_call", "until"], args.json)
    return 0


def cmd_schedule_remove(args: argparse.Namespace) -> int:
    async def work(session):
        await schedules.delete_schedule(session, args.team, args.name)

    asyncio.run(with_db(work))
    print(f"removed schedule {args.name.strip()} of team {args.team.strip()} (with its rotations and overrides)")
    return 0


def cmd_schedule_override(args: argparse.Namespace) -> int:
    async def work(session):
        _, schedule = await schedules.require_schedule(session, args.team, args.name)
        tz = args.tz or schedule.time_zone
        start, end = when(args.start, tz, "--start"), when(args.end, tz, "--end")
        override = await schedules.add_override(session, args.team, args.name, args.who, start, end, "genie schedule")
        return override, tz

    override, tz = asyncio.run(with_db(work))
    z = maths.zone(tz)
    print(
        f"added override {override.id}: {args.who.strip().lower()} covers schedule {args.name.strip()} from "
        f"{override.starts_at.astimezone(z):%a %Y-%m-%d %H:%M} to {override.ends_at.astimezone(z):%a %Y-%m-%d %H:%M} ({tz})"
    )
    return 0


def cmd_schedule_overrides(args: argparse.Namespace) -> int:
    async def work(session):
        _, schedule = await schedules.require_schedule(session, args.team, args.name)
        tz = maths.zone(args.tz or schedule.time_zone, "--tz")
        found = await schedules.overrides(session, schedule, utcnow() if not args.all else maths.EARLIEST, maths.LATEST)
        by_id = await users.users_by_id(session, {o.user_id for o in found})
        return [
            {
                "id": o.id,
                "who": by_id[o.user_id].email,
                "start": o.starts_at.astimezone(tz).isoformat(),
                "end": o.ends_at.astimezone(tz).isoformat(),
                "by": o.created_by,
            }
            for o in found
        ]

    emit(asyncio.run(with_db(work)), ["id", "who", "start", "end", "by"], args.json)
    return 0


def cmd_schedule_remove_override(args: argparse.Namespace) -> int:
    async def work(session):
        await schedules.delete_override(session, args.team, args.name, args.id)

    asyncio.run(with_db(work))
    print(f"removed override {args.id} of schedule {args.name.strip()}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    sc = sub.add_parser("schedule", help="on-call schedules of the teams, and overrides").add_subparsers(
        dest="schedule_command", required=True, parser_class=Parser
    )
    p = sc.add_parser("add", help="a schedule of one rotation (several layers: genie apply)")
    p.add_argument("name")
    p.add_argument("--team", required=True)
    p.add_argument("--tz", required=True, help="the IANA time zone, e.g. Europe/Berlin")
    p.add_argument("--participants", required=True, help="emails in hand-off order, comma-separated (none: nobody)")
    p.add_argument("--length", type=int, default=1, help="how many --unit each shift lasts (default 1)")
    p.add_argument("--unit", choices=maths.UNITS, default="weeks")
    p.add_argument("--start", required=True, help="the first hand-off, e.g. 2026-03-02T09:00 (read in --tz)")
    p.add_argument("--end", help="when the rotation stops")
    p.add_argument("--restrict", action="append", help="a window: 22:00-06:00 or 'Fri 18:00-Mon 09:00' (repeatable)")
    p.add_argument("--rotation", default="primary", help="the rotation's name (default primary)")
    p.add_argument("--description")
    p.set_defaults(func=cmd_schedule_add)
    p = sc.add_parser("show", help="the rotations, the next days' shifts and the gaps")
    p.add_argument("name")
    p.add_argument("--team", required=True)
    p.add_argument("--days", type=int, default=7, help="how many days ahead (default 7)")
    p.add_argument("--tz", help="show times in this zone (default: the schedule's)")
    p.add_argument("--from", dest="start", help="start here instead of now")
    p.set_defaults(func=cmd_schedule_show)
    p = sc.add_parser("list", help="schedules and who is on call now")
    p.add_argument("--team")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_schedule_list)
    p = sc.add_parser("remove", help="delete a schedule with its rotations and overrides")
    p.add_argument("name")
    p.add_argument("--team", required=True)
    p.set_defaults(func=cmd_schedule_remove)
    p = sc.add_parser("override", help="WHO covers the schedule from --start to --end")
    p.add_argument("name")
    p.add_argument("--team", required=True)
    p.add_argument("--who", required=True, help="the member's email")
    p.add_argument("--start", required=True, help="e.g. 2026-03-06T18:00 (read in --tz or the schedule's zone)")
    p.add_argument("--end", required=True)
    p.add_argument("--tz", help="the zone of --start and --end without an offset (default: the schedule's)")
    p.set_defaults(func=cmd_schedule_override)
    p = sc.add_parser("overrides", help="the overrides that have not ended (--all: every one)")
    p.add_argument("name")
    p.add_argument("--team", required=True)
    p.add_argument("--tz")
    p.add_argument("--all", action="store_true")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_schedule_overrides)
    p = sc.add_parser("remove-override", help="delete override ID")
    p.add_argument("name")
    p.add_argument("id", type=int)
    p.add_argument("--team", required=True)
    p.set_defaults(func=cmd_schedule_remove_override)
