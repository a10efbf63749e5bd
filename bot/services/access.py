"""The gate: who may act on an alert from Slack (DESIGN.md §3).

``decide`` is the one rule, and its facts are read *now*, never from a cache, so a person
removed from a team at 03:00 cannot acknowledge at 03:01 and a person added at 03:00 can. A
click reads them all in one query (``gate_facts``). Who may act: admins, the assignee, a person
the escalation paged for this alert (``bot.services.paging``; "paged at step 2"), and the
owning team's members.

    facts = await gate_facts(session, identity, alert_id, anonymous_default=False)
    decision = await decide(session, facts, AlertAction.ACKNOWLEDGE)
    if not decision.allowed:
        show(decision.text)            # why, and how to fix it
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass

from sqlalchemy import Integer, String, and_, bindparam, exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.services import slack_events
from bot.services.slack_links import SlackIdentity
from storage import repositories as repo
from storage.base import constant, utcnow
from storage.models import Alert, Page, SlackLink, Team, TeamMember, TeamPostGrant, User, WorkspaceSetting

ANONYMOUS_SETTING = "allow_anonymous_actions"


class Reason(enum.StrEnum):
    MEMBER = "member of the owning team"
    ASSIGNEE = "assignee"
    PAGED = "paged for this alert"
    ADMIN = "Genie admin"
    ANONYMOUS = "anonymous actions allowed in this workspace"
    NOT_LINKED = "Slack account not linked"
    INACTIVE = "linked Genie account is deactivated"
    NOT_MEMBER = "not a member of the owning team"
    NO_TEAM = "alert has no owning team (admins only)"
    EXTERNAL = "Slack Connect user of another organization"


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: Reason
    #: The Genie user acting (None when not linked / anonymous).
    user: User | None = None
    #: For people: why, and what to do about it (denials only).
    text: str = ""
    team_name: str | None = None
    #: For the timeline, when more precise than ``reason`` ("paged at step 2").
    why: str | None = None

    @property
    def anonymous(self) -> bool:
        return self.reason is Reason.ANONYMOUS


#: How a refusal names the action ("You can't add a note to this alert …").
_VERB = {"note": "add a note to", "take": "take ownership of"}


async def allow_anonymous(session: AsyncSession, workspace_id: str, default: bool) -> bool:
    """The workspace's own setting, else the deployment-wide one (``'*'``), else ``default``."""
    value = await repo.workspace_setting(session, workspace_id, ANONYMOUS_SETTING)
    return default if value is None else value == "true"


async def _admin_names(session: AsyncSession) -> list[str]:
    admins = await session.scalars(
        select(User).where(User.is_admin.is_(True), User.is_active.is_(True)).order_by(User.name).limit(3)
    )
    return [u.name for u in admins]


@dataclass(frozen=True)
class GateFacts:
    """Everything the gate needs, read together at click time (never cached)."""

    alert: Alert
    team: Team | None
    #: The Genie user the clicker's Slack identity is linked to (None: not linked).
    user: User | None
    #: Whether that user is, now, a member of the alert's owning team.
    is_member: bool
    allow_anonymous: bool
    #: The clicker is a Slack Connect user of another organization (``SlackIdentity.external``).
    external: bool = False
    #: The first escalation step (from 0) that paged that user for this alert, if any
    #: (``bot.services.paging``: a page queued or sent, not one skipped or failed).
    paged_step: int | None = None


