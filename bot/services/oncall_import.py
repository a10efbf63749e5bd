"""OpsGenie's schedules, overrides and escalation policies carried into Genie
(``genie opsgenie import --schedules --escalations``).

What OpsGenie sent (``bot.importers.opsgenie.fetch_oncall``) is mapped onto the YAML document of
``genie apply`` (``bot.services.config_as_code``) and applied by it, so an import is checked,
idempotent and all-or-nothing like ``apply``, and the same document can be written to a file and
kept in Git. What cannot be carried over is not guessed at: it is left out and listed.

Mapping: a schedule belongs to its ``ownerTeam`` (a Genie team of that name); each rotation
becomes a layer (OpsGenie's later rotations win, as Genie's higher layers do), ``hourly`` /
``daily`` / ``weekly`` → hours / days / weeks, ``length``, ``startDate``, ``endDate``, the
schedule's ``timezone``, ``time-of-day`` and ``weekday-and-time-of-day`` restrictions → windows;
participants ``user`` → the person with that email (username), ``none`` → a nobody slot. An
escalation owned by a team becomes the team's policy: each rule → a step after ``delay``
minutes notifying the schedule's on-call person, the user, or everyone in the team; ``repeat``
(``waitInterval``, ``count``) → repeat after / repeat.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml
from sqlalchemy.ext.asyncio import AsyncSession

from bot.services import config_as_code, teams
from bot.services.errors import InvalidInput
from bot.services.escalation import MAX_DELAY_MINUTES, MAX_REPEAT
from bot.services.oncall import schedule as maths

UNITS = {"hourly": "hours", "daily": "days", "weekly": "weeks"}
TIME_UNITS = {"minutes": 1, "hours": 60, "days": 1440}
DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


@dataclass
class OncallImport:
    document: dict[str, Any]
    yaml_text: str
    not_carried: list[str] = field(default_factory=list)
    changes: list[str] = field(default_factory=list)


def _s(value: Any) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


def _name(d: Any) -> str | None:
    return _s(d.get("name")) if isinstance(d, dict) else None


def _hm(r: dict, which: str) -> str:
    hour, minute = r.get(f"{which}Hour"), r.get(f"{which}Min")
    if not isinstance(hour, int) or not isinstance(minute, int) or not (0 <= hour <= 23 and 0 <= minute <= 59):
        raise ValueError(which)
    return f"{hour:02d}:{minute:02d}"


def _windows(restriction: Any) -> list[str]:
    """OpsGenie's ``timeRestriction`` as ``genie apply`` windows; ``ValueError`` if unreadable."""
    if not restriction:
        return []
    kind = restriction.get("type") if isinstance(restriction, dict) else None
    if kind == "time-of-day":
        r = restriction.get("restriction") or {}
        return [f"{_hm(r, 'start')}-{_hm(r, 'end')}"]
    if kind == "weekday-and-time-of-day":
        out = []
        for r in restriction.get("restrictions") or []:
            d1, d2 = str(r.get("startDay", "")).lower(), str(r.get("endDay", "")).lower()
            if d1 not in DAYS or d2 not in DAYS:
                raise ValueError("day")
            out.append(f"{d1[:3].title()} {_hm(r, 'start')}-{d2[:3].title()} {_hm(r, 'end')}")
        return out
    raise ValueError(str(kind))


