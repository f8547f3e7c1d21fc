"""The built-in metric catalogue: metrics healthsync computes from pulled records.

Mappings refer to these by name (``catalogue: open_tickets``); the measure step
fills them in the store. Each entry says its value type and where it comes from.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CatalogueMetric:
    type: str  # number / text / boolean / date
    system: str
    description: str


CATALOGUE: dict[str, CatalogueMetric] = {
    "mrr": CatalogueMetric("number", "stripe", "monthly recurring revenue, in the account's currency"),
    "mrr_currency": CatalogueMetric("text", "stripe", "the currency of the MRR (lowercase ISO code)"),
    "mrr_change_90d": CatalogueMetric("number", "stripe", "MRR change over 90 days, percent"),
    "subscription_status": CatalogueMetric(
        "text", "stripe", "best subscription status: active, trialing, past_due, canceled, ..."
    ),
    "past_due_invoices": CatalogueMetric("number", "stripe", "open invoices past their due date"),
    "uncollectible_invoices": CatalogueMetric("number", "stripe", "invoices marked uncollectible"),
    "failed_payments_30d": CatalogueMetric("number", "stripe", "failed charges in the last 30 days"),
    "days_past_due": CatalogueMetric("number", "stripe", "days the oldest unpaid invoice is overdue"),
    "open_tickets": CatalogueMetric("number", "zendesk", "tickets new, open, pending or on hold"),
    "urgent_tickets": CatalogueMetric("number", "zendesk", "open tickets with urgent priority"),
    "tickets_30d": CatalogueMetric("number", "zendesk", "tickets created in the last 30 days"),
    "csat_90d": CatalogueMetric(
        "number", "zendesk", "share of good satisfaction ratings in 90 days, percent"
    ),
    "license_utilization": CatalogueMetric(
        "number", "crm", "active users in 30 days / seats purchased, percent"
    ),
    "days_to_renewal": CatalogueMetric("number", "crm", "days until the renewal date"),
}
