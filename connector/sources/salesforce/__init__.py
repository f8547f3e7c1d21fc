"""Salesforce: Accounts are the accounts; their mapped fields are read and the score's written
(sObject Collections, or Bulk API 2.0 jobs for big pushes), and alerts can create Tasks.
Opportunities and Cases (read only when the mappings need them) belong to their Account;
the Case metrics of the catalogue count them."""

from ..base import Belongs, Capabilities, CrmSpec, Identity, SourcePlugin
from .client import COLLECTION_SIZE, SalesforceSource
from .history import OUTCOMES, PAST, as_of
from .metrics import CATALOGUE, moves

PLUGIN = SourcePlugin(
    system="salesforce",
    client=SalesforceSource,
    capabilities=Capabilities(read=True, write=True, bulk=True, tasks=True),
    identity=Identity(
        obj="Account", role="account",
        label=lambda rec: f"account {rec.get('Name')!r}",
        domains=lambda rec: [rec.get("Website")],
        name=lambda rec: rec.get("Name"),
    ),
    unmatched="no Salesforce Account for this account",
    belongs=(Belongs("Opportunity", "AccountId", "Account"), Belongs("Case", "AccountId", "Account")),
    catalogue=CATALOGUE,
    moves=moves,
    outcomes=OUTCOMES,
    as_of=as_of,
    past=PAST,
    crm=CrmSpec(object="Account", batch=COLLECTION_SIZE),
)
