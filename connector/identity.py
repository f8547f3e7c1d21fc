"""Cross-system matching: which CRM, billing and helpdesk records are one customer.

Accounts are the CRM's records: every live Salesforce Account is one; a HubSpot
company is the same account when it names the Salesforce Account
(`salesforce_account_id`) or shares its domain, and an account of its own when
it matches nothing. Stripe customers and Zendesk organizations are then linked:

1. explicit ids first: the Salesforce field of the `stripe_customer_id` input,
   Stripe metadata `salesforce_account_id` / `hubspot_company_id`, the Zendesk
   organization's `external_id` (a Salesforce Account id or HubSpot company id);
2. then normalized domains: lowercase, no scheme, path, port or `www.`; free-mail
   domains (gmail.com, ...) never match anything.

A domain that two accounts claim is a conflict: it matches nothing, and every
record that needed it is reported, never merged into one of them.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .config.mappings import Mappings
from .store import Store, utcnow

FREE_MAIL = frozenset("""
    gmail.com googlemail.com yahoo.com yahoo.co.uk yahoo.fr ymail.com hotmail.com hotmail.co.uk
    hotmail.fr outlook.com live.com msn.com icloud.com me.com mac.com aol.com gmx.de gmx.net gmx.com
    web.de t-online.de proton.me protonmail.com pm.me yandex.ru yandex.com mail.ru qq.com 163.com
    126.com sina.com naver.com free.fr orange.fr laposte.net libero.it zoho.com fastmail.com hey.com
""".split())
_HOST = re.compile(r"^[^\s/:@]+\.[^\s/:@]+$")


def normalize_domain(value: Any) -> str | None:
    """'HTTPS://www.Acme.com/about' -> 'acme.com'; None for blanks, garbage and free-mail."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip().lower()
    if "@" in text:
        text = text.rsplit("@", 1)[1]
    text = re.sub(r"^[a-z][a-z0-9+.-]*://", "", text)
    text = text.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    text = text.rsplit("@", 1)[-1].split(":", 1)[0].rstrip(".")
    if text.startswith("www."):
        text = text[4:]
    if not _HOST.match(text) or text in FREE_MAIL:
        return None
    return text


@dataclass
class MatchSummary:
    accounts: dict[str, int] = field(default_factory=dict)  # origin -> live accounts
    linked: dict[str, dict[str, int]] = field(default_factory=dict)  # system -> matched_by -> count
    unmatched: dict[str, int] = field(default_factory=dict)
    conflicts: dict[str, int] = field(default_factory=dict)


@dataclass
class _Matcher:
    store: Store
    stripe_field: str | None
    accounts: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> account row
    links: list[tuple[str, str, str, str, str]] = field(default_factory=list)  # sys, obj, ext, key, by
    issues: list[tuple[str, str, str, str, str, list[str] | None]] = field(default_factory=list)
    by_domain: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    by_external: dict[tuple[str, str], str] = field(default_factory=dict)  # (system, id) -> key

    def add_account(self, key: str, name: Any, domain: str | None, system: str, obj: str, ext: str) -> None:
        self.accounts[key] = {"key": key, "name": name, "domain": domain}
        self.link(system, obj, ext, key, "crm record")
        if domain:
            self.by_domain[domain].add(key)

    def link(self, system: str, obj: str, ext: str, key: str, by: str) -> None:
        self.links.append((system, obj, ext, key, by))
        self.by_external[(system, ext)] = key

    def by_domains(self, domains: Iterable[str | None]) -> tuple[str | None, str | None, list[str]]:
        """(account key, domain used, conflicting keys) for the first domains that decide."""
        candidates: set[str] = set()
        conflicts: list[str] = []
        used = None
        for domain in domains:
            if not domain:
                continue
            keys = self.by_domain.get(domain, set())
            if len(keys) > 1:
                conflicts = sorted(keys)
                continue
            if keys:
                candidates |= keys
                used = domain
        if len(candidates) == 1:
            return next(iter(candidates)), used, []
        if len(candidates) > 1:
            return None, None, sorted(candidates)
        return None, None, conflicts

    def explicit(self, refs: Iterable[tuple[str, Any]]) -> str | None:
        for system, ext in refs:
            if isinstance(ext, (str, int)) and str(ext).strip():
                key = self.by_external.get((system, str(ext).strip()))
                if key:
                    return key
        return None

    def attach(self, system: str, obj: str, ext: str, explicit: str | None, domains: list[str | None], label: str) -> None:
        if explicit:
            self.link(system, obj, ext, explicit, "explicit id")
            return
        key, domain, conflicts = self.by_domains(domains)
        if key:
            self.link(system, obj, ext, key, f"domain {domain}")
        elif conflicts:
            self.issues.append((system, obj, ext, "conflict", f"{label}: its domain belongs to {len(conflicts)} accounts", conflicts))
        else:
            known = [d for d in domains if d]
            why = f"no account has the domain {', '.join(known)}" if known else "no explicit id and no usable domain"
            self.issues.append((system, obj, ext, "unmatched", f"{label}: {why}", None))


