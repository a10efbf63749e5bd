"""``manifest.yml`` is the source of truth for Genie's Slack surface (DESIGN.md §2). These tests
keep it honest: it must be a manifest Slack accepts (Slack's published JSON Schema), send every
request to the one Bolt route, ask for exactly the scopes we documented, and declare exactly the
slash commands and events the real Bolt app listens to — so adding a listener without updating
the manifest (or the reverse) fails here rather than silently in a workspace.

No database and no network: the Bolt app is built from settings and inspected in-process."""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jsonschema
import pytest
import yaml
from slack_bolt.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse

from bot.config import Settings
from bot.ids import Action
from bot.runtime import Runtime
from bot.server import build_bolt_app, make_slack_client

REPO = Path(__file__).resolve().parents[1]
MANIFEST_PATH = REPO / "manifest.yml"
#: Slack's schema, vendored with its MIT licence and source (tests/reference/LICENSE.slack-manifest-schema).
SCHEMA_PATH = REPO / "tests/reference/slack-app-manifest.schema.1.0.0.json"

EVENTS_URL = "https://YOUR-HOST/slack/events"
OAUTH_REDIRECT_URL = "https://YOUR-HOST/slack/oauth_redirect"
#: DESIGN.md §2, "Slack surface". The history scopes let the outbox worker find a post it may
#: have made just before a crash (bot/slack/delivery.py) instead of posting it twice.
DOCUMENTED_BOT_SCOPES = {
    "commands",
    "chat:write",
    "im:write",
    # A page DM in flight at a crash is looked for in the DM's history (bot/slack/paging.py).
    "im:history",
    "users:read",
    "users:read.email",
    "channels:history",
    "groups:history",
    # On-call user groups (@payments-oncall), set at each hand-off (bot/slack/handoffs.py).
    "usergroups:read",
    "usergroups:write",
}


def test_oauth_mode_asks_for_the_manifests_scopes() -> None:
    from bot.slack.clients import BOT_SCOPES

    assert set(BOT_SCOPES) == DOCUMENTED_BOT_SCOPES


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def manifest() -> dict[str, Any]:
    assert MANIFEST_PATH.is_file(), f"{MANIFEST_PATH} is missing"
    data = yaml.safe_load(MANIFEST_PATH.read_text(encoding="utf-8"))
    assert isinstance(data, dict), "manifest.yml must be a YAML mapping"
    return data


def load_schema() -> dict[str, Any]:
    if not SCHEMA_PATH.is_file():
        pytest.fail(
            f"Slack's manifest schema is missing: expected it at {SCHEMA_PATH} "
            "(vendored in the repository). manifest.yml cannot be validated without it.",
            pytrace=False,
        )
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def bolt_app() -> AsyncApp:
    settings = Settings.from_env(
        {"SLACK_BOT_TOKEN": "xoxb-x", "SLACK_SIGNING_SECRET": "s" * 20, "GENIE_SECRET_KEY": "k" * 32}
    )
    rt = Runtime.create(settings, sessionmaker=None, secret_keys=("k" * 32,), slack=make_slack_client(settings))
    return build_bolt_app(rt)


# --------------------------------------------------------------------------- helpers


def _closure_values(fn: Callable[..., Any], _seen: set[int] | None = None) -> dict[str, Any]:
    """Free variables of ``fn`` and of the functions it closes over. slack_bolt keeps a listener's
    constraint (``command``, ``event_type``, ...) only in the closure of its matcher function."""
    seen = _seen if _seen is not None else set()
    if id(fn) in seen or not inspect.isfunction(fn):
        return {}
    seen.add(id(fn))
    found: dict[str, Any] = {}
    for name, value in inspect.getclosurevars(fn).nonlocals.items():
        if inspect.isfunction(value):
            found.update(_closure_values(value, seen))
        else:
            found[name] = value
    return found


