"""The CRM output fields: what each must be, checked live, created where the API allows.

`specs` derives every output field from the mappings (a score's value and
sub-scores are numbers, its status a picklist of the mapping's status names,
its drivers long text, its trend text "+3 (Up)" or, in a Number field, the
points change, ...). `check` compares them with a CRM's own description
of its fields (Salesforce describe, HubSpot properties): missing, read-only or
of an incompatible type; and warns where a label (a status name, a grade) is
longer than its text field, since the plan cuts every text value to the
field's length (`fit`, with an ellipsis). `setup` creates the missing HubSpot property group and
properties; Salesforce fields are metadata an admin deploys, so for those it
writes (`salesforce_metadata`) the CustomField and permission-set XML and says
exactly which are missing. Nothing here changes an existing field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import escape

from .config.mappings import Mappings
from .errors import Problem
from .sources.crm import crm_fields
from .sources.hubspot.client import field_type as hubspot_field_type
from .sources.salesforce.client import field_type as salesforce_field_type

HUBSPOT_GROUP = ("healthsync", "healthsync scores")
PERMISSION_SET = "Healthsync_Integration"
API_VERSION = "59.0"
HELP = "Written by healthsync on every run; a hand edit is overwritten (counted as drift)."

# output key -> (kind, text length of a field setup creates)
KINDS: dict[str, tuple[str, int]] = {
    "score": ("number", 0), "coverage": ("percent", 0), "trend": ("trend", 40), "grade": ("text", 10),
    "trend_direction": ("text", 10), "status": ("picklist", 0), "drivers": ("textarea", 1000),
    "scored_at": ("datetime", 0),
}
ELLIPSIS = "…"
LONGEST_TREND = "-100 (Down)"  # the longest trend text the writer makes: points change and direction
_SF_NUMBERS = {"double", "int", "long", "currency", "percent"}
# kind -> the describe types of a Salesforce field that can hold it; a trend goes into a number
# field as the points change, into a text field as "+3 (Up)" (writeback._output_value)
SALESFORCE_TYPES = {
    "number": _SF_NUMBERS, "percent": {"percent", "double"},
    "text": {"string", "textarea", "picklist"}, "textarea": {"textarea", "string"},
    "picklist": {"picklist", "string", "textarea"}, "datetime": {"datetime"},
    "trend": _SF_NUMBERS | {"string", "textarea"},
}
# kind -> HubSpot property types that can hold it
HUBSPOT_TYPES = {
    "number": {"number"}, "percent": {"number"}, "text": {"string", "enumeration"}, "textarea": {"string"},
    "picklist": {"enumeration", "string"}, "datetime": {"datetime"}, "trend": {"number", "string"},
}
HUBSPOT_NEW = {  # kind -> (type, fieldType) of a property setup creates
    "number": ("number", "number"), "percent": ("number", "number"), "text": ("string", "text"),
    "textarea": ("string", "textarea"), "picklist": ("enumeration", "select"), "datetime": ("datetime", "date"),
    "trend": ("string", "text"),
}


def fit(value: Any, length: int | None) -> Any:
    """A text value cut to a field's length (in characters), ending in an ellipsis; anything else as is."""
    if not isinstance(value, str) or not length or len(value) <= length:
        return value
    return value[:max(0, length - 1)].rstrip() + ELLIPSIS


@dataclass(frozen=True)
class OutputField:
    system: str
    name: str  # the CRM field / property name
    score: str
    key: str  # score, grade, status, group.usage, ...
    kind: str
    label: str
    length: int = 0
    options: tuple[str, ...] = ()

    @property
    def mapped_as(self) -> str:
        """How the mappings name it: `health score`, `health groups.usage`."""
        return f"{self.score} {self.key.replace('group.', 'groups.', 1)}"


@dataclass
class FieldReport:
    """What a live check found for one CRM."""

    system: str
    ok: list[str] = field(default_factory=list)
    missing: list[OutputField] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)  # present but unusable, or a missing input field
    created: list[str] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)  # usable, but a label can never fit: it is written cut

    @property
    def good(self) -> bool:
        return not self.missing and not self.problems


