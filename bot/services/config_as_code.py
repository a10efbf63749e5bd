"""``genie apply FILE.yaml``: teams, their members, on-call schedules, escalation policies and
heartbeats declared in one YAML file, applied as the difference from what is stored.

- **Idempotent.** Each item is compared with the stored one and changed only if it differs; a
  second run changes nothing and the returned plan is empty.
- **All or nothing.** Everything runs in the caller's one transaction; the first error raises
  ``ApplyError`` (``FILE:LINE: item: problem``) and the caller rolls back. A dry run is the same
  work rolled back at the end, so the plan it prints is exactly what a real run would do.
- **Strict.** Unknown keys, wrong types and duplicate keys are refused with the line
  (``load`` keeps PyYAML's node marks on every mapping).
- **Absent things are left alone** unless ``prune``: then each team the file declares is made
  exactly as the file says — members, schedules, the escalation policy and heartbeats it does not
  name are removed (a section left out counts as empty), and a schedule's overrides too where the
  schedule lists ``overrides`` (overrides are mostly made day to day in Slack). Teams the file
  does not name are never touched.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from typing import Any

import yaml
from sqlalchemy.ext.asyncio import AsyncSession

from bot.services import escalation, heartbeats, schedules, teams, users
from bot.services.alerts import ValidationFailed
from bot.services.errors import GenieError, InvalidInput
from bot.services.escalation import StepSpec
from bot.services.oncall import schedule as maths
from bot.services.oncall.schedule import Window
from bot.services.schedules import RotationSpec
from storage.base import utcnow


class ApplyError(InvalidInput):
    """One sentence: ``FILE:LINE: item: problem``."""


# --- loading with line numbers -------------------------------------------------------------------
class Mapping(dict):
    """A YAML mapping that remembers its line and each key's line (1-based)."""

    line: int = 0
    key_lines: dict[str, int]


class _Loader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> Mapping:
    loader.flatten_mapping(node)
    out = Mapping()
    out.line, out.key_lines = node.start_mark.line + 1, {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, str):
            raise yaml.constructor.ConstructorError(None, None, f"the key {key!r} is not text", key_node.start_mark)
        if key in out:
            raise yaml.constructor.ConstructorError(None, None, f"the key {key!r} appears twice", key_node.start_mark)
        out[key] = loader.construct_object(value_node, deep=True)
        out.key_lines[key] = key_node.start_mark.line + 1
    return out


_Loader.add_constructor("tag:yaml.org,2002:map", _construct_mapping)


def load(text: str, filename: str) -> Mapping:
    """The document, or ``ApplyError`` with the line of a YAML syntax error."""
    try:
        doc = yaml.load(text, Loader=_Loader)  # noqa: S506 — a SafeLoader subclass
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark else 0
        raise ApplyError(f"{filename}:{line}: not valid YAML: {err.problem or err}") from None
    except yaml.YAMLError as err:
        raise ApplyError(f"{filename}: not valid YAML: {err}") from None
    if doc is None:
        doc = Mapping()
        doc.key_lines = {}
    if not isinstance(doc, Mapping):
        raise ApplyError(f"{filename}:1: the file must be a mapping with a 'teams' list")
    return doc


# --- the declared shape --------------------------------------------------------------------------
@dataclass
class _Where:
    filename: str
    line: int
    item: str

    def error(self, problem: str) -> ApplyError:
        return ApplyError(f"{self.filename}:{self.line}: {self.item}: {problem}")


_TYPE_WORDS = {str: "text", int: "a whole number", bool: "true or false", list: "a list", Mapping: "a mapping"}


