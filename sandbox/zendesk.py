"""The Zendesk emulation: cursor-based ticket export, time-based organization export,
satisfaction ratings, the users/me credential check; 429 bodies that are sometimes not JSON.
"""

from __future__ import annotations

import base64
import time
from bisect import bisect_left, bisect_right
from urllib.parse import urlencode

from .credentials import (
    USERNAME,
    ZENDESK_TOKEN,
)
from .http import Handler, Reply, route_table


def _zd_cursor(key: tuple[int, int]) -> str:
    return base64.urlsafe_b64encode(f"{key[0]}:{key[1]}".encode()).decode().rstrip("=")


def _zd_position(cursor: str) -> tuple[int, int] | None:
    try:
        ts, oid = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode().split(":")
        return int(ts), int(oid)
    except ValueError:
        return None


def _zd_invalid(description: str) -> Reply:
    return Reply(400, {"error": "InvalidValue", "description": description})


class Zendesk(Handler):
    family = "zendesk"
    routes = route_table(
        ("GET", "/api/v2/incremental/tickets/cursor.json",
         r"/api/v2/incremental/tickets/cursor\.json", "ticket_export", ""),
        ("GET", "/api/v2/incremental/organizations.json",
         r"/api/v2/incremental/organizations\.json", "organization_export", ""),
        ("GET", "/api/v2/satisfaction_ratings.json", r"/api/v2/satisfaction_ratings\.json",
         "satisfaction_ratings", ""),
        ("GET", "/api/v2/users/me.json", r"/api/v2/users/me\.json", "me", ""),
    )

    def authenticate(self) -> Reply | None:
        scheme, _, token = self.headers.get("Authorization", "").partition(" ")
        try:
            user = base64.b64decode(token, validate=True).decode() if scheme == "Basic" else ""
        except ValueError:
            user = ""
        if user == f"{USERNAME}/token:{ZENDESK_TOKEN}":
            return None
        return Reply(401, {"error": "Couldn't authenticate you"})

    def error(self, status: int, code: str, message: str) -> Reply:
        return Reply(status, {"error": code, "description": message})

    def me(self) -> Reply:
        """The authenticated user (the credential check)."""
        return Reply(200, {"user": {"id": 9_000_001, "url": f"{self.sb.urls['zendesk']}/api/v2/users/9000001.json",
                                    "name": "healthsync integration", "email": USERNAME, "role": "admin",
                                    "active": True, "verified": True}})

    def fault(self, kind: str) -> Reply:
        if kind == "5xx":
            return Reply(self.sb.pick([500, 502, 503], "zendesk"), {
                "error": "ServiceUnavailable", "description": "Sandbox fault: please try again"})
        headers = {"Retry-After": self.sb.pick(["0", "1"], "zendesk")}
        if self.sb.pick([True, False], "zendesk"):  # Zendesk's 429 body is not always JSON
            return Reply(429, "Too Many Requests", headers)
        return Reply(429, {"error": "APIRateLimitExceeded", "description":
                           "Number of allowed API requests per minute exceeded"}, headers)

    def not_found(self, method: str, path: str) -> Reply:
        return Reply(404, {"error": "InvalidEndpoint", "description": "Not found"})

    def start_time(self) -> int | Reply:
        try:
            start = int(self.arg("start_time") or "")
        except ValueError:
            return _zd_invalid("start_time is required, in unix seconds")
        if start > time.time():
            return _zd_invalid("Start time can not be in the future")
        if start > time.time() - 60:
            return _zd_invalid("Start time must be more than one minute ago")
        return start

    def per_page(self, most: int, name: str = "per_page") -> int:
        value = self.arg(name) or ""
        return min(most, max(1, int(value))) if value.isdigit() else most

    def ticket_export(self) -> Reply:
        """Cursor-based incremental export: a cursor is a (generated_timestamp, id) position,
        so a saved after_cursor later returns the tickets changed since."""
        rows, keys = self.sb.zendesk_view("tickets")
        cursor = self.arg("cursor")
        if cursor is not None:
            position = _zd_position(cursor)
            if position is None:
                return _zd_invalid("Invalid cursor")
        else:
            start = self.start_time()
            if isinstance(start, Reply):
                return start
            position = (start, -1)
        lo = bisect_right(keys, position)
        page = rows[lo:lo + self.per_page(1000)]
        url = f"{self.sb.urls['zendesk']}/api/v2/incremental/tickets/cursor.json?cursor="
        after = _zd_cursor(keys[lo + len(page) - 1] if page else position)
        before = _zd_cursor((keys[lo][0], keys[lo][1] - 1)) if page else None
        return Reply(200, {"tickets": page, "after_url": url + after, "after_cursor": after,
                           "before_url": before and url + before, "before_cursor": before,
                           "end_of_stream": lo + len(page) >= len(rows)}, served=len(page))

    def organization_export(self) -> Reply:
        """Time-based export: start_time inclusive, so page edges repeat (as in Zendesk)."""
        start = self.start_time()
        if isinstance(start, Reply):
            return start
        rows, keys = self.sb.zendesk_view("organizations")
        lo, size = bisect_left(keys, (start,)), self.per_page(1000)
        page = rows[lo:lo + size]
        end = keys[lo + len(page) - 1][0] if page else start
        return Reply(200, {"organizations": page, "next_page": f"{self.sb.urls['zendesk']}/api/"
                           f"v2/incremental/organizations.json?start_time={end}", "end_time": end,
                           "count": len(page), "end_of_stream": len(page) < size},
                     served=len(page))

    def satisfaction_ratings(self) -> Reply:
        ratings, ids = self.sb.zendesk_view("ratings")
        after = self.arg("page[after]")
        position = _zd_position(after) if after else (0, 0)
        since, until = self.arg("start_time") or "0", self.arg("end_time") or str(2**62)
        if position is None or not (since.isdigit() and until.isdigit()):
            return _zd_invalid("Invalid page[after], start_time or end_time")
        size, page, i = self.per_page(100, "page[size]"), [], bisect_right(ids, position[1])
        while i < len(ratings) and len(page) <= size:  # one extra tells whether there is more
            if int(since) <= ratings[i]["_ts"] <= int(until):
                page.append({k: v for k, v in ratings[i].items() if k != "_ts"})
            i += 1
        more, page = len(page) > size, page[:size]
        cursor = _zd_cursor((0, page[-1]["id"])) if page else after
        query = [(k, v[0]) for k, v in self.params.items() if k != "page[after]"]
        link = f"{self.sb.urls['zendesk']}/api/v2/satisfaction_ratings.json?" + urlencode(
            [*query, ("page[after]", cursor or "")])
        return Reply(200, {"satisfaction_ratings": page, "meta": {
            "has_more": more, "after_cursor": cursor, "before_cursor": None},
            "links": {"next": link if more else None, "prev": None}}, served=len(page))
