"""The audit log: who changed which connected account (or ran which import), when, and how.

Every change to a connection goes through ``record`` in the same transaction as the change, so
the log and the data cannot disagree::

    await audit.record(session, Who.person(admin, via="web"), "account.connect",
                       subject=person, account=acct, detail="connected by hand")
"""

from __future__ import annotations

import getpass
import socket
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import AuditEvent, User

#: The actions on the log, and what they mean to a reader of ``genie audit``.
ACTIONS = {
    "account.connect": "an account was connected to a person",
    "account.move": "an account was moved from one person to another",
    "account.remove": "an account's connection was removed",
    "account.departed": "the provider reports the account deleted or deactivated; its link was removed",
    "import.run": "an import or directory sync ran",
}


@dataclass(frozen=True)
class Who:
    """The actor: a signed-in person (web, Slack), or a command/job (cli, sync, import)."""

    label: str
    via: str
    user_id: int | None = None

    @classmethod
    def person(cls, user: User, via: str) -> Who:
        return cls(label=user.email, via=via, user_id=user.id)

    @classmethod
    def cli(cls, what: str | None = None) -> Who:
        try:
            who = f"{getpass.getuser()}@{socket.gethostname()}"
        except Exception:  # no passwd entry in a container
            who = "unknown"
        return cls(label=f"{what or 'cli'} ({who})", via="cli")


async def record(
    session: AsyncSession,
    who: Who,
    action: str,
    *,
    subject: User | None = None,
    provider: str | None = None,
    tenant: str | None = None,
    external_id: str | None = None,
    detail: str | None = None,
    at: datetime | None = None,
) -> AuditEvent:
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}")
    event = AuditEvent(
        actor_user_id=who.user_id,
        actor=who.label[:200],
        via=who.via,
        action=action,
        subject_user_id=subject.id if subject is not None else None,
        subject_email=subject.email if subject is not None else None,
        provider=provider,
        tenant=tenant,
        external_id=external_id,
        detail=detail[:2000] if detail else None,
    )
    if at is not None:
        event.at = at
    session.add(event)
    return event


async def events(
    session: AsyncSession,
    *,
    limit: int = 100,
    subject_email: str | None = None,
    provider: str | None = None,
    action: str | None = None,
    before_id: int | None = None,
) -> list[AuditEvent]:
    """Newest first; ``before_id`` pages back (the events older than that one)."""
    query = select(AuditEvent)
    if before_id is not None:
        query = query.where(AuditEvent.id < before_id)
    if subject_email:
        query = query.where(AuditEvent.subject_email == subject_email.strip().lower())
    if provider:
        query = query.where(AuditEvent.provider == provider.strip().lower())
    if action:
        query = query.where(AuditEvent.action == action)
    return list(await session.scalars(query.order_by(AuditEvent.id.desc()).limit(limit)))
