"""Heartbeats, as OpsGenie's Heartbeat API has them: a job (cron, Alertmanager's Watchdog, a
backup script) pings a named heartbeat at least every ``interval``; when a ping is late, Genie
raises ONE alert for the heartbeat's team ("<Name> is expired", with the heartbeat's message,
tags and priority, alias ``heartbeat:<name>``), through ``alerts.create_alert`` like any alert
of the API — posted to Slack through the outbox and gated by the team. The next ping closes it.

Everything is in the database, nothing in timers: ``expires_at`` is when the next ping is due.
Every ``genie serve`` runs a ``HeartbeatMonitor`` that looks for heartbeats past it and claims
each with one conditional UPDATE (``… SET expired = true WHERE enabled AND NOT expired AND
expires_at <= now``) in the transaction that raises the alert: whichever process wins raises
it, the others change nothing, and a restart finds the same state.

Times come from the caller (``now``): the server passes ``Runtime.now()``, which tests move.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.services import alerts, teams
from bot.services.alerts import Actor, AlreadyDone, ValidationFailed
from bot.services.errors import AlreadyExists, NotFound
from bot.services.loop import BackgroundLoop
from storage import repositories as repo
from storage.base import constant, utcnow
from storage.models import Alert, AlertStatus, Heartbeat, Team, TeamMember

logger = logging.getLogger(__name__)

UNITS = {"minutes": timedelta(minutes=1), "hours": timedelta(hours=1), "days": timedelta(days=1)}
#: OpsGenie's limits: name 200 characters, description 10,000; the alert's as for any alert.
MAX_NAME, MAX_DESCRIPTION = 200, 10000
#: The longest interval Genie keeps (a year): beyond it a date would be meaningless.
MAX_INTERVAL = timedelta(days=366)
#: What the expiry alert's ``user`` and the timeline call the heartbeat monitor.
REPORTER = "Heartbeat monitor"
#: How often each process looks for late heartbeats (seconds); ``wake()`` looks at once.
POLL_INTERVAL = 5.0


def alias_of(name: str) -> str:
    """The expiry alert's alias: one open alert per heartbeat (de-duplicated like any alias)."""
    return f"heartbeat:{name}"


def default_message(name: str) -> str:
    message = f"{name} is expired"
    limit = alerts.LIMITS["message"]
    return message if len(message) <= limit else f"{name[: limit - len(' is expired') - 1]}… is expired"


def interval_delta(interval: int, unit: str) -> timedelta:
    return interval * UNITS[unit]


def interval_words(interval: int, unit: str) -> str:
    return f"{interval} {unit[:-1] if interval == 1 else unit}"


# --- validation ------------------------------------------------------------------------------
@dataclass
class Fields:
    """The fields a create or update request set (``None``: not given)."""

    name: str | None = None
    description: str | None = None
    interval: int | None = None
    interval_unit: str | None = None
    enabled: bool | None = None
    alert_message: str | None = None
    alert_tags: list[str] | None = None
    alert_priority: str | None = None
    #: Which of them the request named (PATCH changes only those; ``description: null`` clears).
    given: set[str] = field(default_factory=set)


def valid_name(name: Any) -> str | None:
    """The problem with a heartbeat name, or None. A name is a path segment of every URL."""
    if not isinstance(name, str) or not name.strip():
        return "name can not be empty"
    if len(name) > MAX_NAME:
        return f"name can not be longer than {MAX_NAME} characters"
    if name != name.strip() or "/" in name or any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "name can not contain '/', control characters, or start or end with spaces"
    return None


