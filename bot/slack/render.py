"""Turn a stored alert into the plain ``AlertView`` the Block Kit builders draw (and a Slack
link into its ``LinkView``).

Read at delivery time (and on every click), so a Slack message always shows the alert's
current state, including the current members in the Assign… select: the worker reads all of it
in one statement (``with_team_and_owner``), the members as one JSON value that is also the key
of a parsed-list cache (compared in full, so the select never shows a removed member)."""

from __future__ import annotations

import functools
import json
from collections import namedtuple
from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, Text, bindparam, case, cast, func, or_, select
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.ext.asyncio import AsyncSession

from bot.blocks.alerts import AlertView, PersonRef
from bot.blocks.digest import GROUPS, TOP, DigestAlert, DigestView
from bot.blocks.linking import LinkView
from bot.services import alerts
from storage import repositories as repo
from storage.base import utcnow
from storage.models import Alert, SlackDigest, SlackLink, Team, TeamMember, User


def _ref(entry: Any) -> PersonRef | None:
    """An ``Alert.people`` entry as the builders take it (None if it is not one)."""
    if not isinstance(entry, dict) or not isinstance(entry.get("as"), str):
        return None
    resolved = entry.get("user_id") is not None and isinstance(entry.get("name"), str)
    slack = entry.get("slack") if resolved and isinstance(entry.get("slack"), str) else None
    return PersonRef(given=entry["as"], slack_user_id=slack, name=entry["name"] if resolved else None)


def people_refs(alert: Alert) -> tuple[PersonRef | None, tuple[PersonRef, ...], dict[str, PersonRef]]:
    """``(reporter, responders, detail people)`` as resolved at create time — pure, no
    re-resolution: the message shows the same people on every render. A reporter that named
    nobody is shown as the display name it is ("Alertmanager")."""
    people = alert.people if isinstance(alert.people, dict) else {}
    reporter = _ref(people.get("reporter"))
    if reporter is None and alert.reported_by:
        reporter = PersonRef(given=alert.reported_by)
    responders = tuple(r for r in map(_ref, people.get("responders") or []) if r is not None)
    details = people.get("details") if isinstance(people.get("details"), dict) else {}
    in_details = {k: r for k, r in ((k, _ref(v)) for k, v in details.items()) if r is not None}
    return reporter, responders, in_details


async def alert_view(session: AsyncSession, alert: Alert, *, with_members: bool = True) -> AlertView:
    """``with_members=False`` for lists that show no Assign… select (App Home): the team's
    members are the costliest part to read."""
    team, owner = await alerts.team_and_owner(session, alert)
    members = await alerts.assignable_names(session, alert.team_id) if with_members else []
    return _view(
        alert,
        team.name if team else None,
        owner.id if owner else None,
        owner.name if owner else None,
        members,
        await alerts.owner_slack_user(session, owner.id if owner else None, team),
    )


async def current_view(
    session: AsyncSession, alert_id: int, extra: tuple[ColumnElement, ...] = (), params: dict[str, Any] | None = None
) -> tuple[Alert, AlertView] | None:
    """The alert and its view as they are now, in one query (``with_team_and_owner``): what the
    outbox worker renders for every post and update. None when the alert no longer exists."""
    found = await with_team_and_owner(session, alert_id, extra, params)
    return None if found is None else (found.alert, view_of(found))


def view_of(found: AlertRead) -> AlertView:
    """The view of an alert as ``with_team_and_owner`` read it."""
    return _view(
        found.alert,
        found.team_name,
        found.owner_id,
        found.owner_name,
        found.members,
        found.owner_slack,
    )


class AlertRead(NamedTuple):
    """What the outbox worker reads to draw an alert (``with_team_and_owner``)."""

    #: A row of the alert's columns (``row.id``, ``row.slack_ts`` … as on an ``Alert``).
    alert: Any
    team_name: str | None
    owner_id: int | None
    owner_name: str | None
    #: The assignee's Slack user in the workspace of the alert's channel (``owner_slack_user``).
    owner_slack: str | None
    #: ``assignable_names`` of the alert's team.
    members: tuple[tuple[int, str], ...]
    #: The values of the caller's ``extra`` columns, in order.
    extra: tuple[Any, ...] = ()


async def with_team_and_owner(
    session: AsyncSession, alert_id: int, extra: tuple[ColumnElement, ...] = (), params: dict[str, Any] | None = None
) -> AlertRead | None:
    """The alert, its team, its assignee's id, name and Slack user, and the team's assignable
    members, in one query — what the outbox worker reads for every post and update. ``extra``:
    more columns to read in the same statement (built once, with bound ``params``: the outbox's
    look at the message's lanes), so everything drawn comes from one snapshot. None when the
    alert no longer exists."""
    statement = _render_read(session.get_bind().dialect.name, extra)
    row = (await repo.run(session, statement, {"render_alert_id": alert_id, **(params or {})})).first()
    if row is None:
        return None
    n = len(_ALERT.c)
    team_name, owner_id, owner_name, owner_slack, members = row[n : n + 5]
    return AlertRead(
        row, team_name, owner_id, owner_name, owner_slack, _members(row.team_id, members), tuple(row[n + 5 :])
    )