def _registered(app: AsyncApp, kind: str) -> dict[str, Any]:
    """{constraint: listener} for every listener whose primary matcher was built by
    ``app.command`` (kind ``command``) or ``app.event`` with a type string (kind ``event_type``)."""
    listeners = app._async_listeners
    assert listeners, "the Bolt app registered no listeners at all"
    out: dict[str, Any] = {}
    for listener in listeners:
        assert listener.matchers, f"listener {listener!r} has no matchers"
        func = getattr(listener.matchers[0], "func", None)
        assert func is not None, (
            "cannot introspect slack_bolt's listener matchers (no .func); "
            "slack_bolt changed — update _registered() in this test"
        )
        values = _closure_values(func)
        if kind in values:
            value = values[kind]
            assert isinstance(value, str), f"{kind} registered as a pattern ({value!r}); the manifest needs exact names"
            out[value] = listener
    return out


def _command_request(command: str) -> AsyncBoltRequest:
    body = urlencode(
        {
            "command": command,
            "text": "help",
            "team_id": "T1",
            "user_id": "U1",
            "channel_id": "C1",
            "response_url": "https://example.invalid/r",
            "trigger_id": "t",
        }
    )
    return AsyncBoltRequest(body=body, headers={"content-type": "application/x-www-form-urlencoded"})


def _event_request(event_type: str) -> AsyncBoltRequest:
    body = json.dumps(
        {
            "type": "event_callback",
            "team_id": "T1",
            "api_app_id": "A1",
            "event_id": "Ev1",
            "event": {"type": event_type, "user": "U1", "tab": "home"},
        }
    )
    return AsyncBoltRequest(body=body, headers={"content-type": "application/json"})


def _action_request(action_id: str) -> AsyncBoltRequest:
    payload = {
        "type": "block_actions",
        "team": {"id": "T1"},
        "user": {"id": "U1"},
        "api_app_id": "A1",
        "actions": [{"type": "button", "action_id": action_id, "block_id": "b", "value": "v"}],
    }
    return AsyncBoltRequest(
        body=urlencode({"payload": json.dumps(payload)}), headers={"content-type": "application/x-www-form-urlencoded"}
    )


async def _listeners_matching(app: AsyncApp, request: AsyncBoltRequest) -> list[Any]:
    """The listeners whose primary matcher accepts ``request`` — Bolt's own routing test."""
    hits = []
    for listener in app._async_listeners:
        if await listener.matchers[0].async_matches(request, BoltResponse(status=200)):
            hits.append(listener)
    return hits


