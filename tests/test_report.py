"""`healthsync report`: the HTML page against the store it was made from (two sandbox runs a week apart)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import REPO
from report_store import MAPPINGS, two_runs
from test_backtest import NOW as BACKTEST_NOW
from test_backtest import _mappings, _pulled

from connector.backtest.evaluate import backtest
from connector.backtest.history import load, rebuild, schedule
from connector.backtest.outcomes import events_of
from connector.cli import cli
from connector.config.models import BandsScheme, LinearScheme, ScoreDef, StatusBand
from connector.metrics import gather
from connector.report import render_report, write_report
from connector.report.metrics import histogram, placed, thresholds
from connector.scoring.frame import iso
from connector.store import Store

HOSTILE = 'Evil <script>alert("x")</script> & Sons'


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(store path, the second run's time, the sandbox settings, the page)."""
    path = tmp_path_factory.mktemp("report") / "report.db"
    now, env = two_runs(path, accounts=500)
    with Store(path) as store:
        _make_hostile(store)
        page = render_report(store, MAPPINGS, now=now)
    return path, now, env, page


def _make_hostile(store: Store) -> None:
    """Markup in an account name (the biggest mover) and in a match issue, as a CRM could hold them."""
    row = store.conn.execute(
        """SELECT s.account_id FROM scores s JOIN score_history h ON h.account_id = s.account_id
           AND h.score = s.score WHERE s.score = 'health' GROUP BY s.account_id
           HAVING count(*) > 1 ORDER BY max(h.value) - min(h.value) DESC LIMIT 1"""
    ).fetchone()
    store.conn.execute("UPDATE accounts SET name = ? WHERE id = ?", (HOSTILE, row[0]))
    store.conn.execute(
        "INSERT INTO match_issues VALUES ('aaa', 'Account', 'x1', 'conflict', ?, '[\"<b>k</b>\"]')",
        ("<img src=x onerror=alert(1)>",),
    )


@pytest.fixture(scope="module")
def store(built):
    with Store(built[0]) as s:
        yield s


@pytest.fixture(scope="module")
def body(built) -> ET.Element:
    """The page's <body>, parsed as XML: it fails on any unclosed or misnested element."""
    match = re.search(r"<body>.*</body>", built[3], re.S)
    assert match
    return ET.fromstring(match.group(0))


def charts(body: ET.Element, kind: str) -> list[ET.Element]:
    return [svg for svg in body.iter("svg") if svg.get("class") == "chart" and svg.get("data-chart") == kind]


def table(body: ET.Element, cls: str, **attrs: str) -> ET.Element:
    found = [t for t in body.iter("table") if t.get("class") == cls
             and all(t.get(f"data-{k}") == v for k, v in attrs.items())]
    assert len(found) == 1, (cls, attrs)
    return found[0]


def bars(svg: ET.Element) -> list[ET.Element]:
    return [r for r in svg.iter("rect") if r.get("class") == "bar"]


# ---------------------------------------------------------------- score distributions


def test_one_histogram_per_score_and_segment_in_the_store(store, body):
    expected = store.conn.execute(
        "SELECT DISTINCT score, model FROM scores WHERE model IS NOT NULL ORDER BY 1, 2").fetchall()
    drawn = sorted((svg.get("data-score"), svg.get("data-segment")) for svg in charts(body, "histogram"))
    assert drawn == expected
    assert {"health", "churn_risk"} == {s for s, _ in expected} and len(expected) >= 6


def test_histogram_threshold_lines_are_the_status_bands_of_the_mappings(body):
    for svg in charts(body, "histogram"):
        definition = MAPPINGS.scores[svg.get("data-score")].definition
        lines = [float(line.get("data-value")) for line in svg.iter("line") if line.get("class") == "threshold"]
        assert lines == [b.below for b in definition.status[:-1]]
    health = charts(body, "histogram")[0]
    assert {r.get("data-band") for r in health.iter("rect") if r.get("class") == "band"} == {"Red", "Yellow", "Green"}


def test_histogram_bars_hold_each_segments_accounts_by_status(store, body):
    for svg in charts(body, "histogram"):
        counted: dict[str, int] = {}
        for rect in bars(svg):
            counted[rect.get("data-status")] = counted.get(rect.get("data-status"), 0) + int(rect.get("data-count"))
        expected = dict(store.conn.execute(
            "SELECT status, count(*) FROM scores WHERE score = ? AND model = ? AND value IS NOT NULL GROUP BY status",
            (svg.get("data-score"), svg.get("data-segment"))).fetchall())
        assert counted == expected