def match(store: Store, mappings: Mappings) -> MatchSummary:
    """Rebuild accounts, links and match issues from the stored records."""
    stripe_input = mappings.inputs.get("stripe_customer_id")
    m = _Matcher(store, stripe_input.salesforce if stripe_input else None)
    summary = MatchSummary()

    # 1. Salesforce Accounts are accounts; a domain two of them share is a conflict
    sf = list(store.records("salesforce", "Account"))
    for rid, rec in sf:
        m.add_account(f"salesforce:{rid}", rec.get("Name"), normalize_domain(rec.get("Website")), "salesforce", "Account", rid)
    summary.accounts["salesforce"] = len(sf)

    # 2. HubSpot companies: the same account, or one of their own
    own = 0
    for rid, rec in store.records("hubspot", "companies"):
        domain = normalize_domain(rec.get("domain"))
        explicit = m.explicit([("salesforce", rec.get("salesforce_account_id"))])
        key, used, conflicts = (explicit, "explicit id", []) if explicit else m.by_domains([domain])
        if key:
            m.link("hubspot", "companies", rid, key, used if used == "explicit id" else f"domain {used}")
        elif conflicts:
            m.issues.append(("hubspot", "companies", rid, "conflict",
                             f"company {rec.get('name')!r}: domain {domain} belongs to {len(conflicts)} accounts", conflicts))
        else:
            m.add_account(f"hubspot:{rid}", rec.get("name"), domain, "hubspot", "companies", rid)
            own += 1
    summary.accounts["hubspot"] = own
    _domain_conflicts(m)

    # 3. Stripe customers
    claimed: dict[str, list[str]] = defaultdict(list)
    if m.stripe_field:
        for rid, rec in sf:
            cus = rec.get(m.stripe_field)
            if isinstance(cus, str) and cus.strip():
                claimed[cus.strip()].append(f"salesforce:{rid}")
    for rid, rec in store.records("stripe", "customers"):
        owners = claimed.get(rid, [])
        if len(owners) > 1:
            m.issues.append(("stripe", "customers", rid, "conflict",
                             f"customer {rec.get('email') or rec.get('name')!r} is named by {len(owners)} Salesforce Accounts", owners))
            continue
        meta = rec.get("metadata") or {}
        explicit = owners[0] if owners else m.explicit([
            ("salesforce", meta.get("salesforce_account_id")), ("hubspot", meta.get("hubspot_company_id"))
        ])
        m.attach("stripe", "customers", rid, explicit, [normalize_domain(rec.get("email"))],
                 f"customer {rec.get('email') or rec.get('name')!r}")

    # 4. Zendesk organizations
    for rid, rec in store.records("zendesk", "organizations"):
        ext = rec.get("external_id")
        explicit = m.explicit([("salesforce", ext), ("hubspot", ext)])
        m.attach("zendesk", "organizations", rid, explicit,
                 [normalize_domain(d) for d in rec.get("domain_names") or []], f"organization {rec.get('name')!r}")

    _save(store, m, summary)
    return summary


def _domain_conflicts(m: _Matcher) -> None:
    for domain, keys in sorted(m.by_domain.items()):
        if len(keys) > 1:
            for key in sorted(keys):
                system, ext = key.split(":", 1)
                obj = "Account" if system == "salesforce" else "companies"
                m.issues.append((system, obj, ext, "conflict",
                                 f"domain {domain} is shared with {len(keys) - 1} other account(s); "
                                 "it is not used to match billing or helpdesk records", sorted(keys - {key})))


def _save(store: Store, m: _Matcher, summary: MatchSummary) -> None:
    now = utcnow()
    store.upsert_accounts(m.accounts.values(), now)
    ids = store.account_keys()
    store.keep_accounts(m.accounts, now)
    store.replace_links([(s, o, e, ids[k], by) for s, o, e, k, by in m.links], now)
    store.replace_match_issues(m.issues)
    for system, _obj, _ext, _key, by in m.links:
        kind = "crm record" if by == "crm record" else ("explicit id" if by == "explicit id" else "domain")
        summary.linked.setdefault(system, {}).setdefault(kind, 0)
        summary.linked[system][kind] += 1
    for system, _obj, _ext, kind, _d, _c in m.issues:
        target = summary.unmatched if kind == "unmatched" else summary.conflicts
        target[system] = target.get(system, 0) + 1