def to_document(
    schedules: list[dict], escalations: list[dict], members: dict[str, set[str]]
) -> tuple[dict[str, Any], list[str]]:
    """The ``genie apply`` document for what OpsGenie sent, and what was left out (one line each).
    ``members``: each Genie team's active members' emails."""
    notes: list[str] = []
    by_team: dict[str, dict[str, Any]] = {}

    def team_doc(name: str) -> dict[str, Any]:
        return by_team.setdefault(name, {"name": name})

    carried: dict[str, set[str]] = {}  # team -> schedule names carried over
    for s in schedules:
        sname = _name(s) or s.get("id")
        what = f"schedule {sname}"
        team = _name(s.get("ownerTeam"))
        if team is None:
            notes.append(f"{what}: no owner team (Genie's schedules belong to a team)")
            continue
        if team not in members:
            notes.append(f"{what}: team {team} is not in Genie (import with --teams)")
            continue
        tz = _s(s.get("timezone")) or "UTC"
        try:
            maths.zone(tz)
        except InvalidInput:
            notes.append(f"{what}: time zone {tz!r} is not an IANA zone Genie knows")
            continue
        if s.get("enabled") is False:
            notes.append(f"{what}: disabled in OpsGenie; carried over enabled (Genie's schedules have no switch)")
        rotations = []
        for r in s.get("rotations") or []:
            rname = _name(r) or r.get("id") or f"rotation {len(rotations) + 1}"
            rwhat = f"{what}, rotation {rname}"
            unit = UNITS.get(str(r.get("type")))
            if unit is None:
                notes.append(f"{rwhat}: rotation type {r.get('type')!r} is not hourly, daily or weekly")
                continue
            try:
                windows = _windows(r.get("timeRestriction"))
            except (ValueError, AttributeError):
                notes.append(f"{rwhat}: its time restriction could not be read")
                continue
            people: list[str | None] = []
            for p in r.get("participants") or []:
                kind = p.get("type") if isinstance(p, dict) else None
                if kind == "none":
                    people.append(None)
                elif kind == "user":
                    email = (_s(p.get("username")) or "").lower()
                    if email in members[team]:
                        people.append(email)
                    else:
                        people.append(None)
                        notes.append(
                            f"{rwhat}: {email or p.get('id')} is not an active member of team {team} in Genie; "
                            "their shifts are a nobody slot"
                        )
                else:
                    people.append(None)
                    notes.append(
                        f"{rwhat}: participant of type {kind} ({_name(p) or p.get('id')}) cannot be carried "
                        "over (Genie's participants are people); its shifts are a nobody slot"
                    )
            if all(p is None for p in people):
                notes.append(f"{rwhat}: nobody left to carry over; rotation left out")
                continue
            rotation = {
                "name": rname,
                "participants": people,
                "length": r.get("length") if isinstance(r.get("length"), int) and r.get("length") > 0 else 1,
                "unit": unit,
                "start": r.get("startDate"),
            }
            if _s(r.get("endDate")):
                rotation["end"] = r["endDate"]
            if windows:
                rotation["restrictions"] = windows
            rotations.append(rotation)
        if not rotations:
            notes.append(f"{what}: no rotation could be carried over; schedule left out")
            continue
        overrides = []
        for o in s.get("overrides") or []:
            user = o.get("user") or {}
            email = (_s(user.get("username")) or "").lower()
            owhat = f"{what}, override {o.get('alias')}"
            if user.get("type") not in (None, "user"):
                notes.append(f"{owhat}: overrides by a {user.get('type')} cannot be carried over")
                continue
            if email not in members[team]:
                notes.append(f"{owhat}: {email or user.get('id')} is not an active member of team {team} in Genie")
                continue
            if o.get("rotations"):
                notes.append(f"{owhat}: limited to some rotations in OpsGenie; in Genie it covers the whole schedule")
            overrides.append({"who": email, "start": o.get("startDate"), "end": o.get("endDate")})
        doc = {"name": sname, "time_zone": tz, "rotations": rotations}
        if _s(s.get("description")):
            doc["description"] = s["description"].strip()
        if overrides:
            doc["overrides"] = overrides
        team_doc(team).setdefault("schedules", []).append(doc)
        carried.setdefault(team, set()).add(sname)

    for e in escalations:
        ename = _name(e) or e.get("id")
        what = f"escalation {ename}"
        team = _name(e.get("ownerTeam"))
        if team is None:
            notes.append(f"{what}: no owner team (a Genie policy belongs to a team)")
            continue
        if team not in members:
            notes.append(f"{what}: team {team} is not in Genie (import with --teams)")
            continue
        if "escalation" in team_doc(team):
            notes.append(
                f"{what}: team {team} already has {team_doc(team)['escalation']['name']} (Genie: one policy a team)"
            )
            continue
        steps = []
        for n, rule in enumerate(e.get("rules") or [], 1):
            rwhat = f"{what}, rule {n}"
            delay = rule.get("delay") or {}
            amount, unit = delay.get("timeAmount"), TIME_UNITS.get(str(delay.get("timeUnit", "minutes")))
            if not isinstance(amount, int) or unit is None or not 0 <= amount * unit <= MAX_DELAY_MINUTES:
                notes.append(f"{rwhat}: its delay {delay!r} could not be read")
                continue
            if rule.get("condition") == "if-not-closed":
                notes.append(f"{rwhat}: condition if-not-closed; Genie stops escalating at acknowledgement")
            recipient = rule.get("recipient") or {}
            kind, notify = recipient.get("type"), rule.get("notifyType") or "default"
            step: dict[str, Any] = {"after": amount * unit}
            if kind == "schedule":
                target = _name(recipient)
                if target not in carried.get(team, set()):
                    notes.append(
                        f"{rwhat}: schedule {target or recipient.get('id')} was not carried over into team {team}"
                    )
                    continue
                if notify != "default":
                    notes.append(f"{rwhat}: notify type {notify!r} (Genie pages the person on call now, as 'default')")
                step.update(notify="schedule", target=target)
            elif kind == "user":
                email = (_s(recipient.get("username")) or "").lower()
                if email not in members[team]:
                    notes.append(f"{rwhat}: {email or recipient.get('id')} is not an active member of team {team}")
                    continue
                step.update(notify="user", target=email)
            elif kind == "team":
                if _name(recipient) != team:
                    notes.append(
                        f"{rwhat}: team {_name(recipient)} is not {team} (a Genie policy notifies its own team)"
                    )
                    continue
                if notify not in ("default", "all"):
                    notes.append(f"{rwhat}: notify type {notify!r} (Genie notifies everyone in the team)")
                step["notify"] = "team"
            else:
                notes.append(f"{rwhat}: recipient type {kind!r} cannot be carried over")
                continue
            steps.append(step)
        if not steps:
            notes.append(f"{what}: no rule could be carried over; policy left out")
            continue
        steps.sort(key=lambda x: x["after"])
        policy: dict[str, Any] = {"name": ename, "steps": steps}
        repeat = e.get("repeat") or {}
        count, wait = repeat.get("count"), repeat.get("waitInterval")
        if isinstance(count, int) and count > 0:
            if count > MAX_REPEAT:
                notes.append(f"{what}: repeats {count} times; Genie repeats at most {MAX_REPEAT}")
            policy["repeat"] = min(count, MAX_REPEAT)
            if isinstance(wait, int):
                policy["repeat_after"] = max(1, min(wait, MAX_DELAY_MINUTES))
        if _s(e.get("description")):
            policy["description"] = e["description"].strip()
        team_doc(team)["escalation"] = policy
    return {"teams": list(by_team.values())}, notes


async def import_oncall(
    session: AsyncSession, schedules: list[dict], escalations: list[dict], source: str = "opsgenie"
) -> OncallImport:
    """Map and apply in ``session`` (the caller commits, or rolls back for a dry run)."""
    members = {
        team.name: {u.email for u in people if u.is_active}
        for team, people in await teams.all_teams_with_members(session)
    }
    document, notes = to_document(schedules, escalations, members)
    text = yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=120)
    plan = await config_as_code.apply(session, config_as_code.load(text, source), source)
    return OncallImport(document, text, notes, plan.changes)