def test_status_counts_per_segment_equal_a_sql_count(store, body):
    for score in ("health", "churn_risk"):
        rows = store.conn.execute(
            """SELECT model, CASE WHEN value IS NULL AND na_reason LIKE 'insufficient coverage%' THEN 'No verdict'
                                  WHEN value IS NULL THEN 'N/A' ELSE status END, count(*)
               FROM scores WHERE score = ? AND model IS NOT NULL GROUP BY 1, 2""", (score,)).fetchall()
        expected = {(m, s): n for m, s, n in rows}
        shown = {(tr.get("data-segment"), td.get("data-status")): int(td.get("data-count"))
                 for tr in table(body, "status-counts", score=score).iter("tr") if tr.get("data-segment")
                 for td in tr.iter("td") if td.get("data-status")}
        assert {k: v for k, v in shown.items() if v} == expected
        stacked = charts(body, "status-counts")
        drawn = sum(int(r.get("data-count")) for svg in stacked if svg.get("data-score") == score for r in bars(svg))
        assert drawn == sum(expected.values())


def test_sub_score_panels_hold_every_account_of_the_segment(store, body):
    panels = charts(body, "groups")
    assert {p.get("data-segment") for p in panels} == {m.name for m in MAPPINGS.scores["health"].models}
    for svg in panels:
        model = next(m for m in MAPPINGS.scores["health"].models if m.name == svg.get("data-segment"))
        with_usage = store.conn.execute(
            """SELECT count(*) FROM scores WHERE score = 'health' AND model = ?
               AND json_extract(groups, '$.usage') IS NOT NULL""", (model.name,)).fetchone()[0]
        usage = [r for r in bars(svg) if r.get("data-status") == "Usage"]
        assert sum(int(r.get("data-count")) for r in usage) == with_usage > 0
        assert len([t for t in svg.iter("line") if t.get("class") == "threshold"]) == 2 * len(model.groups)


# ---------------------------------------------------------------- metrics


def test_metric_thresholds_are_the_scheme_of_that_segments_model(body):
    checked = 0
    for svg in charts(body, "metric"):
        model = next(m for m in MAPPINGS.scores[svg.get("data-score")].models if m.name == svg.get("data-segment"))
        scheme = next(s.use.scheme for s in model.slots() if s.name == svg.get("data-metric"))
        lines = sorted(float(t.get("data-value")) for t in svg.iter("line") if t.get("class") == "threshold")
        if isinstance(scheme, BandsScheme):
            assert lines == [b.upto for b in scheme.bands[:-1]]
            checked += 1
        elif isinstance(scheme, LinearScheme):
            assert lines == sorted([scheme.worst, scheme.best])
            checked += 1
    assert checked >= 20


def test_a_segments_bands_differ_by_model(body):
    """license_utilization: Onboarding splits at 10 and 30, Enterprise at 30, 60 and 85."""
    def lines(segment: str) -> list[float]:
        svg = next(s for s in charts(body, "metric")
                   if s.get("data-segment") == segment and s.get("data-metric") == "license_utilization")
        return [float(t.get("data-value")) for t in svg.iter("line") if t.get("class") == "threshold"]

    assert lines("onboarding") == [10, 30] and lines("enterprise") == [30, 60, 85]


def _na_expected(store: Store, model: str, metric: str) -> int:
    """Accounts of the model with no stored value (or, per seat, no usable divisor), or outside `applies_when`.

    The report reads the engine's results, so an account the metric does not apply
    to (days_to_renewal: only when lifecycle_stage == "Renewal") is N/A there too.
    """
    slot = next(s for m in MAPPINGS.scores["health"].models if m.name == model for s in m.slots() if s.name == metric)
    source = MAPPINGS.source_of(metric)
    per_join = ("LEFT JOIN metric_values d ON d.name = :per AND d.account_id = s.account_id"
                if slot.use.per else "")
    per_test = "OR d.num IS NULL OR d.num = 0" if slot.use.per else ""
    applies = re.fullmatch(r'(\w+) == "([^"]*)"', slot.use.applies_when or "")
    assert applies or slot.use.applies_when is None, slot.use.applies_when
    applies_join = ("LEFT JOIN metric_values w ON w.name = :when_name AND w.account_id = s.account_id"
                    if applies else "")
    applies_test = "OR w.text IS NOT :when_value" if applies else ""
    return store.conn.execute(
        f"""SELECT count(*) FROM scores s
            LEFT JOIN metric_values v ON v.name = :name AND v.account_id = s.account_id {per_join} {applies_join}
            WHERE s.score = 'health' AND s.model = :model
              AND ((v.num IS NULL AND v.text IS NULL) {per_test} {applies_test})""",
        {"name": source, "model": model, "per": slot.use.per,
         "when_name": MAPPINGS.source_of(applies.group(1)) if applies else None,
         "when_value": applies.group(2) if applies else None}).fetchone()[0]