def _fields(m: Any, where: _Where, required: dict[str, Any], optional: dict[str, Any]) -> dict[str, Any]:
    """The mapping's values, each checked against its type; unknown keys refused."""
    if not isinstance(m, Mapping):
        raise where.error(f"must be a mapping, not {_shown(m)}")
    for key in m:
        if key not in required and key not in optional:
            known = ", ".join([*required, *optional])
            raise _Where(where.filename, m.key_lines[key], where.item).error(f"unknown key {key!r} (known: {known})")
    out = {}
    for key, kind in {**required, **optional}.items():
        if key not in m:
            if key in required:
                raise where.error(f"{key!r} is required")
            continue
        value = m[key]
        line = _Where(where.filename, m.key_lines[key], where.item)
        if value is None and key in optional:
            pass
        elif kind is datetime:
            value = _instant(value, line, key)
        elif not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise line.error(f"{key!r} must be {_TYPE_WORDS[kind]}, not {_shown(value)}")
        out[key] = value
    return out


def _shown(value: Any) -> str:
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def _instant(value: Any, where: _Where, key: str) -> datetime:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise where.error(f"{key!r}: {value!r} is not a date and time (2026-03-02T09:00:00+01:00)") from None
    if isinstance(value, date) and not isinstance(value, datetime):
        raise where.error(f"{key!r}: {value} has no time of day (2026-03-02T09:00:00+01:00)")
    if not isinstance(value, datetime):
        raise where.error(f"{key!r} must be a date and time, not {_shown(value)}")
    if value.tzinfo is None:
        raise where.error(f"{key!r}: {value:%Y-%m-%d %H:%M} has no UTC offset (add +01:00 or Z)")
    return value


_DAY = r"(mon|tue|wed|thu|fri|sat|sun)[a-z]*"
_WINDOW = re.compile(rf"(?:{_DAY}\s+)?(\d{{1,2}}):(\d\d)\s*[-–]\s*(?:{_DAY}\s+)?(\d{{1,2}}):(\d\d)", re.IGNORECASE)
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def parse_window(text: str) -> Window:
    """``09:00-17:00`` (every day) or ``Fri 18:00-Mon 09:00`` (weekday and time of day)."""
    match = _WINDOW.fullmatch(text.strip())
    if match is None:
        raise InvalidInput(f"{text!r} is not a window: give 22:00-06:00 or Fri 18:00-Mon 09:00")
    d1, h1, m1, d2, h2, m2 = match.groups()
    if (d1 is None) != (d2 is None):
        raise InvalidInput(f"{text!r}: give a weekday on both sides, or on neither")
    try:
        start, end = time(int(h1), int(m1)), time(int(h2), int(m2))
    except ValueError:
        raise InvalidInput(f"{text!r}: hours are 00-23 and minutes 00-59") from None
    if d1 is None:
        return Window(start, end)
    return Window(start, end, _DAYS.index(d1[:3].lower()), _DAYS.index(d2[:3].lower()))


def describe_window(w: Window) -> str:
    if w.weekly:
        return f"{_DAYS[w.start_day].title()} {w.start:%H:%M}-{_DAYS[w.end_day].title()} {w.end:%H:%M}"  # type: ignore[index]
    return f"{w.start:%H:%M}-{w.end:%H:%M}"


@dataclass
class _Override:
    where: _Where
    who: str
    start: datetime
    end: datetime


@dataclass
class _Schedule:
    where: _Where
    name: str
    time_zone: str
    description: str | None
    rotations: list[RotationSpec]
    rotation_wheres: list[_Where]
    overrides: list[_Override] | None


@dataclass
class _Policy:
    where: _Where
    name: str
    steps: list[StepSpec]
    repeat: int
    repeat_after: int
    description: str | None
    step_wheres: list[_Where] = field(default_factory=list)


@dataclass
class _Heartbeat:
    where: _Where
    name: str
    body: dict[str, Any]


@dataclass
class _Team:
    where: _Where
    name: str
    channel: str | None
    members: list[str] | None
    schedules: list[_Schedule] | None
    escalation: _Policy | None
    heartbeats: list[_Heartbeat] | None


def _list(value: Any, where: _Where, key: str) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise where.error(f"{key!r} must be a list, not {_shown(value)}")
    return value


