"""SQLAlchemy 2 typed models. Every lookup on a hot path has an index; the constraints
below are what make the identity rules of DESIGN.md §3 hold even under races."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import (
    JSON,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy import (
    false as sa_false,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from storage.base import Base, UTCDateTime, utcnow


class User(Base):
    """A Genie account: a person who may sign in to the web side."""

    __tablename__ = "user"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: Always stored lower-cased; unique.
    email: Mapped[str] = mapped_column(String(254), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    #: argon2id hash; NULL means the person cannot sign in yet.
    password_hash: Mapped[str | None] = mapped_column(String(255))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: The address the person proved they read (a link Genie e-mailed them, opened while signed
    #: in): e-mail pages go only to ``email`` while it equals this (``bot.channels.email``).
    verified_email: Mapped[str | None] = mapped_column(String(254))

    slack_links: Mapped[list[SlackLink]] = relationship(back_populates="user", passive_deletes=True)


class Team(Base):
    __tablename__ = "team"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    slack_channel_id: Mapped[str | None] = mapped_column(String(32))
    #: The workspace (and Grid org) whose bot posts in that channel; NULL in single-workspace mode.
    slack_team_id: Mapped[str | None] = mapped_column(String(32))
    enterprise_id: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class TeamMember(Base):
    __tablename__ = "team_member"

    team_id: Mapped[int] = mapped_column(ForeignKey("team.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"), primary_key=True, index=True)
    added_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SlackLink(Base):
    """A Slack identity mapped to a Genie user.

    The identity is ``(workspace_id, slack_user_id)`` where ``workspace_id`` is the Enterprise
    Grid org id when there is one, else the workspace (team) id. One identity belongs to at most
    one Genie user; a Genie user has at most one identity per workspace.
    """

    __tablename__ = "slack_link"
    __table_args__ = (
        UniqueConstraint("workspace_id", "slack_user_id", name="uq_slack_link_identity"),
        UniqueConstraint("user_id", "workspace_id", name="uq_slack_link_user_workspace"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"))
    workspace_id: Mapped[str] = mapped_column(String(32))
    slack_user_id: Mapped[str] = mapped_column(String(32))
    slack_team_id: Mapped[str] = mapped_column(String(32))
    enterprise_id: Mapped[str | None] = mapped_column(String(32))
    workspace_name: Mapped[str | None] = mapped_column(String(200))
    slack_name: Mapped[str | None] = mapped_column(String(200))
    slack_email: Mapped[str | None] = mapped_column(String(254))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: How the link was made: ``link`` (the person's one-time link), ``email`` (matched by
    #: ``genie slack sync``), ``admin`` (by hand), ``import`` (from a file).
    via: Mapped[str] = mapped_column(String(10), default="link", server_default="link")
    #: Made when Slack reported a confirmed email equal to the person's Genie email (a one-time
    #: link confirmed with a matching email, or an auto-link by email): the identity verifiably
    #: belongs to the person. Only such links are told about account changes, and only their
    #: Home tab shows admin settings (``bot.services.slack_links``).
    email_verified: Mapped[bool] = mapped_column(Boolean, default=False, server_default=sa_false())
    #: Linked without a matching confirmed email and not yet reviewed by the person: ``/account``
    #: shows it in a banner with "This is me" and Undo.
    needs_review: Mapped[bool] = mapped_column(Boolean, default=False, server_default=sa_false())

    user: Mapped[User] = relationship(back_populates="slack_links")


class LinkRequest(Base):
    """One ``/genie connect``: the nonce inside a signed link token, made one-time by
    ``consumed_at`` (set by a single conditional UPDATE) and ``superseded_at``."""

    __tablename__ = "link_request"
    __table_args__ = (
        Index("ix_link_request_identity", "workspace_id", "slack_user_id"),
        # The cleanup (``bot.services.cleanup``) deletes requests long expired.
        Index("ix_link_request_expires_at", "expires_at"),
    )

    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(String(32))
    slack_user_id: Mapped[str] = mapped_column(String(32))
    slack_team_id: Mapped[str] = mapped_column(String(32))
    enterprise_id: Mapped[str | None] = mapped_column(String(32))
    workspace_name: Mapped[str | None] = mapped_column(String(200))
    slack_name: Mapped[str | None] = mapped_column(String(200))
    slack_email: Mapped[str | None] = mapped_column(String(254))
    #: The Slack handle (``name``), shown when Slack gives no email.
    slack_handle: Mapped[str | None] = mapped_column(String(200))
    #: Slack's ``is_email_confirmed`` for ``slack_email`` (False too for bots, guests, external users).
    slack_email_confirmed: Mapped[bool | None] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    consumed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    consumed_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"))
    superseded_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: The click that was refused because the person was not connected (``acknowledge``,
    #: ``close``, ``assign``), remembered with the request: once this link is confirmed it is
    #: carried out through the gate (``actions.carry_out``). NULL: a plain ``/genie connect``.
    pending_action: Mapped[str | None] = mapped_column(String(20))
    pending_alert_id: Mapped[int | None] = mapped_column(ForeignKey("alert.id", ondelete="SET NULL"))
    pending_assignee_id: Mapped[int | None] = mapped_column(Integer)
    #: Where the click was: the alert message's channel and ts.
    pending_channel: Mapped[str | None] = mapped_column(String(32))
    pending_message_ts: Mapped[str | None] = mapped_column(String(32))


class WebSession(Base):
    """A signed-in browser. The cookie carries a random token; only its SHA-256 is stored,
    so a database dump cannot be replayed as cookies. Signing in always makes a new row
    (no session fixation); signing out deletes it."""

    __tablename__ = "web_session"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class SigninFailure(Base):
    """A failed web sign-in, kept for a while so that sign-in can be rate-limited per account
    and per client address across every Genie process (``bot.services.users``). The account
    is the SHA-256 of the typed email, so the table holds no list of guessed addresses."""

    __tablename__ = "signin_failure"
    __table_args__ = (
        Index("ix_signin_failure_account_at", "account", "at"),
        Index("ix_signin_failure_address_at", "address", "at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account: Mapped[str] = mapped_column(String(64))
    address: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: The password is still being checked: counts for its (account, address) at once, for the
    #: address as a whole only once it has failed (``bot.services.users.sign_in``).
    pending: Mapped[bool] = mapped_column(Boolean, default=False, server_default=sa_false())


class SlackEvent(Base):
    """An Events API delivery already taken in (by ``event_id``). Slack re-sends an event it
    thinks failed (``X-Slack-Retry-Num``); the retry finds its row and does nothing. Pruned after
    ``bot.services.slack_events.KEEP``."""

    __tablename__ = "slack_event"

    event_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class SlackThrottle(Base):
    """One ``/genie connect`` or one refused click by a Slack identity, kept for a while so that
    each can be rate-limited per identity across every Genie process (``bot.services.throttle``);
    pruned by ``bot.services.cleanup``."""

    __tablename__ = "slack_throttle"
    __table_args__ = (
        Index("ix_slack_throttle_identity", "workspace_id", "slack_user_id", "kind", "at"),
        Index("ix_slack_throttle_at", "at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))  # connect, denied, link_reminder
    workspace_id: Mapped[str] = mapped_column(String(32))
    slack_user_id: Mapped[str] = mapped_column(String(32))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Setting(Base):
    """Deployment-wide key/value settings (e.g. the generated secret key)."""

    __tablename__ = "setting"

    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


# --- alerts (part 2) -------------------------------------------------------------------------
class TeamApiKey(Base):
    """A team's key for the OpsGenie-compatible API (``Authorization: GenieKey <key>``).

    Looked up by the SHA-256 of the presented key (indexed), so the lookup never compares the
    secret itself; the key is kept too, because ``genie team key NAME`` prints it, as
    OpsGenie's integration page does."""

    __tablename__ = "team_api_key"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("team.id", ondelete="CASCADE"), unique=True)
    key: Mapped[str] = mapped_column(String(64))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class TeamPostGrant(Base):
    """``team``'s key may also post alerts for ``for_team`` (named in ``responders``)."""

    __tablename__ = "team_post_grant"

    team_id: Mapped[int] = mapped_column(ForeignKey("team.id", ondelete="CASCADE"), primary_key=True)
    for_team_id: Mapped[int] = mapped_column(ForeignKey("team.id", ondelete="CASCADE"), primary_key=True)


