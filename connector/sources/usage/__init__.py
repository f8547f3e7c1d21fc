"""Product usage: rows from a SQL database or a file drop (the mappings' `sources:`), each naming
an account by a Salesforce, HubSpot or Stripe id or a domain; the usage metrics of the catalogue."""

from ..base import Belongs, Capabilities, Identity, SourcePlugin
from .client import UsageSource
from .history import PAST, as_of
from .metrics import CATALOGUE, moves
from .rows import rows_of
from .settings import FileDrop, SqlQuery

PLUGIN = SourcePlugin(
    system="usage",
    client=UsageSource,
    capabilities=Capabilities(read=True),
    identity=Identity(
        obj="keys", role="linked",
        label=lambda rec: f"usage key {rec.get('kind')} {rec.get('key')!r}",
        domains=lambda rec: [rec.get("key")] if rec.get("kind") == "domain" else [],
        explicit=lambda rec: [(rec.get("kind"), rec.get("key"))] if rec.get("kind") != "domain" else [],
    ),
    unmatched="no usage row names this account",
    belongs=(Belongs("series", "ref", "keys"),),
    catalogue=CATALOGUE,
    moves=moves,
    as_of=as_of,
    past=PAST,
    mapped={"sql": SqlQuery, "files": FileDrop},
    rows_of=rows_of,
)