def _parse(doc: Mapping, filename: str) -> list[_Team]:
    top = _fields(doc, _Where(filename, doc.line or 1, "the file"), {}, {"teams": list})
    out, seen = [], set()
    for n, t in enumerate(top.get("teams") or [], 1):
        where = _Where(filename, getattr(t, "line", doc.line), f"team {n}")
        f = _fields(
            t,
            where,
            {"name": str},
            {"channel": str, "members": list, "schedules": list, "escalation": Mapping, "heartbeats": list},
        )
        name = f["name"].strip()
        where.item = f"team {name}"
        if name in seen:
            raise where.error("declared twice")
        seen.add(name)
        members = None
        if "members" in f:
            members = []
            for email in _list(f["members"], where, "members"):
                if not isinstance(email, str):
                    raise where.error(f"members: {_shown(email)} is not an email address")
                members.append(email)
        out.append(
            _Team(
                where,
                name,
                f.get("channel"),
                members,
                [_parse_schedule(s, where, filename) for s in f["schedules"] or []] if "schedules" in f else None,
                _parse_policy(f["escalation"], where, filename) if f.get("escalation") is not None else None,
                [_parse_heartbeat(h, where, filename) for h in f["heartbeats"] or []] if "heartbeats" in f else None,
            )
        )
    return out


def _parse_schedule(s: Any, team: _Where, filename: str) -> _Schedule:
    where = _Where(filename, getattr(s, "line", team.line), f"{team.item}, a schedule")
    f = _fields(
        s,
        where,
        {"name": str, "time_zone": str, "rotations": list},
        {"description": str, "overrides": list},
    )
    where.item = f"{team.item}, schedule {f['name']}"
    rotations, wheres = [], []
    for n, r in enumerate(f["rotations"], 1):
        rw = _Where(filename, getattr(r, "line", where.line), f"{where.item}, rotation {n}")
        g = _fields(
            r,
            rw,
            {"name": str, "participants": list, "length": int, "unit": str, "start": datetime},
            {"time_zone": str, "end": datetime, "restrictions": list},
        )
        rw.item = f"{where.item}, rotation {g['name']}"
        participants = []
        for p in g["participants"]:
            if p is not None and not isinstance(p, str):
                raise rw.error(f"participants: {_shown(p)} is not an email address (or null: nobody)")
            participants.append(p)
        windows = []
        for text in _list(g.get("restrictions"), rw, "restrictions"):
            if not isinstance(text, str):
                raise rw.error(f'restrictions: {_shown(text)} is not a window (give "22:00-06:00", quoted)')
            try:
                windows.append(parse_window(text))
            except InvalidInput as err:
                raise rw.error(f"restrictions: {err}") from None
        rotations.append(
            RotationSpec(
                g["name"],
                participants,
                g["length"],
                g["unit"],
                g["start"],
                g.get("time_zone") or f["time_zone"],
                g.get("end"),
                windows,
            )
        )
        wheres.append(rw)
    overrides = None
    if "overrides" in f:
        overrides = []
        for o in f["overrides"] or []:
            ow = _Where(filename, getattr(o, "line", where.line), f"{where.item}, an override")
            g = _fields(o, ow, {"who": str, "start": datetime, "end": datetime}, {})
            ow.item = f"{where.item}, override for {g['who']}"
            overrides.append(_Override(ow, g["who"], g["start"], g["end"]))
    return _Schedule(where, f["name"], f["time_zone"], f.get("description"), rotations, wheres, overrides)


def _parse_policy(p: Any, team: _Where, filename: str) -> _Policy:
    where = _Where(filename, getattr(p, "line", team.line), f"{team.item}, escalation")
    f = _fields(
        p,
        where,
        {"steps": list},
        {"name": str, "repeat": int, "repeat_after": int, "description": str},
    )
    steps, wheres = [], []
    for n, s in enumerate(f["steps"], 1):
        sw = _Where(filename, getattr(s, "line", where.line), f"{where.item}, step {n}")
        g = _fields(s, sw, {"after": int, "notify": str}, {"target": str})
        steps.append(StepSpec(g["after"], g["notify"], g.get("target")))
        wheres.append(sw)
    return _Policy(
        where,
        f.get("name") or "default",
        steps,
        f.get("repeat") or 0,
        f["repeat_after"] if f.get("repeat_after") is not None else escalation.REPEAT_AFTER,
        f.get("description"),
        wheres,
    )


