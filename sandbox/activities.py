"""What alerts create in the sandbox: Salesforce Tasks, HubSpot tasks, and webhook messages.

The request checks and records of the alert endpoints (salesforce.py, hubspot.py,
hooks.py): each function takes the parsed JSON body and the dataset and
answers (HTTP status, JSON body) in the API's own format.

* Salesforce: POST /services/data/vXX.X/composite/sobjects creates up to 200
  records (Task only here): one {id, success, errors} per record in order;
  allOrNone rolls back every record when one fails.
* HubSpot: POST /crm/v3/objects/tasks/batch/create creates up to 100 tasks,
  each with its associations; 201 when all were created, else 207 with the
  created ones and the errors grouped by category and message, naming the
  inputs by their objectWriteTraceId (which each result echoes too).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

from connector.times import parse_iso

from .dataset import HS_OWNERS, Dataset, hs_time, sf_id, sf_time

Record = dict[str, Any]

SF_TASK_FIELDS = {"Subject": 255, "Description": 32_000, "ActivityDate": 0, "Priority": 0, "Status": 0,
                  "WhatId": 18, "WhoId": 18, "OwnerId": 18, "Type": 40}
SF_TASK_STATUS = ("Not Started", "In Progress", "Completed", "Waiting on someone else", "Deferred")
SF_TASK_PRIORITY = ("High", "Normal", "Low")
HS_TASK_PROPERTIES = {"hs_task_subject", "hs_task_body", "hs_timestamp", "hs_task_priority", "hs_task_status",
                      "hs_task_type", "hubspot_owner_id"}
HS_TASK_OPTIONS = {"hs_task_status": ("NOT_STARTED", "IN_PROGRESS", "WAITING", "COMPLETED", "DEFERRED"),
                   "hs_task_priority": ("NONE", "LOW", "MEDIUM", "HIGH"),
                   "hs_task_type": ("TODO", "CALL", "EMAIL", "LINKED_IN", "MEETING")}
HS_TASK_TO_COMPANY = 192
_DATE = re.compile(r"\d{4}-\d\d-\d\d")


# ----------------------------------------------------------------------------- Salesforce


def _sf_error(code: str, message: str, fields: list[str] | None = None) -> Record:
    return {"statusCode": code, "message": message, "fields": fields or []}


def sf_check_task(ds: Dataset, record: Any) -> tuple[Record, list[Record]]:
    """(the Task's fields with defaults, errors) for one record of a create."""
    if not isinstance(record, dict):
        return {}, [_sf_error("JSON_PARSER_ERROR", "each record must be a JSON object")]
    kind = (record.get("attributes") or {}).get("type") if isinstance(record.get("attributes"), dict) else None
    if kind != "Task":
        return {}, [_sf_error("INVALID_TYPE", f"sObject type '{kind}' is not supported: the sandbox creates Tasks")]
    task: Record = {"Status": "Not Started", "Priority": "Normal"}
    errors = []
    for key, value in record.items():
        if key == "attributes":
            continue
        if key.lower() == "id":
            errors.append(_sf_error("INVALID_FIELD_FOR_INSERT_UPDATE", "cannot specify Id in an insert call", ["Id"]))
            continue
        if key not in SF_TASK_FIELDS:
            errors.append(_sf_error("INVALID_FIELD", f"No such column '{key}' on sobject of type Task", [key]))
            continue
        limit = SF_TASK_FIELDS[key]
        if value is not None and not isinstance(value, str):
            errors.append(_sf_error("INVALID_TYPE_ON_FIELD_IN_RECORD", f"{key}: value not of required type: {value}",
                                    [key]))
        elif limit and value is not None and len(value) > limit:
            errors.append(_sf_error("STRING_TOO_LONG", f"{key}: data value too large: {value[:40]}... "
                                    f"(max length={limit})", [key]))
        else:
            task[key] = value
    if task.get("Status") not in SF_TASK_STATUS:
        errors.append(_sf_error("INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                                f"Status: bad value for restricted picklist field: {task.get('Status')}", ["Status"]))
    if task.get("Priority") not in SF_TASK_PRIORITY:
        errors.append(_sf_error("INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                                f"Priority: bad value for restricted picklist field: {task.get('Priority')}",
                                ["Priority"]))
    if task.get("ActivityDate") is not None and not _DATE.fullmatch(str(task["ActivityDate"])):
        errors.append(_sf_error("INVALID_TYPE_ON_FIELD_IN_RECORD",
                                f"Due Date Only: value not of required type: {task['ActivityDate']}", ["ActivityDate"]))
    what = task.get("WhatId")
    if what is not None:
        account = ds.sf_accounts.get(what)
        if account is None:
            errors.append(_sf_error("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", ["WhatId"]))
        elif account["IsDeleted"]:
            errors.append(_sf_error("ENTITY_IS_DELETED", "entity is deleted", ["WhatId"]))
    owner = task.get("OwnerId")
    if owner is not None:
        user = ds.sf_users.get(owner)
        if user is None:
            errors.append(_sf_error("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", ["OwnerId"]))
        elif not user["IsActive"]:
            errors.append(_sf_error("INACTIVE_OWNER_OR_USER", f"operation performed with inactive user [{owner}] "
                                    "as owner of task", ["OwnerId"]))
    return task, errors


def sf_create(ds: Dataset, body: Any, api_user: str) -> tuple[int, Any]:
    """sObject Collections create: per-record results in request order; allOrNone rolls back."""
    if not isinstance(body, dict) or not isinstance(body.get("records"), list):
        return 400, [{"message": "Expected {\"allOrNone\": bool, \"records\": [...]}", "errorCode": "JSON_PARSER_ERROR"}]
    if len(body["records"]) > 200:
        return 400, [{"message": "EXCEEDED_ID_LIMIT: record limit reached. cannot submit more than 200 records "
                      "into this call", "errorCode": "EXCEEDED_ID_LIMIT"}]
    checked = [sf_check_task(ds, record) for record in body["records"]]
    rollback = body.get("allOrNone") is True and any(errors for _task, errors in checked)
    results, stamp = [], sf_time(time.time())
    for task, errors in checked:
        if errors or rollback:
            errors = errors or [_sf_error("ALL_OR_NONE_OPERATION_ROLLED_BACK", "Record rolled back because not all "
                                          "records were valid and the request was using AllOrNone header")]
            results.append({"success": False, "errors": errors})
            continue
        tid = sf_id("00T", len(ds.sf_tasks) + 1)
        ds.sf_tasks[tid] = {"Id": tid, "OwnerId": api_user, **task, "IsClosed": task["Status"] == "Completed",
                            "IsDeleted": False, "CreatedDate": stamp, "LastModifiedDate": stamp,
                            "SystemModstamp": stamp}
        results.append({"id": tid, "success": True, "errors": []})
    return 200, results


# ----------------------------------------------------------------------------- HubSpot


def _hs_time(text: str) -> float | None:
    """Epoch seconds of epoch milliseconds or an ISO 8601 datetime (UTC unless it says otherwise)."""
    if re.fullmatch(r"\d+", text):
        return int(text) / 1000
    try:
        moment = parse_iso(text)
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def hs_check_task(ds: Dataset, item: Any) -> tuple[Record, list[str], list[Record]]:
    """(properties, associated company ids, property problems) for one input of a batch create."""
    props = item.get("properties") if isinstance(item, dict) else None
    if not isinstance(props, dict):
        return {}, [], [{"isValid": False, "message": "properties must be an object", "error": "INVALID_INPUT",
                         "name": "properties"}]
    problems: list[Record] = []

    def bad(name: str, code: str, message: str) -> None:
        problems.append({"isValid": False, "message": message, "error": code, "name": name})

    stored: Record = {}
    for name, value in props.items():
        text = "" if value is None else str(value)
        if name not in HS_TASK_PROPERTIES:
            bad(name, "PROPERTY_DOESNT_EXIST", f'Property "{name}" does not exist')
        elif name in HS_TASK_OPTIONS and text not in HS_TASK_OPTIONS[name]:
            bad(name, "INVALID_OPTION", f"{text} was not one of the allowed options: [{', '.join(HS_TASK_OPTIONS[name])}]")
        elif name == "hubspot_owner_id" and text and text not in HS_OWNERS:
            bad(name, "INVALID_OWNER_ID", f"{text} is not a valid owner id")
        elif name == "hs_timestamp":
            ts = _hs_time(text)
            if ts is None:
                bad(name, "INVALID_DATETIME", f"{text} is neither epoch milliseconds nor an ISO 8601 datetime")
            else:
                stored[name] = hs_time(ts)
        else:
            stored[name] = text
    if "hs_timestamp" not in props:
        bad("hs_timestamp", "REQUIRED_FIELD", "hs_timestamp is required: it is the task's due date")
    companies: list[str] = []
    for association in item.get("associations") or []:
        to = str(((association or {}).get("to") or {}).get("id", ""))
        types = (association or {}).get("types") or []
        if not any(t.get("associationCategory") == "HUBSPOT_DEFINED" and t.get("associationTypeId") == HS_TASK_TO_COMPANY
                   for t in types if isinstance(t, dict)):
            bad("associations", "INVALID_ASSOCIATION", f"association types {json.dumps(types)} are not task to company "
                f"(HUBSPOT_DEFINED {HS_TASK_TO_COMPANY})")
            continue
        company = ds.hs_companies.get(to)
        if company is None or company["archived"]:
            bad("associations", "INVALID_ASSOCIATION", f"COMPANY {to} does not exist or is archived")
            continue
        companies.append(to)
    return stored, companies, problems


def hs_create_tasks(ds: Dataset, body: Any) -> tuple[int, Any]:
    """Batch create: every valid input becomes a task; 201, or 207 with the errors."""
    inputs = body.get("inputs") if isinstance(body, dict) else None
    if not isinstance(inputs, list) or not 1 <= len(inputs) <= 100:
        return 400, {"status": "error", "category": "VALIDATION_ERROR", "message": "inputs must be a list of 1 to 100 items"}
    started = hs_time(time.time())
    results: list[Record] = []
    errors: dict[tuple[str, str], list[str]] = {}
    for item in inputs:
        trace = str(item.get("objectWriteTraceId") or "") if isinstance(item, dict) else ""
        props, companies, problems = hs_check_task(ds, item)
        if problems:
            errors.setdefault(("VALIDATION_ERROR", "Property values were not valid: " + json.dumps(problems)),
                              []).append(trace)
            continue
        tid = str(90_000_000_001 + len(ds.hs_tasks))
        stamp = hs_time(time.time())
        props = {**props, "hs_object_id": tid, "hs_createdate": stamp, "hs_lastmodifieddate": stamp}
        ds.hs_tasks[tid] = {"id": tid, "properties": props, "createdAt": stamp, "updatedAt": stamp, "archived": False,
                            "associations": {"companies": companies}}
        result = {"id": tid, "properties": props, "createdAt": stamp, "updatedAt": stamp, "archived": False}
        if trace:
            result["objectWriteTraceId"] = trace
        results.append(result)
    out: Record = {"status": "COMPLETE", "results": results, "startedAt": started, "completedAt": hs_time(time.time())}
    if errors:
        out["numErrors"] = sum(len(v) for v in errors.values())
        out["errors"] = [{"status": "error", "category": category, "message": message,
                          "context": {"objectWriteTraceId": [t for t in traces if t]}, "links": {}, "errors": []}
                         for (category, message), traces in errors.items()]
    return (207 if errors else 201), out


# ----------------------------------------------------------------------------- webhooks


@dataclass
class HookInbox:
    """Messages POSTed to /hooks/<name>, and the failures set to come first."""

    received: dict[str, list[Record]] = field(default_factory=dict)  # name -> [{body, headers}]
    failing: dict[str, list[int]] = field(default_factory=dict)  # name -> [answers left to fail, status]

    def fail(self, name: str, times: int, status: int = 500) -> None:
        self.failing[name] = [times, status]

    def receive(self, name: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
        """(status, text): a failure still due, 400 for a body that is not JSON, else recorded and 'ok'."""
        due = self.failing.get(name)
        if due and due[0] > 0:
            due[0] -= 1
            return due[1], "no_service" if due[1] == 404 else "internal error (sandbox fault)"
        try:
            parsed = json.loads(body or b"null")
        except ValueError:
            return 400, "invalid_payload"
        if not isinstance(parsed, dict):
            return 400, "invalid_payload"
        self.received.setdefault(name, []).append({"body": parsed, "headers": headers})
        return 200, "ok"