class AlertStatus(StrEnum):
    """``alert.status`` (acknowledged is a separate flag of an open alert)."""

    OPEN = "open"
    CLOSED = "closed"


class AlertAction(StrEnum):
    """``alert_event.action``: what was done (or tried) to an alert. The values are stored."""

    CREATE = "create"
    DEDUPLICATE = "deduplicate"
    ACKNOWLEDGE = "acknowledge"
    UNACKNOWLEDGE = "unacknowledge"
    CLOSE = "close"
    ASSIGN = "assign"
    SNOOZE = "snooze"
    UPDATE = "update"
    TAGS = "tags"
    DETAILS = "details"
    RESPONDER = "responder"
    CUSTOM = "custom"
    NOTE = "note"
    #: "I've got it" (Slack): assign to oneself and acknowledge, in one click.
    TAKE = "take"
    RESOLVE = "resolve"


class Alert(Base):
    """An alert. ``id`` is OpsGenie's ``tinyId`` (a small number people can type); ``uid`` is
    OpsGenie's ``id``. At most one *open* alert per (team, alias): that is de-duplication."""

    __tablename__ = "alert"
    __table_args__ = (
        Index(
            "uq_alert_open_alias",
            "team_id",
            "alias",
            unique=True,
            sqlite_where=text("status = 'open'"),
            postgresql_where=text("status = 'open'"),
        ),
        Index("ix_alert_team_status", "team_id", "status", "id"),
        Index("ix_alert_status_created", "status", "created_at"),
        Index("ix_alert_owner_status", "owner_user_id", "status"),
        # The web side (migration 0014): the alert list, keyset-paged by id within teams, and
        # the reports, which read a period by created_at.
        Index("ix_alert_team_id", "team_id", "id"),
        Index("ix_alert_created_at", "created_at"),
        Index("ix_alert_team_created", "team_id", "created_at"),
        # Reports (0018): a period's alerts with every column the report reads, so that each of
        # its passes reads this index, never the wide rows. On PostgreSQL 0018 also adds trigram
        # indexes on lower(message) and lower(alias) for the search box (when pg_trgm exists).
        Index(
            "ix_alert_report",
            "created_at",
            "team_id",
            "status",
            "acknowledged",
            "acknowledged_at",
            "closed_at",
            "alias",
            "source",
            "count",
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uid: Mapped[str] = mapped_column(String(36), unique=True)
    team_id: Mapped[int | None] = mapped_column(ForeignKey("team.id", ondelete="SET NULL"))
    message: Mapped[str] = mapped_column(String(130))
    alias: Mapped[str] = mapped_column(String(512))
    description: Mapped[str | None] = mapped_column(Text)
    tags: Mapped[list] = mapped_column(JSON, default=list)
    details: Mapped[dict] = mapped_column(JSON, default=dict)
    responders: Mapped[list] = mapped_column(JSON, default=list)
    entity: Mapped[str | None] = mapped_column(String(512))
    source: Mapped[str | None] = mapped_column(String(100))
    priority: Mapped[str] = mapped_column(String(2), default="P3")
    reported_by: Mapped[str | None] = mapped_column(String(100))  # the API's ``user`` field
    #: The people the alert names, resolved once when it was created (``bot.services.alert_people``):
    #: ``{"reporter": entry, "responders": [entry …], "details": {key: entry}}``, each entry
    #: ``{"as": given, "user_id", "name", "slack"}`` (``user_id`` null: unresolved, with ``why``).
    people: Mapped[dict | None] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(10), default=AlertStatus.OPEN.value)
    acknowledged: Mapped[bool] = mapped_column(Boolean, default=False)
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: Who acknowledged / closed it, as a plain name (never Slack markup; the API returns it).
    acknowledged_by: Mapped[str | None] = mapped_column(String(200))
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    closed_by: Mapped[str | None] = mapped_column(String(200))
    #: … and, for an anonymous Slack actor (no Genie account), the Slack user id Slack gave for the
    #: click: the message mentions them from this, never from the name (migration ``0011``).
    acknowledged_by_slack: Mapped[str | None] = mapped_column(String(32))
    closed_by_slack: Mapped[str | None] = mapped_column(String(32))
    owner_user_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"))
    #: Snoozed (OpsGenie's snooze) until then; past it, the alert is no longer snoozed.
    snoozed_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    count: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    slack_channel: Mapped[str | None] = mapped_column(String(32))
    slack_ts: Mapped[str | None] = mapped_column(String(32))
    #: Collapsed into this storm digest instead of posted on its own (``bot.services.outbox``,
    #: migration ``0019``): the digest message stands for it; it never gets a message of its own.
    slack_digest_id: Mapped[int | None] = mapped_column(ForeignKey("slack_digest.id", ondelete="SET NULL"), index=True)

    team: Mapped[Team | None] = relationship(lazy="raise")
    owner: Mapped[User | None] = relationship(lazy="raise")


class AlertEvent(Base):
    """The alert's timeline: every decision (allowed or denied) and every change, with who."""

    __tablename__ = "alert_event"
    __table_args__ = (
        Index("ix_alert_event_alert", "alert_id", "id"),
        # Reports: acknowledgements, closes and refused clicks in a period (0014).
        Index("ix_alert_event_action_at", "action", "at"),
        # Reports (0018): the period's alerts' acknowledgements and closes, read from the index.
        Index("ix_alert_event_report", "alert_id", "action", "outcome", "actor_user_id", "at", "anonymous"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    alert_id: Mapped[int] = mapped_column(ForeignKey("alert.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: create, deduplicate, acknowledge, close, assign, note
    action: Mapped[str] = mapped_column(String(20))
    #: applied, denied, noop (allowed but nothing to do: already acknowledged, …)
    outcome: Mapped[str] = mapped_column(String(10))
    reason: Mapped[str | None] = mapped_column(String(500))
    via: Mapped[str] = mapped_column(String(10))  # slack, api, cli
    actor_user_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"))
    actor_name: Mapped[str | None] = mapped_column(String(200))
    slack_workspace_id: Mapped[str | None] = mapped_column(String(32))
    slack_user_id: Mapped[str | None] = mapped_column(String(32))
    anonymous: Mapped[bool] = mapped_column(Boolean, default=False)
    note: Mapped[str | None] = mapped_column(Text)
    request_id: Mapped[str | None] = mapped_column(String(36))


class ApiRequest(Base):
    """What became of an accepted API request (``GET /v2/alerts/requests/{requestId}``)."""

    __tablename__ = "api_request"

    request_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    team_id: Mapped[int | None] = mapped_column(ForeignKey("team.id", ondelete="SET NULL"))
    action: Mapped[str] = mapped_column(String(30))
    alert_id: Mapped[int | None] = mapped_column(ForeignKey("alert.id", ondelete="SET NULL"))
    alias: Mapped[str | None] = mapped_column(String(512))
    success: Mapped[bool] = mapped_column(Boolean)
    status: Mapped[str] = mapped_column(String(300))
    processed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class OutboxMessage(Base):
    """A Slack call to make, written in the same transaction as the change it reports.

    Delivered in ``id`` order per ``channel``; an alert's post and updates are rendered from the
    alert's state at delivery time, so a burst of changes needs only the latest picture."""

    __tablename__ = "outbox"
    __table_args__ = (
        # Each lane of a channel is a queue of its own (``bot.services.outbox``, migration 0019).
        Index(
            "ix_outbox_pending_lane",
            "lane",
            "channel",
            "id",
            sqlite_where=text("delivered_at IS NULL AND failed_at IS NULL"),
            postgresql_where=text("delivered_at IS NULL AND failed_at IS NULL"),
        ),
        Index(
            "ix_outbox_pending_due",
            "next_attempt_at",
            sqlite_where=text("delivered_at IS NULL AND failed_at IS NULL"),
            postgresql_where=text("delivered_at IS NULL AND failed_at IS NULL"),
        ),
        # The failed-messages gauge counts these every second; without it, a full scan of the
        # outbox (every message ever sent: ~120 ms at 1M rows on SQLite, holding its connection).
        Index(
            "ix_outbox_failed",
            "id",
            sqlite_where=text("failed_at IS NOT NULL"),
            postgresql_where=text("failed_at IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    channel: Mapped[str] = mapped_column(String(32))
    #: Whose bot token delivers it (multi-workspace mode); NULL: the single workspace's.
    slack_team_id: Mapped[str | None] = mapped_column(String(32))
    enterprise_id: Mapped[str | None] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(20))  # alert.post, alert.update, message, digest
    #: ``post`` (new messages, in order) or ``update`` (edits of alerts already in Slack): each
    #: lane of a channel is delivered in ``id`` order, independently of the other (0019).
    lane: Mapped[str] = mapped_column(String(8), default="post", server_default="post")
    #: A ``digest`` message: the digest it posts or refreshes; an ``alert.post`` / ``alert.update``
    #: delivered *in* a digest (collapsed during a storm): that digest.
    digest_id: Mapped[int | None] = mapped_column(ForeignKey("slack_digest.id", ondelete="SET NULL"))
    alert_id: Mapped[int | None] = mapped_column(ForeignKey("alert.id", ondelete="CASCADE"))
    payload: Mapped[dict | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    #: A worker holds the message until then; past it, another worker may take it over.
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: When the first attempt started: after a crash, Slack is asked whether it already posted.
    first_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    failed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(String(300))


class SlackDigest(Base):
    """One message standing for the alerts a storm brought to a channel (``bot.services.outbox``):
    open while the storm lasts (new alerts are collapsed into it), closed when it has passed."""

    __tablename__ = "slack_digest"
    __table_args__ = (
        # At most one open digest per channel, whoever opens it.
        Index(
            "uq_slack_digest_open",
            "channel",
            unique=True,
            sqlite_where=text("closed_at IS NULL"),
            postgresql_where=text("closed_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    channel: Mapped[str] = mapped_column(String(32))
    slack_team_id: Mapped[str | None] = mapped_column(String(32))
    enterprise_id: Mapped[str | None] = mapped_column(String(32))
    team_id: Mapped[int | None] = mapped_column(ForeignKey("team.id", ondelete="SET NULL"))
    #: Alerts of this priority or lower are collapsed; a more urgent one is posted on its own.
    storm_priority: Mapped[str] = mapped_column(String(2))
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: When an alert was last collapsed into it: the storm has passed after a quiet spell.
    last_collapsed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: Where its message is, once posted.
    slack_ts: Mapped[str | None] = mapped_column(String(32))


class WorkspaceSetting(Base):
    """Per-workspace settings; ``workspace_id = '*'`` holds the deployment-wide value."""

    __tablename__ = "workspace_setting"

    workspace_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    key: Mapped[str] = mapped_column(String(50), primary_key=True)
    value: Mapped[str] = mapped_column(String(200))


# --- connected accounts (part 6) -------------------------------------------------------------
class ExternalAccount(Base):
    """An account in another tool, as that tool reported it: a Slack directory entry, a PagerDuty
    or OpsGenie user, a GitHub login …

    ``(provider, tenant, external_id)`` names it: the tenant is the Slack workspace (or Grid org)
    id, the PagerDuty/OpsGenie/Jira site, or ``''`` for a global namespace (GitHub).

    For every provider but Slack, ``user_id`` is the connection to a Genie person. A Slack
    account's connection is its ``SlackLink`` (the row the gate reads on every click), matched on
    ``(tenant, external_id) = (workspace_id, slack_user_id)``; ``user_id`` stays NULL on Slack
    rows so there is one source of truth.
    """

    __tablename__ = "external_account"
    __table_args__ = (
        UniqueConstraint("provider", "tenant", "external_id", name="uq_external_account_identity"),
        Index("ix_external_account_email", "email"),
        Index("ix_external_account_provider_handle", "provider", "handle"),
        Index("ix_external_account_user", "user_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    provider: Mapped[str] = mapped_column(String(20))
    tenant: Mapped[str] = mapped_column(String(100), default="", server_default="")
    external_id: Mapped[str] = mapped_column(String(200))
    #: The name people type: OpsGenie username, GitHub login, Slack handle, Jira name …
    handle: Mapped[str | None] = mapped_column(String(200))
    #: Lower-cased; as the provider reported it.
    email: Mapped[str | None] = mapped_column(String(254))
    #: The provider vouches for the address (Slack: ``is_email_confirmed``).
    email_verified: Mapped[bool] = mapped_column(Boolean, default=False)
    display_name: Mapped[str | None] = mapped_column(String(200))
    is_bot: Mapped[bool] = mapped_column(Boolean, default=False)
    is_deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    #: Slack guests (restricted / ultra-restricted), PagerDuty "limited" roles …
    is_guest: Mapped[bool] = mapped_column(Boolean, default=False)
    #: Its profile is governed by another organization (a Slack Connect user).
    is_external: Mapped[bool] = mapped_column(Boolean, default=False)
    #: Provider-specific facts (Slack: team_id, enterprise_id, workspace name).
    attrs: Mapped[dict] = mapped_column(JSON, default=dict)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"))
    #: How it was connected: link, email, admin, import (NULL while not connected).
    connected_via: Mapped[str | None] = mapped_column(String(10))
    connected_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    connected_by: Mapped[str | None] = mapped_column(String(200))
    #: What the last automatic match by email found: linked, already, ambiguous, unmatched,
    #: conflict, skipped (bot, guest, deleted, external, unverified, untrusted …); NULL: never tried.
    match: Mapped[str | None] = mapped_column(String(20))
    match_detail: Mapped[str | None] = mapped_column(String(300))
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    user: Mapped[User | None] = relationship(lazy="raise")


class AuditEvent(Base):
    """Who changed which connection (or ran which import), when, and how. Append-only."""

    __tablename__ = "audit_event"
    __table_args__ = (
        Index("ix_audit_event_at", "at"),
        Index("ix_audit_event_subject", "subject_user_id", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: The person who did it, when a signed-in person did (web, Slack); NULL for CLI and jobs.
    actor_user_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"))
    #: Who, in words: an email, "cli (root@host)", "slack sync", "import accounts.csv".
    actor: Mapped[str] = mapped_column(String(200))
    via: Mapped[str] = mapped_column(String(10))  # web, slack, cli, sync, import
    #: account.connect, account.move, account.remove, import.run …
    action: Mapped[str] = mapped_column(String(40))
    subject_user_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"))
    subject_email: Mapped[str | None] = mapped_column(String(254))
    provider: Mapped[str | None] = mapped_column(String(20))
    tenant: Mapped[str | None] = mapped_column(String(100))
    external_id: Mapped[str | None] = mapped_column(String(200))
    detail: Mapped[str | None] = mapped_column(Text)


# --- heartbeats (issue 16) -------------------------------------------------------------------
class Heartbeat(Base):
    """OpsGenie's heartbeat: a job pings it at least every ``interval``; when a ping is late, one
    alert is raised for the team (``bot.services.heartbeats``). Names are unique per team (a key
    sees only its own team's). ``expires_at`` is when the next ping is due; ``expired`` is set by
    the one conditional UPDATE that claims an expiry, so several processes raise it once."""

    __tablename__ = "heartbeat"
    __table_args__ = (
        UniqueConstraint("team_id", "name", name="uq_heartbeat_team_name"),
        # The monitor's look: enabled heartbeats not yet expired, soonest due first.
        Index(
            "ix_heartbeat_due",
            "expires_at",
            sqlite_where=text("enabled AND NOT expired"),
            postgresql_where=text("enabled AND NOT expired"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("team.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    interval: Mapped[int] = mapped_column(Integer)
    interval_unit: Mapped[str] = mapped_column(String(10))  # minutes, hours, days
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    #: The expiry alert's message (else "<name> is expired"), tags and priority.
    alert_message: Mapped[str | None] = mapped_column(String(130))
    alert_tags: Mapped[list] = mapped_column(JSON, default=list)
    alert_priority: Mapped[str] = mapped_column(String(2), default="P3")
    last_ping_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: When the next ping is due (the last ping, or enabling, plus the interval).
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expired: Mapped[bool] = mapped_column(Boolean, default=False)
    #: The alert the last expiry raised.
    alert_id: Mapped[int | None] = mapped_column(ForeignKey("alert.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


# --- on call (issue 15) ------------------------------------------------------------------------
# The schedule maths is ``bot.services.oncall.schedule``; these rows are read and written only by
# ``bot.services.schedules`` and ``bot.services.escalation``.
class OncallSchedule(Base):
    """A team's on-call schedule: rotations (layers) and overrides. ``time_zone`` is the one
    it is shown in; each rotation computes in its own."""

    __tablename__ = "oncall_schedule"
    __table_args__ = (UniqueConstraint("team_id", "name", name="uq_oncall_schedule_team_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("team.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str | None] = mapped_column(Text)
    time_zone: Mapped[str] = mapped_column(String(64))
    #: A Slack user group id (``S…``) whose members Genie sets to the person on call at each
    #: hand-off (``bot.slack.handoffs``); None: no group.
    slack_usergroup: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class OncallHandoff(Base):
    """What was done for one hand-off of a schedule, once: ``kind`` ``usergroup`` (the Slack
    user group set to the person on call from ``shift_start``) or ``reminder`` (the DM before
    the shift starting at ``shift_start``); ``status`` done or skipped (``detail`` says why)."""

    __tablename__ = "oncall_handoff"
    __table_args__ = (UniqueConstraint("schedule_id", "kind", "shift_start", name="uq_oncall_handoff_once"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    schedule_id: Mapped[int] = mapped_column(ForeignKey("oncall_schedule.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    shift_start: Mapped[datetime] = mapped_column(UTCDateTime)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"))
    status: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str | None] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class OncallRotation(Base):
    """One layer of a schedule; of two layers with somebody on call, the higher ``layer`` wins.
    The first hand-off is ``starts_at``; its wall-clock time in ``time_zone`` is every later one's
    (days, weeks)."""

    __tablename__ = "oncall_rotation"
    __table_args__ = (
        UniqueConstraint("schedule_id", "name", name="uq_oncall_rotation_schedule_name"),
        UniqueConstraint("schedule_id", "layer", name="uq_oncall_rotation_schedule_layer"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    schedule_id: Mapped[int] = mapped_column(ForeignKey("oncall_schedule.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    layer: Mapped[int] = mapped_column(Integer)
    length: Mapped[int] = mapped_column(Integer)
    length_unit: Mapped[str] = mapped_column(String(10))  # hours, days, weeks
    time_zone: Mapped[str] = mapped_column(String(64))
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ends_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class OncallParticipant(Base):
    """The rotation's participants, in hand-off order (``position`` 0 first); ``user_id`` NULL
    is a "nobody" slot (OpsGenie's ``none``)."""

    __tablename__ = "oncall_participant"

    rotation_id: Mapped[int] = mapped_column(ForeignKey("oncall_rotation.id", ondelete="CASCADE"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"), index=True)


class OncallRestriction(Base):
    """A window the rotation is restricted to, in its time zone, as minutes of the day (0–1439);
    ``start_day``/``end_day`` NULL: every day (time-of-day), else 0 = Monday … 6 = Sunday."""

    __tablename__ = "oncall_restriction"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    rotation_id: Mapped[int] = mapped_column(ForeignKey("oncall_rotation.id", ondelete="CASCADE"), index=True)
    start_day: Mapped[int | None] = mapped_column(Integer)
    start_minute: Mapped[int] = mapped_column(Integer)
    end_day: Mapped[int | None] = mapped_column(Integer)
    end_minute: Mapped[int] = mapped_column(Integer)


class OncallOverride(Base):
    """``user`` is on call for the schedule from ``starts_at`` to ``ends_at``, over every layer;
    of overlapping overrides the later made (higher ``id``) wins."""

    __tablename__ = "oncall_override"
    __table_args__ = (Index("ix_oncall_override_schedule_ends", "schedule_id", "ends_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    schedule_id: Mapped[int] = mapped_column(ForeignKey("oncall_schedule.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"), index=True)
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ends_at: Mapped[datetime] = mapped_column(UTCDateTime)
    #: Who made it, in words (an email, "cli (root@host)").
    created_by: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class EscalationPolicy(Base):
    """A team's escalation policy (one per team): its steps, then the whole again up to
    ``repeat`` more times. The engine (``bot.services.paging``) runs it for each new alert of the team."""

    __tablename__ = "escalation_policy"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("team.id", ondelete="CASCADE"), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str | None] = mapped_column(Text)
    repeat: Mapped[int] = mapped_column(Integer, default=0)
    #: A repeat begins this many minutes after the last step of the round before.
    repeat_after_minutes: Mapped[int] = mapped_column(Integer, default=10, server_default=text("10"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class EscalationStep(Base):
    """Step ``position`` (0 first): ``delay_minutes`` after the alert was created (or the
    repeat began), notify the target: the on-call person of a schedule, a person, everyone in
    the team, or the team channel — exactly one ``target_*`` column is set, by ``target_kind``.
    The targets are plain foreign keys (no cascade): a schedule a step names cannot be deleted."""

    __tablename__ = "escalation_step"
    __table_args__ = (UniqueConstraint("policy_id", "position", name="uq_escalation_step_policy_position"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    policy_id: Mapped[int] = mapped_column(ForeignKey("escalation_policy.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    delay_minutes: Mapped[int] = mapped_column(Integer)
    target_kind: Mapped[str] = mapped_column(String(10))  # schedule, user, team, channel
    target_schedule_id: Mapped[int | None] = mapped_column(ForeignKey("oncall_schedule.id"), index=True)
    target_user_id: Mapped[int | None] = mapped_column(ForeignKey("user.id"), index=True)
    target_team_id: Mapped[int | None] = mapped_column(ForeignKey("team.id"))
    target_channel: Mapped[str | None] = mapped_column(String(32))


class AlertEscalation(Base):
    """The next due step of an alert's escalation: one row per alert being escalated, kept
    until the policy has run its course or the alert is acknowledged or closed. The engine
    (``bot.services.paging``) claims due rows (``FOR UPDATE SKIP LOCKED`` on PostgreSQL; on
    SQLite every transaction is the single writer), fires the step and moves the row on, in
    one transaction: two processes never fire a step twice, and a restart finds the timers."""

    __tablename__ = "alert_escalation"
    __table_args__ = (Index("ix_alert_escalation_due", "due_at"),)

    alert_id: Mapped[int] = mapped_column(ForeignKey("alert.id", ondelete="CASCADE"), primary_key=True)
    policy_id: Mapped[int] = mapped_column(ForeignKey("escalation_policy.id", ondelete="CASCADE"), index=True)
    #: The position of the next step to fire, in round ``repeat_round`` (0: the first run).
    step: Mapped[int] = mapped_column(Integer)
    repeat_round: Mapped[int] = mapped_column(Integer)
    #: Step delays count from here: the alert's creation, then each repeat's start.
    round_started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Page(Base):
    """One notification of one person (or the team's channel) for an alert, by one step of its
    escalation: who, how (``channel``: slack_dm, slack_channel), where (``target``: the Slack
    user or channel id), and what became of it — queued, sent, failed, skipped (the person has
    no Slack link or is deactivated, or nobody was on call), cancelled (the alert was
    acknowledged or closed before it went out) — with the reason. A person paged for an alert
    may act on it (``bot.services.access``)."""

    __tablename__ = "page"
    __table_args__ = (
        Index("ix_page_alert_user", "alert_id", "user_id"),
        Index(
            "ix_page_waiting_due",
            "due_at",
            sqlite_where=text("status = 'waiting'"),
            postgresql_where=text("status = 'waiting'"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    alert_id: Mapped[int] = mapped_column(ForeignKey("alert.id", ondelete="CASCADE"))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"), index=True)
    step: Mapped[int] = mapped_column(Integer)
    repeat_round: Mapped[int] = mapped_column(Integer)
    channel: Mapped[str] = mapped_column(String(20))
    target: Mapped[str | None] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(10))
    reason: Mapped[str | None] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    settled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: Where Slack put the page once sent (a DM's channel is ``D…``): updated when the alert is
    #: acknowledged or closed, so its buttons match.
    slack_channel: Mapped[str | None] = mapped_column(String(32))
    slack_ts: Mapped[str | None] = mapped_column(String(32))
    #: A page that waits (status ``waiting``: a rule's delay, or an e-mail/webhook retry) is due
    #: then; the rule it follows (``notification_rule``), and the channel worker's lease on it.
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: No foreign key (SQLite cannot add one to ``page`` without a rebuild): a removed rule is
    #: read as "no longer exists" by the sender.
    rule_id: Mapped[int | None] = mapped_column(Integer)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(String(300))


class NotificationRule(Base):
    """How a person wants to be paged (issue 15, item 3): one channel (``slack_dm``, ``email``,
    ``webhook``) after ``delay_minutes`` from the step. A person with none is paged by Slack DM
    at once. A webhook rule holds its URL and the signing secret Genie generated (shown once)."""

    __tablename__ = "notification_rule"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"), index=True)
    channel: Mapped[str] = mapped_column(String(20))
    delay_minutes: Mapped[int] = mapped_column(Integer)
    webhook_url: Mapped[str | None] = mapped_column(String(2000))
    webhook_secret: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


# --- Slack installations (multi-workspace OAuth) ---------------------------------------------
# slack-sdk's own tables, defined by slack-sdk and used through its Async SQLAlchemy stores on
# Genie's engine; declared here so that Alembic creates and upgrades them with ours.
from slack_sdk.oauth.installation_store.sqlalchemy import SQLAlchemyInstallationStore  # noqa: E402
from slack_sdk.oauth.state_store.sqlalchemy import SQLAlchemyOAuthStateStore  # noqa: E402

SLACK_INSTALLATIONS = SQLAlchemyInstallationStore.build_installations_table(Base.metadata, "slack_installations")
SLACK_BOTS = SQLAlchemyInstallationStore.build_bots_table(Base.metadata, "slack_bots")
SLACK_OAUTH_STATES = SQLAlchemyOAuthStateStore.build_oauth_states_table(Base.metadata, "slack_oauth_states")
