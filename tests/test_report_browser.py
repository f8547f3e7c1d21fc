"""The report in a real browser: headless Chromium from the Debian packages, driven by selenium.

Checks that the charts are not only in the HTML but drawn: each has a size on
the page, bars have height, threshold lines are there, nothing overflows its
card, and the page made no network request. The store also holds a rescored series and the
mappings a churn outcome, so the backtest section ("Does the score predict churn?") is drawn too.
Chromium missing is a failure, not a skip: scripts/install installs it (apt-get install chromium
chromium-driver).
"""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import REPO
from report_store import MAPPINGS, two_runs
from test_backtest import OUTCOMES

from connector.backtest.history import rebuild, schedule
from connector.config.mappings import load_mappings
from connector.report import write_report
from connector.scoring.frame import iso
from connector.store import Store

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1400,1000")


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[Path, Path]:
    """(the report file, its store): the shipped mappings plus a churn outcome, and a year rescored."""
    folder = tmp_path_factory.mktemp("browser")
    now, _ = two_runs(folder / "b.db", accounts=300, seed=8)
    shutil.copytree(REPO / "mappings", folder / "mappings")
    (folder / "mappings" / "outcomes.yaml").write_text(OUTCOMES, encoding="utf-8")
    mappings = load_mappings(folder / "mappings")
    assert mappings.version == MAPPINGS.version  # outcomes change no score
    first, every = now - timedelta(days=364), timedelta(days=28)
    with Store(folder / "b.db") as store:
        built = rebuild(store, mappings, schedule(first, now, every))
        store.save_series(mappings.version, iso(first), iso(now), every.days, built.rows(), built.assumptions)
        write_report(store, mappings, folder / "report.html", now=now)
    return folder / "report.html", folder / "b.db"


@pytest.fixture(scope="module")
def page(report, tmp_path_factory):
    """A headless Chromium with the report loaded (the selenium driver)."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing: apt-get install chromium chromium-driver (scripts/install does)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)  # selenium-manager never looks for (or downloads) a browser
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the console, for test_no_console_error
    for flag in (*FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('profile')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        driver.get(report[0].resolve().as_uri())
        yield driver
    finally:
        driver.quit()


def charts(driver, kind: str | None = None) -> list[dict]:
    """Every svg.chart as drawn: its data-attributes, size, bars and threshold lines."""
    return driver.execute_script("""
        const kind = arguments[0];
        return [...document.querySelectorAll('svg.chart')]
          .filter(svg => kind === null || svg.dataset.chart === kind)
          .map(svg => {
            const box = svg.getBoundingClientRect();
            const card = svg.closest('.card');
            const room = card ? card.getBoundingClientRect() : null;
            return {
              chart: svg.dataset.chart, score: svg.dataset.score || null, segment: svg.dataset.segment || null,
              width: box.width, height: box.height,
              overflow: room ? box.right - room.right : 0,
              bars: [...svg.querySelectorAll('rect.bar')].map(r => r.getBoundingClientRect().height),
              thresholds: [...svg.querySelectorAll('line.threshold')].map(l => ({
                value: Number(l.dataset.value), height: l.getBoundingClientRect().height})),
            };
          });
    """, kind)


def test_every_chart_is_drawn_with_a_size(page):
    drawn = charts(page)
    assert len(drawn) >= 40
    assert [c for c in drawn if c["width"] <= 0 or c["height"] <= 0] == []
    assert {c["chart"] for c in drawn} == {"histogram", "status-counts", "groups", "metric", "na-rate", "movers",
                                           "roc", "band-rates", "calibration"}


def test_one_drawn_histogram_per_score_and_segment(page, report):
    with Store(report[1]) as store:
        expected = store.conn.execute(
            "SELECT DISTINCT score, model FROM scores WHERE model IS NOT NULL ORDER BY 1, 2").fetchall()
    drawn = charts(page, "histogram")
    assert sorted((c["score"], c["segment"]) for c in drawn) == expected
    for chart in drawn:
        assert chart["width"] >= 300 and sum(h > 0 for h in chart["bars"]) >= 3
        bands = MAPPINGS.scores[chart["score"]].definition.status
        assert [t["value"] for t in chart["thresholds"]] == [b.below for b in bands[:-1]]
        assert all(t["height"] > 50 for t in chart["thresholds"])


def test_metric_charts_draw_bars_and_their_thresholds(page):
    drawn = charts(page, "metric")
    assert len(drawn) >= 25
    assert [c for c in drawn if not any(h > 0 for h in c["bars"])] == []
    with_lines = [c for c in drawn if c["thresholds"]]
    assert len(with_lines) >= 20 and all(t["height"] > 0 for c in with_lines for t in c["thresholds"])


def test_no_chart_overflows_its_card(page):
    assert [c for c in charts(page) if c["overflow"] > 1] == []


def test_the_page_made_no_network_request(page, report):
    entries = page.execute_script(
        "return performance.getEntriesByType('navigation').concat(performance.getEntriesByType('resource'))"
        ".map(e => e.name)")
    assert entries == [report[0].resolve().as_uri()]
    assert page.execute_script("return document.fonts.size") == 0


def test_the_backtest_section_draws_its_roc_curve_and_rates(page):
    drawn = page.execute_script("""
        const section = document.getElementById('predict-health');
        const box = section.getBoundingClientRect();
        const roc = section.querySelector('svg.chart[data-chart="roc"]');
        const curve = roc.querySelector('path.curve');
        const shape = curve.getBoundingClientRect();
        const style = getComputedStyle(curve);
        return {
          section: box.height, caption: roc.closest('.card').querySelector('p.sub').textContent,
          curve: {width: shape.width, height: shape.height, length: curve.getTotalLength(),
                  stroke: style.stroke, visible: style.visibility, opacity: Number(style.opacity)},
          diagonal: roc.querySelector('line.diagonal').getBoundingClientRect().height,
          bands: [...section.querySelectorAll('svg[data-chart="band-rates"] rect.bar')].map(
            r => ({status: r.dataset.status, width: r.getBoundingClientRect().width})),
          deciles: [...section.querySelectorAll('svg[data-chart="calibration"] rect.bar')].map(
            r => r.getBoundingClientRect().height),
          rows: section.querySelectorAll('table.separation tr[data-name]').length,
        };
    """)
    assert drawn["section"] > 400 and drawn["caption"].startswith("AUC 0.")
    curve = drawn["curve"]
    assert curve["width"] > 150 and curve["height"] > 150 and curve["length"] > 300
    assert curve["stroke"] not in ("none", "") and curve["visible"] == "visible" and curve["opacity"] == 1
    assert drawn["diagonal"] > 150
    assert drawn["bands"] and all(b["width"] > 0 for b in drawn["bands"])
    assert {b["status"] for b in drawn["bands"]} <= {"Red", "Yellow", "Green"}
    assert drawn["deciles"] and any(h > 10 for h in drawn["deciles"]) and drawn["rows"] >= 10


def test_no_console_error(page):
    assert [e for e in page.get_log("browser") if e["level"] in ("SEVERE", "WARNING")] == []
