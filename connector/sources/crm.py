"""What the CRM sources share: the fields the mappings name in a CRM, the describe check's
problems, and the guards every CRM write goes through (one entry per record, outputs only)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import Problem

if TYPE_CHECKING:
    from ..config.mappings import Mappings


def crm_fields(mappings: Mappings, system: str) -> tuple[dict[str, str], list[str]]:
    """(input CRM field -> input name, output CRM fields) that the mappings name in a CRM."""
    inputs = {
        getattr(spec, system): name
        for name, spec in mappings.inputs.items()
        if getattr(spec, system, None)
    }
    outputs: list[str] = []
    for score in mappings.scores.values():
        out = score.definition.outputs.get(system)
        if out is not None:
            outputs += [f for f in out.fields().values() if f not in outputs]
    return inputs, outputs


def fields_to_read(mappings: Mappings, system: str, base: list[str]) -> list[str]:
    """The base fields, then every input and output field the mappings name in this CRM."""
    inputs, outputs = crm_fields(mappings, system)
    fields = list(base)
    return fields + [f for f in dict.fromkeys([*inputs, *outputs]) if f not in fields]


@dataclass(frozen=True)
class FieldWords:
    """How a CRM names its fields, for the problems a describe check reports."""

    missing_input: str  # "{field}" is replaced
    input_hint: str
    missing_outputs: str  # "{fields}" is replaced
    output_hint: str


def missing_fields(mappings: Mappings, system: str, known: set[str], words: FieldWords) -> list[Problem]:
    """Mapped input fields the CRM does not have (each at its mappings line), then missing outputs."""
    inputs, outputs = crm_fields(mappings, system)
    problems = [
        mappings.located.problem(("inputs", name, system), words.missing_input.format(field=f), hint=words.input_hint)
        for f, name in inputs.items() if f not in known
    ]
    missing = [f for f in outputs if f not in known]
    if missing:
        problems.append(Problem(
            "mappings/scores", None, f"outputs.{system}",
            words.missing_outputs.format(fields=", ".join(missing)), hint=words.output_hint,
        ))
    return problems


def merge_updates(updates: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
    """One entry per record id, in order of first appearance; a later value of a field wins.

    Neither CRM takes a batch that names one record twice (HubSpot answers
    "Duplicate IDs found in batch input"; Salesforce's DML rejects a duplicate
    id in one list).
    When no id repeats (a plan names each record once) the list itself is
    returned, not a copy: a bulk job's 100,000 updates copied held about
    100 MB more.
    """
    if len({record_id for record_id, _fields in updates}) == len(updates):
        return updates
    merged: dict[str, dict[str, Any]] = {}
    for record_id, fields in updates:
        merged.setdefault(record_id, {}).update(fields)
    return list(merged.items())


class InputFieldWrite(Exception):
    """A write would touch a field that is not a mapped output: refused before any request."""


def guard_outputs(updates: list[tuple[str, dict[str, Any]]], allowed: set[str], system: str) -> None:
    """Every field of every update must be a connector-owned output field of this CRM."""
    for record_id, fields in updates:
        foreign = sorted(set(fields) - allowed)
        if foreign:
            raise InputFieldWrite(
                f"refusing to write {', '.join(foreign)} on {system} record {record_id}: "
                "only the output fields the mappings name are ever written"
            )
