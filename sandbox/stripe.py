"""The Stripe emulation: customers, subscriptions, invoices, charges and events lists, newest
first with limit, starting_after / ending_before, created[...] bounds and filters.
"""

from __future__ import annotations

import re
import secrets
from bisect import bisect_left, bisect_right
from typing import Any

from .credentials import (
    STRIPE_KEY,
)
from .http import Handler, Reply, route_table

_STRIPE = {"customers": "customer", "subscriptions": "subscription", "invoices": "invoice",
           "charges": "charge", "events": "event"}
_STATUSES = {"subscriptions": ["trialing", "active", "past_due", "canceled", "unpaid",
                               "incomplete", "incomplete_expired", "paused", "all", "ended"],
             "invoices": ["draft", "open", "paid", "uncollectible", "void"]}


def _stripe_error(status: int, message: str, kind: str = "invalid_request_error",
                  **extra: Any) -> Reply:
    return Reply(status, {"error": {"type": kind, "message": message, **extra}})


class Stripe(Handler):
    family = "stripe"
    routes = route_table(*[("GET", f"/v1/{kind}", rf"/v1/(?P<kind>{kind})", "list_objects", "")
                       for kind in _STRIPE])

    def authenticate(self) -> Reply | None:
        key = self.bearer()
        if key == STRIPE_KEY:
            return None
        return _stripe_error(401, f"Invalid API Key provided: {key[:4]}{'*' * (len(key) - 8)}"
                                  f"{key[-4:]}" if key else "You did not provide an API key. You "
                             "need to provide your API key in the Authorization header, using "
                             "Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').")

    def error(self, status: int, code: str, message: str) -> Reply:
        return _stripe_error(status, message, code=code)

    def extra_headers(self, reply: Reply) -> dict[str, str]:
        return {"Request-Id": "req_" + secrets.token_hex(7)}

    def fault(self, kind: str) -> Reply:
        if kind == "429":
            return _stripe_error(429, "Request rate limit exceeded. You can learn more about rate "
                                      "limits here https://stripe.com/docs/rate-limits.",
                                 code="rate_limit")
        return _stripe_error(self.sb.pick([500, 502, 503], "stripe"), "Sandbox fault: an error occurred "
                             "with our connection to Stripe.", "api_error")

    def not_found(self, method: str, path: str) -> Reply:
        return _stripe_error(404, f"Unrecognized request URL ({method}: {path}).")

    def list_objects(self, kind: str) -> Reply:
        """Newest first; limit, starting_after/ending_before, created[gt|gte|lt|lte],
        customer=, status= (subscriptions, invoices), types[]=/type= (events)."""
        try:
            limit = int(self.arg("limit") or 10)
            bounds = {op: int(v) for op in ("gt", "gte", "lt", "lte")
                      if (v := self.arg(f"created[{op}]")) is not None}
        except ValueError as e:
            return _stripe_error(400, f"Invalid integer: {e}", code="parameter_invalid_integer")
        status, allowed = self.arg("status"), _STATUSES.get(kind)
        if not 1 <= limit <= 100 or status and allowed and status not in allowed:
            param = "limit" if not 1 <= limit <= 100 else "status"
            return _stripe_error(400, f"Invalid {param}: {self.arg(param)}", param=param)
        types = [v for k, vs in self.params.items() if re.fullmatch(r"types(\[\d*\])?|type", k)
                 for v in vs]
        rows, keys = self.sb.stripe_view(kind, status if allowed else None, self.arg("customer"),
                                        types)
        lo, hi = 0, len(rows)  # rows are oldest first, keys (created, id)
        lo = max([lo, *(bisect_left(keys, (bounds[op] + (op == "gt"),)) for op in ("gte", "gt")
                        if op in bounds)])
        hi = min([hi, *(bisect_left(keys, (bounds[op] + (op == "lte"),)) for op in ("lte", "lt")
                        if op in bounds)])
        after, before = self.arg("starting_after"), self.arg("ending_before")
        for param, oid in (("starting_after", after), ("ending_before", before)):
            if not oid:
                continue
            obj = next((e for e in self.ds.stripe_events if e["id"] == oid), None) \
                if kind == "events" else getattr(self.ds, f"stripe_{kind}").get(oid)
            if obj is None:
                return _stripe_error(400, f"No such {_STRIPE[kind]}: '{oid}'",
                                     code="resource_missing", param=param)
            if param == "starting_after":  # older than it
                hi = min(hi, bisect_left(keys, (obj["created"], obj["id"])))
            else:
                lo = max(lo, bisect_right(keys, (obj["created"], obj["id"])))
        if before and not after:  # the page just newer than ending_before
            start, end, has_more = lo, min(hi, lo + limit), lo + limit < hi
        else:
            start, end, has_more = max(lo, hi - limit), hi, hi - limit > lo
        data = rows[start:end][::-1]
        return Reply(200, {"object": "list", "data": data, "has_more": has_more,
                           "url": f"/v1/{kind}"}, served=len(data))
