"""A source is one folder and one registry line: a small fake helpdesk ("acmedesk"), declared in this
file alone and registered with one call, is pulled with the sandbox's four systems, matched,
measured and named in the run's expectations, without any other module knowing its name.

It also proves the stream contract: the source yields pages, the pipeline commits each with its
cursor, and a read that breaks mid-stream leaves the cursor on the last committed page.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO

from connector.catalogue import catalogue
from connector.config.mappings import load_mappings
from connector.http import ApiError, SettingsError, setting
from connector.identity import normalize_domain
from connector.pipeline import expected_systems, pull, sources
from connector.sources import registry
from connector.sources.base import (
    NA,
    Belongs,
    Capabilities,
    CatalogueMetric,
    Identity,
    Page,
    PullStats,
    Read,
    SourcePlugin,
    SourceSetup,
    Stream,
)
from connector.store import Store
from sandbox.dataset import build_dataset
from sandbox.server import Sandbox

NOW = datetime(2026, 11, 1, tzinfo=UTC)
PAGE = 2


class FakeApi:
    """The helpdesk's data, served two records a page, and what was asked of it."""

    def __init__(self, workspaces: list[dict[str, Any]], conversations: list[dict[str, Any]]):
        self.data = {"workspaces": workspaces, "conversations": conversations}
        self.asked: list[tuple[str, str | None]] = []  # (stream, cursor it was read from)
        self.break_after: int | None = None  # pages served before the connection "drops"

    def pages(self, stream: str, after: str | None) -> Iterator[tuple[list[dict[str, Any]], str]]:
        self.asked.append((stream, after))
        rows = [r for r in self.data[stream] if after is None or r["seq"] > int(after)]
        for served, i in enumerate(range(0, len(rows), PAGE)):
            if self.break_after is not None and served >= self.break_after:
                raise ApiError("acmedesk", f"GET /{stream}", "connection reset", 502)
            chunk = rows[i:i + PAGE]
            yield chunk, str(chunk[-1]["seq"])


API: FakeApi | None = None


class AcmeDeskSource:
    system = "acmedesk"
    CREDENTIALS = "ACMEDESK_TOKEN"

    def __init__(self, ctx: SourceSetup):
        self.ctx = ctx
        self.field_types: dict[str, dict[str, Any]] = {}

    @classmethod
    def from_env(cls, ctx: SourceSetup) -> AcmeDeskSource | None:
        return cls(ctx) if setting(ctx.env, "ACMEDESK_TOKEN", secret=True) else None

    def ping(self) -> None:
        return None

    def check(self, mappings: Any) -> list:
        return []

    def streams(self, mappings: Any) -> list[Stream]:
        return [Stream(name, name, f"GET /api/{name}", "id", "seq", "after") for name in ("workspaces", "conversations")]

    def read(self, stream: Stream, mappings: Any, at: Read) -> Iterator[Page]:
        assert API is not None
        for rows, cursor in API.pages(stream.name, at.cursor):
            yield Page([(str(r["id"]), r, None, False) for r in rows], cursor=cursor)

    def finish(self, stats: PullStats) -> None:
        stats.notes.append("acmedesk read")


def _open_conversations(acct: Any, inputs: Any, now: datetime) -> tuple[Any, str | None]:
    return float(sum(1 for c in acct.of("acmedesk", "conversations") if c["open"])), None


ACMEDESK = SourcePlugin(
    system="acmedesk",
    client=AcmeDeskSource,
    capabilities=Capabilities(read=True),
    identity=Identity(obj="workspaces", role="linked", label=lambda rec: f"workspace {rec.get('name')!r}",
                      domains=lambda rec: [rec.get("domain")], explicit=lambda rec: [("salesforce", rec.get("crm_id"))]),
    unmatched="no AcmeDesk workspace matched to this account",
    belongs=(Belongs("conversations", "workspace", "workspaces"),),
    catalogue={"acme_open_conversations": CatalogueMetric("number", "acmedesk", "open conversations", _open_conversations)},
)