def test_na_rates_per_metric_and_segment_match_a_sql_count(store, body):
    checked = 0
    for model in MAPPINGS.scores["health"].models:
        accounts = store.conn.execute(
            "SELECT count(*) FROM scores WHERE score = 'health' AND model = ?", (model.name,)).fetchone()[0]
        for tr in table(body, "na-rates", score="health", segment=model.name).iter("tr"):
            metric = tr.get("data-metric")
            if metric is None:
                continue
            assert int(tr.get("data-accounts")) == accounts
            if metric in MAPPINGS.derived:
                assert 0 <= int(tr.get("data-na")) <= accounts
                continue
            assert int(tr.get("data-na")) == _na_expected(store, model.name, metric), (model.name, metric)
            checked += 1
    assert checked >= 30


def test_metric_charts_count_every_account_that_has_a_value(body):
    rates = {(t.get("data-segment"), tr.get("data-metric")): (int(tr.get("data-accounts")), int(tr.get("data-na")))
             for t in body.iter("table") if t.get("class") == "na-rates" for tr in t.iter("tr") if tr.get("data-metric")}
    for svg in charts(body, "metric"):
        accounts, na = rates[(svg.get("data-segment"), svg.get("data-metric"))]
        assert sum(int(r.get("data-count")) for r in bars(svg)) == accounts - na


def test_whole_number_bands_put_the_threshold_between_two_bars():
    """`upto: 1` on counts: 0 and 1 left of the line, 2 right of it."""
    scheme = BandsScheme(type="bands", direction="lower_is_better",
                         bands=[{"upto": 0, "score": 100}, {"upto": 1, "score": 50}, {"score": 0}])
    definition = ScoreDef(status=[StatusBand(name="Red", below=40), StatusBand(name="Green")], models=[])
    marks = thresholds(scheme)
    drawn = histogram(scheme, np.array([0, 0, 0, 1, 2, 5.0]), marks, definition)
    assert drawn.discrete and drawn.counts.tolist() == [3, 1, 1, 0, 0, 1]
    assert [m.at for m in placed(marks, drawn, scheme)] == [0.5, 1.5]
    assert drawn.colours[0] == "#2f9e44" and drawn.colours[2] == "#d64545"


def test_continuous_values_on_a_band_edge_stay_in_the_lower_band():
    """`upto` is inclusive: 0.05 open tickets per seat is in the band up to 0.05."""
    scheme = BandsScheme(type="bands", direction="lower_is_better",
                         bands=[{"upto": 0.05, "score": 100}, {"upto": 0.15, "score": 60}, {"score": 0}])
    definition = ScoreDef(models=[])
    values = np.array([0.0, 0.01, 0.05, 0.05, 0.051, 0.15, 0.2])
    drawn = histogram(scheme, values, thresholds(scheme), definition)
    edge = int(np.flatnonzero(np.isclose(drawn.edges, 0.05))[0])
    assert not drawn.discrete and drawn.counts[:edge].sum() == 4 and drawn.counts.sum() == 7


# ---------------------------------------------------------------- movers


def _expected_movers(store: Store, score: str, since: str) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """From score_history in SQL: each account's change since `since`, 10 biggest falls and rises."""
    rows = store.conn.execute(
        """SELECT s.account_id, s.value - h.value FROM scores s
           JOIN score_history h ON h.score = s.score AND h.account_id = s.account_id
           WHERE s.score = ? AND s.value IS NOT NULL AND h.value IS NOT NULL
             AND h.scored_at = (SELECT max(scored_at) FROM score_history
                                WHERE score = s.score AND account_id = s.account_id AND scored_at <= ?)""",
        (score, since)).fetchall()
    moved = [(a, c) for a, c in rows if c != 0]
    down = sorted((m for m in moved if m[1] < 0), key=lambda m: (m[1], m[0]))[:10]
    up = sorted((m for m in moved if m[1] > 0), key=lambda m: (-m[1], m[0]))[:10]
    return down, up