def _where(mappings: Mappings, spec: OutputField, message: str, hint: str = "") -> Problem:
    key: tuple[str, ...] = ("groups", spec.key.split(".", 1)[1]) if spec.key.startswith("group.") else (spec.key,)
    return mappings.located.problem(("scores", spec.score, "outputs", spec.system, *key), message, hint)


def missing_problem(mappings: Mappings, spec: OutputField) -> Problem:
    what = "Account field" if spec.system == "salesforce" else "company property"
    hint = ("deploy deploy/salesforce (see `healthsync setup`)" if spec.system == "salesforce"
            else "`healthsync setup` creates it")
    return _where(mappings, spec, f"the {what} {spec.name} does not exist in {spec.system}", hint)


def specs(mappings: Mappings, system: str) -> list[OutputField]:
    out: list[OutputField] = []
    for name, compiled in mappings.scores.items():
        definition = compiled.definition
        outputs = definition.outputs.get(system)
        if outputs is None:
            continue
        title = definition.label or name.replace("_", " ").capitalize()
        for key, crm_field in outputs.fields().items():
            kind, length = KINDS.get(key.split(".")[0] if key.startswith("group.") else key, ("number", 0))
            part = key.split(".", 1)[1] if key.startswith("group.") else key.replace("_", " ")
            options = tuple(b.name for b in definition.status) if kind == "picklist" else ()
            if key == "grade" and definition.grades:  # a Text field setup creates holds the longest grade
                length = max(length, *(len(g.name) for g in definition.grades))
            if options and definition.insufficient_label:  # the status below min_coverage
                options += (definition.insufficient_label,)
            out.append(OutputField(system, crm_field, name, key, kind, f"{title}: {part}"[:40], length, options))
    return out


# ------------------------------------------------------------------ checks


@dataclass(frozen=True)
class _Crm:
    """How one CRM describes its fields, for the shared check."""

    system: str
    noun: str  # how a field is named in messages: "Account.{name}", "company property {name}"
    types: Mapping[str, set[str]]  # output kind -> the CRM types that can hold it
    choice_type: str  # the CRM type whose allowed values must include the status names
    unwritable: str  # what a field this user cannot write is
    writable: Any  # described field -> bool
    choices: Any  # described field -> set of allowed values
    length: Any  # described field -> the most characters a text value may have (0: not a bounded text)
    hints: Mapping[str, str]  # "writable", "type", "choices", "length" -> what to do


_SALESFORCE = _Crm(
    "salesforce", "Account.{name}", SALESFORCE_TYPES, "picklist", "not editable by this user",
    lambda f: bool(f.get("updateable", False)),
    lambda f: {v.get("value") for v in f.get("picklistValues") or [] if v.get("active", True)},
    lambda f: int(salesforce_field_type(f).get("length", 0)),
    {"writable": f"grant Edit in field-level security (the {PERMISSION_SET} permission set does)",
     "type": "map another field, or change the field's type in Setup",
     "choices": "add them in Setup > Object Manager > Account > Fields",
     "length": "lengthen the field in Setup > Object Manager > Account > Fields, or shorten the name"},
)
_HUBSPOT = _Crm(
    "hubspot", "company property {name}", HUBSPOT_TYPES, "enumeration", "read-only",
    lambda f: not (f.get("modificationMetadata") or {}).get("readOnlyValue"),
    lambda f: {o.get("value") for o in f.get("options") or [] if not o.get("hidden")},
    lambda f: int(hubspot_field_type(f).get("length", 0)),
    {"writable": "map a property healthsync may write",
     "type": "map another property (setup never changes an existing property's type)",
     "choices": "add them in Settings > Properties",
     "length": "shorten the name"},
)


def _check(mappings: Mappings, crm: _Crm, described: Mapping[str, Mapping[str, Any]]) -> FieldReport:
    report = FieldReport(crm.system)
    for spec in specs(mappings, crm.system):
        found = described.get(spec.name)
        if found is None:
            report.missing.append(spec)
            continue
        kind = str(found.get("type", ""))
        where = f"{crm.noun.format(name=spec.name)} ({spec.mapped_as})"
        before = len(report.problems)
        if not crm.writable(found):
            report.problems.append(_where(mappings, spec, f"{where} is {crm.unwritable}", crm.hints["writable"]))
        if kind not in crm.types[spec.kind]:
            report.problems.append(_where(mappings, spec, f"{where} is a {kind} field; a {spec.kind} needs one of "
                                          f"{', '.join(sorted(crm.types[spec.kind]))}", crm.hints["type"]))
        elif kind == crm.choice_type:
            lacking = [o for o in spec.options if o not in crm.choices(found)]
            if lacking:
                report.problems.append(_where(mappings, spec, f"{where} {kind} lacks the value(s) {', '.join(lacking)}",
                                              crm.hints["choices"]))
        else:
            report.warnings += _too_long(mappings, crm, spec, found, where)
        if len(report.problems) == before:
            report.ok.append(spec.name)
    return report


