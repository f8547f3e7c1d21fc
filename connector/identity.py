"""Cross-system matching: which CRM, billing and helpdesk records are one customer.

Each source's folder says how its records match (`Identity` in sources/base.py);
this module applies the rules in three stages:

1. "account" sources: every live record is an account (Salesforce Accounts);
2. "crm" sources: a record is the account an explicit id names (a HubSpot
   company's `salesforce_account_id`) or whose domain it shares, else an
   account of its own;
3. "linked" sources (Stripe customers, Zendesk organizations): a CRM field
   naming the record (the `stripe_customer_id` input) first, then the explicit
   ids the record carries (metadata ids, `external_id`), then normalized
   domains: lowercase, no scheme, path, port or `www.`; free-mail domains
   (gmail.com, ...) never match anything.

A domain that two accounts claim is a conflict: it matches nothing, and every
record that needed it is reported, never merged into one of them.
"""

from __future__ import annotations

import functools
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .config.mappings import Mappings
from .sources import registry
from .store import Store, utcnow

FREE_MAIL = frozenset("""
    gmail.com googlemail.com yahoo.com yahoo.co.uk yahoo.fr ymail.com hotmail.com hotmail.co.uk
    hotmail.fr outlook.com live.com msn.com icloud.com me.com mac.com aol.com gmx.de gmx.net gmx.com
    web.de t-online.de proton.me protonmail.com pm.me yandex.ru yandex.com mail.ru qq.com 163.com
    126.com sina.com naver.com free.fr orange.fr laposte.net libero.it zoho.com fastmail.com hey.com
""".split())
_HOST = re.compile(r"^[^\s/:@]+\.[^\s/:@]+$")


_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*://")
_PLAIN = re.compile(r"[a-z0-9-]+(?:\.[a-z0-9-]+)+")  # already a host: lowercase, no scheme, path, port or dot at the end


def normalize_domain(value: Any) -> str | None:
    """'HTTPS://www.Acme.com/about' -> 'acme.com'; None for blanks, garbage and free-mail."""
    if not isinstance(value, str) or not value.strip():
        return None
    if _PLAIN.fullmatch(value) and not value.startswith("www."):  # what _normalized gives it, without its steps
        return None if value in FREE_MAIL else value
    return _normalized(value)


@functools.lru_cache(maxsize=262_144)  # an account's domain is met again in its usage keys, customers, orgs
def _normalized(value: str) -> str | None:
    text = value.strip().lower()
    if "@" in text:
        text = text.rsplit("@", 1)[1]
    text = _SCHEME.sub("", text)
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


def match(store: Store, mappings: Mappings, full: bool = False) -> MatchSummary:
    """Rebuild accounts, links and match issues from the stored records, source by source
    (the registry's identity rules): accounts, then CRM records, then linked records.

    Skipped, with the summary of what is stored, when nothing matching reads changed since the
    last match (connector/store/changes.py: a record's name, domains, explicit ids or the CRM
    field naming a linked record) and the mappings are the same; `full` matches anyway. When
    only records matched alone changed (usage keys: `registry.matched_alone`), only they are
    attached again (`_attach_alone`).
    """
    state = mappings.state()
    if not full and not store.match_due(state):
        return _stored_summary(store)
    queued = None if full else store.match_queued(state)
    try:
        if queued is not None and all(registry.matched_alone(system) for system, _obj in queued):
            return _attach_alone(store, queued, state)
        return _match_all(store, mappings, state)
    finally:  # the domains met are one match's: kept, their strings would hold the heap pages of the
        _normalized.cache_clear()  # pull beneath them in every step after (a 100k run: about 25 MB)


def _match_all(store: Store, mappings: Mappings, state: str) -> MatchSummary:
    """The whole match: every stored record, in the registry's order of roles; `state`: the
    mappings' (`Mappings.state`), recorded as matched."""
    m = _Matcher(store)
    summary = MatchSummary()
    plugins = registry.plugins()
    claims = _claim_fields(mappings, plugins)
    crm_records: dict[str, list[tuple[str, dict[str, Any]]]] = {}  # of each record, only the fields naming a linked one

    # 1. a source whose records are accounts: each is one; a domain two of them share is a conflict
    for plugin in (p for p in plugins if p.identity.role == "account"):
        rule, system = plugin.identity, plugin.system
        crm_records[system] = records = []
        for rid, rec in store.records(system, rule.obj):  # decoded one at a time, not all held
            records.append((rid, _only(rec, claims.get(system, ()))))
            m.add_account(f"{system}:{rid}", rule.name(rec), _first_domain(rule.domains(rec)), system, rule.obj, rid)
        summary.accounts[system] = len(records)

    # 2. CRM records: the account an explicit id or their domain names, or one of their own
    for plugin in (p for p in plugins if p.identity.role == "crm"):
        rule, system = plugin.identity, plugin.system
        crm_records[system] = records = []
        own = 0
        for rid, rec in store.records(system, rule.obj):
            records.append((rid, _only(rec, claims.get(system, ()))))
            domain = _first_domain(rule.domains(rec))
            explicit = m.explicit(rule.explicit(rec))
            key, used, conflicts = (explicit, "explicit id", []) if explicit else m.by_domains([domain])
            if key:
                m.link(system, rule.obj, rid, key, used if used == "explicit id" else f"domain {used}")
            elif conflicts:
                m.issues.append((system, rule.obj, rid, "conflict",
                                 f"{rule.label(rec)}: domain {domain} belongs to {len(conflicts)} accounts", conflicts))
            else:
                m.add_account(f"{system}:{rid}", rule.name(rec), domain, system, rule.obj, rid)
                own += 1
        summary.accounts[system] = own
    _domain_conflicts(m, {p.system: p.identity.obj for p in plugins})

    # 3. linked records: named by a CRM field, by an explicit id, then by domain
    for plugin in (p for p in plugins if p.identity.role == "linked"):
        rule, system = plugin.identity, plugin.system
        claimed = _claims(m, mappings, rule.claimed_by, crm_records)
        for rid, rec in store.records(system, rule.obj):
            owners = claimed.get(rid, [])
            if len(owners) > 1:
                m.issues.append((system, rule.obj, rid, "conflict",
                                 f"{rule.label(rec)} is named by {len(owners)} accounts' {rule.claimed_by}", owners))
                continue
            explicit = owners[0] if owners else m.explicit(rule.explicit(rec))
            m.attach(system, rule.obj, rid, explicit, [normalize_domain(d) for d in rule.domains(rec)], rule.label(rec))

    _save(store, m, summary)
    store.matched(state)
    return summary


