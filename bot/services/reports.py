"""Reports (``/reports``): how fast alerts are acknowledged and closed, who carries the load, what
is noisy, and how healthy the Slack linking is — the "full picture for reporting" that mapping
Slack users to Genie people exists for.

Everything is computed in SQL on both backends, over a period, and only over alerts the viewer
may see (``access.visible_alerts``): counts with GROUP BY, and the percentiles of MTTA / MTTR by
nearest rank with window functions (``ROW_NUMBER`` / ``COUNT`` over each group: the row whose
rank is ``ceil(p·n)``) — no alert is loaded into Python. The period reads ``alert.created_at``
(index ``ix_alert_team_created`` / ``ix_alert_created_at``) and the timeline's actions by
``(action, at)`` (``ix_alert_event_action_at``), all from migration 0014.

Definitions (README, "Alerts and reports on the web"):
- MTTA: ``acknowledged_at − created_at`` of the alerts created in the period and acknowledged;
  MTTR: ``closed_at − created_at`` of those closed.
- Out of hours: created before 08:00 or from 18:00 UTC, or on a Saturday or Sunday (UTC).
- Anonymous actions: actions applied for a Slack user with no Genie account (the workspace
  allows them), on the period's alerts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import Date, Integer, and_, case, cast, exists, func, literal_column, not_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.ids import Intent
from bot.services import access, external_accounts, outbox, throttle
from bot.services.access import Reason
from bot.services.errors import InvalidInput
from bot.services.slack_links import SlackIdentity
from storage.base import utcnow
from storage.models import Alert, AlertEvent, ExternalAccount, SlackLink, Team, User

DEFAULT_DAYS = 7
MAX_DAYS = 366
TOP = 10
WORKDAY = (8, 18)  # UTC hours; outside them (or at a weekend) is out of hours


# --- the period --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Period:
    since: date
    until: date  # inclusive
    team: str = ""

    @property
    def start(self) -> datetime:
        return datetime.combine(self.since, time(), UTC)

    @property
    def end(self) -> datetime:
        return datetime.combine(self.until + timedelta(days=1), time(), UTC)

    @property
    def days(self) -> int:
        return (self.until - self.since).days + 1

    def params(self, **extra: str) -> dict[str, str]:
        values = {"from": self.since.isoformat(), "to": self.until.isoformat(), "team": self.team, **extra}
        return {k: v for k, v in values.items() if v}

    @classmethod
    def parse(cls, params: Mapping[str, str], today: date | None = None) -> Period:
        """From ``from``, ``to`` (UTC days, inclusive) and ``team``; ``InvalidInput`` says what is wrong."""
        today = today or utcnow().date()

        def day(name: str) -> date | None:
            value = (params.get(name) or "").strip()
            if not value:
                return None
            try:
                if len(value) > 10:
                    raise ValueError
                return date.fromisoformat(value)
            except ValueError:
                raise InvalidInput(f"“{name}” must be a date like {today.isoformat()}.") from None

        until = day("to") or today
        since = day("from") or until - timedelta(days=DEFAULT_DAYS - 1)
        if until < since:
            raise InvalidInput(f"The period ends ({until}) before it starts ({since}).")
        if (until - since).days + 1 > MAX_DAYS:
            raise InvalidInput(f"A report covers at most {MAX_DAYS} days.")
        team = (params.get("team") or "").strip()
        if len(team) > 100 or "\x00" in team:
            raise InvalidInput("That is not a team's name (too long, or a NUL character).")
        return cls(since, until, team)


# --- SQL on both backends -----------------------------------------------------------------------
def _pg(session: AsyncSession) -> bool:
    return session.bind.dialect.name == "postgresql"


def _seconds(session: AsyncSession, later, earlier):
    if _pg(session):
        return func.extract("epoch", later - earlier)
    return (func.julianday(later) - func.julianday(earlier)) * 86400.0


def _utc(session: AsyncSession, column):
    return func.timezone("UTC", column) if _pg(session) else column


def _hour(session: AsyncSession, column):
    if _pg(session):
        return cast(func.extract("hour", _utc(session, column)), Integer)
    return cast(func.strftime("%H", column), Integer)


def _weekday(session: AsyncSession, column):
    """0 = Sunday … 6 = Saturday, on both."""
    if _pg(session):
        return cast(func.extract("dow", _utc(session, column)), Integer)
    return cast(func.strftime("%w", column), Integer)


def _day(session: AsyncSession, column):
    return cast(_utc(session, column), Date) if _pg(session) else func.date(column)


def out_of_hours(session: AsyncSession, column):
    hour = _hour(session, column)
    return or_(hour < WORKDAY[0], hour >= WORKDAY[1], _weekday(session, column).in_((0, 6)))


def _in_period(column, period: Period):
    return and_(column >= period.start, column < period.end)


def _alerts_where(user: User, period: Period, team_id: int | None = None) -> list:
    """``team_id``: ``period.team``'s id, looked up first (a literal lets the planner use the
    ``(team_id, created_at)`` index); 0 when there is no such team."""
    where = [access.visible_alerts(user), _in_period(Alert.created_at, period)]
    if period.team:
        where.append(Alert.team_id == (team_id or 0))
    return where


async def _percentiles(session: AsyncSession, group, seconds, where: list, select_from=Alert) -> dict[Any, tuple]:
    """``{group: (n, median, p90)}`` of ``seconds`` over the rows ``where``, by nearest rank,
    in one query with one sort: each row's rank within its group (``ROW_NUMBER``, a CTE), each
    group's size as its highest rank, then the rows whose rank is ``ceil(n/2)`` and
    ``ceil(9n/10)`` (integer comparisons: no division). A ``COUNT`` window for the size would
    sort the rows a second time (the slower half of this query at 1M alerts)."""
    ranked = (
        select(
            group.label("g"),
            seconds.label("s"),
            func.row_number().over(partition_by=group, order_by=seconds).label("r"),
        )
        .select_from(select_from)
        .where(*where)
        .cte("ranked")
    )
    sizes = select(ranked.c.g, func.max(ranked.c.r).label("n")).group_by(ranked.c.g).subquery("sizes")
    r, n, s = ranked.c.r, sizes.c.n, ranked.c.s
    median = func.max(case((and_(r * 2 >= n, (r - 1) * 2 < n), s)))
    p90 = func.max(case((and_(r * 10 >= n * 9, (r - 1) * 10 < n * 9), s)))
    rows = await session.execute(
        select(sizes.c.g, sizes.c.n, median, p90)
        .select_from(sizes.join(ranked, ranked.c.g == sizes.c.g))
        .group_by(sizes.c.g, sizes.c.n)
    )
    return {g: (count, _f(m), _f(p)) for g, count, m, p in rows}


def _f(value) -> float | None:
    return float(value) if value is not None else None


# --- the report ---------------------------------------------------------------------------------
@dataclass
class TeamRow:
    team: str
    alerts: int = 0
    acknowledged: int = 0
    closed: int = 0
    out_of_hours: int = 0
    anonymous_actions: int = 0
    mtta_median: float | None = None
    mtta_p90: float | None = None
    mttr_median: float | None = None
    mttr_p90: float | None = None


@dataclass
class PersonRow:
    name: str
    email: str
    acknowledged: int = 0
    closed: int = 0
    out_of_hours: int = 0
    mtta_median: float | None = None
    mtta_p90: float | None = None


@dataclass
class Report:
    period: Period
    teams: list[TeamRow]
    people: list[PersonRow]
    days: list[tuple[date, int]]
    aliases: list[tuple[str, int, int]]
    sources: list[tuple[str, int, int]]
    total: TeamRow = field(default_factory=lambda: TeamRow("All"))


async def report(session: AsyncSession, user: User, period: Period) -> Report:
    team_id = await session.scalar(select(Team.id).where(Team.name == period.team)) if period.team else None
    where = _alerts_where(user, period, team_id)
    team_name = func.coalesce(Team.name, "(no team)")
    joined = Alert.__table__.outerjoin(Team.__table__, Team.id == Alert.team_id)
    ooh = out_of_hours(session, Alert.created_at)
    counts = await session.execute(
        select(
            team_name,
            func.count(),
            func.sum(case((Alert.acknowledged.is_(True), 1), else_=0)),
            func.sum(case((Alert.status == "closed", 1), else_=0)),
            func.sum(case((ooh, 1), else_=0)),
        )
        .select_from(joined)
        .where(*where)
        .group_by(team_name)
        .order_by(team_name)
    )
    teams = {name: TeamRow(name, n, int(a or 0), int(c or 0), int(o or 0)) for name, n, a, c, o in counts}
    anonymous = await session.execute(
        select(team_name, func.count())
        .select_from(joined.join(AlertEvent.__table__, AlertEvent.alert_id == Alert.id))
        .where(*where, AlertEvent.anonymous.is_(True), AlertEvent.outcome == "applied")
        .group_by(team_name)
    )
    for name, n in anonymous:
        teams.setdefault(name, TeamRow(name)).anonymous_actions = n
    mtta = await _percentiles(
        session,
        team_name,
        _seconds(session, Alert.acknowledged_at, Alert.created_at),
        [*where, Alert.acknowledged_at.is_not(None)],
        joined,
    )
    mttr = await _percentiles(
        session,
        team_name,
        _seconds(session, Alert.closed_at, Alert.created_at),
        [*where, Alert.closed_at.is_not(None)],
        joined,
    )
    for name, row in teams.items():
        _, row.mtta_median, row.mtta_p90 = mtta.get(name, (0, None, None))
        _, row.mttr_median, row.mttr_p90 = mttr.get(name, (0, None, None))
    total = TeamRow(
        "All teams shown",
        *(
            sum(getattr(t, f) for t in teams.values())
            for f in ("alerts", "acknowledged", "closed", "out_of_hours", "anonymous_actions")
        ),
    )
    everyone = await _percentiles(
        session,
        literal_column("'all'"),
        _seconds(session, Alert.acknowledged_at, Alert.created_at),
        [*where, Alert.acknowledged_at.is_not(None)],
    )
    _, total.mtta_median, total.mtta_p90 = everyone.get("all", (0, None, None))
    everyone = await _percentiles(
        session,
        literal_column("'all'"),
        _seconds(session, Alert.closed_at, Alert.created_at),
        [*where, Alert.closed_at.is_not(None)],
    )
    _, total.mttr_median, total.mttr_p90 = everyone.get("all", (0, None, None))

    # People: what they did to the period's alerts (applied acknowledgements and closes).
    acted = Alert.__table__.join(AlertEvent.__table__, AlertEvent.alert_id == Alert.id).join(
        User.__table__, User.id == AlertEvent.actor_user_id
    )
    done = [*where, AlertEvent.outcome == "applied", AlertEvent.action.in_(("acknowledge", "close"))]
    rows = await session.execute(
        select(
            User.id,
            User.name,
            User.email,
            func.sum(case((AlertEvent.action == "acknowledge", 1), else_=0)),
            func.sum(case((AlertEvent.action == "close", 1), else_=0)),
            func.sum(case((out_of_hours(session, AlertEvent.at), 1), else_=0)),
        )
        .select_from(acted)
        .where(*done)
        .group_by(User.id, User.name, User.email)
    )
    persons = {uid: PersonRow(name, email, int(a or 0), int(c or 0), int(o or 0)) for uid, name, email, a, c, o in rows}
    person_mtta = await _percentiles(
        session,
        AlertEvent.actor_user_id,
        _seconds(session, AlertEvent.at, Alert.created_at),
        [
            *where,
            AlertEvent.outcome == "applied",
            AlertEvent.action == "acknowledge",
            AlertEvent.actor_user_id.is_not(None),
        ],
        Alert.__table__.join(AlertEvent.__table__, AlertEvent.alert_id == Alert.id),
    )
    for uid, row in persons.items():
        _, row.mtta_median, row.mtta_p90 = person_mtta.get(uid, (0, None, None))

    day = _day(session, Alert.created_at)
    days = [
        (d if isinstance(d, date) else date.fromisoformat(d), n)
        for d, n in await session.execute(select(day, func.count()).where(*where).group_by(day).order_by(day))
    ]
    aliases = [
        (a, n, int(c or 0))
        for a, n, c in await session.execute(
            select(Alert.alias, func.count(), func.sum(Alert.count))
            .where(*where)
            .group_by(Alert.alias)
            .order_by(func.count().desc(), func.sum(Alert.count).desc(), Alert.alias)
            .limit(TOP)
        )
    ]
    source = func.coalesce(Alert.source, "(none)")
    sources = [
        (s, n, int(c or 0))
        for s, n, c in await session.execute(
            select(source, func.count(), func.sum(Alert.count))
            .where(*where)
            .group_by(source)
            .order_by(func.count().desc(), source)
            .limit(TOP)
        )
    ]
    return Report(
        period,
        sorted(teams.values(), key=lambda t: t.team),
        sorted(persons.values(), key=lambda p: (-(p.acknowledged + p.closed), p.name)),
        _every_day(period, days),
        aliases,
        sources,
        total,
    )


def _every_day(period: Period, found: list[tuple[date, int]]) -> list[tuple[date, int]]:
    """Every day of the period, with 0 for days without alerts (the chart's x axis)."""
    counts = dict(found)
    return [
        (period.since + timedelta(days=i), counts.get(period.since + timedelta(days=i), 0)) for i in range(period.days)
    ]


# --- linking health (admins) --------------------------------------------------------------------
@dataclass(frozen=True)
class UnlinkedClicker:
    workspace_id: str
    slack_user_id: str
    refused: int
    last_at: datetime
    #: The name the directory has for them, if it has one.
    name: str | None


async def linking_health(session: AsyncSession, period: Period) -> dict[str, list]:
    """For admins: Slack users whose clicks were refused for want of a link in the period and
    are still not linked; links per workspace; accounts connected to no one, per provider."""
    still_unlinked = not_(
        exists().where(
            SlackLink.workspace_id == AlertEvent.slack_workspace_id, SlackLink.slack_user_id == AlertEvent.slack_user_id
        )
    )
    name = (
        select(func.max(ExternalAccount.display_name))
        .where(
            ExternalAccount.provider == "slack",
            ExternalAccount.tenant == AlertEvent.slack_workspace_id,
            ExternalAccount.external_id == AlertEvent.slack_user_id,
        )
        .correlate(AlertEvent)
        .scalar_subquery()
    )
    clickers = [
        UnlinkedClicker(w, u, n, at, nm)
        for w, u, n, at, nm in await session.execute(
            select(
                AlertEvent.slack_workspace_id,
                AlertEvent.slack_user_id,
                func.count(),
                func.max(AlertEvent.at),
                func.max(name),
            )
            .where(
                AlertEvent.action.in_(("acknowledge", "close", "assign")),
                _in_period(AlertEvent.at, period),
                AlertEvent.outcome == "denied",
                AlertEvent.reason == Reason.NOT_LINKED.value,
                AlertEvent.slack_user_id.is_not(None),
                AlertEvent.slack_workspace_id.is_not(None),
                still_unlinked,
            )
            .group_by(AlertEvent.slack_workspace_id, AlertEvent.slack_user_id)
            .order_by(func.count().desc(), AlertEvent.slack_user_id)
            .limit(200)
        )
    ]
    workspaces = list(
        await session.execute(
            select(
                SlackLink.workspace_id,
                func.max(SlackLink.workspace_name),
                func.count(),
                func.sum(case((SlackLink.email_verified.is_(True), 1), else_=0)),
                func.sum(case((SlackLink.needs_review.is_(True), 1), else_=0)),
            )
            .group_by(SlackLink.workspace_id)
            .order_by(SlackLink.workspace_id)
        )
    )
    loose = list(
        await session.execute(
            select(ExternalAccount.provider, func.count())
            .where(external_accounts.not_connected())
            .group_by(ExternalAccount.provider)
            .order_by(ExternalAccount.provider)
        )
    )
    return {
        "clickers": clickers,
        "workspaces": [(w, n or "", c, int(v or 0), int(r or 0)) for w, n, c, v, r in workspaces],
        "loose": [(p, c) for p, c in loose],
    }


async def remind_to_link(session: AsyncSession, admin: User, workspace_id: str, slack_user_id: str) -> int:
    """Queue a DM (through the outbox) asking a Slack user whose clicks were refused for want of
    a link to connect their account; the number of refused clicks it mentions. ``InvalidInput``
    when that user's clicks were never refused so (or they are linked now): the button is only
    for the people the report lists; or when they were reminded in the last 24 hours
    (``throttle``'s ``link_reminder``: one a day per Slack user, whichever admin sends it)."""
    if not (admin.is_admin and admin.is_active):
        raise InvalidInput("Only Genie admins send these reminders.")
    workspace_id, slack_user_id = workspace_id[:32], slack_user_id[:32]
    if "\x00" in workspace_id + slack_user_id:
        raise InvalidInput("That Slack user has no refused clicks waiting for a link: no reminder was sent.")
    refused = await session.scalar(
        select(func.count()).where(
            AlertEvent.outcome == "denied",
            AlertEvent.reason == Reason.NOT_LINKED.value,
            AlertEvent.slack_workspace_id == workspace_id,
            AlertEvent.slack_user_id == slack_user_id,
        )
    )
    linked = await session.scalar(
        select(SlackLink.id).where(SlackLink.workspace_id == workspace_id, SlackLink.slack_user_id == slack_user_id)
    )
    if not refused or linked is not None:
        raise InvalidInput(
            "That Slack user has no refused clicks waiting for a link (or is linked now): no reminder was sent."
        )
    team_id, enterprise_id = (None, workspace_id) if workspace_id.startswith("E") else (workspace_id, None)
    wait = await throttle.take(session, "link_reminder", SlackIdentity(team_id or "", slack_user_id, enterprise_id))
    if wait is not None:
        raise InvalidInput(
            "A reminder was already sent to this Slack user in the last 24 hours (one a day, so that "
            f"Genie does not nag): no reminder was sent. The next can be sent in {throttle.say(wait)}."
        )
    await outbox.enqueue(
        session,
        slack_user_id,
        outbox.MESSAGE,
        payload=outbox.intent(Intent.LINK_REMINDER, refused=int(refused)),
        slack_team_id=team_id,
        enterprise_id=enterprise_id,
    )
    return int(refused)


# --- CSV ---------------------------------------------------------------------------------------
TABLES = ("teams", "people", "days", "aliases", "sources", "unlinked", "workspaces", "unconnected")
ADMIN_TABLES = ("unlinked", "workspaces", "unconnected")


def _secs(value: float | None) -> str:
    return "" if value is None else f"{value:.0f}"


def table_rows(rep: Report | None, health: dict | None, name: str) -> tuple[list[str], list[list[Any]]]:
    """``(header, rows)`` of one of the report's tables, as the CSV export writes it."""
    if name == "teams":
        return (
            [
                "team",
                "alerts",
                "acknowledged",
                "closed",
                "out_of_hours",
                "anonymous_actions",
                "mtta_median_s",
                "mtta_p90_s",
                "mttr_median_s",
                "mttr_p90_s",
            ],
            [
                [
                    t.team,
                    t.alerts,
                    t.acknowledged,
                    t.closed,
                    t.out_of_hours,
                    t.anonymous_actions,
                    _secs(t.mtta_median),
                    _secs(t.mtta_p90),
                    _secs(t.mttr_median),
                    _secs(t.mttr_p90),
                ]
                for t in [*rep.teams, rep.total]
            ],
        )
    if name == "people":
        return (
            ["person", "email", "acknowledged", "closed", "out_of_hours_actions", "mtta_median_s", "mtta_p90_s"],
            [
                [p.name, p.email, p.acknowledged, p.closed, p.out_of_hours, _secs(p.mtta_median), _secs(p.mtta_p90)]
                for p in rep.people
            ],
        )
    if name == "days":
        return ["day", "alerts"], [[d.isoformat(), n] for d, n in rep.days]
    if name == "aliases":
        return ["alias", "alerts", "occurrences"], [list(r) for r in rep.aliases]
    if name == "sources":
        return ["source", "alerts", "occurrences"], [list(r) for r in rep.sources]
    if name == "unlinked":
        return (
            ["workspace", "slack_user", "name", "refused_clicks", "last_refused_at"],
            [
                [c.workspace_id, c.slack_user_id, c.name or "", c.refused, c.last_at.isoformat()]
                for c in health["clickers"]
            ],
        )
    if name == "workspaces":
        return ["workspace", "name", "links", "email_verified", "needs_review"], [list(r) for r in health["workspaces"]]
    if name == "unconnected":
        return ["provider", "accounts_connected_to_no_one"], [list(r) for r in health["loose"]]
    raise InvalidInput(f"There is no table {name[:30]!r}; there are: {', '.join(TABLES)}.")