def labels(mappings: Mappings, spec: OutputField) -> list[tuple[tuple[Any, ...], str, str]]:
    """(mappings path, what it is, text) of every fixed label this output can be written with."""
    definition = mappings.scores[spec.score].definition
    base: tuple[Any, ...] = ("scores", spec.score)
    out: list[tuple[tuple[Any, ...], str, str]] = []
    if spec.key == "status":
        out += [((*base, "status", i, "name"), "status name", b.name) for i, b in enumerate(definition.status)]
        insufficient = getattr(definition, "insufficient_label", None)
        if insufficient:
            out.append(((*base, "insufficient_label"), "status label", insufficient))
    elif spec.key == "grade" and definition.grades:
        out += [((*base, "grades", i, "name"), "grade", g.name) for i, g in enumerate(definition.grades)]
    elif spec.key == "trend_direction":
        out += [((*base, "trend"), "trend direction", d) for d in ("Up", "Down", "Flat")]
    elif spec.key == "trend":
        out.append(((*base, "outputs", spec.system, "trend"), "trend text", LONGEST_TREND))
    return out


def _too_long(mappings: Mappings, crm: _Crm, spec: OutputField, found: Mapping[str, Any], where: str) -> list[Problem]:
    """A warning per label longer than this text field: every run would write it cut."""
    length = crm.length(found)
    if not length:
        return []  # not a bounded text field (a number, or no length known)
    kind = str(found.get("type", ""))
    return [mappings.located.problem(
        path, f"the {what} '{text}' ({len(text)} characters) can never fit {where}, a {kind} field of "
        f"{length} characters: it is written as '{fit(text, length)}'", crm.hints["length"])
        for path, what, text in labels(mappings, spec) if len(text) > length]


def check_salesforce(mappings: Mappings, describe: Mapping[str, Mapping[str, Any]]) -> FieldReport:
    """describe: Account field name -> its describe entry."""
    return _check(mappings, _SALESFORCE, describe)


def check_hubspot(mappings: Mappings, properties: Mapping[str, Mapping[str, Any]]) -> FieldReport:
    """properties: company property name -> its definition."""
    return _check(mappings, _HUBSPOT, properties)


def _inputs(mappings: Mappings, system: str, known: set[str], report: FieldReport) -> None:
    inputs, _outputs = crm_fields(mappings, system)
    for crm_field, name in inputs.items():
        if crm_field not in known:
            report.problems.append(mappings.located.problem(
                ("inputs", name, system), f"input field {crm_field} does not exist in {system}",
                "check the field's API name and that this user can read it"))


def live_check(mappings: Mappings, sources: list[Any], create: bool = False) -> list[FieldReport]:
    """Check every configured CRM's input and output fields; with create, add missing HubSpot properties."""
    reports: list[FieldReport] = []
    for source in sources:
        if source.system == "salesforce":
            described = source.describe("Account")
            report = check_salesforce(mappings, described)
        elif source.system == "hubspot":
            described = source.describe_properties()
            report = check_hubspot(mappings, described)
            if create and report.missing:
                if HUBSPOT_GROUP[0] not in source.property_groups():
                    source.create_group(*HUBSPOT_GROUP)
                    report.created.append(f"group {HUBSPOT_GROUP[0]}")
                for spec in report.missing:
                    source.create_property(hubspot_property(spec))
                    report.created.append(spec.name)
                described = source.describe_properties()
                created = report.created
                report = check_hubspot(mappings, described)
                report.created = created
        else:
            continue
        _inputs(mappings, source.system, set(described), report)
        reports.append(report)
    return reports


