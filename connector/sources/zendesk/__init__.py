"""Zendesk: organizations are matched to accounts (`external_id` naming a CRM record, then their
domains); their tickets give the support metrics."""

from ..base import Belongs, Capabilities, Identity, SourcePlugin
from .client import ZendeskSource
from .history import PAST, as_of
from .metrics import CATALOGUE, moves

PLUGIN = SourcePlugin(
    system="zendesk",
    client=ZendeskSource,
    capabilities=Capabilities(read=True),
    identity=Identity(
        obj="organizations", role="linked",
        label=lambda rec: f"organization {rec.get('name')!r}",
        domains=lambda rec: list(rec.get("domain_names") or []),
        explicit=lambda rec: [("salesforce", rec.get("external_id")), ("hubspot", rec.get("external_id"))],
    ),
    unmatched="no Zendesk organization matched to this account",
    belongs=(Belongs("tickets", "organization_id", "organizations"),),
    catalogue=CATALOGUE,
    moves=moves,
    as_of=as_of,
    past=PAST,
)