def _parse_heartbeat(h: Any, team: _Where, filename: str) -> _Heartbeat:
    where = _Where(filename, getattr(h, "line", team.line), f"{team.item}, a heartbeat")
    f = _fields(
        h,
        where,
        {"name": str, "interval": str},
        {"enabled": bool, "message": str, "tags": list, "priority": str, "description": str},
    )
    where.item = f"{team.item}, heartbeat {f['name']}"
    try:
        interval, unit = heartbeats.parse_interval(f["interval"])
    except InvalidInput:
        raise where.error(f"interval {f['interval']!r}: give a number and a unit, e.g. 10m, 2h or 1d") from None
    body = {
        "name": f["name"],
        "interval": interval,
        "intervalUnit": unit,
        "enabled": f["enabled"] if f.get("enabled") is not None else True,
        "alertPriority": f.get("priority") or "P3",
        "alertTags": f.get("tags") or [],
        "alertMessage": f.get("message"),
        "description": f.get("description"),
    }
    return _Heartbeat(where, f["name"], body)


# --- applying ------------------------------------------------------------------------------------
@dataclass
class Plan:
    """What was (or, in a dry run, would be) changed, one line each."""

    changes: list[str] = field(default_factory=list)

    def add(self, line: str) -> None:
        self.changes.append(line)


def _utc(value: datetime | None) -> datetime | None:
    return None if value is None else value.astimezone(UTC).replace(microsecond=value.microsecond)


def _rotation_key(name, emails, length, unit, start, tz, end, windows) -> tuple:
    return (
        name,
        tuple(None if e is None else e.strip().lower() for e in emails),
        length,
        unit,
        _utc(start),
        tz,
        _utc(end),
        tuple(windows),
    )


async def apply(session: AsyncSession, doc: Mapping, filename: str, prune: bool = False) -> Plan:
    """Apply the document in ``session`` (the caller commits, or rolls back for a dry run)."""
    declared = _parse(doc, filename)
    plan = Plan()
    for team in declared:
        await _apply_team(session, team, plan, prune)
    return plan


class _At:
    """``async with _At(where)``: a service's refusal becomes ``FILE:LINE: item: problem``."""

    def __init__(self, where: _Where) -> None:
        self.where = where

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, kind, err, tb) -> bool:
        if isinstance(err, ApplyError):
            return False
        if isinstance(err, ValidationFailed):
            raise self.where.error("; ".join(f"{k}: {v}" for k, v in err.errors.items())) from None
        if isinstance(err, GenieError):
            raise self.where.error(str(err)) from None
        return False


async def _apply_team(session: AsyncSession, t: _Team, plan: Plan, prune: bool) -> None:
    async with _At(t.where):
        team = await teams.team_by_name(session, t.name)
        if team is None:
            team = await teams.add_team(session, t.name, t.channel)
            plan.add(f"create team {t.name}" + (f" (channel {t.channel})" if t.channel else ""))
        elif t.channel is not None and teams.check_channel(t.channel) != team.slack_channel_id:
            await teams.set_team_channel(session, t.name, t.channel)
            plan.add(f"team {t.name}: set the channel to {t.channel}")
    if t.members is not None:
        async with _At(t.where):
            wanted = [await users.require_user(session, e) for e in t.members]
            current = {u.id for u in await teams.members_of(session, team.id)}
            for user in wanted:
                if user.id not in current:
                    await teams.add_member(session, team.name, user.email)
                    current.add(user.id)
                    plan.add(f"team {team.name}: add member {user.email}")
    if t.schedules is not None:
        for s in t.schedules:
            await _apply_schedule(session, team, s, plan, prune)
    if t.escalation is not None:
        await _apply_policy(session, team, t.escalation, plan)
    if t.heartbeats is not None:
        for h in t.heartbeats:
            await _apply_heartbeat(session, team, h, plan)
    if prune:
        await _prune(session, team, t, plan)