def parse_fields(body: dict[str, Any], *, create: bool) -> Fields:
    """OpsGenie's fields (camelCase) of a create (``name``, ``interval``, ``intervalUnit``
    required) or an update (all optional); ``ValidationFailed`` lists every problem."""
    errors: dict[str, str] = {}
    out = Fields()
    names = {
        "name": "name",
        "description": "description",
        "interval": "interval",
        "intervalUnit": "interval_unit",
        "enabled": "enabled",
        "alertMessage": "alert_message",
        "alertTags": "alert_tags",
        "alertPriority": "alert_priority",
    }
    out.given = {names[k] for k in body if k in names}
    if create or "name" in body:
        problem = valid_name(body.get("name"))
        if problem:
            errors["name"] = problem
        else:
            out.name = body["name"]
    description = body.get("description")
    if description is not None:
        if not isinstance(description, str):
            errors["description"] = "description must be a string"
        elif len(description) > MAX_DESCRIPTION:
            errors["description"] = f"description can not be longer than {MAX_DESCRIPTION} characters"
        else:
            out.description = description
    interval, unit = body.get("interval"), body.get("intervalUnit")
    if interval is not None or create:
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
            errors["interval"] = "interval must be a whole number, at least 1"
        elif interval > MAX_INTERVAL // UNITS["minutes"]:
            errors["interval"] = "interval can be at most 366 days"
        else:
            out.interval = interval
    if unit is not None or create:
        if not isinstance(unit, str) or unit not in UNITS:
            errors["intervalUnit"] = "intervalUnit must be one of minutes, hours, days"
        else:
            out.interval_unit = unit
    if (
        out.interval is not None
        and out.interval_unit is not None
        and interval_delta(out.interval, out.interval_unit) > MAX_INTERVAL
    ):
        errors["interval"] = "interval can be at most 366 days"
    enabled = body.get("enabled")
    if enabled is not None:
        if not isinstance(enabled, bool):
            errors["enabled"] = "enabled must be true or false"
        else:
            out.enabled = enabled
    message = body.get("alertMessage")
    if message is not None:
        if not isinstance(message, str):
            errors["alertMessage"] = "alertMessage must be a string"
        elif len(message) > alerts.LIMITS["message"]:
            errors["alertMessage"] = f"alertMessage can not be longer than {alerts.LIMITS['message']} characters"
        else:
            out.alert_message = message.strip() or None
    tags = body.get("alertTags")
    if tags is not None:
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            errors["alertTags"] = "alertTags must be a list of strings"
        elif len(tags) > alerts.MAX_TAGS or any(len(t) > alerts.MAX_TAG for t in tags):
            errors["alertTags"] = f"at most {alerts.MAX_TAGS} alertTags of at most {alerts.MAX_TAG} characters each"
        else:
            out.alert_tags = list(dict.fromkeys(t for t in tags if t.strip()))
    priority = body.get("alertPriority")
    if priority is not None:
        if priority not in alerts.PRIORITIES:
            errors["alertPriority"] = "alertPriority must be one of P1, P2, P3, P4, P5"
        else:
            out.alert_priority = priority
    owner = body.get("ownerTeam")
    if owner is not None and not (
        isinstance(owner, dict) and all(isinstance(owner.get(k), (str, type(None))) for k in ("id", "name"))
    ):
        errors["ownerTeam"] = 'ownerTeam must be an object: {"name": "…"} or {"id": "…"}'
    if errors:
        raise ValidationFailed(errors)
    return out


# --- reading ---------------------------------------------------------------------------------
async def find(session: AsyncSession, team: Team, name: str) -> Heartbeat:
    """The team's heartbeat of that name; another team's is "not found", like a missing one."""
    found = None
    if valid_name(name) is None:
        found = await session.scalar(select(Heartbeat).where(Heartbeat.team_id == team.id, Heartbeat.name == name))
    if found is None:
        raise NotFound(f"Heartbeat with name [{name[:MAX_NAME]}] does not exist")
    return found


async def of_team(session: AsyncSession, team_id: int | None = None) -> list[tuple[Heartbeat, Team]]:
    query = select(Heartbeat, Team).join(Team, Team.id == Heartbeat.team_id).order_by(Team.name, Heartbeat.name)
    if team_id is not None:
        query = query.where(Heartbeat.team_id == team_id)
    return [(h, t) for h, t in (await session.execute(query)).all()]


def is_late(heartbeat: Heartbeat, now: datetime) -> bool:
    return heartbeat.enabled and (heartbeat.expired or heartbeat.expires_at <= now)


async def late_for_user(
    session: AsyncSession, user_id: int, now: datetime, limit: int = 10
) -> list[tuple[Heartbeat, str]]:
    """Late heartbeats of the person's teams (expired, or past due and about to be): App Home
    and ``/genie status``. ``(heartbeat, team name)``, the longest-late first."""
    teams = select(TeamMember.team_id).where(TeamMember.user_id == user_id)
    rows = await session.execute(
        select(Heartbeat, Team.name)
        .join(Team, Team.id == Heartbeat.team_id)
        .where(
            Heartbeat.team_id.in_(teams),
            Heartbeat.enabled.is_(True),
            or_(Heartbeat.expired.is_(True), Heartbeat.expires_at <= now),
        )
        .order_by(Heartbeat.expires_at, Heartbeat.id)
        .limit(limit)
    )
    return [(h, name) for h, name in rows.all()]


def late_line(heartbeat: Heartbeat, team_name: str) -> str:
    """ "nightly-backup (Payments): no ping since 2026-11-25 21:03 UTC — expected every 10 minutes"."""
    since = heartbeat.last_ping_at
    when = f"no ping since {since:%Y-%m-%d %H:%M} UTC" if since else "never pinged"
    return (
        f"{heartbeat.name} ({team_name}): {when} — expected every "
        f"{interval_words(heartbeat.interval, heartbeat.interval_unit)}"
    )