@functools.cache
def _gate_statement(take_in: bool = False):
    """``gate_facts``' one query, built once (with bind parameters): building it per click —
    coercing each clause, ~90 calls into SQLAlchemy — cost more CPU than running it.

    ``take_in`` (PostgreSQL): the query also takes the click's signed body in (the replay guard,
    ``slack_events.taken_in``, a data-modifying CTE) and its last column says whether it did. It
    reads from a one-row subquery joined to the alert, so an unknown alert still answers that."""
    is_member = exists().where(TeamMember.team_id == Alert.team_id, TeamMember.user_id == User.id)
    paged = (
        select(func.min(Page.step))
        # (two comparisons, not IN (…): a literal IN list is an "expanding" parameter, whose SQL
        # SQLAlchemy renders again on every execution; constants, not parameters: ``constant``)
        .where(
            Page.alert_id == Alert.id,
            Page.user_id == User.id,
            or_(Page.status == constant("queued"), Page.status == constant("sent")),
        )
        .scalar_subquery()
    )
    workspace = bindparam("workspace", type_=String)
    alert_id = bindparam("alert_id", type_=Integer)
    columns = [
        Alert,
        Team,
        User,
        is_member.label("is_member"),
        paged.label("paged"),
        repo.workspace_setting_value(workspace, ANONYMOUS_SETTING).label("anonymous"),
    ]
    if take_in:
        taken = slack_events.taken_in()
        first = select(select(func.count()).select_from(taken).scalar_subquery().label("first")).subquery("take_in")
        statement = select(*columns, first.c.first).select_from(first).outerjoin(Alert, Alert.id == alert_id)
    else:
        statement = select(*columns).select_from(Alert)
    statement = (
        statement.outerjoin(Team, Team.id == Alert.team_id)
        .outerjoin(
            SlackLink,
            and_(SlackLink.workspace_id == workspace, SlackLink.slack_user_id == bindparam("slack_user", type_=String)),
        )
        .outerjoin(User, User.id == SlackLink.user_id)
    )
    statement = statement if take_in else statement.where(Alert.id == alert_id)
    # The facts as the row has them now, even for an alert, team or user the session loaded for
    # an earlier click of the same transaction (``click_batch``): never what that click saw.
    return statement.execution_options(populate_existing=True)


#: ``gate_facts``' answer for a click whose signed body was taken in before (a replay).
REPLAYED = object()


async def gate_facts(
    session: AsyncSession,
    identity: SlackIdentity,
    alert_id: int,
    anonymous_default: bool,
    *,
    replay: str | None = None,
) -> GateFacts | None | object:
    """The alert, its team, the clicker's link and user, their membership and the workspace's
    anonymous setting in one round trip (every part by primary or unique key); None when there
    is no such alert. On a click this replaces five queries (the click's transaction holds
    SQLite's write lock while it runs); the statement is built once (``_gate_statement``).

    ``replay``: the click's replay key (``slack_events.body_key``), taken in first; ``REPLAYED``
    when it was taken in before (nothing else is to be done). On PostgreSQL that is the same
    statement as the read (one round trip fewer for every click); elsewhere one before it."""
    params = {"alert_id": alert_id, "workspace": identity.workspace_id, "slack_user": identity.user_id}
    take_in = replay is not None and session.get_bind().dialect.name == "postgresql"
    if replay is not None and not take_in and not await slack_events.first_delivery(session, replay):
        return REPLAYED
    if take_in:
        params.update(event_id=replay, received_at=utcnow())
    row = (await session.execute(_gate_statement(take_in), params)).first()
    if take_in:
        *row, first = row
        if not first:
            return REPLAYED
        if row[0] is None:
            return None
    if row is None:
        return None
    alert, team, user, member, paged_step, value = row
    if identity.external:  # never this workspace's linked user, nor anonymous here
        return GateFacts(alert=alert, team=team, user=None, is_member=False, allow_anonymous=False, external=True)
    return GateFacts(
        alert=alert,
        team=team,
        user=user,
        is_member=bool(member),
        allow_anonymous=anonymous_default if value is None else value == "true",
        paged_step=paged_step,
    )