async def _apply_schedule(session: AsyncSession, team, s: _Schedule, plan: Plan, prune: bool) -> None:
    async with _At(s.where):
        maths.zone(s.time_zone, "time_zone")
    for spec, where in zip(s.rotations, s.rotation_wheres, strict=True):
        async with _At(where):
            maths.zone(spec.time_zone, "time_zone")
    current = await schedules.schedule_of_team(session, team, s.name)
    differ = current is None or await _rotations_differ(session, current, s)
    if differ:
        # Checked one by one first, so an error names the rotation's own line.
        for spec, where in zip(s.rotations, s.rotation_wheres, strict=True):
            async with _At(where):
                await schedules.check_rotations(session, team, [spec])
    async with _At(s.where):
        if current is None:
            current = await schedules.create_schedule(
                session, team.name, s.name, s.time_zone, s.rotations, s.description
            )
            plan.add(f"team {team.name}: create schedule {current.name} ({len(s.rotations)} rotation(s))")
        else:
            changed = []
            if current.time_zone != s.time_zone:
                changed.append("time zone")
            if (current.description or None) != (s.description or None):
                changed.append("description")
            if differ:
                changed.append("rotations")
            if changed:
                await schedules.update_schedule(
                    session,
                    team.name,
                    current.name,
                    time_zone=s.time_zone,
                    rotations=s.rotations if "rotations" in changed else None,
                    description=s.description or "",
                )
                plan.add(f"team {team.name}: change schedule {current.name} ({', '.join(changed)})")
    if s.overrides is None:
        return
    far = (maths.EARLIEST, maths.LATEST)
    stored_overrides = await schedules.overrides(session, current, *far)
    by_id = await users.users_by_id(session, {o.user_id for o in stored_overrides})
    have = {(by_id[o.user_id].email, _utc(o.starts_at), _utc(o.ends_at)): o for o in stored_overrides}
    keep = set()
    for o in s.overrides:
        async with _At(o.where):
            key = (o.who.strip().lower(), _utc(o.start), _utc(o.end))
            keep.add(key)
            if key not in have:
                user = await schedules.active_member(session, team, o.who, "override")
                await schedules.add_override(
                    session, team.name, current.name, user.email, o.start, o.end, "genie apply"
                )
                plan.add(
                    f"team {team.name}: schedule {current.name}: add override for {user.email} "
                    f"{_utc(o.start):%Y-%m-%d %H:%M}–{_utc(o.end):%Y-%m-%d %H:%M} UTC"
                )
    if prune:
        for key, o in have.items():
            if key not in keep:
                await schedules.delete_override(session, team.name, current.name, o.id)
                plan.add(f"team {team.name}: schedule {current.name}: remove override {o.id} for {key[0]}")


async def _rotations_differ(session: AsyncSession, current, s: _Schedule) -> bool:
    stored = [
        _rotation_key(
            r.name, [u and u.email for u in members], r.length, r.length_unit, r.starts_at, r.time_zone, r.ends_at, ws
        )
        for r, members, ws in await schedules.rotations(session, current)
    ]
    wanted = [
        _rotation_key(r.name.strip(), r.participants, r.length, r.unit, r.start, r.time_zone, r.end, r.restrictions)
        for r in s.rotations
    ]
    return stored != wanted


def _step_key(kind: str, target: str | None) -> tuple:
    target = (target or "").strip() or None
    if kind == "team":
        return (kind, None)
    if kind == "user" and target:
        return (kind, target.lower())
    return (kind, target)


