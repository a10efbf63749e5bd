"""Hand-written mutants of the trust core (issue 13): each is one plausible fault — a guard
removed or loosened — and the fast tests that must notice it. ``run.py`` applies them one at a
time to a copy of the repository; a mutant whose tests still pass *survived*.

``old`` must occur exactly once in ``path`` (a mutant whose text has moved is reported as
stale, never silently skipped). ``tests`` are pytest arguments, most telling first (``-x``
stops at the first failure)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mutant:
    id: str
    area: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]
    what: str
    #: Also on PostgreSQL (GENIE_TEST_POSTGRES_URL kept): for faults only a real race shows —
    #: SQLite runs one transaction at a time.
    postgres: bool = False


GATE = "tests/test_alert_gate.py"
NON_MEMBER = "tests/test_alert_gate.py::test_linked_non_member_is_told_which_team_and_whom_to_ask"
KEY_READS = (
    "tests/test_trust_guards.py::test_a_key_cannot_read_or_act_on_another_teams_alert_by_any_identifier",
    "tests/test_alert_api.py::test_another_teams_key_cannot_see_or_touch_the_alert",
)
GRANT = ("tests/test_alert_api.py::test_a_posting_grant_lets_a_key_post_and_nothing_more",)
PEOPLE = (
    "tests/test_alert_api.py::test_a_key_learns_nothing_about_other_teams_people",
    "tests/test_alert_api.py::test_assign_only_to_active_members_of_the_owning_team",
)
LINK = "tests/test_link_bad_input.py"
WEB = "tests/test_web_security.py"
GUARDS = "tests/test_trust_guards.py"
FORGED = f"{WEB}::test_every_post_route_refuses_a_forged_request_and_changes_nothing"
SIGN_IN = f"{LINK}::test_sign_in_issues_a_new_session_and_deactivated_users_cannot"
BOLT = f"{GUARDS}::test_bolt_refuses_a_well_formed_unsigned_click_on_its_own"
NEXT = f"{GUARDS}::test_sign_in_with_a_hostile_next_lands_on_a_local_page"
SYNC = "tests/test_slack_sync.py::test_every_auto_link_rule_as_the_report_the_links_and_slack_show_it"

MUTANTS = [
    # --- the gate (bot/services/access.py) ---------------------------------------------------
    Mutant(
        "G1",
        "gate",
        "bot/services/access.py",
        "    if not user.is_active:\n        return Decision(",
        "    if False:\n        return Decision(",
        ("tests/test_alert_gate.py::test_deactivated_account_is_refused_and_offered_disconnect",),
        "a deactivated person's link still acts",
    ),
    Mutant(
        "G2",
        "gate",
        "bot/services/access.py",
        "    if alert.owner_user_id == user.id:",
        "    if alert.owner_user_id == user.id or alert.owner_user_id is None:",
        (NON_MEMBER,),
        "anyone may act on an unassigned alert",
    ),
    Mutant(
        "G3",
        "gate",
        "bot/services/access.py",
        "    if team is not None and facts.is_member:",
        "    if team is not None:",
        (NON_MEMBER,),
        "membership not required",
    ),
    Mutant(
        "G4",
        "gate",
        "bot/services/access.py",
        "        if facts.allow_anonymous:",
        "        if True:",
        ("tests/test_alert_gate.py::test_unlinked_person_is_refused_with_a_connect_button_that_works",),
        "anonymous actions always allowed",
    ),
    Mutant(
        "G5",
        "gate",
        "bot/services/access.py",
        "is_member = exists().where(TeamMember.team_id == Alert.team_id, TeamMember.user_id == User.id)",
        "is_member = exists().where(TeamMember.user_id == User.id)",
        (NON_MEMBER,),
        "a member of any team counts as a member of the alert's team",
    ),
    Mutant(
        "G6",
        "gate",
        "bot/services/access.py",
        "and_(SlackLink.workspace_id == identity.workspace_id, SlackLink.slack_user_id == identity.user_id)",
        "SlackLink.slack_user_id == identity.user_id",
        (
            "tests/test_trust_guards.py::test_a_linked_slack_user_id_from_another_workspace_or_org_is_not_the_linked_person",
            GATE,
        ),
        "a Slack user id from another workspace is taken for the linked one",
    ),
    Mutant(
        "G7",
        "gate",
        "bot/services/access.py",
        "    if user.is_admin:\n        return Decision(True, Reason.ADMIN",
        "    if True:\n        return Decision(True, Reason.ADMIN",
        (NON_MEMBER,),
        "everyone linked is an admin",
    ),
    # --- API keys (bot/services/access.py, alerts.py, alert_api.py) ---------------------------
    Mutant(
        "K1",
        "keys",
        "bot/services/access.py",
        "        return {team.id, *granted}\n    return {team.id}",
        "        return {team.id, *granted}\n    return await key_teams(session, team, KeyUse.POST)",
        GRANT,
        "a posting grant reads and acts",
    ),
    Mutant(
        "K2",
        "keys",
        "bot/services/access.py",
        "    return select(TeamMember.user_id).where(TeamMember.team_id == team_id)",
        "    return select(TeamMember.user_id)",
        PEOPLE,
        "a key names people of every team",
    ),
    Mutant(
        "K3",
        "keys",
        "bot/services/external_accounts.py",
        "    visible = None if among is None else set(await session.scalars(among))",
        "    visible = None",
        PEOPLE,
        "name lookups ignore the team",
    ),
    Mutant(
        "K4",
        "keys",
        "bot/services/alert_people.py",
        "    if person is not None and among is not None and person.id not in set(await session.scalars(among)):",
        "    if False:",
        PEOPLE,
        "Genie user ids name people of other teams",
    ),
    Mutant(
        "K5",
        "keys",
        "bot/web/alert_api.py",
        "    if user is not None and user.id not in members:\n",
        "    if False:\n",
        PEOPLE,
        "assign errors name other teams' people",
    ),
    Mutant(
        "K6",
        "keys",
        "bot/services/alerts.py",
        "    if team_ids is not None:\n        query = query.where(Alert.team_id.in_(team_ids))",
        "    if False:\n        query = query.where(Alert.team_id.in_(team_ids))",
        KEY_READS,
        "any key finds any alert",
    ),
    Mutant(
        "K7",
        "keys",
        "bot/services/alerts.py",
        "select(ApiRequest).where(ApiRequest.request_id == request_id, ApiRequest.team_id == team_id)",
        "select(ApiRequest).where(ApiRequest.request_id == request_id)",
        ("tests/test_alert_api.py::test_request_status_is_per_key_and_unknown_is_404",),
        "any key reads any request's status",
    ),
    Mutant(
        "K8",
        "keys",
        "bot/services/alerts.py",
        "    if row is None or not hmac.compare_digest(row.key.encode(), presented.encode()):",
        "    if row is None:",
        KEY_READS + ("tests/test_alert_api.py::test_genie_team_key_prints_a_working_key_and_rotate_replaces_it",),
        "the key itself is not compared after its hash matched",
    ),
    Mutant(
        "K9",
        "keys",
        "bot/services/alerts.py",
        "        if team is None or team.id not in allowed:",
        "        if team is None:",
        ("tests/test_alert_api.py::test_responders_choose_the_owning_team_within_the_keys_grants",),
        "a key posts for any team",
    ),
    Mutant(
        "K10",
        "keys",
        "bot/web/alert_api.py",
        '    if scheme.lower() != "geniekey" or not key or len(key) > 200 or not storable(key):',
        "    if not key or len(key) > 200 or not storable(key):",
        ("tests/test_alert_api.py::test_malformed_requests_get_the_opsgenie_envelope_and_change_nothing",),
        "any Authorization scheme carries a key",
    ),
    # --- linking (bot/services/slack_links.py) --------------------------
    Mutant(
        "L1",
        "linking",
        "bot/services/slack_links.py",
        "    if link is None or link.user_id != user.id:\n        return None\n    await session.delete(link)",
        "    if link is None:\n        return None\n    await session.delete(link)",
        (f"{GUARDS}::test_a_person_cannot_disconnect_another_persons_slack_link",),
        "a person disconnects another person's link",
    ),
    Mutant(
        "L2",
        "linking",
        "bot/services/slack_links.py",
        "            LinkRequest.superseded_at.is_(None),\n            LinkRequest.expires_at > now,",
        "            LinkRequest.superseded_at.is_(None),",
        (f"{LINK}::test_expired_token_signature_and_row",),
        "an expired link request can be used",
    ),
    Mutant(
        "L3",
        "linking",
        "bot/services/slack_links.py",
        "            LinkRequest.consumed_at.is_(None),\n            LinkRequest.superseded_at.is_(None),\n"
        "            LinkRequest.expires_at > now,",
        "            LinkRequest.superseded_at.is_(None),\n            LinkRequest.expires_at > now,",
        (f"{LINK}::test_concurrent_confirms_of_one_link_link_once",),
        "a used link can be replayed (two confirms racing)",
        postgres=True,
    ),
    Mutant(
        "L4",
        "linking",
        "bot/services/slack_links.py",
        "            LinkRequest.superseded_at.is_(None),\n            LinkRequest.expires_at > now,",
        "            LinkRequest.expires_at > now,",
        (f"{LINK}::test_superseded_link_stops_working",),
        "a superseded link request can be used",
    ),
    Mutant(
        "L5",
        "linking",
        "bot/services/slack_links.py",
        "    if planned.needs_replace and not replace:",
        "    if False:",
        (f"{LINK}::test_identity_linked_to_someone_else_offers_to_move_it",),
        "a link silently moves a Slack identity from another person",
    ),
    # --- CSRF and sessions (bot/web/pages.py, bot/services/users.py) --------
    Mutant(
        "C1",
        "csrf",
        "bot/web/pages.py",
        '        if origin.rstrip("/") != f"{base.scheme}://{base.netloc}":',
        "        if False:",
        (FORGED,),
        "a form from another origin is accepted",
    ),
    Mutant(
        "C2",
        "csrf",
        "bot/web/pages.py",
        "    if not hmac.compare_digest(signed.encode(), _csrf_value(cookie, request).encode()):\n        return None",
        "    if False:\n        return None",
        (FORGED, f"{LINK}::test_posts_without_valid_csrf_are_refused"),
        "the CSRF token is not compared with the cookie",
    ),
    Mutant(
        "C3",
        "csrf",
        "bot/web/pages.py",
        "    try:\n        signed = rt.csrf.unsign(token.encode(), max_age=CSRF_MAX_AGE).decode()\n"
        "    except (BadSignature, UnicodeDecodeError):  # SignatureExpired is a BadSignature\n        return None",
        "    try:\n        signed = rt.csrf.unsign(token.encode(), max_age=CSRF_MAX_AGE).decode()\n"
        "    except (BadSignature, UnicodeDecodeError):  # SignatureExpired is a BadSignature\n        signed = token",
        (
            FORGED,
            f"{LINK}::test_posts_without_valid_csrf_are_refused",
            f"{GUARDS}::test_a_csrf_token_must_be_signed_by_genie_not_just_equal_to_the_cookie",
        ),
        "an unsigned CSRF token is taken as it is",
    ),
    Mutant(
        "C4",
        "sessions",
        "bot/services/users.py",
        ".where(WebSession.token_hash == token_hash, WebSession.expires_at > now, User.is_active.is_(True))",
        ".where(WebSession.token_hash == token_hash, User.is_active.is_(True))",
        (f"{WEB}::test_an_expired_session_is_no_session",),
        "expired sessions live on",
    ),
    Mutant(
        "C5",
        "sessions",
        "bot/services/users.py",
        ".where(WebSession.token_hash == token_hash, WebSession.expires_at > now, User.is_active.is_(True))",
        ".where(WebSession.token_hash == token_hash, WebSession.expires_at > now)",
        (SIGN_IN,),
        "a deactivated person's session lives on",
    ),
    Mutant(
        "C6",
        "sessions",
        "bot/web/pages.py",
        '    if target and target.startswith("/") and not target.startswith("//") and "\\\\" not in target:',
        "    if target:",
        (NEXT,),
        "sign-in redirects anywhere",
    ),
    Mutant(
        "C7",
        "sessions",
        "bot/web/pages.py",
        '    if target and target.startswith("/") and not target.startswith("//") and "\\\\" not in target:',
        '    if target and target.startswith("/") and not target.startswith("//"):',
        (NEXT,),
        "sign-in redirects to /\\evil.example (a browser goes off-site)",
    ),
    Mutant(
        "C8",
        "sessions",
        "bot/services/users.py",
        # Both reads of the person in the web's sign_in (before argon2, and again after it):
        # either alone refuses a deactivated person, so the fault is removing both.
        '        user_id, stored = (user.id, user.password_hash) if user is not None and user.is_active else (None, None)\n        attempt = SigninFailure(account=account, address=address, at=now, pending=True)\n        session.add(attempt)\n        await session.flush()\n        attempt_id = attempt.id\n    # argon2 is deliberately slow (~0.1 s): off the event loop and outside any transaction.\n    ok = await asyncio.to_thread(_verify, stored, password) and user_id is not None\n    rehashed = None\n    if ok and _hasher.check_needs_rehash(stored or ""):\n        rehashed = await asyncio.to_thread(_hasher.hash, password)\n    async with sessionmaker.begin() as session:\n        user = await session.get(User, user_id) if ok else None\n        if user is None or not user.is_active or user.password_hash != stored:',
        '        user_id, stored = (user.id, user.password_hash) if user is not None else (None, None)\n        attempt = SigninFailure(account=account, address=address, at=now, pending=True)\n        session.add(attempt)\n        await session.flush()\n        attempt_id = attempt.id\n    # argon2 is deliberately slow (~0.1 s): off the event loop and outside any transaction.\n    ok = await asyncio.to_thread(_verify, stored, password) and user_id is not None\n    rehashed = None\n    if ok and _hasher.check_needs_rehash(stored or ""):\n        rehashed = await asyncio.to_thread(_hasher.hash, password)\n    async with sessionmaker.begin() as session:\n        user = await session.get(User, user_id) if ok else None\n        if user is None or user.password_hash != stored:',
        (SIGN_IN,),
        "a deactivated person signs in",
    ),
    # --- Slack signatures (bot/slack/screening.py, bot/server.py) --------------------------
    Mutant(
        "S1",
        "signatures",
        "bot/slack/screening.py",
        "    if not signed:\n        return 401",
        "    if False:\n        return 401",
        (BOLT, f"{LINK}::test_unsigned_wrongly_signed_and_stale_slack_requests_get_401"),
        "Genie's screen lets unsigned requests through",
    ),
    Mutant(
        "S2",
        "signatures",
        "bot/server.py",
        "        request_verification_enabled=not rt.settings.socket_mode,",
        "        request_verification_enabled=False,",
        (BOLT,),
        "Bolt's own verification is off",
    ),
    # --- auto-link by email (bot/services/external_accounts.py) -------------------------------------
    Mutant(
        "A1",
        "auto-link",
        "bot/services/external_accounts.py",
        'EMAIL_TRUSTED_PROVIDERS = frozenset({"slack", "pagerduty", "opsgenie"})',
        'EMAIL_TRUSTED_PROVIDERS = frozenset({"slack", "pagerduty", "opsgenie", "github", "jira", "sentry", "gitlab"})',
        (f"{GUARDS}::test_emails_of_tools_that_do_not_vouch_for_them_never_auto_link",),
        "GitHub/Jira/Sentry emails auto-link",
    ),
    Mutant(
        "A2",
        "auto-link",
        "bot/services/external_accounts.py",
        "    if not account.email_verified:\n        return",
        "    if False:\n        return",
        (SYNC,),
        "unconfirmed emails auto-link",
    ),
    Mutant(
        "A3",
        "auto-link",
        "bot/services/external_accounts.py",
        "    if account.is_external:\n        return",
        "    if False:\n        return",
        (SYNC,),
        "Slack Connect (external) users auto-link",
    ),
    Mutant(
        "A4",
        "auto-link",
        "bot/services/external_accounts.py",
        "    if account.is_guest:\n        return",
        "    if False:\n        return",
        (SYNC,),
        "guests auto-link",
    ),
    Mutant(
        "A5",
        "auto-link",
        "bot/services/external_accounts.py",
        "    if not allowed:\n        return AutoLinkResult",
        "    if False:\n        return AutoLinkResult",
        (
            "tests/test_slack_sync.py::test_pages_through_the_whole_directory_and_records_everyone_without_linking_when_off",
            "tests/test_slack_sync.py::test_events_record_but_never_link_where_auto_link_is_off_or_the_user_is_not_eligible",
        ),
        "auto-link ignores the workspace setting",
    ),
    Mutant(
        "A6",
        "auto-link",
        "bot/services/external_accounts.py",
        "    if len(people) > 1:\n        emails",
        "    if False:\n        emails",
        (SYNC,),
        "an email shared by two people links one of them",
    ),
    Mutant(
        "A7",
        "auto-link",
        "bot/services/external_accounts.py",
        "    if await _person_has_other(session, account, person):",
        "    if False:",
        (SYNC,),
        "a person gets a second account of the same tool automatically",
    ),
    Mutant(
        "A8",
        "auto-link",
        "bot/services/external_accounts.py",
        "    if account.is_bot:\n        return",
        "    if False:\n        return",
        (SYNC,),
        "bots auto-link",
    ),
    # The web side's read rule, the gate's "paged" rule, Sign in with Slack and the alert page's
    # forms (issues 15 and 17).
    Mutant(
        "W1",
        "web access",
        "bot/services/access.py",
        "    if user.is_admin and user.is_active:\n        return None",
        "    if user.is_active:\n        return None",
        (
            "tests/test_alert_pages.py::test_list_shows_each_person_their_teams_alerts_and_filters_say_what_is_wrong",
            "tests/test_reports.py::test_report_figures_are_computed_per_team_and_person_with_access_rules",
        ),
        "every active person sees every team's alerts on the web",
    ),
    Mutant(
        "W2",
        "web access",
        "bot/services/access.py",
        "    return true() if teams is None else column.in_(teams)",
        "    return true()",
        (
            "tests/test_alert_pages.py::test_list_shows_each_person_their_teams_alerts_and_filters_say_what_is_wrong",
            "tests/test_reports.py::test_report_figures_are_computed_per_team_and_person_with_access_rules",
        ),
        "the web's alert filter lets every row through",
    ),
    Mutant(
        "W3",
        "csrf",
        "bot/web/alert_pages.py",
        "async def alert_act(request: Request) -> Response:\n    form = await read_form(request)\n",
        "async def alert_act(request: Request) -> Response:\n    form = await request.form()\n",
        ("tests/test_alert_pages.py::test_alert_page_actions_go_through_the_gate_and_the_timeline_says_who", FORGED),
        "the alert page's actions skip the CSRF check",
    ),
    Mutant(
        "P1",
        "gate",
        "bot/services/access.py",
        "    if facts.paged_step is not None:  # the escalation paged them",
        "    if facts.paged_step is not None and facts.is_member:  # the escalation paged them",
        (
            "tests/test_paging.py::test_the_on_call_person_is_paged_then_the_next_step_and_the_paged_person_acks_from_the_dm",
        ),
        "a paged person who is not (now) a member is refused",
    ),
    Mutant(
        "O1",
        "slack sign-in",
        "bot/services/slack_signin.py",
        "    if not email or not claims.email_verified:",
        "    if not email:",
        ("tests/test_slack_signin.py::test_refusals_change_nothing_and_say_why",),
        "Sign in with Slack trusts an email Slack did not confirm",
    ),
    Mutant(
        "O2",
        "slack sign-in",
        "bot/services/slack_signin.py",
        "        if user.email != email:\n            raise SlackSignInRefused(",
        "        if False:\n            raise SlackSignInRefused(",
        ("tests/test_slack_signin.py::test_refusals_change_nothing_and_say_why",),
        "a linked Slack account signs in whatever email Slack reports",
    ),
]