async def person_facts(session: AsyncSession, user: User, alert_id: int) -> GateFacts | None:
    """The same facts for a person signed in to the web side (``/alerts/{id}``): the acting
    user is the signed-in one (no Slack identity, never anonymous), read now like a click's."""
    is_member = exists().where(TeamMember.team_id == Alert.team_id, TeamMember.user_id == user.id)
    row = (
        await session.execute(
            select(Alert, Team, is_member.label("is_member"))
            .select_from(Alert)
            .outerjoin(Team, Team.id == Alert.team_id)
            .where(Alert.id == alert_id)
        )
    ).first()
    if row is None:
        return None
    alert, team, member = row
    return GateFacts(alert=alert, team=team, user=user, is_member=bool(member), allow_anonymous=False)


# --- who may *see* an alert on the web side ---------------------------------------------------
def visible_team_ids(user: User):
    """The teams whose alerts ``user`` may see on the web side (list, page, team page, reports,
    CSV exports): their own teams; None for an admin (every alert, teams or not). The one rule
    for reading; acting still goes through ``decide``."""
    if user.is_admin and user.is_active:
        return None
    return select(TeamMember.team_id).where(TeamMember.user_id == user.id)


def visible_alerts(user: User, team_column=None):
    """A WHERE clause on ``Alert`` (or on ``team_column``, a column holding a team id) limiting
    rows to what ``user`` may see (``visible_team_ids``); ``true()`` for an admin. A person in no
    team sees none (``team_id IN ()``); an inactive person sees none either."""
    from sqlalchemy import false, true

    column = Alert.team_id if team_column is None else team_column
    if not user.is_active:
        return false()
    teams = visible_team_ids(user)
    return true() if teams is None else column.in_(teams)


async def decide(session: AsyncSession, facts: GateFacts, action: str) -> Decision:
    """The gate's rule on facts read at click time (``gate_facts``). Allowed clicks need no
    further query; a refusal reads who to ask."""
    verb = _VERB.get(action, action)
    alert, team, user = facts.alert, facts.team, facts.user
    team_name = team.name if team else None
    if facts.external:
        return Decision(
            False,
            Reason.EXTERNAL,
            team_name=team_name,
            text=f"You can't {verb} this alert: you are in another organization (Slack Connect), and only people "
            "of the workspace that owns this channel can act on its Genie alerts.",
        )
    if user is None:
        if facts.allow_anonymous:
            return Decision(True, Reason.ANONYMOUS, team_name=team_name)
        return Decision(
            False,
            Reason.NOT_LINKED,
            team_name=team_name,
            text=f"You can't {verb} this alert yet: your Slack account isn't connected to a Genie account. "
            "Connect it with the button below (or `/genie connect`), then try again.",
        )
    if not user.is_active:
        return Decision(
            False,
            Reason.INACTIVE,
            user=user,
            team_name=team_name,
            text=f"You can't {verb} this alert: your Slack account is connected to {user.name} ({user.email}), "
            "whose Genie account is deactivated. Disconnect below if that isn't you, or ask a Genie admin to "
            "reactivate it.",
        )
    if user.is_admin:
        return Decision(True, Reason.ADMIN, user=user, team_name=team_name)
    if alert.owner_user_id == user.id:
        return Decision(True, Reason.ASSIGNEE, user=user, team_name=team_name)
    if facts.paged_step is not None:  # the escalation paged them: they may act, even if not (now) a member
        return Decision(True, Reason.PAGED, user=user, team_name=team_name, why=f"paged at step {facts.paged_step + 1}")
    if team is not None and facts.is_member:
        return Decision(True, Reason.MEMBER, user=user, team_name=team_name)
    # Refusals only from here: who to ask is read now, off the allowed (hot) path.
    admins = await _admin_names(session)
    ask = f"ask a Genie admin ({', '.join(admins)})" if admins else "ask a Genie admin"
    if team is None:
        return Decision(
            False,
            Reason.NO_TEAM,
            user=user,
            text=f"You can't {verb} this alert: it belongs to no team, so only Genie admins can act on it — {ask}.",
        )
    return Decision(
        False,
        Reason.NOT_MEMBER,
        user=user,
        team_name=team_name,
        text=f"You can't {verb} this alert: you ({user.email}) are not in {team.name}, which owns it — "
        f'{ask} or a member of {team.name} to add you (`genie team add-member "{team.name}" {user.email}`).',
    )