@pytest.fixture
def acmedesk():
    with registry.registered(ACMEDESK):
        yield ACMEDESK


@pytest.fixture(scope="module")
def dataset():
    return build_dataset(accounts=120, seed=7, now=NOW)


def _mappings(tmp_path: Path):
    target = tmp_path / "mappings"
    shutil.copytree(REPO / "mappings", target)
    metrics = target / "metrics.yaml"
    metrics.write_text(metrics.read_text().replace(
        "metrics:\n", "metrics:\n  open_conversations:\n    catalogue: acme_open_conversations\n", 1))
    return load_mappings(target)


def _api_for(dataset) -> tuple[FakeApi, list[str], str]:
    """Workspaces for three accounts by domain and one by explicit id, one matching nothing."""
    with_domain = [a for a in dataset.sf_accounts.values() if normalize_domain(a.get("Website"))][:8]
    by_domain = [a for a in with_domain
                 if sum(normalize_domain(b.get("Website")) == normalize_domain(a["Website"])
                        for b in dataset.sf_accounts.values()) == 1][:3]
    explicit = next(a for a in dataset.sf_accounts.values() if a not in by_domain)
    workspaces = [{"id": 10 + i, "seq": i + 1, "name": a["Name"], "domain": a["Website"]} for i, a in enumerate(by_domain)]
    workspaces.append({"id": 20, "seq": 4, "name": "Explicit", "domain": None, "crm_id": explicit["Id"]})
    workspaces.append({"id": 30, "seq": 5, "name": "Stranger", "domain": "stranger-corp.example"})
    conversations = [{"id": 100 + i, "seq": i + 1, "workspace": w, "open": i % 3 != 0}
                     for i, w in enumerate([10, 10, 10, 11, 20, 20, 30])]
    return FakeApi(workspaces, conversations), [a["Id"] for a in by_domain], explicit["Id"]


def test_a_registered_source_is_pulled_matched_and_measured_with_the_others(acmedesk, dataset, tmp_path):
    global API
    API, by_domain, explicit = _api_for(dataset)
    mappings = _mappings(tmp_path)
    assert "acme_open_conversations" in catalogue()
    assert expected_systems(mappings)["acmedesk"] == "metric 'open_conversations' is the catalogue's acme_open_conversations"
    with Sandbox(dataset) as sb, Store(tmp_path / "s.db") as store:
        env = {**sb.env(), "ZENDESK_EXPORT_PER_MINUTE": "0", "ACMEDESK_TOKEN": "t0ken"}
        summary = pull(store, mappings, env, now=NOW)
        stats = summary.systems["acmedesk"]
        assert stats.records == {"workspaces": 5, "conversations": 7}
        assert stats.full == {"workspaces": True, "conversations": True} and stats.notes == ["acmedesk read"]
        assert summary.match.linked["acmedesk"] == {"domain": 3, "explicit id": 1}
        assert summary.match.unmatched["acmedesk"] == 1
        issue = next(i for i in store.match_issues("unmatched") if i["system"] == "acmedesk")
        assert issue["detail"] == "workspace 'Stranger': no account has the domain stranger-corp.example"
        keys = store.account_keys()
        values = _values(store)
        open_of = {by_domain[0]: 2.0, by_domain[1]: 0.0, by_domain[2]: 0.0, explicit: 2.0}
        for sf_id, expected in open_of.items():
            assert values[keys[f"salesforce:{sf_id}"]] == (expected, None)
        others = [v for a, v in values.items() if a not in {keys[f"salesforce:{i}"] for i in open_of}]
        assert others and all(v == (NA, "no AcmeDesk workspace matched to this account") for v in others)
        assert store.cursor("acmedesk", "workspaces") == "5" and store.cursor("acmedesk", "conversations") == "7"

        # the next pull starts from the committed cursors and reads only what is new
        API.data["conversations"].append({"id": 200, "seq": 8, "workspace": 11, "open": True})
        API.asked.clear()
        again = pull(store, mappings, env, now=NOW)
        assert API.asked == [("workspaces", "5"), ("conversations", "7")]
        assert again.systems["acmedesk"].records == {"conversations": 1}
        assert again.systems["acmedesk"].full == {"workspaces": False, "conversations": False}
        assert _values(store)[keys[f"salesforce:{by_domain[1]}"]] == (1.0, None)