# --- changes ---------------------------------------------------------------------------------
async def create(session: AsyncSession, team: Team, data: Fields, now: datetime) -> Heartbeat:
    """A new heartbeat of ``team``, due one interval from now. OpsGenie's ``enabled`` is
    required there; Genie takes a missing one as true (the CLI and most scripts mean that)."""
    assert data.name is not None and data.interval is not None and data.interval_unit is not None
    heartbeat = Heartbeat(
        team_id=team.id,
        name=data.name,
        description=data.description,
        interval=data.interval,
        interval_unit=data.interval_unit,
        enabled=True if data.enabled is None else data.enabled,
        alert_message=data.alert_message,
        alert_tags=data.alert_tags or [],
        alert_priority=data.alert_priority or "P3",
        expired=False,
        expires_at=now + interval_delta(data.interval, data.interval_unit),
        created_at=now,
        updated_at=now,
    )
    try:
        async with session.begin_nested():
            session.add(heartbeat)
            await session.flush()
    except IntegrityError:
        raise AlreadyExists(f"Heartbeat with name [{data.name}] already exists") from None
    return heartbeat


async def update_fields(session: AsyncSession, heartbeat: Heartbeat, data: Fields, now: datetime) -> Heartbeat:
    """PATCH: only the fields given. A new interval counts from the last ping (or from now, if
    it never had one); a heartbeat that is expired stays so until its next ping."""
    if data.name is not None and data.name != heartbeat.name:
        raise ValidationFailed({"name": "a heartbeat can not be renamed: delete it and create it again"})
    if "description" in data.given:
        heartbeat.description = data.description
    for attr in ("interval", "interval_unit", "alert_priority", "alert_tags"):
        if getattr(data, attr) is not None:
            setattr(heartbeat, attr, getattr(data, attr))
    if "alert_message" in data.given:
        heartbeat.alert_message = data.alert_message
    if interval_delta(heartbeat.interval, heartbeat.interval_unit) > MAX_INTERVAL:
        raise ValidationFailed({"interval": "interval can be at most 366 days"})
    if data.enabled is not None and data.enabled != heartbeat.enabled:
        heartbeat.enabled = data.enabled
        if data.enabled:
            heartbeat.expired = False
            heartbeat.expires_at = now + interval_delta(heartbeat.interval, heartbeat.interval_unit)
    elif data.interval is not None or data.interval_unit is not None:
        if not heartbeat.expired:
            heartbeat.expires_at = (heartbeat.last_ping_at or now) + interval_delta(
                heartbeat.interval, heartbeat.interval_unit
            )
    heartbeat.updated_at = now
    await session.flush()
    return heartbeat


async def set_enabled(session: AsyncSession, heartbeat: Heartbeat, enabled: bool, now: datetime) -> Heartbeat:
    """Enable: monitoring starts afresh (due one interval from now). Disable: never late; an
    expiry alert already raised stays open until it is closed or the heartbeat is pinged."""
    return await update_fields(session, heartbeat, Fields(enabled=enabled, given={"enabled"}), now)


async def remove(session: AsyncSession, heartbeat: Heartbeat) -> None:
    await session.execute(delete(Heartbeat).where(Heartbeat.id == heartbeat.id))


