"""HubSpot: a company is the account its `salesforce_account_id` or domain names, else an account
of its own; its mapped properties are read and the score's written, and alerts can create tasks.
Deals (read only when the mappings need them) belong to their company (`company_id`)."""

from ..base import Belongs, Capabilities, CrmSpec, Identity, SourcePlugin
from .client import BATCH_SIZE, HubSpotSource
from .history import OUTCOMES, as_of

PLUGIN = SourcePlugin(
    system="hubspot",
    client=HubSpotSource,
    capabilities=Capabilities(read=True, write=True, tasks=True),
    identity=Identity(
        obj="companies", role="crm",
        label=lambda rec: f"company {rec.get('name')!r}",
        domains=lambda rec: [rec.get("domain")],
        explicit=lambda rec: [("salesforce", rec.get("salesforce_account_id"))],
        name=lambda rec: rec.get("name"),
    ),
    unmatched="no HubSpot company for this account",
    belongs=(Belongs("deals", "company_id", "companies"),),
    outcomes=OUTCOMES,
    as_of=as_of,
    crm=CrmSpec(object="companies", batch=BATCH_SIZE),
)
