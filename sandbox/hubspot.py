"""The HubSpot CRM v3 emulation: company properties and property groups (list, read, create),
companies and deals list (deals with their company associations) and search (filters, sorts,
the search cap), the v4 associations batch read of deals' companies, single and batch company
updates with 207 multi-status, task batch create for alerts (activities.hs_create_tasks),
rate-limit headers.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from bisect import bisect_left
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from .activities import hs_create_tasks
from .credentials import (
    HUBSPOT_TOKEN,
)
from .dataset import (
    HS_OUTPUTS,
    HS_OWNERS,
    HS_PROPERTIES,
    SEGMENTS,
    Record,
    hs_time,
)
from .http import OPS, Handler, Reply, parse_time, route_table

_HS_DEFAULT = ["name", "domain", "createdate", "hs_lastmodifieddate", "hs_object_id"]
_HS_ALWAYS = ["hs_object_id", "createdate", "hs_lastmodifieddate"]
_HS_OPS = {"EQ": "=", "NEQ": "!=", "LT": "<", "LTE": "<=", "GT": ">", "GTE": ">="}
_HS_FIELD_TYPES = {"string": ("text", "textarea"), "number": ("number",), "date": ("date",),
                   "datetime": ("date",), "enumeration": ("select", "radio", "checkbox"),
                   "bool": ("booleancheckbox",)}
_HS_NAME = re.compile(r"[a-z][a-z0-9_]{0,99}")
_HS_OUTPUT_GROUP = "healthsync"
_DEAL_DEFAULT = ["dealname", "amount", "closedate", "pipeline", "dealstage", "createdate",
                 "hs_lastmodifieddate", "hs_object_id"]
_ASSOCIATION_TYPES = {  # v3 association type -> its v4 types (deal to company)
    "deal_to_company": [{"category": "HUBSPOT_DEFINED", "typeId": 5, "label": "Primary"},
                        {"category": "HUBSPOT_DEFINED", "typeId": 341, "label": None}],
    "deal_to_company_unlabeled": [{"category": "HUBSPOT_DEFINED", "typeId": 341, "label": None}]}
_BATCH_READ_LIMIT = 1000  # ids per v4 associations batch read
PropertyTable = dict[str, Record]


def _hs_error(status: int, category: str, message: str, **extra: Any) -> Reply:
    return Reply(status, {"status": "error", "message": message,
                          "correlationId": secrets.token_hex(16), "category": category, **extra})


def _hs_group(name: str, label: str, display_order: int = -1) -> Record:
    return {"name": name, "label": label, "displayOrder": display_order, "archived": False}


def _hs_property(name: str, kind: str, field_type: str, label: str, group: str, *,
                 read_only: bool = False, hubspot_defined: bool = False,
                 options: list[Record] | None = None, description: str = "",
                 display_order: int = -1, created: str = "") -> Record:
    """A property definition as GET /crm/v3/properties/companies lists it."""
    return {"name": name, "label": label, "type": kind, "fieldType": field_type,
            "description": description, "groupName": group, "options": options or [],
            "displayOrder": display_order, "calculated": False, "externalOptions": False,
            "hasUniqueValue": name == "hs_object_id", "hidden": False, "formField": not read_only,
            "hubspotDefined": hubspot_defined, "createdAt": created, "updatedAt": created,
            "archived": False, "modificationMetadata": {
                "archivable": not hubspot_defined, "readOnlyDefinition": hubspot_defined,
                "readOnlyValue": read_only}}


def hs_tables(outputs: bool) -> tuple[PropertyTable, PropertyTable]:
    """(property groups, company properties) by name, from dataset.HS_PROPERTIES."""
    created = hs_time(datetime(2020, 1, 6, tzinfo=UTC).timestamp())
    groups = {"companyinformation": _hs_group("companyinformation", "Company information", 0)}
    if outputs:
        groups[_HS_OUTPUT_GROUP] = _hs_group(_HS_OUTPUT_GROUP, "Healthsync", 1)
    props = {}
    for order, (name, kind, field_type, label, read_only) in enumerate(HS_PROPERTIES):
        if name in HS_OUTPUTS and not outputs:
            continue
        values = list(HS_OWNERS) if name == "hubspot_owner_id" else SEGMENTS
        options = [{"label": v, "value": v, "displayOrder": i, "hidden": False}
                   for i, v in enumerate(values)] if kind == "enumeration" else []
        props[name] = _hs_property(
            name, kind, field_type, label, _HS_OUTPUT_GROUP if name in HS_OUTPUTS
            else "companyinformation", read_only=read_only, options=options,
            hubspot_defined=name in _HS_DEFAULT, display_order=order, created=created)
    return groups, props


def _hs_view(company: Record, names: list[str], table: PropertyTable,
             associations: tuple[str, ...] = ()) -> Record:
    """A company (or deal) as the API answers: requested properties that exist, null when unset;
    the requested associations it has (an object without any has no `associations`)."""
    props = company["properties"]
    out = {"id": company["id"], "properties": {n: props.get(n) for n in names if n in table},
           "createdAt": company["createdAt"], "updatedAt": company["updatedAt"],
           "archived": company["archived"]}
    if company["archived"]:
        out["archivedAt"] = company.get("archivedAt")
    linked = {kind: {"results": [dict(a) for a in found]} for kind in associations
              if (found := ((company.get("associations") or {}).get(kind) or {}).get("results"))}
    if linked:
        out["associations"] = linked
    return out


def _deal_table() -> PropertyTable:
    """The deal properties the sandbox knows (for search filters and the properties returned)."""
    created = hs_time(datetime(2020, 1, 6, tzinfo=UTC).timestamp())
    specs = [("dealname", "string", "text", "Deal Name"),
             ("dealstage", "enumeration", "radio", "Deal Stage"),
             ("pipeline", "enumeration", "select", "Pipeline"),
             ("closedate", "datetime", "date", "Close Date"),
             ("amount", "number", "number", "Amount"),
             ("dealtype", "enumeration", "radio", "Deal Type"),
             ("hs_is_closed_won", "bool", "booleancheckbox", "Is Closed Won"),
             ("hs_is_closed", "bool", "booleancheckbox", "Is Deal Closed?"),
             ("createdate", "datetime", "date", "Create Date"),
             ("hs_lastmodifieddate", "datetime", "date", "Last Modified Date"),
             ("hs_object_id", "number", "number", "Record ID")]
    return {name: _hs_property(name, kind, field_type, label, "dealinformation",
                               read_only=name.startswith("hs_") or name == "createdate",
                               hubspot_defined=True, display_order=order, created=created)
            for order, (name, kind, field_type, label) in enumerate(specs)}


_DEALS = _deal_table()


def _hs_time_value(text: str) -> float | None:
    """Epoch seconds of a HubSpot datetime input: epoch milliseconds or ISO 8601."""
    if re.fullmatch(r"-?\d+(\.\d+)?", text):
        return float(text) / 1000
    return parse_time(text)


def _hs_value(table: PropertyTable, name: str, raw: Any) -> Any:
    """A property value in comparable form: numbers as floats, datetimes as HubSpot ISO."""
    kind, text = table[name]["type"], None if raw in (None, "") else str(raw)
    if text is None or (kind == "datetime" and len(text) == 24 and text[-1] == "Z"):
        return text  # missing, or already in HubSpot's own datetime format
    if kind == "datetime":
        ts = _hs_time_value(text)
        if ts is None:
            raise ValueError(f"{text} is not a valid datetime for {name}")
        return hs_time(ts)
    return float(text) if kind == "number" else text.casefold()


def _hs_filter(table: PropertyTable, flt: Any) -> Callable[[Record], bool]:
    """A search filter (EQ, NEQ, GT, GTE, LT, LTE) as a predicate on companies."""
    name, op = flt["propertyName"], str(flt.get("operator")).upper()
    value, test = _hs_value(table, name, flt.get("value")), OPS[_HS_OPS[op]]

    def check(c: Record) -> bool:
        actual = _hs_value(table, name, c["properties"].get(name))
        if actual is None or value is None:  # a missing value only equals a missing value
            return op == "NEQ" if (actual is None) != (value is None) else op == "EQ"
        return test(actual, value)
    return check


def _hs_store(prop: Record, value: Any) -> tuple[Any, str | None, str]:
    """(a written value as HubSpot stores it: a string, None, "") or (None, an error code, its
    message), checked against the property's type and options."""
    if value is None or value == "":
        return value, None, ""
    text = str(value).lower() if isinstance(value, bool) else str(int(value)) \
        if isinstance(value, float) and value.is_integer() else str(value)
    kind, name = prop["type"], prop["name"]
    if kind == "number" and not re.fullmatch(r"-?\d+(\.\d+)?(e-?\d+)?", text, re.I):
        return None, "INVALID_FLOAT", f"{text} is not a valid number for {name}"
    if kind == "enumeration":
        allowed = [o["value"] for o in prop["options"]]
        chosen = text.split(";") if prop["fieldType"] == "checkbox" else [text]
        if any(v not in allowed for v in chosen):
            return None, "INVALID_OPTION", f"{text} was not one of the allowed options: " \
                                           f"[{', '.join(allowed)}]"
    if kind == "bool":
        if text.lower() not in ("true", "false"):
            return None, "INVALID_BOOLEAN", f"{text} is not a valid boolean for {name}"
        return text.lower(), None, ""
    if kind == "datetime":
        ts = _hs_time_value(text)
        return (None, "INVALID_LONG", f"{text} is neither epoch milliseconds nor an ISO 8601 "
                f"datetime") if ts is None else (hs_time(ts), None, "")
    if kind == "date":
        ts = _hs_time_value(text)
        if ts is None or ts % 86_400:
            return None, "INVALID_DATE", f"{text} is not a date at midnight UTC"
        return hs_time(ts)[:10], None, ""
    return text, None, ""