def hubspot_property(spec: OutputField) -> dict[str, Any]:
    """The body of POST /crm/v3/properties/companies that creates this output property."""
    kind, field_type = HUBSPOT_NEW[spec.kind]
    body: dict[str, Any] = {"name": spec.name, "label": spec.label, "type": kind, "fieldType": field_type,
                            "groupName": HUBSPOT_GROUP[0], "description": HELP}
    if spec.options:
        body["options"] = [{"label": o, "value": o, "displayOrder": i, "hidden": False}
                           for i, o in enumerate(spec.options)]
    return body


# ------------------------------------------------------------------ Salesforce metadata


def salesforce_metadata(mappings: Mappings) -> dict[str, str]:
    """Relative path -> file text of a Salesforce DX project with every output field and
    a permission set granting edit on them, deployable with the Salesforce CLI."""
    fields = specs(mappings, "salesforce")
    files = {
        "sfdx-project.json": '{\n  "packageDirectories": [{"path": "force-app", "default": true}],\n'
                             f'  "sourceApiVersion": "{API_VERSION}"\n}}\n',
    }
    for spec in fields:
        files[f"force-app/main/default/objects/Account/fields/{spec.name}.field-meta.xml"] = _custom_field(spec)
    files[f"force-app/main/default/permissionsets/{PERMISSION_SET}.permissionset-meta.xml"] = _permission_set(fields)
    return files


def _custom_field(spec: OutputField) -> str:
    """CustomField source XML; elements after fullName in alphabetical order, as Salesforce retrieves them."""
    elements: dict[str, str] = {
        "description": escape(f"healthsync output: {spec.score} {spec.key}"),
        "inlineHelpText": escape(HELP),
        "label": escape(spec.label),
        "trackHistory": "false",
        "type": {"number": "Number", "percent": "Percent", "text": "Text", "textarea": "LongTextArea",
                 "datetime": "DateTime", "picklist": "Picklist", "trend": "Text"}[spec.kind],
    }
    if spec.kind in ("number", "percent", "text", "trend", "datetime"):
        elements["required"] = "false"
    if spec.kind in ("number", "percent"):
        elements["precision"], elements["scale"] = "5", "2" if spec.kind == "number" else "1"
    if spec.kind in ("text", "trend", "textarea"):
        elements["length"] = str(spec.length)
    if spec.kind == "textarea":
        elements["visibleLines"] = "3"
    if spec.kind == "picklist":
        values = "".join(
            f"            <value>\n                <fullName>{escape(o)}</fullName>\n"
            f"                <default>false</default>\n                <label>{escape(o)}</label>\n"
            "            </value>\n" for o in spec.options)
        elements["valueSet"] = ("\n        <restricted>true</restricted>\n        <valueSetDefinition>\n"
                                f"            <sorted>false</sorted>\n{values}        </valueSetDefinition>\n    ")
    body = "".join(f"    <{tag}>{elements[tag]}</{tag}>\n" for tag in sorted(elements))
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            '<CustomField xmlns="http://soap.sforce.com/2006/04/metadata">\n'
            f"    <fullName>{escape(spec.name)}</fullName>\n{body}</CustomField>\n")


def _permission_set(fields: list[OutputField]) -> str:
    grants = "".join(
        "    <fieldPermissions>\n        <editable>true</editable>\n"
        f"        <field>Account.{escape(f.name)}</field>\n        <readable>true</readable>\n"
        "    </fieldPermissions>\n" for f in sorted(fields, key=lambda f: f.name))
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<PermissionSet xmlns="http://soap.sforce.com/2006/04/metadata">\n'
        "    <description>Lets the healthsync integration user read and write the score fields.</description>\n"
        f"{grants}"
        "    <hasActivationRequired>false</hasActivationRequired>\n"
        "    <label>healthsync integration</label>\n"
        "</PermissionSet>\n"
    )


def deploy_hint(missing: list[OutputField], project_dir: str) -> str:
    """The Salesforce CLI commands that deploy just the missing fields (and the permission set)."""
    names = " ".join(f"--metadata CustomField:Account.{f.name}" for f in missing)
    return (f"cd {project_dir} && sf project deploy start {names} --metadata PermissionSet:{PERMISSION_SET} "
            "--target-org <alias>\n"
            f"sf org assign permset --name {PERMISSION_SET} --target-org <alias> --on-behalf-of <integration user>")
