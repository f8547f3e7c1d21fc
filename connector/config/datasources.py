"""`sources:` in the mappings: data an admin points healthsync at, each entry one stream.

    sources:                          # mappings/sources/usage.yaml
      product_usage:
        type: sql                     # a SQL query; or `files`: CSV / Parquet files in a folder
        url_env: USAGE_DATABASE_URL   # the SQLAlchemy URL is a secret: only its variable is named here
        query: |
          SELECT account_domain, day, active_users, key_events, events
          FROM usage_daily WHERE day > :since
        key: {column: account_domain, kind: domain}
        timestamp: day
        columns: {active_users: number, key_events: number, events: number}

The entry types come from the sources (`SourcePlugin.mapped`: type -> the pydantic model of an
entry), so the checks here are only: a mapping of names, each with a known `type`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from ..sources import registry

KeyPath = tuple[Any, ...]


@dataclass(frozen=True)
class MappedSource:
    """One entry of `sources:`: its name, the source that reads it, and its checked settings."""

    name: str
    system: str
    type: str
    settings: Any  # the plugin's model of the entry


def known_types() -> dict[str, tuple[str, type[BaseModel]]]:
    return {kind: (p.system, model) for p in registry.plugins() for kind, model in p.mapped.items()}


def check_sources(raw: Any, add: Callable[..., None], typed: Callable[[type[BaseModel], Any, KeyPath], Any]
                  ) -> dict[str, MappedSource]:
    """Check `sources:`; every problem goes to `add(path, message, hint)` at its file:line."""
    if raw is None:
        return {}
    kinds = known_types()
    if not isinstance(raw, dict):
        add(("sources",), "'sources' must be a mapping of source names", f"each with a type: {', '.join(kinds)}")
        return {}
    found: dict[str, MappedSource] = {}
    for name, body in raw.items():
        path: KeyPath = ("sources", name)
        if not str(name).isidentifier():
            add(path, f"'{name}' is not a valid source name", "use letters, digits and _")
            continue
        if not isinstance(body, dict) or "type" not in body:
            add(path, "a source needs a 'type'", f"one of {', '.join(kinds)}")
            continue
        kind = body.get("type")
        if kind not in kinds:
            add((*path, "type"), f"unknown source type {kind!r}", f"use one of {', '.join(kinds)}")
            continue
        system, model = kinds[kind]
        settings = typed(model, {k: v for k, v in body.items() if k != "type"}, path)
        if settings is None:
            continue
        for where, message, hint in getattr(settings, "problems", lambda: [])():
            add((*path, *where), message, hint)
        found[str(name)] = MappedSource(str(name), system, str(kind), settings)
    return found
