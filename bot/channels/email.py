"""E-mail through the SMTP server of ``GENIE_SMTP_*`` (``aiosmtplib``).

A page's e-mail says what the alert is — summary, priority, team, step — and links to its web
page (``/alerts/{id}``), which asks the reader to sign in: nothing in it acts without signing
in. It goes only to the person's Genie address while it is the one they verified
(``notification_rules.email_verified``, checked by the worker at send time). The verification
e-mail carries nothing about any alert: only the link that proves the reader reads the address.
"""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import formatdate, make_msgid

import aiosmtplib

from bot.channels.errors import Permanent, Temporary
from bot.config import Settings

TIMEOUT = 15.0


def _one_line(value: str | None, limit: int = 200) -> str:
    return " ".join((value or "").split())[:limit]


def page_email(
    settings: Settings, *, alert, team_name: str | None, step_label: str, why: str | None
) -> tuple[str, str]:
    """``(subject, body)`` of a page, plain text."""
    summary = _one_line(alert.message, 130)
    team = f" ({_one_line(team_name, 100)})" if team_name else ""
    subject = f"[Genie {alert.priority}] Alert #{alert.id}{team}: {summary}"
    lines = [
        f"You are paged for alert #{alert.id}" + (f", {_one_line(why)}" if why else "") + f" - {step_label}.",
        "",
        f"Summary:  {summary}",
        f"Priority: {alert.priority}",
        f"Team:     {_one_line(team_name, 100) or '-'}",
        f"Status:   {alert.status}" + (", acknowledged" if alert.acknowledged else ""),
        "",
        f"Open it (sign in to act): {settings.base_url}/alerts/{alert.id}",
        "",
        "Acknowledge it in Slack or on that page to stop the escalation.",
        f"You get this e-mail because of your notification rules: change them on {settings.base_url}/account",
    ]
    return subject, "\n".join(lines) + "\n"


def verification_email(settings: Settings, link: str) -> tuple[str, str]:
    return (
        "Genie: confirm your e-mail address for alerts",
        "Someone asked Genie to send alert e-mails to this address.\n\n"
        f"If it was you, open this link while signed in to Genie and confirm:\n{link}\n\n"
        "If it was not you, ignore this e-mail: nothing will be sent here.\n",
    )


async def send(settings: Settings, to: str, subject: str, body: str) -> None:
    """Send one plain-text e-mail; ``Temporary`` (retry: unreachable, 4xx, timeout) or
    ``Permanent`` (not configured, 5xx refusal) on failure. The password is never in the error."""
    if not settings.smtp_host or not settings.smtp_from:
        raise Permanent("e-mail is not configured on this Genie (GENIE_SMTP_HOST)")
    message = EmailMessage()
    message["From"] = settings.smtp_from
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(domain="genie")
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(body)
    try:
        await aiosmtplib.send(
            message,
            hostname=settings.smtp_host,
            port=settings.smtp_port,
            username=settings.smtp_user,
            password=settings.smtp_password,
            start_tls=settings.smtp_starttls,
            use_tls=False,
            timeout=TIMEOUT,
        )
    except aiosmtplib.SMTPRecipientsRefused as err:
        codes = [r.code for r in err.recipients]
        if codes and all(400 <= c < 500 for c in codes):
            raise Temporary(f"the SMTP server deferred the recipient ({codes[0]})") from None
        raise Permanent(f"the SMTP server refused the recipient ({codes[0] if codes else '?'})") from None
    except aiosmtplib.SMTPResponseException as err:
        if 400 <= err.code < 500:
            raise Temporary(f"the SMTP server answered {err.code}") from None
        raise Permanent(f"the SMTP server answered {err.code}") from None
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as err:
        raise Temporary(
            f"SMTP server {settings.smtp_host}:{settings.smtp_port} unreachable ({type(err).__name__})"
        ) from None
