"""`validate` and `setup`: the mappings, and the CRM fields and credentials they need."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from .. import outputs, pipeline
from ..config.mappings import check_mappings
from ..errors import ConfigError, HealthsyncError, Problem
from ..http import AuthError, CallLog
from ..sources import registry
from .base import Invocation, cli, handled
from .output import err, out


@cli.command()
@click.option("--live", is_flag=True, help="Also check every mapped field in the configured CRMs (reads only).")
@click.pass_obj
@handled
def validate(obj: Invocation, live: bool) -> None:
    """Check the mappings; list every problem with file:line (exit 2 if any)."""
    mappings, problems = check_mappings(obj.mappings_path)
    if problems:
        raise ConfigError(problems)
    assert mappings is not None
    models = sum(len(s.models) for s in mappings.scores.values())
    out.print(
        f"mappings OK: {obj.mappings_path} — {len(mappings.scores)} score(s) "
        f"({', '.join(mappings.scores)}), {models} model(s), {len(mappings.metrics)} metric(s), "
        f"{len(mappings.inputs)} input(s), {len(mappings.alerts)} alert(s); version {mappings.version}"
    )
    if live:
        _fields(mappings, create=False, metadata=None, ping=True)


@cli.command()
@click.option("--salesforce-metadata", "metadata", type=click.Path(file_okay=False),
              help="Write the Salesforce DX project (CustomField + permission set XML) for these mappings to DIR.")
@click.pass_obj
@handled
def setup(obj: Invocation, metadata: str | None) -> None:
    """Create missing HubSpot output properties; check Salesforce output fields and print what is missing."""
    _fields(obj.mappings(), create=True, metadata=metadata)


def _fields(mappings: Any, create: bool, metadata: str | None, ping: bool = False) -> None:
    if metadata:
        for name, text in outputs.salesforce_metadata(mappings).items():
            target = Path(metadata) / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        out.print(f"wrote the Salesforce DX project for these mappings to {metadata}", markup=False)
    expected = pipeline.expected_systems(mappings)
    found, skipped = pipeline.sources(os.environ, CallLog(), only=None if ping else list(registry.crms()),
                                      expected=expected, mappings=mappings)
    for system, why in skipped.items():
        out.print(f"{system}: {why}", markup=False)
    problems: list[Problem] = []
    if ping:  # every system's credentials, one cheap authenticated call each
        for source in list(found):
            try:
                source.ping()
            except HealthsyncError as exc:
                hint = f"set {source.CREDENTIALS} to working credentials" if isinstance(exc, AuthError) else ""
                problems.append(Problem("environment", None, source.system, str(exc), hint=hint))
                found.remove(source)
                continue
            out.print(f"{source.system}: credentials accepted", markup=False)
    if ping:  # the other sources check what the mappings ask of them: usage runs each query with LIMIT 0
        for source in [s for s in found if s.system not in registry.crms()]:
            checked = source.check(mappings)
            problems += checked
            if not checked and mappings.sources and any(e.system == source.system for e in mappings.sources.values()):
                entries = [e.name for e in mappings.sources.values() if e.system == source.system]
                out.print(f"{source.system}: {', '.join(entries)}: every declared column is returned", markup=False)
    reports = outputs.live_check(mappings, [s for s in found if s.system in registry.crms()], create=create)
    for report in reports:
        if report.created:
            out.print(f"{report.system}: created {', '.join(report.created)}", markup=False)
        out.print(f"{report.system}: {len(report.ok)} output field(s) ready"
                  + (f", {len(report.missing)} missing" if report.missing else "")
                  + (f", {len(report.problems)} problem(s)" if report.problems else ""), markup=False)
        if report.missing:
            out.print(f"  missing: {', '.join(spec.name for spec in report.missing)}", markup=False)
        if report.missing and report.system == "salesforce":
            out.print("  deploy them with the Salesforce CLI (the shipped project matches the shipped mappings; "
                      "`healthsync setup --salesforce-metadata DIR` writes one for yours):", markup=False)
            out.print("  " + outputs.deploy_hint(report.missing, metadata or "deploy/salesforce").replace("\n", "\n  "),
                      markup=False)
        elif report.missing:
            out.print("  `healthsync setup` creates them", markup=False)
        for warning in report.warnings:  # written cut, so never a failure: said, not refused
            err.print(f"warning: {warning.render()}", markup=False)
        problems += report.problems
        problems += [outputs.missing_problem(mappings, spec) for spec in report.missing]
    if problems:
        rejected = any(p.file == "environment" for p in problems)
        raise ConfigError(problems, "credentials were rejected or the CRM fields do not match the mappings"
                          if rejected else "the CRM fields do not match the mappings" if not any(
                              p.key.startswith("sources.") for p in problems) else "the sources do not match the mappings")
