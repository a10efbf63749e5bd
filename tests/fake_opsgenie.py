"""A fake OpsGenie REST API v2 on loopback: account, users (paged) and teams with members.

As OpsGenie does: ``Authorization: GenieKey KEY`` (anything else: 401 "Could not
authenticate"); ``GET /v2/users`` pages with ``offset``/``limit`` and answers ``paging.next`` as
an absolute URL on OpsGenie's own host (so a client that followed it blindly would send its key
elsewhere; Genie's importer only takes the offset); ``GET /v2/teams`` lists teams and
``GET /v2/teams/{id}`` gives the members; ``GET /v2/schedules?expand=rotation`` (schedules with
their rotations), ``GET /v2/schedules/{id}/overrides`` and ``GET /v2/escalations`` answer what
``add_schedule``, ``add_override`` and ``add_escalation`` stored, shaped as OpsGenie's Schedule,
Schedule Override and Escalation APIs answer. ``fail`` (from ``FakeService``) queues 429s (with
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
        self.schedules: list[dict] = []
        self.overrides: dict[str, list[dict]] = {}
        self.escalations: list[dict] = []

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

    def add_schedule(
        self, schedule_id: str, name: str, team: tuple[str, str] | None, timezone: str, rotations: list[dict]
    ) -> dict:
        """``team``: (id, name) of the owner team; ``rotations`` as OpsGenie's API gives them
        (``rotation()`` builds one)."""
        schedule = {
            "id": schedule_id,
            "name": name,
            "description": "",
            "timezone": timezone,
            "enabled": True,
            "ownerTeam": {"id": team[0], "name": team[1]} if team else None,
            "rotations": rotations,
        }
        if schedule["ownerTeam"] is None:
            del schedule["ownerTeam"]
        with self._lock:
            self.schedules.append(schedule)
        return schedule

    @staticmethod
    def rotation(
        rotation_id: str,
        name: str,
        kind: str,
        start: str,
        participants: list[tuple[str, str | None, str | None]],
        *,
        length: int = 1,
        end: str | None = None,
        restriction: dict | None = None,
    ) -> dict:
        """``participants``: (type, id, username-or-name) — ("user", id, username), ("none",
        None, None), ("team", id, name), ("escalation", id, name)."""
        shown = []
        for kind_, pid, label in participants:
            item: dict = {"type": kind_}
            if pid:
                item["id"] = pid
            if label:
                item["username" if kind_ == "user" else "name"] = label
            shown.append(item)
        rotation = {
            "id": rotation_id,
            "name": name,
            "startDate": start,
            "type": kind,
            "length": length,
            "participants": shown,
        }
        if end:
            rotation["endDate"] = end
        if restriction:
            rotation["timeRestriction"] = restriction
        return rotation

    def add_override(self, schedule_id: str, alias: str, user: tuple[str, str], start: str, end: str) -> None:
        with self._lock:
            self.overrides.setdefault(schedule_id, []).append(
                {
                    "alias": alias,
                    "user": {"type": "user", "id": user[0], "username": user[1]},
                    "startDate": start,
                    "endDate": end,
                    "rotations": [],
                }
            )

    def add_escalation(
        self,
        escalation_id: str,
        name: str,
        team: tuple[str, str] | None,
        rules: list[tuple[int, str, str, str, str | None]],
        *,
        repeat: tuple[int, int] | None = None,
        condition: str = "if-not-acked",
    ) -> None:
        """``rules``: (delay minutes, notifyType, recipient type, recipient id, name-or-username);
        ``repeat``: (waitInterval, count)."""
        shown = []
        for delay, notify, kind, rid, label in rules:
            recipient = {"type": kind, "id": rid}
            if label:
                recipient["username" if kind == "user" else "name"] = label
            shown.append(
                {
                    "condition": condition,
                    "notifyType": notify,
                    "delay": {"timeAmount": delay, "timeUnit": "minutes"},
                    "recipient": recipient,
                }
            )
        escalation = {"id": escalation_id, "name": name, "description": "", "rules": shown}
        if team:
            escalation["ownerTeam"] = {"id": team[0], "name": team[1]}
        if repeat:
            escalation["repeat"] = {
                "waitInterval": repeat[0],
                "count": repeat[1],
                "resetRecipientStates": False,
                "closeAlertAfterAll": False,
            }
        with self._lock:
            self.escalations.append(escalation)

    def reset(self) -> None:
        super().reset()
        with self._lock:
            self.users.clear()
            self.teams.clear()
            self.schedules.clear()
            self.overrides.clear()
            self.escalations.clear()

    def routes(self) -> list:
        return [
            Route("/v2/account", self._account, methods=["GET"]),
            Route("/v2/users", self._users, methods=["GET"]),
            Route("/v2/teams", self._teams, methods=["GET"]),
            Route("/v2/teams/{identifier}", self._team, methods=["GET"]),
            Route("/v2/schedules", self._schedules, methods=["GET"]),
            Route("/v2/schedules/{identifier}/overrides", self._overrides, methods=["GET"]),
            Route("/v2/escalations", self._escalations, methods=["GET"]),
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

    async def _schedules(self, request: Request) -> Response:
        if (refused := self._check(request)) is not None:
            return refused
        expand = request.query_params.get("expand") == "rotation"
        with self._lock:
            listed = [s if expand else {k: v for k, v in s.items() if k != "rotations"} for s in self.schedules]
        return JSONResponse(_envelope(listed, expandable=["rotation"]))

    async def _overrides(self, request: Request) -> Response:
        if (refused := self._check(request)) is not None:
            return refused
        identifier = request.path_params["identifier"]
        with self._lock:
            if not any(s["id"] == identifier for s in self.schedules):
                return JSONResponse(
                    {"message": "Schedule with id [" + identifier + "] doesn't exist", "took": 0.0}, 404
                )
            return JSONResponse(_envelope(list(self.overrides.get(identifier, []))))

    async def _escalations(self, request: Request) -> Response:
        if (refused := self._check(request)) is not None:
            return refused
        with self._lock:
            return JSONResponse(_envelope(list(self.escalations)))
