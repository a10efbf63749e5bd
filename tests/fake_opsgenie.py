"""A fake OpsGenie REST API v2 on loopback: account, users (paged) and teams with members.

As OpsGenie does: ``Authorization: GenieKey KEY`` (anything else: 401 "Could not
authenticate"); ``GET /v2/users`` pages with ``offset``/``limit`` and answers ``paging.next`` as
an absolute URL on OpsGenie's own host (so a client that followed it blindly would send its key
elsewhere; Genie's importer only takes the offset); ``GET /v2/teams`` lists teams and
``GET /v2/teams/{id}`` gives the members. ``fail`` (from ``FakeService``) queues 429s (with
OpsGenie's ``X-RateLimit-*`` headers), 5xx and malformed bodies.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fake_service import FakeService, int_param

PUBLIC_HOST = "https://api.opsgenie.com"


def _envelope(data, **extra) -> dict:
    return {"data": data, "took": 0.01, "requestId": "9ae63dd7-ed00-4c81-86f0-c4ffd33142c9", **extra}


class FakeOpsGenie(FakeService):
    def __init__(self, key: str = "og-test-key-0123456789", *, account: str = "acme-ops", max_limit: int = 100) -> None:
        super().__init__(key)
        self.account = account
        self.max_limit = max_limit
        self.users: list[dict] = []
        self.teams: list[dict] = []

    def add_user(
        self,
        user_id: str,
        username: str,
        full_name: str,
        *,
        role: str = "User",
        verified: bool = True,
        blocked: bool = False,
    ) -> dict:
        user = {
            "blocked": blocked,
            "verified": verified,
            "id": user_id,
            "username": username,
            "fullName": full_name,
            "role": {"id": role, "name": role},
            "timeZone": "Europe/Berlin",
            "locale": "en_US",
            "userAddress": {},
            "createdAt": "2024-01-10T09:12:43.2Z",
        }
        with self._lock:
            self.users.append(user)
        return user

    def add_team(self, team_id: str, name: str, members: list[tuple[str | None, str | None, str]]) -> None:
        """``members``: (user id, username, role); either of the first two may be None."""
        with self._lock:
            self.teams.append({"id": team_id, "name": name, "members": members})

    def reset(self) -> None:
        super().reset()
        with self._lock:
            self.users.clear()
            self.teams.clear()

    def routes(self) -> list:
        return [
            Route("/v2/account", self._account, methods=["GET"]),
            Route("/v2/users", self._users, methods=["GET"]),
            Route("/v2/teams", self._teams, methods=["GET"]),
            Route("/v2/teams/{identifier}", self._team, methods=["GET"]),
        ]

    def _check(self, request: Request) -> Response | None:
        if (failed := self.before(request)) is not None:
            return failed
        if not self.authorized(request, "GenieKey "):
            return JSONResponse(
                {"message": "Could not authenticate", "took": 0.0, "requestId": "0d0d3b8a-0000-0000-0000-000000000000"},
                401,
            )
        return None

    async def _account(self, request: Request) -> Response:
        if (refused := self._check(request)) is not None:
            return refused
        return JSONResponse(
            _envelope(
                {
                    "name": self.account,
                    "userCount": len(self.users),
                    "plan": {"maxUserCount": 1500, "name": "Enterprise", "isYearly": True},
                }
            )
        )

    async def _users(self, request: Request) -> Response:
        if (refused := self._check(request)) is not None:
            return refused
        offset = int_param(request, "offset", 0)
        limit = int_param(request, "limit", 100, low=1, high=500)
        if offset is None or limit is None:
            return JSONResponse({"message": "Invalid offset or limit", "took": 0.0}, 422)
        limit = min(limit, self.max_limit)
        with self._lock:
            users = sorted(self.users, key=lambda u: u["username"].lower())
        page = users[offset : offset + limit]
        link = f"{PUBLIC_HOST}/v2/users?limit={limit}&sort=username&order=asc&offset="
        paging = {"first": f"{link}0", "last": f"{link}{max(0, (len(users) - 1) // limit * limit)}"}
        if offset + limit < len(users):
            paging["next"] = f"{link}{offset + limit}"
        if offset > 0:
            paging["prev"] = f"{link}{max(0, offset - limit)}"
        return JSONResponse(_envelope(page, totalCount=len(users), paging=paging))

    async def _teams(self, request: Request) -> Response:
        if (refused := self._check(request)) is not None:
            return refused
        with self._lock:
            return JSONResponse(_envelope([{"id": t["id"], "name": t["name"], "description": ""} for t in self.teams]))

    async def _team(self, request: Request) -> Response:
        if (refused := self._check(request)) is not None:
            return refused
        identifier = request.path_params["identifier"]
        by_name = request.query_params.get("identifierType") == "name"
        with self._lock:
            team = next((t for t in self.teams if (t["name"] if by_name else t["id"]) == identifier), None)
        if team is None:
            return JSONResponse({"message": "No team exists with id", "took": 0.0}, 404)
        members = []
        for user_id, username, role in team["members"]:
            user = {k: v for k, v in (("id", user_id), ("username", username)) if v}
            members.append({"user": user, "role": role})
        return JSONResponse(
            _envelope(
                {
                    "id": team["id"],
                    "name": team["name"],
                    "description": "",
                    "members": members,
                    "links": {"web": "", "api": ""},
                }
            )
        )
