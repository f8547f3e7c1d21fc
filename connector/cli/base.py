"""The command group, its global options (taken before or after a command's name), the context
every command gets, and how healthsync errors become messages and exit codes."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from .. import logs
from ..config.mappings import load_mappings
from ..errors import ConfigError, HealthsyncError
from ..sources import registry
from ..store import Store
from .output import err, out

F = TypeVar("F", bound=Callable[..., Any])


class Invocation:
    """One command's invocation: the store and mappings it names, and how it logs."""

    def __init__(self, db: str | None, mappings: str | None, log_format: str = "human"):
        self.log_format = log_format
        self.db_path = db
        self.db_given = False  # --db on the command line (not HEALTHSYNC_DB): demo uses only such a path
        self.mappings_path = Path(mappings or os.environ.get("HEALTHSYNC_MAPPINGS") or "mappings")

    def store(self, create: bool = False) -> Store:
        """The store, to write; only `create` (pull, run) makes a new one where nothing is yet."""
        return Store(self.db_path, create=create)

    def reader(self) -> Store:
        """The store, to read only: it must exist, and its bytes never change."""
        return Store(self.db_path, readonly=True)

    def mappings(self) -> Any:
        return load_mappings(self.mappings_path)


def handled(fn: F) -> F:
    """Turn healthsync errors into a message on stderr and the documented exit code."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ConfigError as exc:
            err.print(f"[bold red]{exc.title}[/] ({len(exc.problems)} problem(s)):", markup=True)
            for problem in exc.problems:
                err.print(problem.render(), markup=False)
            sys.exit(exc.exit_code)
        except HealthsyncError as exc:
            err.print(f"error: {exc}", markup=False)
            sys.exit(exc.exit_code)

    return wrapper  # type: ignore[return-value]


class Healthsync(click.Group):
    """The command group; its global options are also taken after the subcommand's name."""

    GLOBAL = {"--db": True, "--mappings": True, "--log-format": True, "-v": False, "--verbose": False}

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, _globals_first(args, self.GLOBAL))


def _globals_first(args: list[str], known: dict[str, bool]) -> list[str]:
    """Move global options (and their values) found after the subcommand's name in front of it,
    so `healthsync scores --db x.db` means `healthsync --db x.db scores`; `--` ends the search."""
    front: list[str] = []
    rest: list[str] = []
    seen_command = False
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest += args[i:]
            break
        name = arg.split("=", 1)[0]
        if name in known:
            takes_value = known[name] and "=" not in arg
            (front if seen_command else rest).extend(args[i:i + 1 + takes_value])
            i += 1 + takes_value
            continue
        if not seen_command and not arg.startswith("-"):
            seen_command = True
        rest.append(arg)
        i += 1
    return front + rest


@click.group(cls=Healthsync, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--db", envvar="HEALTHSYNC_DB", help="SQLite store (default ./healthsync.db).")
@click.option("--mappings", envvar="HEALTHSYNC_MAPPINGS", help="Mappings folder (default ./mappings).")
@click.version_option(package_name="healthsync")
@click.pass_context
@click.option("-v", "--verbose", is_flag=True, help="Log each step, retry and quota wait (HEALTHSYNC_LOG_LEVEL=INFO).")
@click.option("--log-format", type=click.Choice(logs.FORMATS), default="human", show_default=True,
              envvar="HEALTHSYNC_LOG_FORMAT",
              help="Logs on stderr: human lines, or one JSON object per line (then at INFO, and no tables on stdout).")
def cli(ctx: click.Context, db: str | None, mappings: str | None, verbose: bool, log_format: str) -> None:
    """healthsync: customer health scores computed locally, written back to your CRM."""
    default = "INFO" if verbose or log_format == "json" else "WARNING"
    logs.setup(os.environ.get("HEALTHSYNC_LOG_LEVEL", default) if not verbose else "INFO", log_format)
    out.quiet = log_format == "json"
    ctx.obj = Invocation(db, mappings, log_format)
    ctx.obj.db_given = ctx.get_parameter_source("db") is click.core.ParameterSource.COMMANDLINE


SKIP = click.option("--skip", "skip", multiple=True, type=click.Choice(registry.systems()),
                    help="Leave this system out on purpose (repeatable; also HEALTHSYNC_SKIP=a,b). Without it, a "
                         "system the mappings use but that has no credentials is exit 2.")