def test_movers_are_the_biggest_changes_in_score_history(built, store, body):
    since = iso(built[1] - timedelta(days=7))
    for score in ("health", "churn_risk"):
        down, up = _expected_movers(store, score, since)
        for direction, expected in (("down", down), ("up", up)):
            rows = [tr for tr in table(body, "movers", score=score, direction=direction).iter("tr")
                    if tr.get("data-account")]
            shown = [(int(tr.get("data-account")), float(list(tr.iter("td"))[4].text)) for tr in rows]
            assert shown == expected
    assert len(_expected_movers(store, "health", since)[0]) == 10  # the data has movers to show


def test_a_mover_shows_its_name_and_its_status_change(store, body):
    tr = next(tr for tr in table(body, "movers", score="health", direction="down").iter("tr") if tr.get("data-account"))
    account = int(tr.get("data-account"))
    name, status = store.conn.execute(
        "SELECT a.name, s.status FROM accounts a JOIN scores s ON s.account_id = a.id "
        "WHERE a.id = ? AND s.score = 'health'", (account,)).fetchone()
    cells = list(tr.iter("td"))
    assert cells[0].text == name
    pills = [span.text for span in cells[5].iter("span")]
    assert pills[-1] == status


# ---------------------------------------------------------------- does the score predict churn?


def _section(page: str, score: str) -> ET.Element:
    match = re.search(rf'<section class="block prediction" id="predict-{score}".*?</section>', page, re.S)
    assert match, f"no backtest section for {score}"
    return ET.fromstring(match.group(0))


def _text(element: ET.Element) -> str:
    return " ".join("".join(element.itertext()).split())


def test_without_an_outcome_the_backtest_section_says_how_to_get_it(built, body):
    section = _section(built[3], "health")
    assert section.findtext("h2") == "Does the score predict churn?"
    paragraphs = list(section.iter("p"))
    assert len(paragraphs) == 1 and paragraphs[0].get("class") == "note how-to"
    said = _text(paragraphs[0])
    assert "healthsync rescore --from DATE" in said and "mappings/outcomes.yaml" in said and "docs/backtest.md" in said
    assert not charts(section, "roc") and "predict-churn_risk" not in built[3]  # trigger indexes are not judged
    assert any(a.get("href") == "#predict-health" for a in body.iter("a"))


def _save_series(store: Store, mappings, first: datetime, last: datetime, every: int) -> None:
    built = rebuild(store, mappings, schedule(first, last, timedelta(days=every)))
    store.save_series(mappings.version, iso(first), iso(last), every, built.rows(), built.assumptions)


@pytest.fixture(scope="module")
def judged(tmp_path_factory):
    """(the page without a series, the page with one, what `backtest` makes of that series, Acme's id)."""
    folder = tmp_path_factory.mktemp("judged")
    mappings = _mappings(folder)
    with Store(folder / "bt.db") as store:
        _pulled(store, mappings)
        without = render_report(store, mappings, now=BACKTEST_NOW)
        _save_series(store, mappings, datetime(2026, 6, 1, tzinfo=UTC), datetime(2026, 10, 1, tzinfo=UTC), 14)
        page = render_report(store, mappings, now=BACKTEST_NOW)
        data = gather(store)
        names = {i: name or key for i, (key, name) in store.live_accounts().items()}
        rebuilt = load(store, mappings, store.latest_series(mappings.version))
        result = backtest(rebuilt, mappings, "health", events_of(mappings.outcomes["churn"], data), 90,
                          BACKTEST_NOW, names)
        acme = store.account_keys()["salesforce:001000000000000001"]
    return without, page, result, acme


def test_with_an_outcome_but_no_series_the_section_says_to_rescore(judged):
    section = _section(judged[0], "health")
    said = _text(section.find("p"))
    assert "healthsync rescore --from DATE" in said and "churn" in said and not charts(section, "roc")


