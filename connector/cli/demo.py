"""`demo` and `sandbox`: the whole job against the bundled API sandbox (the `sandbox` package), or
the sandbox alone."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from .. import runs
from ..errors import StoreError
from ..http import SettingsError
from ..shutdown import Shutdown
from ..store import Store
from .backtest import demo_backtest
from .base import Invocation, cli, handled
from .output import out
from .run import _print_run, _progress
from .scores import _print_scores

DEMO_DB = "healthsync-demo.db"


@cli.command()
@click.option("--accounts", default=300, show_default=True, help="How many Salesforce accounts the sandbox holds.")
@click.option("--faults", is_flag=True, help="Inject 429s, 5xx, dropped connections and a session expiry.")
@click.pass_obj
@handled
def demo(obj: Invocation, accounts: int, faults: bool) -> None:
    """Start the bundled API sandbox, pull from it over real HTTP, score, show the result.

    It uses its own store, ./healthsync-demo.db (never HEALTHSYNC_DB), made anew
    each time; `--db PATH` on the command line names another, which must be new
    or hold demo runs alone: any other store is refused (exit 2) and left as it is.
    """
    build_dataset, Faults, Sandbox = _the_sandbox()
    mappings = obj.mappings()
    path = Path(obj.db_path if obj.db_given and obj.db_path else DEMO_DB)
    _check_demo_store(path)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    now = datetime.now(UTC)
    injected = Faults(rate_429=0.1, rate_5xx=0.02, rate_drop=0.01, expire_session_after=5, seed=1) if faults else Faults()
    with Sandbox(build_dataset(accounts=accounts, seed=7, now=now), faults=injected) as sb, Store(path) as store:
        out.print(f"sandbox: {sb.describe()}", markup=False)
        env = {**sb.unpaced_env(), "HEALTHSYNC_RETRY_BASE": "0.05"}
        result = runs.one_run(path, mappings, env, command="demo", now=now,
                              progress=_progress(obj))
        records = [r for r in store.current_scores("health") if r["value"] is not None]
        crm = _crm_view(store, sb.dataset)
    _print_run(result, mappings)
    out.print(f"demo store: {path} (mappings version {mappings.version})", markup=False)
    records.sort(key=lambda r: r["value"])
    for r in records:
        r["groups"] = json.loads(r["groups"] or "{}")
    out.print("lowest health scores:")
    _print_scores(records, 5)
    shown = [r for r in records if r["account_id"] in crm][:4]
    if shown:
        table = Table(title="as they now stand in the sandbox's CRMs (read back from its records)")
        for column in ("account", "score", "Salesforce Health_Score__c / Status / Grade",
                       "HubSpot health_score / health_status"):
            table.add_column(column)
        for r in shown:
            sf, hs = crm[r["account_id"]]
            table.add_row(r["account_name"], f"{r['value']:g} {r['status']}", sf, hs)
        out.print(table)
    demo_backtest(path, mappings)
    if records:
        out.print(f"next: {_program()} --db {path} explain {records[0]['account_key']}", markup=False)
        out.print(f"      {_program()} --db {path} backtest --json", markup=False)
        out.print(f"      {_program()} --db {path} report --out report.html", markup=False)


def _the_sandbox() -> tuple[Any, Any, Any]:
    """build_dataset, Faults and Sandbox from the sandbox package, which the runtime image leaves out."""
    try:
        from sandbox.dataset import build_dataset
        from sandbox.server import Faults, Sandbox
    except ImportError as exc:
        raise SettingsError(f"the API sandbox is not installed here ({exc}): pip install 'healthsync[sandbox]' "
                            "(it is left out of the container image on purpose)") from None
    return build_dataset, Faults, Sandbox


def _check_demo_store(path: Path) -> None:
    """The demo remakes its store: refuse (exit 2, untouched) anything but a new file or a demo's store."""
    if not path.exists() or (path.is_file() and path.stat().st_size == 0):
        return
    try:
        with Store(path, readonly=True) as store:
            commands = {r["command"] for r in store.runs(limit=10**9)}
    except StoreError as exc:
        raise StoreError(f"demo remakes its store, and {path} is not a demo's: {exc}") from None
    if commands != {"demo"}:
        raise StoreError(f"demo remakes its store, and {path} holds "
                         + (f"runs of {', '.join(sorted(commands - {'demo'}))}" if commands else "no demo run")
                         + ": it was left untouched; give demo another --db (or none: it uses ./" + DEMO_DB + ")")


def _program() -> str:
    """How to call healthsync again from here: `healthsync` when that is on PATH, else the path run."""
    if shutil.which("healthsync"):
        return "healthsync"
    here = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if here is not None and here.name == "healthsync" and here.exists():
        return os.path.relpath(here) if not os.path.relpath(here).startswith("..") else str(here.resolve())
    return f"{Path(sys.executable).name} -m connector"


@cli.command("sandbox")
@click.option("--accounts", default=300, show_default=True, help="How many Salesforce accounts it holds.")
@click.option("--faults", is_flag=True, help="Inject 429s, 5xx, dropped connections and a session expiry.")
@click.option("--env-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the environment to this file (KEY=value lines, for --env-file / `set -a; .`).")
@click.pass_obj
@handled
def sandbox_command(obj: Invocation, accounts: int, faults: bool, env_file: Path | None) -> None:
    """Start the bundled API sandbox alone, print the environment to export, serve until Ctrl-C / SIGTERM.

    In another shell, `export` the printed lines (or source --env-file) and run
    any command against it: `healthsync run`, `validate --live`, `setup` ...
    """
    build_dataset, Faults, Sandbox = _the_sandbox()

    injected = Faults(rate_429=0.1, rate_5xx=0.02, rate_drop=0.01, expire_session_after=5, seed=1) if faults else Faults()
    with Shutdown().on_signals() as shutdown, \
            Sandbox(build_dataset(accounts=accounts, seed=7, now=datetime.now(UTC)), faults=injected) as sb:
        env = sb.unpaced_env()
        lines = [f"export {k}={shlex.quote(v)}" for k, v in sorted(env.items())]
        if env_file is not None:
            env_file.write_text("".join(f"{k}={v}\n" for k, v in sorted(env.items())), encoding="utf-8")
        click.echo("\n".join(lines))
        click.echo(f"# sandbox up ({accounts} Salesforce accounts); Ctrl-C or SIGTERM stops it")
        sys.stdout.flush()
        while not shutdown.requested:
            shutdown.sleep(3600)
    click.echo(f"# sandbox stopped: {shutdown.reason}", err=True)


def _crm_view(store: Store, dataset: Any) -> dict[int, tuple[str, str]]:
    """account id -> what its Salesforce Account and HubSpot company hold, for accounts in both."""
    sf = {aid: dataset.sf_accounts[rid] for rid, aid in store.linked("salesforce", "Account").items()}
    hs = {aid: dataset.hs_companies[cid]["properties"] for cid, aid in store.linked("hubspot", "companies").items()}
    return {aid: (" / ".join(str(sf[aid].get(f)) for f in ("Health_Score__c", "Health_Status__c", "Health_Grade__c")),
                  " / ".join(str(hs[aid].get(f)) for f in ("health_score", "health_status")))
            for aid in sf.keys() & hs.keys()}
