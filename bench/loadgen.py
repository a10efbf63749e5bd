"""The load generator: a separate process that drives one server and reports every request.

    echo '{"host": "127.0.0.1", "port": 3000, "mode": "open", "rate": 200, "kind": "click", ...}' \\
        | python -m bench.loadgen

Reads one JSON spec on stdin, builds every request first (signed like Slack), then sends them
and writes one JSON result on stdout: per request ``[offset_s, latency_s, status]`` where
``offset_s`` is when it was *due* (open loop: ``i / rate``; latency counts from then, so a
stalled server is not hidden by a stalled generator — no coordinated omission), plus
``t0_wall`` (``time.time()`` at offset 0) so the orchestrator can line requests up with
timestamps Genie wrote to the database.

Modes: ``open`` (fixed rate, as many connections as needed), ``closed`` (``concurrency``
clients back to back: maximum throughput), ``burst`` (every request at once, each on its own
connection: the race tests).
"""

from __future__ import annotations

import asyncio
import html
import json
import re
import sys
import time
from typing import Any

from bench import payloads
from bench.httpc import Pool, cookies

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


async def _login(pool: Pool, email: str, password: str) -> tuple[str, str]:
    """Sign in like a browser: the CSRF cookie and token from the form, then the session cookie."""
    status, headers, body = await pool.request("GET", "/login?next=/account")
    jar = cookies(headers)
    token = html.unescape(_CSRF.search(body.decode()).group(1))
    cookie = "; ".join(f"{k}={v}" for k, v in jar.items())
    form = payloads.urlencode({"email": email, "password": password, "next": "/account", "csrf_token": token}).encode()
    status, headers, _ = await pool.request("POST", "/login", form, {"Content-Type": payloads.FORM, "Cookie": cookie})
    if status != 303:
        raise SystemExit(f"login failed with HTTP {status}")
    jar.update(cookies(headers))
    cookie = "; ".join(f"{k}={v}" for k, v in jar.items())
    # CSRF tokens are bound to the session: take one from a page drawn in it, as a browser would.
    status, headers, body = await pool.request("GET", "/account", headers={"Cookie": cookie})
    token = html.unescape(_CSRF.search(body.decode()).group(1))
    return token, cookie


async def build(spec: dict[str, Any], pool: Pool) -> list[bytes]:
    """Every request as bytes (head + body), in order."""
    kind, out = spec["kind"], []

    def add(path: str, body: bytes, headers: dict) -> None:
        out.append(pool.head("POST", path, headers, len(body)) + body)

    if kind == "click":
        users, ids = spec["users"], spec["alert_ids"]
        for i, alert_id in enumerate(ids):
            body, headers = payloads.click(
                spec["secret"],
                user_id=users[i % len(users)],
                team_id=spec["team_id"],
                team_domain=spec["team_domain"],
                channel=spec["channel"],
                alert_id=alert_id,
                response_url=f"{spec['response_url']}/c{alert_id}-{i}",
                message=spec.get("message"),
            )
            add("/slack/events", body, headers)
    elif kind == "command":
        for i, user_id in enumerate(spec["users"]):
            body, headers = payloads.command(
                spec["secret"],
                user_id=user_id,
                team_id=spec["team_id"],
                team_domain=spec["team_domain"],
                text=spec["text"],
                response_url=f"{spec['response_url']}/s{i}",
            )
            add("/slack/events", body, headers)
    elif kind == "confirm":
        if spec.get("login"):
            csrf, cookie = await _login(pool, spec["email"], spec["password"])
        else:
            csrf, cookie = "x" * 40, "genie_csrf=" + "x" * 40
        for token in spec["tokens"]:
            body, headers = payloads.confirm(csrf, cookie)
            add(f"/link/{token}", body, headers)
    elif kind == "ingest":
        keys = spec["keys"]
        for i in range(spec["count"]):
            key = keys[i % len(keys)]
            body, headers = payloads.create_alert(
                key, message=f"{spec['prefix']} {i // len(keys)} on key {i % len(keys)}", alias=f"{spec['prefix']}-{i}"
            )
            add("/v2/alerts", body, headers)
    else:
        raise SystemExit(f"unknown kind {kind!r}")
    return out


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    pool = Pool(spec.get("host", "127.0.0.1"), spec["port"], timeout=spec.get("timeout", 30.0))
    requests = await build(spec, pool)
    mode, n = spec["mode"], len(requests)
    results: list[list[float] | None] = [None] * n
    errors: list[str] = []
    loop = asyncio.get_running_loop()

    async def one(i: int, due: float) -> None:
        try:
            status, _, _ = await pool.request("POST", "", head=requests[i])
        except Exception as err:  # a refused/reset/timed-out request is a result too
            status = 0
            if len(errors) < 20:
                errors.append(f"{type(err).__name__}: {err}")
        results[i] = [due - t0, loop.time() - due, status]

    if mode == "burst":
        await pool.warm(n)
    else:
        await pool.warm(spec.get("concurrency", 16))
    t0 = loop.time() + 0.05
    t0_wall = time.time() + (t0 - loop.time())
    while loop.time() < t0:
        await asyncio.sleep(t0 - loop.time())
    if mode == "open":
        rate, tasks = float(spec["rate"]), []
        for i in range(n):
            due = t0 + i / rate
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(one(i, due)))
        await asyncio.gather(*tasks)
    elif mode == "closed":
        it = iter(range(n))

        async def client() -> None:
            for i in it:
                await one(i, loop.time())

        await asyncio.gather(*(client() for _ in range(spec.get("concurrency", 16))))
    elif mode == "burst":
        await asyncio.gather(*(one(i, t0) for i in range(n)))
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    elapsed = loop.time() - t0
    pool.close()
    return {"t0_wall": t0_wall, "elapsed": elapsed, "samples": results, "errors": errors, "connections": pool.opened}


def main() -> None:
    spec = json.loads(sys.stdin.read())
    result = asyncio.run(run(spec))
    sys.stdout.write(json.dumps(result))


if __name__ == "__main__":
    main()