def test_the_backtest_section_shows_the_stored_series_judged(judged):
    _, page, result, acme = judged
    section = _section(page, "health")
    d = result["discrimination"]
    text = _text(section)
    assert f"AUC {d['auc']:.3f}" in text and f"{result['observations']:,} observations" in text
    roc = charts(section, "roc")
    assert len(roc) == 1 and [p for p in roc[0].iter("path") if p.get("class") == "curve"][0].get("d").startswith("M ")
    assert len([line for line in roc[0].iter("line") if line.get("class") == "diagonal"]) == 1
    # the data is thin (one churner) and the page says so instead of pretending
    assert d["thin"] and [_text(p) for p in section.iter("p") if p.get("class") == "warn thin"] == [
        f"Too thin to judge: {d['thin']}"]
    # one row and one bar per status band, worst first, in the score's status colours
    rows = [(tr.get("data-band"), int(tr.get("data-n")), int(tr.get("data-outcomes")))
            for tr in table(section, "band-rates", score="health").iter("tr") if tr.get("data-band")]
    assert rows == [(r["band"], r["n"], r["outcomes"]) for r in result["bands"]["rows"]]
    assert [row[0] for row in rows] == ["Red", "Yellow", "Green"]
    drawn = {r.get("data-status"): r.get("fill") for r in bars(charts(section, "band-rates")[0])}
    assert drawn == {"Green": "#2f9e44"}  # Red and Yellow held no observation: no bar
    assert "lift 1.00" in text
    assert len(bars(charts(section, "calibration")[0])) == len(result["calibration"]["bins"])
    # every sub-score and metric judged on its own
    separation = [(tr.get("data-kind"), tr.get("data-name")) for tr in table(section, "separation").iter("tr")
                  if tr.get("data-name")]
    assert separation == ([("sub-score", s["name"]) for s in result["sub_scores"]]
                          + [("metric", s["name"]) for s in result["metrics"]])
    # Acme was Green 90 days before it canceled: a watermelon, with what happened when
    watermelons = [tr for tr in table(section, "watermelons").iter("tr") if tr.get("data-account")]
    assert [int(tr.get("data-account")) for tr in watermelons] == [acme]
    cells = [_text(td) for td in watermelons[0].iter("td")]
    assert cells[1:4] == ["2026-07-13", "Green", "100"]
    assert "cancellation_requested" in cells[4] and cells[4].endswith("on 2026-10-12")
    alarms = next(p for p in section.iter("p") if p.get("class") == "false-alarms")
    assert int(alarms.get("data-count")) == result["false_alarms"]["count"]
    assumptions = [_text(li) for ul in section.iter("ul") for li in ul.iter("li")]
    assert assumptions[0].startswith("At each snapshot only what was known then is used")
    assert assumptions[1:] == result["assumptions"]  # the series' own, as rescore recorded them
    assert "how-to" not in page


def test_a_horizon_longer_than_the_series_shows_the_backtests_message(tmp_path):
    mappings = _mappings(tmp_path)
    with Store(tmp_path / "short.db") as store:
        _pulled(store, mappings)
        _save_series(store, mappings, BACKTEST_NOW - timedelta(days=28), BACKTEST_NOW, 7)
        page = render_report(store, mappings, now=BACKTEST_NOW)
    section = _section(page, "health")
    error = next(p for p in section.iter("p") if p.get("class") == "warn backtest-error")
    assert "a 90-day horizon needs a snapshot at least 90 days before" in _text(error)
    assert not charts(section, "roc")


# ---------------------------------------------------------------- matching, runs, header


def test_match_issue_counts_and_first_rows_are_the_stores(store, body):
    expected = store.conn.execute(
        "SELECT system, object, kind, count(*) FROM match_issues GROUP BY 1, 2, 3 ORDER BY 1, 2, 3").fetchall()
    counts = table(body, "issue-counts")
    shown = [tuple(td.text for td in tr.iter("td")) for tr in counts.iter("tr")][1:]
    assert shown == [(s, o, k, f"{n:,}") for s, o, k, n in expected]
    first = [cells[3].text for tr in table(body, "issues").iter("tr") if (cells := list(tr.iter("td")))]
    assert first == [r["external_id"] for r in store.match_issues()[:20]]
    assert {k for _, _, k, _ in expected} == {"unmatched", "conflict"}


