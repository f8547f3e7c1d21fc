"""Stripe: customers are matched to accounts (the CRM's `stripe_customer_id` input, metadata ids,
the email's domain); their subscriptions, invoices and charges give the billing metrics."""

from ..base import Belongs, Capabilities, Identity, SourcePlugin
from .client import StripeSource
from .history import OUTCOMES, PAST, as_of
from .metrics import CATALOGUE, moves


def _explicit(rec: dict) -> list[tuple[str, object]]:
    meta = rec.get("metadata") or {}
    return [("salesforce", meta.get("salesforce_account_id")), ("hubspot", meta.get("hubspot_company_id"))]


PLUGIN = SourcePlugin(
    system="stripe",
    client=StripeSource,
    capabilities=Capabilities(read=True),
    identity=Identity(
        obj="customers", role="linked",
        label=lambda rec: f"customer {rec.get('email') or rec.get('name')!r}",
        domains=lambda rec: [rec.get("email")],
        explicit=_explicit,
        claimed_by="stripe_customer_id",
    ),
    unmatched="no Stripe customer matched to this account",
    belongs=tuple(Belongs(obj, "customer", "customers") for obj in ("subscriptions", "invoices", "charges")),
    catalogue=CATALOGUE,
    moves=moves,
    outcomes=OUTCOMES,
    as_of=as_of,
    past=PAST,
)
