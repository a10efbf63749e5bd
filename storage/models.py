"""SQLAlchemy 2 typed models. Every lookup on a hot path has an index; the constraints
below are what make the identity rules of DESIGN.md §3 hold even under races."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
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

    slack_links: Mapped[list["SlackLink"]] = relationship(back_populates="user", passive_deletes=True)


class Team(Base):
    __tablename__ = "team"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    slack_channel_id: Mapped[str | None] = mapped_column(String(32))
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

    user: Mapped[User] = relationship(back_populates="slack_links")


class LinkRequest(Base):
    """One ``/genie connect``: the nonce inside a signed link token, made one-time by
    ``consumed_at`` (set by a single conditional UPDATE) and ``superseded_at``."""

    __tablename__ = "link_request"
    __table_args__ = (Index("ix_link_request_identity", "workspace_id", "slack_user_id"),)

    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(String(32))
    slack_user_id: Mapped[str] = mapped_column(String(32))
    slack_team_id: Mapped[str] = mapped_column(String(32))
    enterprise_id: Mapped[str | None] = mapped_column(String(32))
    workspace_name: Mapped[str | None] = mapped_column(String(200))
    slack_name: Mapped[str | None] = mapped_column(String(200))
    slack_email: Mapped[str | None] = mapped_column(String(254))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    consumed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    consumed_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"))
    superseded_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class WebSession(Base):
    """A signed-in browser. The cookie carries a random token; only its SHA-256 is stored,
    so a database dump cannot be replayed as cookies. Signing in always makes a new row
    (no session fixation); signing out deletes it."""

    __tablename__ = "web_session"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Setting(Base):
    """Deployment-wide key/value settings (e.g. the generated secret key)."""

    __tablename__ = "setting"

    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