def _attach_alone(store: Store, queued: dict[tuple[str, str], list[str]], state: str) -> MatchSummary:
    """The match when only records matched alone (usage keys) changed since the last one: the
    accounts, their domains and every other link are what the last match left, so only these
    records are attached again, as stage 3 of a full match attaches them (in id order)."""
    m = _Matcher(store)
    for key, domain in store.live_domains():
        m.by_domain[domain].add(key)
    m.by_external = store.link_keys()
    now = utcnow()
    ids = store.account_keys()
    for (system, obj), rids in queued.items():
        rule = registry.plugin(system).identity
        live = store.records_by_id(system, obj, rids)
        m.links, m.issues = [], []
        for rid in sorted(live):
            rec = live[rid]
            m.attach(system, obj, rid, m.explicit(rule.explicit(rec)), [normalize_domain(d) for d in rule.domains(rec)],
                     rule.label(rec))
        store.replace_links_of(system, obj, rids, [(s, o, e, ids[k], by) for s, o, e, k, by in m.links], now)
        store.replace_match_issues_of(system, obj, rids, m.issues)
    store.matched(state)
    return _stored_summary(store)


def _stored_summary(store: Store) -> MatchSummary:
    """The summary of the match as stored (what a match of unchanged records would say again)."""
    summary = MatchSummary()
    counts = store.match_counts()
    for plugin in registry.plugins():
        if plugin.identity.role != "linked":
            summary.accounts[plugin.system] = counts.accounts.get(plugin.system, 0)
    for (system, by), n in counts.links.items():
        kind = "crm record" if by == "crm record" else ("explicit id" if by == "explicit id" else "domain")
        summary.linked.setdefault(system, {}).setdefault(kind, 0)
        summary.linked[system][kind] += n
    for system, _obj, kind, n in store.match_issue_counts():
        target = summary.unmatched if kind == "unmatched" else summary.conflicts
        target[system] = target.get(system, 0) + n
    return summary


def _first_domain(values: list[Any]) -> str | None:
    return next((d for d in map(normalize_domain, values) if d), None)


def _claim_fields(mappings: Mappings, plugins: tuple[Any, ...]) -> dict[str, set[str]]:
    """CRM system -> its fields that name a linked record (the inputs linked rules are `claimed_by`)."""
    out: dict[str, set[str]] = defaultdict(set)
    for rule in (p.identity for p in plugins if p.identity.role == "linked"):
        spec = mappings.inputs.get(rule.claimed_by or "")
        if spec is None:
            continue
        for plugin in plugins:
            crm_field = getattr(spec, plugin.system, None)
            if crm_field:
                out[plugin.system].add(crm_field)
    return out


def _only(record: dict[str, Any], fields: Iterable[str]) -> dict[str, Any]:
    return {f: record.get(f) for f in fields}


def _claims(m: _Matcher, mappings: Mappings, input_name: str | None,
            crm_records: dict[str, list[tuple[str, dict[str, Any]]]]) -> dict[str, list[str]]:
    """Linked record id -> the accounts whose CRM field of `input_name` names it (each once)."""
    spec = mappings.inputs.get(input_name or "")
    claimed: dict[str, list[str]] = defaultdict(list)
    if spec is None:
        return claimed
    for system, records in crm_records.items():
        crm_field = getattr(spec, system, None)
        if not crm_field:
            continue
        for rid, rec in records:
            value, key = rec.get(crm_field), m.by_external.get((system, rid))
            if key and isinstance(value, str) and value.strip() and key not in claimed[value.strip()]:
                claimed[value.strip()].append(key)
    return claimed


def _domain_conflicts(m: _Matcher, objects: dict[str, str]) -> None:
    for domain, keys in sorted(m.by_domain.items()):
        if len(keys) > 1:
            for key in sorted(keys):
                system, ext = key.split(":", 1)
                m.issues.append((system, objects[system], ext, "conflict",
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
