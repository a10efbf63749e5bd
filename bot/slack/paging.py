"""Delivering a page (outbox kind ``page``, queued by ``bot.services.paging``): the outbox
worker's ``_send`` calls ``send_page`` for it. The DM is drawn from the alert as it is now
(``bot.blocks.paging``); an alert acknowledged or closed before its page went out is not paged
at all; a page already sent is redrawn when the alert is acknowledged or closed (payload
``{"page": id, "update": true}``), so its buttons match. What became of the page — sent, failed (and Slack's error), cancelled — is recorded on
its ``page`` row and the alert's timeline; a transient failure leaves it queued, and the
worker retries it like any message."""

from __future__ import annotations

from typing import Any

from slack_sdk.errors import SlackApiError

from bot.blocks.paging import page_message
from bot.services import paging
from bot.slack.render import current_view
from storage.base import utcnow
from storage.models import AlertStatus


async def _settle_page(worker: Any, page: Any, status: str, text: str, where: tuple[str, str] | None = None) -> None:
    """Record what became of the page (``paging.record_delivery``)."""
    async with worker.sessionmaker.begin() as session:
        await paging.record_delivery(session, page, status, text, utcnow(), where)


async def send_page(worker: Any, claim: Any) -> None:
    """Post the page to ``claim.channel`` (the person's Slack user id, or the team's channel)
    and settle the outbox message; Slack's errors propagate to the worker (retried, or failed
    for good), a permanent one recorded on the page first."""
    from bot.slack.delivery import EVENT_TYPE, Undeliverable, classify  # (that module calls this one)

    page_id = (claim.payload or {}).get("page")
    async with worker.sessionmaker() as session:
        page, person = await paging.page_and_person(session, page_id)
        found = await current_view(session, claim.alert_id) if claim.alert_id is not None else None
    if page is None or found is None:
        raise Undeliverable("the page or its alert no longer exists")
    alert, view = found
    whom = f"Slack DM to {person.name}" if person is not None else f"page of the channel {claim.channel}"
    text, blocks = page_message(
        view,
        step=page.step,
        repeat_round=page.repeat_round,
        why=page.reason,
        channel=page.channel == paging.SLACK_CHANNEL,
    )
    if (claim.payload or {}).get("update"):  # the alert was acknowledged or closed: redraw the page
        if page.slack_ts and page.slack_channel:
            claim.in_doubt = True
            await claim.client.chat_update(channel=page.slack_channel, ts=page.slack_ts, text=text, blocks=blocks)
        await worker._settle(claim)
        return
    if alert.status != AlertStatus.OPEN or alert.acknowledged:
        state = "closed" if alert.status != AlertStatus.OPEN else "acknowledged"
        await _settle_page(worker, page, paging.CANCELLED, f"{whom} not sent: the alert was {state} first")
        await worker._settle(claim)
        return
    # An earlier attempt may have posted the page before the process died (or Slack's answer was
    # lost): look for it, by the metadata every page carries, before posting it again.
    where = await _earlier_page(worker, claim) if claim.maybe_posted_since is not None else None
    if where is None:
        claim.in_doubt = True
        try:
            response = await claim.client.chat_postMessage(
                channel=claim.channel,
                text=text,
                blocks=blocks,
                metadata={"event_type": EVENT_TYPE, "event_payload": {"alert_id": alert.id, "outbox_id": claim.id}},
            )
        except SlackApiError as err:
            failure = classify(err)
            if failure is not None and failure.kind == "permanent":
                await _settle_page(worker, page, paging.FAILED, f"{whom} failed: Slack answered {failure.code}")
            raise
        where = (str(response.get("channel") or claim.channel), str(response.get("ts") or ""))
    await worker._settle(claim)
    await _settle_page(worker, page, paging.SENT, f"{whom} delivered", where=(where[0][:32], where[1][:32]))


async def _earlier_page(worker: Any, claim: Any) -> tuple[str, str] | None:
    """Where an earlier attempt posted this page, if Slack has it. A DM's history is read in the
    IM channel (``conversations.open``, then ``conversations.history``: ``im:history``)."""
    from bot.slack.delivery import classify  # (that module calls this one)

    channel = claim.channel
    if channel[:1] in ("U", "W"):
        try:
            opened = await claim.client.conversations_open(users=channel)
        except SlackApiError as err:
            failure = classify(err)
            if failure is None or failure.kind != "permanent":
                raise
            return None  # cannot look: post (a rare duplicate beats a lost page)
        channel = str((opened.get("channel") or {}).get("id") or channel)
    ts = await worker._earlier_post(claim, history_channel=channel)
    return (channel, ts) if ts is not None else None