#: ``auto_link_by_email``: ``genie slack sync`` and Slack's user events connect a Slack user to
#: the one Genie person with the same confirmed email (``bot.services.external_accounts``).
#: ``require_email_match``: a one-time link connects a Slack account only when Slack reports a
#: confirmed email equal to the person's Genie email (``bot.services.slack_links``).
#: ``require_slack_signin`` (deployment-wide, ``--all-workspaces``): the web side's passwords
#: sign in only admins; everyone else signs in with Slack (``bot.services.slack_signin``).
WORKSPACE_SETTINGS = {
    ANONYMOUS_SETTING: ("true", "false"),
    "auto_link_by_email": ("true", "false"),
    "require_email_match": ("true", "false"),
    "require_slack_signin": ("true", "false"),
}


async def set_workspace_setting(session: AsyncSession, workspace_id: str, key: str, value: str) -> WorkspaceSetting:
    """``genie workspace set``: ``workspace_id='*'`` sets the default for every workspace."""
    from bot.services.errors import InvalidInput

    key = key.strip().lower().replace("-", "_")
    if key not in WORKSPACE_SETTINGS:
        raise InvalidInput(f"unknown setting {key!r}; known: {', '.join(sorted(WORKSPACE_SETTINGS))}")
    value = value.strip().lower()
    value = {"yes": "true", "on": "true", "1": "true", "no": "false", "off": "false", "0": "false"}.get(value, value)
    if value not in WORKSPACE_SETTINGS[key]:
        raise InvalidInput(f"{key} must be one of: {', '.join(WORKSPACE_SETTINGS[key])}")
    row = await session.get(WorkspaceSetting, (workspace_id, key))
    if row is None:
        row = WorkspaceSetting(workspace_id=workspace_id, key=key, value=value)
        session.add(row)
    else:
        row.value = value
    await session.flush()
    return row


async def workspace_settings(session: AsyncSession) -> list[WorkspaceSetting]:
    return list(
        await session.scalars(select(WorkspaceSetting).order_by(WorkspaceSetting.workspace_id, WorkspaceSetting.key))
    )


# --- API keys: what a team's key may do ----------------------------------------------------------
class KeyUse(enum.StrEnum):
    #: Create alerts (``POST /v2/alerts``): for the key's team and the teams it was granted.
    POST = "post"
    #: Everything else: list, read (descriptions, notes, logs), acknowledge, close, assign, add
    #: notes — only the team that owns the alert. A posting grant is not a reading grant.
    READ_AND_ACT = "read and act"


async def key_teams(session: AsyncSession, team: Team, use: KeyUse) -> set[int]:
    """The one rule for a team's API key (README, "Keys and grants"): the ids of the teams
    whose alerts the key may ``use``. ``genie team grant Search Payments`` lets Search's key
    *post* for Payments, nothing more: Search's key cannot list, read, acknowledge, close,
    assign or note a Payments alert — not even one it posted (its own request status still
    answers). Alerts outside these teams are "not found", never "forbidden"."""
    if use is KeyUse.POST:
        granted = await session.scalars(select(TeamPostGrant.for_team_id).where(TeamPostGrant.team_id == team.id))
        return {team.id, *granted}
    return {team.id}


def team_people(team_id: int):
    """The people a key may learn about when it names people on an alert of team ``team_id``
    (responders, the reporter, ``details``, an assignee): that team's members — the alert is
    readable only by that team's key. Anyone else is "nobody" to it, and its errors name only
    what the request itself gave (``external_accounts.resolve_named(among=…)``)."""
    return select(TeamMember.user_id).where(TeamMember.team_id == team_id)


async def team_people_ids(session: AsyncSession, team_id: int | None) -> set[int]:
    """The ids ``team_people(team_id)`` selects (none for no team)."""
    return set(await session.scalars(team_people(team_id))) if team_id is not None else set()
