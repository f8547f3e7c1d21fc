"""The healthsync exception hierarchy; the CLI maps each class to an exit code."""

from __future__ import annotations

from dataclasses import dataclass


class HealthsyncError(Exception):
    """Base of every error healthsync raises on purpose."""

    exit_code = 1


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the mappings: where, what, and what to do about it."""

    file: str
    line: int | None
    key: str
    message: str
    hint: str = ""

    def render(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        text = f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"
        return f"{text}\n    hint: {self.hint}" if self.hint else text


class ConfigError(HealthsyncError):
    """The mappings or settings are invalid; nothing was computed or written."""

    exit_code = 2

    def __init__(self, problems: list[Problem], title: str = "invalid mappings"):
        self.problems = problems
        self.title = title
        count = len(problems)
        super().__init__(
            f"{title}: {count} problem{'s' if count != 1 else ''}:\n" + "\n".join(p.render() for p in problems)
        )


class ExpressionError(HealthsyncError):
    """An expression in the mappings does not parse or uses something not allowed."""

    exit_code = 2

    def __init__(self, message: str, column: int | None = None):
        self.column = column
        super().__init__(message)


class StoreError(HealthsyncError):
    """The store path is not a healthsync store (missing, a folder, not SQLite, another
    application's database) or is from a newer healthsync: the user must fix the path."""

    exit_code = 2


class NotFound(HealthsyncError):
    """A named account, override or run does not exist."""

    exit_code = 2