async def ping(
    session: AsyncSession, heartbeat: Heartbeat, now: datetime, *, how: str, request_id: str
) -> Alert | None:
    """Record a ping: due again one interval from now, no longer expired; the open expiry alert
    (if any) is closed, its timeline saying why. Returns that alert, if one was closed."""
    due = now + interval_delta(heartbeat.interval, heartbeat.interval_unit)
    await session.execute(
        update(Heartbeat)
        .where(Heartbeat.id == heartbeat.id)
        .values(last_ping_at=now, expires_at=due, expired=False, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    await session.refresh(heartbeat)
    alert = await session.scalar(
        select(Alert)
        .where(
            Alert.team_id == heartbeat.team_id,
            Alert.alias == alias_of(heartbeat.name),
            Alert.status == constant(AlertStatus.OPEN),
        )
        .limit(1)
    )
    if alert is None:
        return None
    actor = Actor(via="api", label=f"Heartbeat {heartbeat.name}"[:200])
    try:
        await alerts.close(
            session,
            alert,
            actor,
            request_id=request_id,
            why=f"the heartbeat {heartbeat.name} was pinged again ({how}) at {now:%Y-%m-%d %H:%M:%S} UTC",
        )
    except AlreadyDone:  # closed meanwhile (a person, or a ping at the same moment): nothing to do
        return None
    return alert


async def expire(session: AsyncSession, heartbeat_id: int, now: datetime) -> tuple[Heartbeat, Alert] | None:
    """Claim one late heartbeat and raise its alert, in the caller's transaction. None when it
    is not late any more, or another process claimed it first (the conditional UPDATE)."""
    claimed = await repo.update_one(
        session,
        update(Heartbeat)
        .where(
            Heartbeat.id == heartbeat_id,
            Heartbeat.enabled.is_(True),
            Heartbeat.expired.is_(False),
            Heartbeat.expires_at <= now,
        )
        .values(expired=True, updated_at=now),
        Heartbeat,
        heartbeat_id,
    )
    if claimed is None:
        return None
    team = await teams.team_by_id(session, claimed.team_id)
    assert team is not None  # the heartbeat is deleted with its team
    since = (
        f"no ping since {claimed.last_ping_at:%Y-%m-%d %H:%M:%S} UTC"
        if claimed.last_ping_at
        else "no ping since it was created or enabled"
    )
    data = alerts.CreateAlert(
        message=claimed.alert_message or default_message(claimed.name),
        alias=alias_of(claimed.name),
        description=(
            f"Heartbeat {claimed.name} expired: {since}; it expects a ping every "
            f"{interval_words(claimed.interval, claimed.interval_unit)}. The next ping closes this alert."
            + (f"\n\n{claimed.description}" if claimed.description else "")
        )[: alerts.LIMITS["description"]],
        tags=list(claimed.alert_tags or []),
        priority=claimed.alert_priority,
        entity=claimed.name[:512],
        source="heartbeat",
        user=REPORTER,
        details={"heartbeat": claimed.name},
    )
    alert, _ = await alerts.create_alert(session, team, data, str(uuid.uuid4()))
    await session.execute(
        update(Heartbeat)
        .where(Heartbeat.id == claimed.id)
        .values(alert_id=alert.id)
        .execution_options(synchronize_session=False)
    )
    return claimed, alert


async def due_ids(session: AsyncSession, now: datetime, limit: int = 100) -> list[int]:
    return list(
        await session.scalars(
            select(Heartbeat.id)
            .where(Heartbeat.enabled.is_(True), Heartbeat.expired.is_(False), Heartbeat.expires_at <= now)
            .order_by(Heartbeat.expires_at)
            .limit(limit)
        )
    )


# --- the monitor -----------------------------------------------------------------------------
class HeartbeatMonitor(BackgroundLoop):
    """Runs in every ``genie serve``: every ``poll_interval`` seconds (or at ``wake()``), raise
    the alert of each heartbeat past its due time, one transaction per heartbeat.
    ``on_raised(channel)`` is called after each commit (the server wakes its outbox worker)."""

    name = "genie-heartbeat-monitor"
    doing = "look for late heartbeats"

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        now: Callable[[], datetime] = utcnow,
        on_raised: Callable[[str | None], None] | None = None,
        poll_interval: float = POLL_INTERVAL,
    ) -> None:
        super().__init__(poll_interval)
        self.sessionmaker = sessionmaker
        self.now = now
        self.on_raised = on_raised

    async def run_once(self) -> int:
        """Raise every late heartbeat's alert now; how many this process raised."""
        raised = 0
        now = self.now()
        async with self.sessionmaker() as session:
            ids = await due_ids(session, now)
        for heartbeat_id in ids:
            if self.stopping:
                break
            async with self.sessionmaker.begin() as session:
                done = await expire(session, heartbeat_id, now)
            if done is None:
                continue  # another process got there first, or it was pinged meanwhile
            heartbeat, alert = done
            raised += 1
            logger.warning(
                "Heartbeat %s (team #%s) expired: raised alert #%s", heartbeat.name, heartbeat.team_id, alert.id
            )
            if self.on_raised is not None:
                self.on_raised(alert.slack_channel)
        return raised


_INTERVAL = re.compile(r"([0-9]{1,6})\s*(m|min|minutes?|h|hours?|d|days?)", re.I)


def parse_interval(text: str) -> tuple[int, str]:
    """``10m``, ``2h``, ``1d`` (or ``10 minutes``) → ``(10, "minutes")``; ``InvalidInput`` otherwise."""
    from bot.services.errors import InvalidInput

    match = _INTERVAL.fullmatch(text.strip())
    if match is None or int(match.group(1)) < 1:
        raise InvalidInput(f"--interval {text!r}: give a number and a unit, e.g. 10m, 2h or 1d")
    unit = {"m": "minutes", "h": "hours", "d": "days"}[match.group(2)[0].lower()]
    interval = int(match.group(1))
    if interval_delta(interval, unit) > MAX_INTERVAL:
        raise InvalidInput(f"--interval {text!r}: at most 366 days")
    return interval, unit