def reads_of_each(source: Any, on: ColumnElement, dialect: str, extra: tuple[ColumnElement, ...] = ()):
    """``with_team_and_owner`` joined to each row of ``source`` (a CTE with an ``alert_id``
    column: the outbox messages a statement claims, ``outbox.claim_cte``) whose ``on`` holds:
    one statement that claims messages and reads what each draws. Its rows: ``source``'s
    columns, then what ``read_at(row, len(source.c))`` reads (the alert's columns NULL where
    ``on`` does not hold or the alert no longer exists), then ``extra``. Build it once."""
    alert = _ALERT.c
    return select(*source.c, *_ALERT.c, *_drawn(dialect), *extra).select_from(
        _with_team_and_owner(source.outerjoin(_ALERT, (alert.id == source.c.alert_id) & on))
    )


#: An alert's columns read by position out of a wider row (``reads_of_each``): ``alert.slack_ts``
#: … as on the rows ``with_team_and_owner`` reads.
AlertRow = namedtuple("AlertRow", Alert.__table__.c.keys())  # type: ignore[misc]


def read_at(row: Any, start: int) -> AlertRead | None:
    """What ``reads_of_each`` read for one row, its alert's columns from ``start`` on (None: no
    alert joined). ``extra`` is left empty: the caller reads its own columns by position."""
    n = len(_ALERT.c)
    if row[start] is None:
        return None
    alert = AlertRow._make(row[start : start + n])
    team_name, owner_id, owner_name, owner_slack, members = row[start + n : start + n + 5]
    return AlertRead(alert, team_name, owner_id, owner_name, owner_slack, _members(alert.team_id, members))


#: Columns ``reads_of_each`` puts after the source's: the alert's, and the five ``_drawn``.
READ_COLUMNS = len(Alert.__table__.c) + 5


@functools.cache
def _render_read(dialect: str, extra: tuple[ColumnElement, ...]):
    """``with_team_and_owner``'s statement, built once per dialect and set of extra columns
    (building it cost more CPU than running it). A Core statement on the tables, read as plain
    rows: the ORM building an ``Alert`` and a ``Team`` instance for every render was a good part
    of a delivered update's CPU (bench/RESULTS.md, "Round three"). The owner is joined as the
    user table itself: the query has no other user. ``extra`` must be Core columns too."""
    return (
        select(*_ALERT.c, *_drawn(dialect), *extra)
        .select_from(_with_team_and_owner(_ALERT))
        .where(_ALERT.c.id == bindparam("render_alert_id"))
    )


def _with_team_and_owner(alerts: Any) -> Any:
    """``alerts`` (the alert table, or a join ending in it) joined to the alert's team and to
    its owner (the user table itself: the query has no other user)."""
    alert, team, user = _ALERT.c, _TEAM.c, _USER.c
    return alerts.outerjoin(_TEAM, team.id == alert.team_id).outerjoin(_USER, user.id == alert.owner_user_id)


_ALERT, _TEAM, _USER = Alert.__table__, Team.__table__, User.__table__


def _drawn(dialect: str) -> tuple:
    """What is drawn beside the alert's own columns (built anew for each statement): its team's
    name, its owner's id, name and Slack user, and the assignable members as JSON."""
    alert, team, user = _ALERT.c, _TEAM.c, _USER.c
    link = SlackLink.__table__.c
    workspace = func.coalesce(func.nullif(team.enterprise_id, ""), func.nullif(team.slack_team_id, ""))
    # alert_people.slack_links for one person: their link in that workspace; with none recorded,
    # their only link (several: none, no guess).
    owner_slack = (
        select(case((func.count() == 1, func.max(link.slack_user_id))))
        .where(link.user_id == alert.owner_user_id, or_(workspace.is_(None), link.workspace_id == workspace))
        .scalar_subquery()
    )
    return (
        team.name.label("render_team_name"),
        user.id.label("render_owner_id"),
        user.name.label("render_owner_name"),
        owner_slack.label("render_owner_slack"),
        _members_json(dialect).label("render_members"),
    )


def _members_json(dialect: str):
    """``assignable_names`` of ``Alert.team_id`` as one JSON array of ``[id, name]``, in the
    same order: one value made by the database rather than a row per member (and the cache's
    key: ``_members``)."""
    member_table = _USER.alias("member")  # not the owner joined outside
    member, team_member = member_table.c, TeamMember.__table__
    members = (
        select(member.id.label("id"), member.name.label("name"))
        .select_from(member_table.join(team_member, team_member.c.user_id == member.id))
        .where(team_member.c.team_id == _ALERT.c.team_id, member.is_active.is_(True))
    )
    if dialect == "postgresql":
        pair = func.json_build_array(member.id, member.name)
        return (
            members.with_only_columns(cast(func.json_agg(aggregate_order_by(pair, member.name, member.id)), Text))
            .correlate(_ALERT)
            .scalar_subquery()
        )
    # SQLite (before 3.44) has no ORDER BY inside an aggregate: it aggregates an ordered
    # subquery, which it keeps in order (an aggregate's ordered subquery is never flattened).
    ordered = members.order_by(member.name, member.id).correlate(_ALERT).subquery("assignable")
    return select(func.json_group_array(func.json_array(ordered.c.id, ordered.c.name))).scalar_subquery()