def test_the_last_runs_are_listed_newest_first(store, body):
    rows = [[td.text for td in tr.iter("td")] for tr in table(body, "runs").iter("tr")][1:]
    runs = store.runs(limit=10)
    assert [int(r[0]) for r in rows] == [r["id"] for r in runs] == [2, 1]
    assert rows[0][3] == "ok" and rows[0][4] == "0" and "salesforce" in rows[1][6]


def test_the_header_states_the_store_mappings_accounts_and_last_run(built, store, body):
    header = next(h for h in body.iter("header"))
    facts = {dt.text: dd.text for div in header.iter("div") for dt, dd in [list(div)]}
    accounts = store.conn.execute("SELECT count(*) FROM accounts WHERE deleted_at IS NULL").fetchone()[0]
    assert facts["Store"] == "report.db" and facts["Mappings version"] == MAPPINGS.version
    assert facts["Accounts"] == f"{accounts:,}" and facts["Last run"] == "#2 run: ok (exit 0)"
    assert facts["Generated"] == iso(built[1])


# ---------------------------------------------------------------- the page itself


class _Balance(HTMLParser):
    """Every element closed, in order (void elements excepted)."""

    VOID = {"meta", "link", "br", "img", "input", "hr"}

    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []
        self.problems: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_startendtag(self, tag, attrs):
        pass

    def handle_endtag(self, tag):
        if not self.open or self.open.pop() != tag:
            self.problems.append(tag)


def test_the_page_is_well_formed(built, body):
    checker = _Balance()
    checker.feed(built[3])
    assert checker.problems == [] and checker.open == []
    assert built[3].startswith("<!DOCTYPE html>") and '<meta charset="utf-8">' in built[3]
    for svg in re.findall(r"<svg\b.*?</svg>", built[3], re.S):
        element = ET.fromstring(svg)
        assert element.find("title") is not None and element.get("aria-label")


class _References(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        self.urls += [v or "" for k, v in attrs if k in ("src", "href", "xlink:href", "action", "data", "poster")]


def test_the_page_loads_nothing_from_elsewhere(built):
    refs = _References()
    refs.feed(built[3])
    assert refs.urls and all(u.startswith("#") for u in refs.urls)
    assert not refs.tags & {"script", "link", "img", "iframe", "object", "embed"}
    assert "url(" not in built[3] and "@import" not in built[3] and "@font-face" not in built[3]


def test_text_from_the_store_is_escaped(built):
    page = built[3]
    assert "<script" not in page and "<img" not in page and "<b>k" not in page
    assert "Evil &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; Sons" in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page


def test_no_credential_reaches_the_report(built):
    secrets = {k: v for k, v in built[2].items() if any(w in k for w in ("PASSWORD", "TOKEN", "KEY", "SECRET"))}
    assert len(secrets) >= 4
    assert not [k for k, v in secrets.items() if v in built[3]]


def test_an_empty_store_still_makes_a_page(tmp_path):
    with Store(tmp_path / "empty.db") as empty:
        size = write_report(empty, MAPPINGS, tmp_path / "empty.html")
    page = (tmp_path / "empty.html").read_text(encoding="utf-8")
    assert size == len(page.encode("utf-8")) and "No runs recorded" in page
    assert 'data-chart="histogram"' not in page and "0 accounts scored" in page


# ---------------------------------------------------------------- command line


def test_report_command_writes_the_page_and_says_where(built, tmp_path):
    out = tmp_path / "out" / "r.html"
    out.parent.mkdir()
    result = CliRunner().invoke(cli, ["--db", str(built[0]), "--mappings", str(REPO / "mappings"),
                                      "report", "--out", str(out), "--days", "30"])
    assert result.exit_code == 0, result.output
    size = out.stat().st_size
    assert f"report written to {out} ({size:,} bytes)" in result.output
    page = out.read_text(encoding="utf-8")
    assert page.count('data-chart="histogram"') == built[3].count('data-chart="histogram"') >= 6
    assert "(30 days)" in page


def test_report_command_to_a_missing_folder_fails_cleanly(built, tmp_path):
    result = CliRunner().invoke(cli, ["--db", str(built[0]), "--mappings", str(REPO / "mappings"),
                                      "report", "--out", str(tmp_path / "nowhere" / "r.html")])
    assert result.exit_code == 1 and "Could not open file" in result.output
    assert not Path(tmp_path / "nowhere").exists()