def _urls(node: Any, path: str = "") -> list[tuple[str, str]]:
    """Every (path, value) in the manifest whose key names a URL."""
    found: list[tuple[str, str]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            where = f"{path}.{key}" if path else str(key)
            if re.search(r"(^|_)(url|urls|uri)$", str(key)):
                for item in value if isinstance(value, list) else [value]:
                    found.append((where, item))
            else:
                found.extend(_urls(value, where))
    elif isinstance(node, list):
        for i, item in enumerate(node):
            found.extend(_urls(item, f"{path}[{i}]"))
    return found


# --------------------------------------------------------------------------- tests


def test_manifest_validates_against_slacks_schema(manifest: dict) -> None:
    schema = load_schema()  # in the test, not a fixture: a missing schema is a failure, never a skip
    validator_cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
    validator_cls.check_schema(schema)
    validator = validator_cls(schema, format_checker=validator_cls.FORMAT_CHECKER)
    errors = sorted(validator.iter_errors(manifest), key=lambda e: list(e.absolute_path))
    assert not errors, "manifest.yml does not match Slack's schema:\n" + "\n".join(
        f"  at {'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}" for e in errors
    )


def test_display_information(manifest: dict) -> None:
    info = manifest["display_information"]
    assert info["name"] == "Genie"
    assert info.get("description"), "give the app a short description"
    # The schema states this rule under "regex", which JSON Schema does not enforce; check it here.
    assert re.fullmatch(r"#[0-9a-fA-F]{3}([0-9a-fA-F]{3})?", str(info.get("background_color", ""))), (
        "background_color must be a hex colour like #4a154b (quote it in YAML)"
    )


def test_every_request_url_is_the_bolt_route(manifest: dict) -> None:
    redirects = manifest["oauth_config"].get("redirect_urls", [])
    assert redirects == [OAUTH_REDIRECT_URL], "the OAuth redirect is Bolt's /slack/oauth_redirect"
    urls = [(w, u) for w, u in _urls(manifest) if not w.startswith("oauth_config.redirect_urls")]
    wrong = [(where, url) for where, url in urls if url != EVENTS_URL]
    assert not wrong, f"every Slack request URL must be exactly {EVENTS_URL}; found {wrong}"
    where = {w for w, _ in urls}
    settings = manifest["settings"]
    assert settings["event_subscriptions"]["request_url"] == EVENTS_URL
    assert settings["interactivity"]["request_url"] == EVENTS_URL
    for i, command in enumerate(manifest["features"]["slash_commands"]):
        assert f"features.slash_commands[{i}].url" in where, f"{command['command']} has no url"
    assert settings.get("socket_mode_enabled") is False, "HTTP mode: Slack must call the request URLs"


def test_scopes_are_exactly_the_documented_ones(manifest: dict) -> None:
    scopes = manifest["oauth_config"]["scopes"]
    bot = scopes["bot"]
    assert len(bot) == len(set(bot)), f"duplicate bot scopes: {bot}"
    assert set(bot) == DOCUMENTED_BOT_SCOPES, (
        f"bot scopes differ from DESIGN.md §2: extra {sorted(set(bot) - DOCUMENTED_BOT_SCOPES)}, "
        f"missing {sorted(DOCUMENTED_BOT_SCOPES - set(bot))}"
    )
    assert not scopes.get("user"), "Genie asks for no user-token scopes"


def test_home_tab_and_bot_user(manifest: dict) -> None:
    features = manifest["features"]
    assert features["app_home"]["home_tab_enabled"] is True, "app_home_opened publishes the Home tab"
    assert features["app_home"]["messages_tab_enabled"] is True
    assert features["app_home"]["messages_tab_read_only_enabled"] is False, "/genie works in the Messages tab"
    assert features["bot_user"]["display_name"] == "genie"


def test_slash_commands_are_the_ones_bolt_registers(manifest: dict, bolt_app: AsyncApp) -> None:
    declared = [c["command"] for c in manifest["features"]["slash_commands"]]
    assert len(declared) == len(set(declared)), f"duplicate slash commands: {declared}"
    registered = _registered(bolt_app, "command")
    assert registered, "found no app.command(...) listener in the Bolt app; did slack_bolt's internals change?"
    assert set(declared) == set(registered), (
        f"manifest slash commands {sorted(declared)} != commands the Bolt app registers {sorted(registered)}"
    )


def test_bot_events_are_the_ones_bolt_registers(manifest: dict, bolt_app: AsyncApp) -> None:
    events = manifest["settings"]["event_subscriptions"]
    declared = events.get("bot_events", [])
    registered = _registered(bolt_app, "event_type")
    assert registered, "found no app.event(...) listener in the Bolt app; did slack_bolt's internals change?"
    assert set(declared) == set(registered), (
        f"manifest bot_events {sorted(declared)} != events the Bolt app registers {sorted(registered)}"
    )
    assert not events.get("user_events"), "Genie subscribes to no user events"


async def test_bolt_routes_every_declared_command_and_event(manifest: dict, bolt_app: AsyncApp) -> None:
    """The same check from the outside: a request Slack would send for each declared command and
    event is accepted by a listener's matcher, and one for an undeclared name is not."""
    for command in (c["command"] for c in manifest["features"]["slash_commands"]):
        assert await _listeners_matching(bolt_app, _command_request(command)), f"no listener for {command}"
    for event_type in manifest["settings"]["event_subscriptions"]["bot_events"]:
        assert await _listeners_matching(bolt_app, _event_request(event_type)), f"no listener for {event_type}"
    assert not await _listeners_matching(bolt_app, _command_request("/not-genie"))
    assert not await _listeners_matching(bolt_app, _event_request("message"))


async def test_interactivity_is_on_because_bolt_handles_actions(manifest: dict, bolt_app: AsyncApp) -> None:
    handled = [a.value for a in Action if await _listeners_matching(bolt_app, _action_request(a.value))]
    # The Connect URL button still sends block_actions (DESIGN.md §3), so at least that one is handled.
    assert Action.CONNECT_LINK.value in handled
    interactivity = manifest["settings"]["interactivity"]
    assert interactivity["is_enabled"] is True, f"Bolt handles actions {handled}, so interactivity must be on"
    assert interactivity["request_url"] == EVENTS_URL
