"""The registry: every source healthsync knows, in the order they are pulled and matched.

Adding a source is its folder and one line in SOURCES. The pipeline, identity, metrics, the
catalogue, progress and the CLI iterate over `plugins()`; nothing else names a source.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager

from .base import SourcePlugin

SOURCES = (
    "salesforce",
    "hubspot",
    "stripe",
    "zendesk",
    "usage",
)

_PLUGINS: list[SourcePlugin] = [importlib.import_module(f"{__package__}.{name}").PLUGIN for name in SOURCES]


def plugins() -> tuple[SourcePlugin, ...]:
    """Every registered source, CRMs first (accounts come from them), in registry order."""
    return tuple(_PLUGINS)


def systems() -> tuple[str, ...]:
    return tuple(p.system for p in _PLUGINS)


def plugin(system: str) -> SourcePlugin:
    for p in _PLUGINS:
        if p.system == system:
            return p
    raise KeyError(f"no source named {system!r}: the sources are {', '.join(systems())}")


def matched_alone(system: str) -> bool:
    """Whether the records of `system` are matched alone: it is the last linked source (a match
    attaches it after every other, and no other's match reads its links) and no CRM field names
    its records. Then a change of them needs only they be attached again (connector/identity.py)."""
    linked = [p for p in plugins() if p.identity.role == "linked"]
    return bool(linked) and linked[-1].system == system and linked[-1].identity.claimed_by is None


def crms() -> dict[str, SourcePlugin]:
    """The sources that are CRMs (their fields are read and written), by system."""
    return {p.system: p for p in _PLUGINS if p.crm is not None}


@contextmanager
def registered(extra: SourcePlugin) -> Iterator[SourcePlugin]:
    """A source added for a while (tests): as if its folder were listed in SOURCES."""
    if extra.system in systems():
        raise ValueError(f"a source named {extra.system!r} is already registered")
    _PLUGINS.append(extra)
    try:
        yield extra
    finally:
        _PLUGINS.remove(extra)
