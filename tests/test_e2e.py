"""The whole process from the outside (DESIGN.md §5.8, §6): the real ``genie`` CLI and
``genie serve`` as subprocesses, Slack as the fake Web API plus signed requests, and a person
in headless Chromium walking the link: sign in, confirm, done.

Nothing here imports the app: what these tests see is what an operator and a user see — exit
statuses, pages, the server's log, and what Genie said to Slack.

The browser is Debian's ``chromium`` driven by Playwright (never a downloaded build). Without
it the browser test is skipped, unless ``GENIE_REQUIRE_BROWSER=1`` (CI), where it fails.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests import forkserver
from tests.conftest import PASSWORD, SECRET_KEY, SIGNING_SECRET
from tests.fake_slack import FakeSlack
from tests.helpers import connect_url
from tests.processes import GenieServer, clean_env, free_port
from tests.slack_driver import SlackDriver, SlackUser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
HAVE_CHROMIUM = os.access(CHROMIUM, os.X_OK)
REQUIRE_BROWSER = os.environ.get("GENIE_REQUIRE_BROWSER", "").strip() == "1"

needs_browser = pytest.mark.skipif(
    not HAVE_CHROMIUM and not REQUIRE_BROWSER,
    reason=f"{CHROMIUM} not found (apt-get install chromium); set GENIE_REQUIRE_BROWSER=1 to make this a failure",
)

ALICE = SlackUser("U0ALICE")


# --- processes -----------------------------------------------------------------------------------
def genie_cli(env: dict[str, str], cwd: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    """Run ``genie ARGS`` (as ``python -m bot``) and insist on exit status 0."""
    done = forkserver.run(args, input=stdin, env=env, cwd=cwd, timeout=60)
    assert done.returncode == 0, (args, done.returncode, done.stdout, done.stderr)
    return done


@pytest.fixture
def serve(request, tmp_path: Path) -> Callable[[dict[str, str], int], GenieServer]:
    """Starts ``genie serve --port PORT`` with an environment; always terminated at the end."""

    def start(env: dict[str, str], port: int) -> GenieServer:
        server = GenieServer.start(env, port, cwd=tmp_path)
        request.addfinalizer(server.stop)
        return server

    return start


@pytest.fixture
def slack() -> FakeSlack:
    fake = FakeSlack().start()
    fake.add_user("U0ALICE", "Alice Smith", "alice@example.com")
    yield fake
    fake.stop()


# --- the journey ---------------------------------------------------------------------------------
@needs_browser
async def test_connect_in_a_real_browser(db_url, slack, serve, tmp_path):
    assert HAVE_CHROMIUM, f"GENIE_REQUIRE_BROWSER=1 but {CHROMIUM} is missing: apt-get install chromium"
    from playwright.async_api import async_playwright, expect

    port = free_port()
    env = clean_env(
        DATABASE_URL=db_url,
        GENIE_SECRET_KEY=SECRET_KEY,
        GENIE_BASE_URL=f"http://127.0.0.1:{port}",
        SLACK_SIGNING_SECRET=SIGNING_SECRET,
        SLACK_BOT_TOKEN="xoxb-e2e-token",
        SLACK_API_URL=slack.api_url,
    )

    added = genie_cli(
        env,
        tmp_path,
        "user",
        "add",
        "alice@example.com",
        "--name",
        "Alice Smith",
        "--password-stdin",
        stdin=PASSWORD + "\n",
    )
    assert "added user alice@example.com" in added.stdout

    genie = serve(env, port)
    await genie.wait_healthy()

    # In Slack: /genie connect. The ephemeral answer carries the one-time Connect button.
    async with httpx.AsyncClient(base_url=genie.url, timeout=30) as http:
        response = await SlackDriver(http, SIGNING_SECRET, slack).command(ALICE, "connect")
    url = connect_url(response)
    assert url.startswith(f"{genie.url}/link/")
    token = url.split("/link/", 1)[1]
    await slack.wait_for("users.info", user="U0ALICE")  # who this is, looked up after the ack

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()

            # The link asks to sign in, and names the Slack user it is about.
            opened = await page.goto(url)
            assert opened is not None and opened.status == 200
            assert opened.headers.get("referrer-policy") == "no-referrer"
            await expect(page.locator("h1")).to_have_text("Connect your Slack account")
            deadline = time.monotonic() + 10
            while "Alice Smith" not in await page.locator("dl.who").inner_text():
                assert time.monotonic() < deadline, "the sign-in page never named the Slack user"
                await asyncio.sleep(0.1)  # the profile is stored just after Slack's ack
                await page.reload()
            assert "U0ALICE" in await page.locator("dl.who").inner_text()

            await page.get_by_label("Email").fill("alice@example.com")
            await page.get_by_label("Password").fill(PASSWORD)
            await page.get_by_role("button", name="Sign in").click()

            # Confirm: which Slack user, which workspace, which Genie account.
            await expect(page.locator("h1")).to_have_text("Connect this Slack account?")
            who = await page.locator("dl.who").inner_text()
            assert "Alice Smith" in who and "U0ALICE" in who and "alice@example.com" in who and "acme" in who
            assert "Alice Smith" in await page.locator("main").inner_text()
            await expect(page.locator("#warn-email")).to_have_count(0)

            await page.locator("#confirm").click()
            await expect(page.locator("h1#done")).to_have_text("You're connected")
            assert "Alice Smith" in await page.locator("main").inner_text()
            await page.screenshot(path=str(tmp_path / "link-done.png"), full_page=True)

            # Slack was told: a DM to the person, and their App Home now shows the link.
            dm = await slack.wait_for("chat.postMessage", channel="U0ALICE", timeout=10)
            assert "You're connected as alice@example.com" in dm[0].args["text"]
            await slack.wait_for("views.publish", user_id="U0ALICE", timeout=10)

            # The operator sees it too.
            listed = json.loads(genie_cli(env, tmp_path, "link", "list", "--json").stdout)
            assert [(r["email"], r["workspace"], r["slack_user"], r["slack_name"]) for r in listed] == [
                ("alice@example.com", "T0GENIE01", "U0ALICE", "Alice Smith")
            ]

            # The link worked once.
            again = await page.goto(url)
            assert again is not None and again.status == 410
            await expect(page.locator("h1#problem")).to_contain_text("already been used")
        finally:
            await browser.close()

    # The access log printed every /link/ path, but never the token in it.
    genie.stop()
    log = genie.log()
    assert "/link/[redacted]" in log, log
    assert token not in log, "the server log leaked the link token"
    for part in token.split("."):
        if len(part) >= 10:
            assert part not in log, f"the server log leaked part of the link token: {part}"


async def test_serve_without_slack_explains_what_to_set(db_url, serve, tmp_path):
    port = free_port()
    env = clean_env(DATABASE_URL=db_url, GENIE_SECRET_KEY=SECRET_KEY, GENIE_BASE_URL=f"http://127.0.0.1:{port}")
    genie = serve(env, port)
    await genie.wait_healthy()

    async with httpx.AsyncClient(base_url=genie.url, timeout=30) as http:
        home = await http.get("/")
        assert home.status_code == 200
        text = home.text
        for name in ("SLACK_SIGNING_SECRET", "SLACK_BOT_TOKEN", "manifest.yml"):
            assert name in text, name
        slack_events = await http.post("/slack/events", content=b"{}", headers={"Content-Type": "application/json"})
        assert slack_events.status_code == 503 and "SLACK_BOT_TOKEN" in slack_events.text

    assert genie.proc.poll() is None, "genie serve should keep running without Slack"
    log = genie.log()
    assert "SLACK_SIGNING_SECRET" in log and "SLACK_BOT_TOKEN" in log, log
    assert "Traceback" not in log, log
