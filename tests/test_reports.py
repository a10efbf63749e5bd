"""Reports (issue 17): MTTA / MTTR percentiles, load per person, out-of-hours, noisy aliases,
linking health with a reminder through the outbox, SVG charts and CSV exports — each under
the same access rule as the alert pages (a person their teams', an admin all, no team none)."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from bot.services import alerts, teams, users
from bot.services.alerts import Actor, CreateAlert
from bot.services.slack_links import SlackIdentity
from tests.conftest import eventually, page_text
from tests.fake_slack import TEAM_ID
from tests.test_alert_pages import signed_in, world  # noqa: F401  (the fixture)

# Wednesday 2026-11-18, 10:00 UTC (working hours); the report period is that week.
BASE = datetime(2026, 11, 18, 10, 0, tzinfo=UTC)
WEEK = "from=2026-11-16&to=2026-11-22"


async def _seed(genie) -> None:
    """Payments: three alerts acknowledged by Alice after 1, 2 and 10 minutes, two closed after
    1 and 3 hours; one fired at 03:00 (out of hours); an alias that fired twice. Search: one
    alert, acknowledged by Mallory after 30 s. A refused click by an unlinked Slack user, and
    an anonymous action."""
    async with genie.sessionmaker.begin() as s:
        pay = await teams.require_team(s, "Payments")
        search = await teams.require_team(s, "Search")
        alice = await users.require_user(s, "alice@example.com")
        mallory = await users.require_user(s, "mallory@example.com")
        for i, (minutes, hour, closed_after) in enumerate([(1, 10, 1), (2, 11, 3), (10, 3, None)]):
            at = BASE.replace(hour=hour)
            alert, _ = await alerts.create_alert(
                s,
                pay,
                CreateAlert(
                    message=f"Checkout {i}", alias="checkout-5xx" if i < 2 else f"disk-{i}", source="prometheus"
                ),
                str(uuid.uuid4()),
                now=at,
            )
            await alerts.acknowledge(s, alert, Actor(via="api", user=alice), now=at + timedelta(minutes=minutes))
            if closed_after:  # closed before the same alias fires again (else it de-duplicates)
                await alerts.close(s, alert, Actor(via="api", user=alice), now=at + timedelta(hours=closed_after))
        again, _ = await alerts.create_alert(
            s,
            pay,
            CreateAlert(message="Checkout again", alias="checkout-5xx", source="prometheus"),
            str(uuid.uuid4()),
            now=BASE + timedelta(hours=5),
        )
        await alerts.record(
            s,
            again,
            "acknowledge",
            "denied",
            Actor(via="slack", identity=SlackIdentity(TEAM_ID, "U0STRANGER")),
            reason="Slack account not linked",
            now=BASE + timedelta(hours=5, minutes=1),
        )
        await alerts.record(
            s,
            again,
            "note",
            "applied",
            Actor(via="slack", identity=SlackIdentity(TEAM_ID, "U0ANON"), anonymous=True),
            now=BASE + timedelta(hours=5, minutes=2),
        )
        other, _ = await alerts.create_alert(
            s, search, CreateAlert(message="Search index stale", source="cron"), str(uuid.uuid4()), now=BASE
        )
        await alerts.acknowledge(s, other, Actor(via="api", user=mallory), now=BASE + timedelta(seconds=30))


def _csv(response) -> list[dict]:
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    return list(csv.DictReader(io.StringIO(response.text)))


async def test_report_figures_are_computed_per_team_and_person_with_access_rules(world):
    genie = world
    await _seed(genie)
    alice = await signed_in(genie, "alice@example.com")
    page = await alice.get(f"/reports?{WEEK}")
    assert page.status_code == 200
    text = page_text(page)
    assert "Payments" in text and "Search" not in text and "Mallory" not in text
    assert '<svg class="chart" id="chart-days"' in page.text and "<title" in page.text

    teams = {r["team"]: r for r in _csv(await alice.get(f"/reports.csv?table=teams&{WEEK}"))}
    assert set(teams) == {"Payments", "All teams shown"}
    pay = teams["Payments"]
    assert (pay["alerts"], pay["acknowledged"], pay["closed"]) == ("4", "3", "2")
    assert (pay["mtta_median_s"], pay["mtta_p90_s"]) == ("120", "600")  # nearest rank of 60, 120, 600
    assert (pay["mttr_median_s"], pay["mttr_p90_s"]) == ("3600", "10800")
    assert pay["out_of_hours"] == "1" and pay["anonymous_actions"] == "1"
    people = _csv(await alice.get(f"/reports.csv?table=people&{WEEK}"))
    assert [(p["person"], p["acknowledged"], p["closed"]) for p in people] == [("Alice Smith", "3", "2")]
    assert people[0]["mtta_median_s"] == "120" and people[0]["out_of_hours_actions"] == "1"
    aliases = _csv(await alice.get(f"/reports.csv?table=aliases&{WEEK}"))
    assert (aliases[0]["alias"], aliases[0]["alerts"]) == ("checkout-5xx", "3")
    days = _csv(await alice.get(f"/reports.csv?table=days&{WEEK}"))
    assert len(days) == 7 and {"day": "2026-11-18", "alerts": "4"} in days

    # another team's data is in no export: her team filter naming Search shows nothing of it
    search = _csv(await alice.get(f"/reports.csv?table=teams&{WEEK}&team=Search"))
    assert [r["team"] for r in search] == ["All teams shown"] and search[0]["alerts"] == "0"
    for table in ("unlinked", "workspaces", "unconnected"):  # linking health: admins only
        assert (await alice.get(f"/reports.csv?table={table}&{WEEK}")).status_code == 403
    assert "Linking health" not in text

    mallory = await signed_in(genie, "mallory@example.com")
    rows = {r["team"]: r for r in _csv(await mallory.get(f"/reports.csv?table=teams&{WEEK}"))}
    assert set(rows) == {"Search", "All teams shown"} and rows["Search"]["mtta_median_s"] == "30"
    assert "Alice" not in (await mallory.get(f"/reports.csv?table=people&{WEEK}")).text

    nora = await signed_in(genie, "nora@example.com")
    rows = _csv(await nora.get(f"/reports.csv?table=teams&{WEEK}"))
    assert rows == [{**rows[0], "team": "All teams shown", "alerts": "0"}]
    assert "Checkout" not in (await nora.get(f"/reports?{WEEK}")).text

    admin = await signed_in(genie, "root@example.com")
    rows = {r["team"]: r for r in _csv(await admin.get(f"/reports.csv?table=teams&{WEEK}"))}
    assert rows["All teams shown"]["alerts"] == "5" and rows["All teams shown"]["mtta_median_s"] == "60"

    # bad input: a page that says what is wrong, never a 500
    for query, says in [
        ("from=2026-11-22&to=2026-11-16", "ends"),
        ("from=last-week", "must be a date"),
        ("from=2020-01-01&to=2026-11-16", "at most"),
        ("team=Pay%00", "not a team"),
    ]:
        r = await admin.get(f"/reports?{query}")
        assert r.status_code == 400 and says in page_text(r), query
    assert (await admin.get(f"/reports.csv?table=nope&{WEEK}")).status_code == 400
    assert (await admin.get(f"/reports.csv?table=te%00ams&{WEEK}")).status_code == 400
    assert (await genie.http.get("/reports.csv?table=teams")).status_code == 303  # signed out


async def test_linking_health_and_a_reminder_through_the_outbox(world):
    genie = world
    await _seed(genie)
    admin = await signed_in(genie, "root@example.com")
    page = await admin.get(f"/reports?{WEEK}")
    text = page_text(page)
    assert "Linking health" in text and "U0STRANGER" in text
    unlinked = _csv(await admin.get(f"/reports.csv?table=unlinked&{WEEK}"))
    assert [(r["slack_user"], r["refused_clicks"]) for r in unlinked] == [("U0STRANGER", "1")]
    workspaces = _csv(await admin.get(f"/reports.csv?table=workspaces&{WEEK}"))
    assert [(w["workspace"], w["links"]) for w in workspaces] == [(TEAM_ID, "1")]

    # a member may not send reminders; a forged form is refused
    alice = await signed_in(genie, "alice@example.com")
    await alice.get("/alerts")
    r = await alice.post("/reports/remind", {"workspace": TEAM_ID, "slack_user": "U0STRANGER"})
    assert r.status_code == 403
    r = await admin.http.post("/reports/remind", data={"workspace": TEAM_ID, "slack_user": "U0STRANGER"})
    assert r.status_code == 403
    # only someone the report lists
    await admin.get(f"/reports?{WEEK}")
    r = await admin.post("/reports/remind", {"workspace": TEAM_ID, "slack_user": "U0ALICE"})
    assert r.status_code == 400 and "no reminder was sent" in page_text(r)
    assert await genie.scalar("SELECT count(*) FROM outbox WHERE channel = 'U0ALICE'") == 0

    r = await admin.post("/reports/remind", {"workspace": TEAM_ID, "slack_user": "U0STRANGER", "back": WEEK})
    assert r.status_code == 303 and "reminded=1" in r.headers["location"]
    sent = await eventually(lambda: _dm(genie, "U0STRANGER"))
    assert "/genie connect" in sent.args["text"] and "refused once" in sent.args["text"]

    # one reminder per Slack user a day: a second click says so and queues nothing
    await admin.get(f"/reports?{WEEK}")
    r = await admin.post("/reports/remind", {"workspace": TEAM_ID, "slack_user": "U0STRANGER", "back": WEEK})
    assert r.status_code == 400
    assert "already sent to this Slack user in the last 24 hours" in page_text(r) and "24 hours." in page_text(r)
    assert await genie.scalar("SELECT count(*) FROM outbox WHERE channel = 'U0STRANGER'") == 1


async def _dm(genie, user):
    return next(
        (
            c
            for c in genie.fake.calls("chat.postMessage")
            if c.args.get("channel") == user or "refused once" in (c.args.get("text") or "")
        ),
        None,
    )


def test_csv_cells_are_not_formulas():
    from bot.web.reports import _cell

    assert _cell('=HYPERLINK("x")') == '\'=HYPERLINK("x")'
    assert _cell("@sum") == "'@sum" and _cell("-12") == "-12" and _cell("checkout") == "checkout"


@pytest.mark.parametrize("seconds,shown", [(None, "—"), (45, "45 s"), (600, "10 min"), (5400, "1.5 h")])
def test_durations_read_as_people_say_them(seconds, shown):
    from bot.web.charts import duration

    assert duration(seconds) == shown
