"""A fake PagerDuty REST API v2 (``GET /users``) on loopback, for the importer's tests.

As PagerDuty does: ``Authorization: Token token=KEY`` (anything else: 401 with PagerDuty's error
body), classic ``offset``/``limit`` pagination with ``more`` (``offset + limit`` at most 10,000), users with ``html_url`` on the
account's own host. ``max_limit`` makes pages small so that paging is exercised; ``fail`` (from
``FakeService``) queues 429s, 5xx and malformed bodies.

    fake = FakePagerDuty(key="pd-key", max_limit=2).start()
    fake.add_user("PALICE1", "Alice Smith", "alice@example.com")
    fake.add_user("POBS001", "Olive Observer", "olive@example.com", role="observer")
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fake_service import FakeService, int_param


class FakePagerDuty(FakeService):
    def __init__(self, key: str = "pd-test-key-0123456789", *, subdomain: str = "acme", max_limit: int = 100) -> None:
        super().__init__(key)
        self.subdomain = subdomain
        self.max_limit = max_limit
        self.users: list[dict] = []

    def add_user(
        self, user_id: str, name: str, email: str, *, role: str = "user", invitation_sent: bool = False
    ) -> dict:
        user = {
            "id": user_id,
            "type": "user",
            "summary": name,
            "name": name,
            "email": email,
            "role": role,
            "time_zone": "Europe/Berlin",
            "color": "green",
            "description": None,
            "job_title": "Engineer",
            "invitation_sent": invitation_sent,
            "avatar_url": f"https://secure.gravatar.com/avatar/{user_id}",
            "self": f"https://api.pagerduty.com/users/{user_id}",
            "html_url": f"https://{self.subdomain}.pagerduty.com/users/{user_id}",
            "teams": [],
            "contact_methods": [],
            "notification_rules": [],
        }
        with self._lock:
            self.users.append(user)
        return user

    def remove_user(self, user_id: str) -> None:
        with self._lock:
            self.users = [u for u in self.users if u["id"] != user_id]

    def reset(self) -> None:
        super().reset()
        with self._lock:
            self.users.clear()

    def routes(self) -> list:
        return [Route("/users", self._users, methods=["GET"])]

    async def _users(self, request: Request) -> Response:
        if (failed := self.before(request)) is not None:
            return failed
        if not self.authorized(request, "Token token="):
            return JSONResponse({"error": {"message": "Unauthorized", "code": 2006}}, 401)
        offset = int_param(request, "offset", 0)
        limit = int_param(request, "limit", 25, low=1, high=10_000)
        if offset is None or limit is None:
            return JSONResponse(
                {
                    "error": {
                        "message": "Invalid Input Provided",
                        "code": 2001,
                        "errors": ["Offset or limit is not valid."],
                    }
                },
                400,
            )
        if offset + limit > 10_000:  # classic pagination's ceiling
            return JSONResponse(
                {
                    "error": {
                        "message": "Invalid Input Provided",
                        "code": 2001,
                        "errors": ["Offset must be less than 10000."],
                    }
                },
                400,
            )
        limit = min(limit, self.max_limit)
        with self._lock:
            page = self.users[offset : offset + limit]
            more = offset + limit < len(self.users)
        return JSONResponse({"users": page, "limit": limit, "offset": offset, "more": more, "total": None})