class HubSpot(Handler):
    family = "hubspot"
    routes = route_table(
        ("GET", "/crm/v3/properties/companies", r"/crm/v3/properties/companies", "properties", ""),
        ("POST", "/crm/v3/properties/companies", r"/crm/v3/properties/companies",
         "create_property", "write"),
        ("GET", "/crm/v3/properties/companies/groups", r"/crm/v3/properties/companies/groups",
         "groups", ""),
        ("POST", "/crm/v3/properties/companies/groups", r"/crm/v3/properties/companies/groups",
         "create_group", "write"),
        ("GET", "/crm/v3/properties/companies/{name}",
         r"/crm/v3/properties/companies/(?P<name>[^/]+)", "get_property", ""),
        ("GET", "/crm/v3/objects/companies", r"/crm/v3/objects/companies", "list_companies", ""),
        ("POST", "/crm/v3/objects/companies/search", r"/crm/v3/objects/companies/search",
         "search", ""),
        ("GET", "/crm/v3/objects/deals", r"/crm/v3/objects/deals", "list_deals", ""),
        ("POST", "/crm/v3/objects/deals/search", r"/crm/v3/objects/deals/search", "search_deals",
         ""),
        ("POST", "/crm/v4/associations/deals/companies/batch/read",
         r"/crm/v4/associations/deals/companies/batch/read", "deal_companies", ""),
        ("POST", "/crm/v3/objects/companies/batch/update",
         r"/crm/v3/objects/companies/batch/update", "batch_update", "write"),
        ("PATCH", "/crm/v3/objects/companies/{id}", r"/crm/v3/objects/companies/(?P<cid>\d+)",
         "update_company", "write"),
        ("POST", "/crm/v3/objects/tasks/batch/create", r"/crm/v3/objects/tasks/batch/create",
         "create_tasks", "write"),
    )

    def authenticate(self) -> Reply | None:
        if self.bearer() == HUBSPOT_TOKEN:
            return None
        return _hs_error(401, "INVALID_AUTHENTICATION", "Authentication credentials not found. "
                         "This API supports OAuth 2.0 authentication and you can find more "
                         "details at https://developers.hubspot.com/docs/methods/auth/"
                         "oauth-overview")

    def error(self, status: int, code: str, message: str) -> Reply:
        return _hs_error(status, code, message)

    def extra_headers(self, reply: Reply) -> dict[str, str]:
        recent, total = self.sb.hubspot_rate()
        return {"X-HubSpot-RateLimit-Max": "190", "X-HubSpot-RateLimit-Interval-Milliseconds":
                "10000", "X-HubSpot-RateLimit-Remaining": "0" if reply.status == 429 else
                str(max(0, 190 - recent)), "X-HubSpot-RateLimit-Daily": "500000",
                "X-HubSpot-RateLimit-Daily-Remaining": str(max(0, 500000 - total))}

    def fault(self, kind: str) -> Reply:
        if kind == "5xx":
            return _hs_error(self.sb.pick([500, 502, 503], "hubspot"), "INTERNAL_ERROR",
                             "internal error (sandbox fault)")
        reply = _hs_error(429, "RATE_LIMITS", "You have reached your ten_secondly_rolling limit.",
                          errorType="RATE_LIMIT", policyName="TEN_SECONDLY_ROLLING",
                          groupName=f"publicapi:private-app:{HUBSPOT_TOKEN[-4:]}")
        if self.sb.pick([True, False], "hubspot"):  # HubSpot sends Retry-After only sometimes
            reply.headers["Retry-After"] = "1"
        return reply

    def not_found(self, method: str, path: str) -> Reply:
        return _hs_error(404, "OBJECT_NOT_FOUND", f"Unable to route {method} {path}")

    def properties(self) -> Reply:
        return Reply(200, {"results": list(self.sb.hs_properties.values())})

    def get_property(self, name: str) -> Reply:
        prop = self.sb.hs_properties.get(name)
        return Reply(200, prop) if prop else _hs_error(
            404, "OBJECT_NOT_FOUND", f"Unable to find property {name} for object type companies")

    def groups(self) -> Reply:
        return Reply(200, {"results": list(self.sb.hs_groups.values())})

    def create_group(self) -> Reply:
        body = self.json_body()
        body = body if isinstance(body, dict) else {}
        name, label, order = body.get("name"), body.get("label"), body.get("displayOrder", -1)
        problem = self.bad_name(name, "property group") or (
            "label is required" if not isinstance(label, str) or not label.strip() else
            "displayOrder must be an integer"
            if not isinstance(order, int) or isinstance(order, bool) else None)
        if problem:
            return _hs_error(400, "VALIDATION_ERROR", problem)
        if name in self.sb.hs_groups:
            return _hs_error(409, "CONFLICT", f"A property group named '{name}' already exists "
                             "for object type companies")
        self.sb.hs_groups[name] = group = _hs_group(name, label, order)
        return Reply(201, group)

    @staticmethod
    def bad_name(name: Any, what: str) -> str | None:
        if not isinstance(name, str) or not name:
            return f"name is required for a {what}"
        if not _HS_NAME.fullmatch(name):
            return f"Invalid {what} name '{name}': use lowercase letters, digits and " \
                   "underscores, starting with a letter"
        return None

    def property_problem(self, body: Record) -> str | None:
        """Why HubSpot would refuse to create this property (a VALIDATION_ERROR), or None."""
        kind, field_type, options = body.get("type"), body.get("fieldType"), body.get("options")
        if problem := self.bad_name(body.get("name"), "property"):
            return problem
        for key in ("label", "type", "fieldType", "groupName"):
            if not isinstance(body.get(key), str) or not body[key].strip():
                return f"{key} is required"
        if kind not in _HS_FIELD_TYPES:
            return f"Invalid property type '{kind}': use one of {', '.join(_HS_FIELD_TYPES)}"
        if field_type not in _HS_FIELD_TYPES[kind]:
            return f"fieldType '{field_type}' is not valid for a property of type '{kind}': " \
                   f"use {' or '.join(_HS_FIELD_TYPES[kind])}"
        if kind == "enumeration" and not (isinstance(options, list) and options and all(
                isinstance(o, dict) and isinstance(o.get("label"), str)
                and isinstance(o.get("value"), str) and o["value"] for o in options)):
            return "An enumeration property needs options, each with a label and a value"
        if body["groupName"] not in self.sb.hs_groups:
            return f"Property group '{body['groupName']}' does not exist for object type " \
                   "companies"
        return None

    def create_property(self) -> Reply:
        body = self.json_body()
        body = body if isinstance(body, dict) else {}
        name, kind, options = body.get("name"), body.get("type"), body.get("options") or []
        problem = self.property_problem(body)
        if problem:
            return _hs_error(400, "VALIDATION_ERROR", problem)
        if name in self.sb.hs_properties:
            return _hs_error(409, "CONFLICT", f"A property named '{name}' already exists for "
                             "object type companies")
        choices = [{"label": o["label"], "value": o["value"], "description": o.get(
            "description", ""), "displayOrder": o.get("displayOrder", i), "hidden": bool(
            o.get("hidden", False))} for i, o in enumerate(options)] if kind == "enumeration" \
            else []
        self.sb.hs_properties[name] = prop = _hs_property(
            name, kind, body["fieldType"], body["label"], body["groupName"], options=choices,
            description=str(body.get("description") or ""), created=hs_time(time.time()),
            display_order=body.get("displayOrder", -1) if isinstance(
                body.get("displayOrder"), int) else -1)
        return Reply(201, prop)

    @staticmethod
    def wanted(names: list[str], defaults: list[str] = _HS_DEFAULT) -> list[str]:
        """Requested properties (plus the three always returned), or HubSpot's defaults."""
        names = [n.strip() for n in names if isinstance(n, str) and n.strip()]
        return list(dict.fromkeys(names + _HS_ALWAYS)) if names else defaults

    def deals(self) -> dict[str, Record]:
        return getattr(self.ds, "hs_deals", {})

    def deal_ids(self, archived: bool) -> list[int]:
        return self.sb.cached("hubspot-deal-ids", archived, lambda: sorted(
            int(k) for k, d in self.deals().items() if bool(d.get("archived")) == archived))

    def list_companies(self) -> Reply:
        return self.listing("companies", self.ds.hs_companies, self.sb.hubspot_ids,
                            self.sb.hs_properties, _HS_DEFAULT)

    def list_deals(self) -> Reply:
        return self.listing("deals", self.deals(), self.deal_ids, _DEALS, _DEAL_DEFAULT)

    def listing(self, kind: str, objects: dict[str, Record], ids_of: Callable[[bool], list[int]],
                table: PropertyTable, defaults: list[str]) -> Reply:
        """GET /crm/v3/objects/<kind>: pages by id, `after` the id a page starts at; the
        `associations` asked for (deals: companies) come with each object that has any."""
        try:
            limit, after = int(self.arg("limit") or 10), int(self.arg("after") or 0)
        except ValueError:
            return _hs_error(400, "VALIDATION_ERROR", "limit and after must be integers")
        if not 1 <= limit <= 100:
            return _hs_error(400, "VALIDATION_ERROR", f"limit must be 1..100, got {limit}")
        ids = ids_of((self.arg("archived") or "").lower() == "true")  # SDK: "True"
        start = bisect_left(ids, after)  # `after` is the id the next page starts at
        names = self.wanted([n for v in self.params.get("properties", []) for n in v.split(",")],
                            defaults)
        linked = tuple(dict.fromkeys(n.strip() for v in self.params.get("associations", [])
                                     for n in v.split(",") if n.strip()))
        body: Record = {"results": [_hs_view(objects[str(i)], names, table, linked)
                                    for i in ids[start:start + limit]]}
        if start + limit < len(ids):
            token = str(ids[start + limit])
            query = [(k, v) for k, vs in self.params.items() if k != "after" for v in vs]
            body["paging"] = {"next": {"after": token, "link": self.sb.urls["hubspot"] +
                                       f"/crm/v3/objects/{kind}?" +
                                       urlencode([*query, ("after", token)])}}
        return Reply(200, body, served=len(body["results"]))

    def search(self) -> Reply:
        return self.searching("companies", self.ds.hs_companies, self.sb.hs_properties,
                              _HS_DEFAULT)

    def search_deals(self) -> Reply:
        return self.searching("deals", self.deals(), _DEALS, _DEAL_DEFAULT)

    def searching(self, kind: str, objects: dict[str, Record], table: PropertyTable,
                  defaults: list[str]) -> Reply:
        """POST /crm/v3/objects/<kind>/search: AND-ed filters in OR-ed groups, sorts, `after`
        offsets up to the search cap; archived objects are never found; no associations."""
        body = self.json_body()
        try:
            groups, sorts = body.get("filterGroups") or [], body.get("sorts") or []
            limit, after = int(body.get("limit") or 10), int(body.get("after") or 0)
            if not 1 <= limit <= 200 or after < 0:
                raise ValueError("limit must be 1..200")
            matchers = [[_hs_filter(table, f) for f in g["filters"]] for g in groups]
            for s in sorts:
                _hs_value(table, s["propertyName"], None)
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            return _hs_error(400, "VALIDATION_ERROR", f"Invalid search request: {e!r}")
        cap = self.sb.hubspot_search_cap
        if after >= cap:
            return _hs_error(400, "VALIDATION_ERROR", f"Search is limited to {cap} results per "
                             f"query; after={after} is beyond them. Narrow the filters (e.g. "
                             "hs_object_id GT the last id seen) and search again.")

        def build() -> list[Record]:
            found = [c for c in objects.values() if not c["archived"]
                     and (not matchers or any(all(m(c) for m in g) for g in matchers))]
            for s in reversed(sorts):
                name = s["propertyName"]
                found.sort(key=lambda c, name=name: (
                    (v := _hs_value(table, name, c["properties"].get(name))) is None, v or 0),
                    reverse=str(s.get("direction")).upper() == "DESCENDING")
            return found
        found = self.sb.cached("hubspot", json.dumps([kind, groups, sorts], sort_keys=True), build)
        names = self.wanted(body.get("properties") or [], defaults)
        out: Record = {"total": len(found), "results": [_hs_view(c, names, table)
                                                        for c in found[after:after + limit]]}
        if after + limit < len(found):  # also past the cap: the next request then fails
            out["paging"] = {"next": {"after": str(after + limit)}}
        return Reply(200, out, served=len(out["results"]))

    def deal_companies(self) -> Reply:
        """v4 associations batch read, deals to companies: one result per deal that has a company
        (toObjectId an integer, its association types), the others in the errors (207)."""
        body = self.json_body()
        inputs = body.get("inputs") if isinstance(body, dict) else None
        if not isinstance(inputs, list) or not 1 <= len(inputs) <= _BATCH_READ_LIMIT or not all(
                isinstance(i, dict) and str(i.get("id") or "").strip() for i in inputs):
            return _hs_error(400, "VALIDATION_ERROR", f"inputs must be a list of 1 to "
                             f"{_BATCH_READ_LIMIT} items, each with an id")
        started, results, errors = hs_time(time.time()), [], []
        for item in inputs:
            did, deal = str(item["id"]).strip(), self.deals().get(str(item["id"]).strip())
            companies = [] if deal is None or deal.get("archived") else \
                ((deal.get("associations") or {}).get("companies") or {}).get("results") or []
            if companies:
                results.append({"from": {"id": did}, "to": [
                    {"toObjectId": int(c["id"]), "associationTypes": _ASSOCIATION_TYPES.get(
                        c.get("type"), _ASSOCIATION_TYPES["deal_to_company_unlabeled"])}
                    for c in companies]})
            else:
                errors.append({"status": "error", "category": "OBJECT_NOT_FOUND",
                               "subCategory": "crm.associations.NO_ASSOCIATIONS_FOUND",
                               "context": {"fromObjectId": [did]}, "links": {}, "errors": [],
                               "message": f"No company is associated with deal {did}."})
        out: Record = {"status": "COMPLETE", "results": results, "startedAt": started,
                       "completedAt": hs_time(time.time())}
        if errors:
            out.update(numErrors=len(errors), errors=errors)
        return Reply(207 if errors else 200, out, served=len(results))

    def create_tasks(self) -> Reply:
        """Tasks batch create (alerts), associated with companies: activities.hs_create_tasks."""
        return Reply(*hs_create_tasks(self.ds, self.json_body()))

    def update_company(self, cid: str) -> Reply:
        """Update one company: 200 with it, 404 when missing, 400 with the property errors."""
        body = self.json_body()
        inputs = {"inputs": [{"id": cid, "properties": body.get("properties") if isinstance(body, dict)
                              else None}]}
        self.body = json.dumps(inputs).encode()
        reply = self.batch_update()
        if reply.status == 200:
            return Reply(200, reply.body["results"][0])
        error = reply.body["errors"][0]
        return _hs_error(404 if error["category"] == "OBJECT_NOT_FOUND" else 400, error["category"],
                         error["message"])

    def batch_update(self) -> Reply:
        """Per-input outcome: 200 if all applied, else 207 with the errors grouped."""
        body = self.json_body()
        inputs = body.get("inputs") if isinstance(body, dict) else None
        if not isinstance(inputs, list) or not 1 <= len(inputs) <= 100:
            return _hs_error(400, "VALIDATION_ERROR", "inputs must be a list of 1 to 100 items")
        ids = [str(i.get("id")) if isinstance(i, dict) else "" for i in inputs]
        if len(set(ids)) < len(ids):
            return _hs_error(400, "VALIDATION_ERROR", "Duplicate IDs found in batch input")
        started = stamp = hs_time(time.time())
        results, errors = [], {}
        for cid, item in zip(ids, inputs, strict=True):
            company = self.ds.hs_companies.get(cid)
            props = item.get("properties") if isinstance(item, dict) else None
            if company is None or company["archived"]:
                errors.setdefault(("OBJECT_NOT_FOUND", "Could not get some COMPANY objects, they "
                                   "may be deleted or not exist. Check that ids are valid."),
                                  []).append(cid)
                continue
            stored, problems = {}, []
            for name, value in (props if isinstance(props, dict) else {}).items():
                prop = self.sb.hs_properties.get(name)
                if prop is None:
                    code, message = "PROPERTY_DOESNT_EXIST", f'Property "{name}" does not exist'
                elif prop["modificationMetadata"]["readOnlyValue"]:
                    code, message = "READ_ONLY_VALUE", f"{name} is a read only property; its " \
                                                       "value cannot be set"
                else:
                    stored[name], code, message = _hs_store(prop, value)
                if code:
                    problems.append({"isValid": False, "message": message, "error": code,
                                     "name": name})
            if problems or not isinstance(props, dict):
                errors.setdefault(("VALIDATION_ERROR", "Property values were not valid: " +
                                   json.dumps(problems)), []).append(cid)
                continue
            company["properties"].update(stored, hs_lastmodifieddate=stamp)
            company["updatedAt"] = stamp
            results.append(_hs_view(company, [*stored, *_HS_ALWAYS], self.sb.hs_properties))
        self.sb.changed("hubspot")
        out: Record = {"status": "COMPLETE", "results": results, "startedAt": started,
                       "completedAt": hs_time(time.time())}
        if errors:
            out["numErrors"] = sum(len(v) for v in errors.values())
            out["errors"] = [{"status": "error", "category": cat, "message": msg,
                              "context": {"ids": cids}, "links": {}, "errors": []}
                             for (cat, msg), cids in errors.items()]
        return Reply(207 if errors else 200, out)