async def _apply_policy(session: AsyncSession, team, p: _Policy, plan: Plan) -> None:
    async with _At(p.where):
        try:
            _, current = await escalation.require_policy(session, team.name)
        except GenieError:
            current = None
        if current is not None:
            stored = [
                (s.delay_minutes, *_step_key(s.kind, _step_target(s)))
                for s in await escalation.policy_steps(session, current)
            ]
            wanted = [(s.delay_minutes, *_step_key(s.kind, s.target)) for s in p.steps]
            if (
                stored == wanted
                and current.name == p.name
                and current.repeat == p.repeat
                and current.repeat_after_minutes == p.repeat_after
                and (current.description or None) == (p.description or None)
            ):
                return
        try:
            await escalation.set_policy(
                session, team.name, p.name, p.steps, p.repeat, p.description or "", p.repeat_after
            )
        except GenieError as err:  # "step 2: …" is told at the step's own line
            match = re.match(r"step (\d+): ", str(err))
            if match and 0 < int(match.group(1)) <= len(p.step_wheres):
                raise p.step_wheres[int(match.group(1)) - 1].error(str(err)[match.end() :]) from None
            raise
        plan.add(
            f"team {team.name}: {'set' if current is None else 'change'} escalation policy {p.name} ({len(p.steps)} step(s), repeat {p.repeat})"
        )


def _step_target(s: escalation.Step) -> str | None:
    if s.kind == "schedule":
        return s.schedule.name if s.schedule else None
    if s.kind == "user":
        return s.user.email if s.user else None
    if s.kind == "channel":
        return s.channel
    return None


async def _apply_heartbeat(session: AsyncSession, team, h: _Heartbeat, plan: Plan) -> None:
    async with _At(h.where):
        data = heartbeats.parse_fields(h.body, create=True)
        data.given = {
            "description",
            "interval",
            "interval_unit",
            "enabled",
            "alert_message",
            "alert_tags",
            "alert_priority",
        }
        found = {x.name: x for x, _ in await heartbeats.of_team(session, team.id)}.get(data.name)
        now = utcnow()
        if found is None:
            await heartbeats.create(session, team, data, now)
            plan.add(f"team {team.name}: create heartbeat {data.name}")
            return
        differs = [
            attr
            for attr in ("description", "interval", "interval_unit", "enabled", "alert_message", "alert_priority")
            if getattr(found, attr) != getattr(data, attr)
        ]
        if list(found.alert_tags or []) != list(data.alert_tags or []):
            differs.append("alert_tags")
        if differs:
            await heartbeats.update_fields(session, found, data, now)
            plan.add(f"team {team.name}: change heartbeat {data.name} ({', '.join(differs)})")


async def _prune(session: AsyncSession, team, t: _Team, plan: Plan) -> None:
    """Remove what the file does not name, within this declared team (a section left out is an
    empty one; a schedule's overrides are pruned only where the schedule lists ``overrides``)."""
    if t.escalation is None:
        try:
            await escalation.require_policy(session, team.name)
        except GenieError:
            pass
        else:
            await escalation.delete_policy(session, team.name)
            plan.add(f"team {team.name}: remove the escalation policy")
    named = {s.name.strip() for s in t.schedules or []}
    for s in await schedules.schedules_of_team(session, team):
        if s.name not in named:
            async with _At(t.where):
                await schedules.delete_schedule(session, team.name, s.name)
            plan.add(f"team {team.name}: remove schedule {s.name}")
    named = {h.name for h in t.heartbeats or []}
    for h, _ in await heartbeats.of_team(session, team.id):
        if h.name not in named:
            await heartbeats.remove(session, h)
            plan.add(f"team {team.name}: remove heartbeat {h.name}")
    named = {users.normalize_email(e) for e in t.members or []}
    for u in await teams.members_of(session, team.id):
        if u.email not in named:
            await teams.remove_member(session, team.name, u.email)
            plan.add(f"team {team.name}: remove member {u.email}")