def test_the_cursor_stays_on_the_last_committed_page_when_a_read_breaks(acmedesk, dataset, tmp_path):
    global API
    API, _, _ = _api_for(dataset)
    API.break_after = 2  # two pages of workspaces (4 records) are committed, the third request fails
    mappings = _mappings(tmp_path)
    with Sandbox(dataset) as sb, Store(tmp_path / "s.db") as store:
        env = {**sb.env(), "ZENDESK_EXPORT_PER_MINUTE": "0", "ACMEDESK_TOKEN": "t0ken"}
        found, _ = sources(env, summary_calls(), only=["acmedesk"])
        from connector.sources.sync import pull_streams
        with pytest.raises(ApiError):
            pull_streams(found[0], store, mappings, "2026-11-01T00:00:00Z")
        assert store.cursor("acmedesk", "workspaces") == "4"
        assert sorted(rid for rid, _rec in store.records("acmedesk", "workspaces")) == ["10", "11", "12", "20"]
        API.break_after = None
        API.asked.clear()
        stats = pull_streams(found[0], store, mappings, "2026-11-01T00:00:00Z")
        assert API.asked[0] == ("workspaces", "4") and stats.records["workspaces"] == 1


def _values(store: Store) -> dict[int, tuple[float | None, str | None]]:
    rows = store.conn.execute("SELECT account_id, num, na_reason FROM metric_values WHERE name = 'open_conversations'")
    return {a: (num, why) for a, num, why in rows}


def summary_calls():
    from connector.http import CallLog
    return CallLog()


def test_an_expected_registered_source_without_credentials_is_named_and_can_be_skipped(acmedesk, dataset, tmp_path):
    mappings = _mappings(tmp_path)
    env = {"ZENDESK_EXPORT_PER_MINUTE": "0"}
    with pytest.raises(SettingsError, match="acmedesk: the mappings use it .* set ACMEDESK_TOKEN, or leave it out "
                                            "with --skip acmedesk"):
        sources(env, summary_calls(), only=["acmedesk"], expected=expected_systems(mappings))
    found, skipped = sources(env, summary_calls(), only=["acmedesk"], expected=expected_systems(mappings),
                             skip=["acmedesk"])
    assert found == [] and skipped == {"acmedesk": "skipped (--skip / HEALTHSYNC_SKIP)"}


def test_outside_their_folders_and_the_registry_no_module_names_the_non_crm_sources():
    """Stripe and Zendesk are sources like the fake one: the house iterates the registry."""
    connector = REPO / "connector"
    for system in ("stripe", "zendesk"):
        folder = connector / "sources" / system
        named = [p.relative_to(REPO).as_posix() for p in connector.rglob("*.py")
                 if folder not in p.parents and p.name != "registry.py"
                 and re.search(rf"\b{system}\b", _code_of(p), re.I)]
        assert named == [], f"{system} is named outside its folder in {named}"


def _code_of(path: Path) -> str:
    """The file without comments and docstrings (prose may give examples)."""
    import ast
    import io
    import tokenize
    text = path.read_text(encoding="utf-8")
    docstrings = {(n.body[0].lineno, n.body[0].end_lineno) for n in ast.walk(ast.parse(text))
                  if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and n.body
                  and isinstance(n.body[0], ast.Expr) and isinstance(getattr(n.body[0], "value", None), ast.Constant)
                  and isinstance(n.body[0].value.value, str)}
    skip = {line for start, end in docstrings for line in range(start, (end or start) + 1)}
    kept = []
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type == tokenize.COMMENT or tok.start[0] in skip:
            continue
        kept.append(tok.string)
    return " ".join(kept)
