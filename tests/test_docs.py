"""docs/mappings.md stays true: every example validates, the catalogue table is complete."""

from __future__ import annotations

import re

import pytest
from conftest import REPO

from connector.catalogue import catalogue
from connector.config.mappings import check_mappings

DOC = (REPO / "docs" / "mappings.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"```yaml\n(.*?)```", DOC, flags=re.S)


def test_the_reference_has_examples():
    assert len(BLOCKS) >= 12


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_example_validates_with_the_base_example(tmp_path, index):
    root = tmp_path / "mappings"
    root.mkdir()
    (root / "base.yaml").write_text(BLOCKS[0], encoding="utf-8")
    if index:
        (root / "example.yaml").write_text(BLOCKS[index], encoding="utf-8")
    mappings, problems = check_mappings(root)
    assert problems == [], "\n".join(p.render() for p in problems) + "\n---\n" + BLOCKS[index]
    assert mappings is not None


def test_catalogue_table_lists_every_catalogue_metric():
    listed = set(re.findall(r"^\| `(\w+)` \| (?:number|text)", DOC, flags=re.M))
    assert listed == set(catalogue())


def test_every_scheme_and_policy_is_documented():
    for word in ("bands", "linear", "boolean", "map", "percentile", "exclude", "neutral", "worst",
                 "carry_forward", "max_age_days", "applies_when", "per:", "combine", "triggers", "override"):
        assert word in DOC, word
