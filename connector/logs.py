"""Logging: human-readable lines by default, one JSON object per line for log collectors.

Every step of a run logs one event (`event()`): what happened, with the run id,
the step, the system and its counts as fields. In the human format the fields
follow the message as key=value; in the JSON format they are keys of the
object. Every formatted line, tracebacks included, goes through the secret
redactor last, so no credential can reach a log whatever field it hides in.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, TextIO

from .http import redact

LOGGER = "healthsync"
FORMATS = ("human", "json")
log = logging.getLogger(LOGGER)


_bound: ContextVar[dict[str, Any] | None] = ContextVar("healthsync_log_fields", default=None)


def event(message: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one step's outcome with its fields (step, system, counts ...)."""
    log.log(level, message, extra={"fields": {k: v for k, v in fields.items() if v is not None}})


@contextmanager
def bound(**fields: Any) -> Iterator[None]:
    """Fields added to every record logged inside (the run id of the run in progress)."""
    token = _bound.set({**(_bound.get() or {}), **fields})
    try:
        yield
    finally:
        _bound.reset(token)


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {**(_bound.get() or {}), **(getattr(record, "fields", None) or {})}


class HumanFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = _fields(record)
        if fields:
            first, _, rest = line.partition("\n")
            extra = " ".join(f"{k}={_compact(v)}" for k, v in fields.items())
            line = f"{first} [{extra}]" + (f"\n{rest}" if rest else "")
        return redact(line)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        data.update(_fields(record))
        if record.exc_info:
            data["error"] = self.formatException(record.exc_info)
        return redact(json.dumps(data, ensure_ascii=False, default=str, separators=(",", ":")))


def setup(level: str = "WARNING", fmt: str = "human", stream: TextIO | None = None) -> None:
    """Send healthsync's log records to `stream` (stderr) in `fmt`; called once per command."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown log format {fmt!r}: use one of {', '.join(FORMATS)}")
    for handler in [h for h in log.handlers if getattr(h, "_healthsync", False)]:
        log.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler._healthsync = True  # type: ignore[attr-defined]
    handler.setFormatter(JsonFormatter() if fmt == "json" else HumanFormatter())
    log.addHandler(handler)
    log.propagate = False
    wanted = level.upper()
    log.setLevel(wanted if wanted in ("DEBUG", "INFO", "WARNING", "ERROR") else "WARNING")


def _compact(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"), default=str)
    return str(value)
