"""One spelling of a moment: UTC ISO-8601 text with a Z (`2026-11-22T07:00:00Z`), as the store,
the logs and the CRMs' datetime fields take it; and one way back from the spellings APIs use."""

from __future__ import annotations

from datetime import UTC, datetime

FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def iso(moment: datetime) -> str:
    """A moment as the store writes it (a naive one is taken as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime(FORMAT)


def now_iso() -> str:
    """This moment, as the store writes it."""
    return iso(datetime.now(UTC))


def parse_iso(text: str) -> datetime:
    """An aware UTC datetime from ISO-8601 text: `Z`, `+00:00` and `+0000` offsets (Salesforce writes
    the last), fractions of a second, or none (taken as UTC). ValueError when it is not ISO-8601."""
    text = text.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    elif len(text) > 5 and text[-5] in "+-" and text[-4:].isdigit() and text[-3] != ":":
        text = f"{text[:-2]}:{text[-2:]}"
    moment = datetime.fromisoformat(text)
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)


def moment_of(value: object) -> datetime | None:
    """A moment from what an API or a CRM field holds: epoch milliseconds (HubSpot) or ISO-8601 text;
    None when it is empty or neither."""
    text = "" if value is None else str(value).strip()
    if not text:
        return None
    try:
        return datetime.fromtimestamp(int(text) / 1000, UTC) if text.isdigit() else parse_iso(text)
    except (ValueError, OverflowError, OSError):
        return None