#: team id -> (the members' JSON as last read, the members): a render whose JSON is the same
#: (compared in full: never stale) reuses the parsed list.
_MEMBERS_CACHE: dict[int, tuple[str, tuple[tuple[int, str], ...]]] = {}


def _members(team_id: int | None, raw: str | None) -> tuple[tuple[int, str], ...]:
    if team_id is None or not raw:
        return ()
    cached = _MEMBERS_CACHE.get(team_id)
    if cached is not None and cached[0] == raw:
        return cached[1]
    members = tuple((int(user_id), str(name)) for user_id, name in json.loads(raw))
    if len(_MEMBERS_CACHE) >= 1024:
        _MEMBERS_CACHE.clear()
    _MEMBERS_CACHE[team_id] = (raw, members)
    return members


def _view(
    alert: Alert,
    team_name: str | None,
    owner_id: int | None,
    owner_name: str | None,
    members: list[tuple[int, str]],
    owner_slack: str | None = None,
) -> AlertView:
    reporter, responders, detail_people = people_refs(alert)
    return AlertView(
        id=alert.id,
        message=alert.message,
        priority=alert.priority,
        status=alert.status,
        created_at=alert.created_at,
        team_name=team_name,
        description=alert.description,
        tags=tuple(alert.tags or ()),
        details=dict(alert.details or {}),
        source=alert.source,
        entity=alert.entity,
        count=alert.count,
        acknowledged=alert.acknowledged,
        acknowledged_by=alert.acknowledged_by,
        acknowledged_at=alert.acknowledged_at,
        closed_by=alert.closed_by,
        closed_at=alert.closed_at,
        acknowledged_by_slack=alert.acknowledged_by_slack,
        closed_by_slack=alert.closed_by_slack,
        snoozed_until=alert.snoozed_until if alert.snoozed_until and alert.snoozed_until > utcnow() else None,
        owner_name=owner_name,
        owner_id=owner_id,
        owner_slack=owner_slack,
        members=members,
        reported_by=reporter,
        responders=responders,
        detail_people=detail_people,
    )


def link_view(link: SlackLink) -> LinkView:
    return LinkView(
        user_name=link.user.name, user_email=link.user.email, since=link.created_at, user_active=link.user.is_active
    )


def _state(status: str, acknowledged: bool) -> str:
    return "closed" if status == "closed" else "acknowledged" if acknowledged else "open"


async def digest_view(session: AsyncSession, digest_id: int) -> DigestView | None:
    """A storm digest as it is now (what its message shows): the alerts delivered in it counted
    by state, priority, source and alias, and the most urgent still open. None: no such digest."""
    digest = await session.get(SlackDigest, digest_id)
    if digest is None:
        return None
    team = await session.get(Team, digest.team_id) if digest.team_id is not None else None
    mine = Alert.slack_digest_id == digest_id
    state = case(
        (Alert.status == "closed", "closed"), (Alert.acknowledged.is_(True), "acknowledged"), else_="open"
    ).label("state")
    by_state_priority = (
        await session.execute(select(state, Alert.priority, func.count()).where(mine).group_by(state, Alert.priority))
    ).all()
    states = {"open": 0, "acknowledged": 0, "closed": 0}
    priorities: dict[str, int] = {}
    for name, priority, count in by_state_priority:
        states[name] += count
        priorities[priority] = priorities.get(priority, 0) + count

    async def grouped(column) -> tuple[tuple[str, int], ...]:
        rows = await session.execute(
            select(column, func.count())
            .where(mine)
            .group_by(column)
            .order_by(func.count().desc(), column)
            .limit(GROUPS)
        )
        return tuple(("(none)" if name is None else str(name), int(n)) for name, n in rows)

    top = await session.execute(
        select(Alert.id, Alert.priority, Alert.message, Alert.status, Alert.acknowledged)
        .where(mine, Alert.status != "closed")
        .order_by(Alert.priority, Alert.acknowledged, Alert.id)
        .limit(TOP)
    )
    return DigestView(
        id=digest.id,
        team_name=team.name if team is not None else None,
        storm_priority=digest.storm_priority,
        opened_at=digest.opened_at,
        closed_at=digest.closed_at,
        total=sum(states.values()),
        open=states["open"],
        acknowledged=states["acknowledged"],
        closed=states["closed"],
        by_priority=tuple(sorted(priorities.items())),
        by_source=await grouped(Alert.source),
        by_alias=await grouped(Alert.alias),
        top=tuple(DigestAlert(i, p, m, _state(st, ack)) for i, p, m, st, ack in top),
    )
