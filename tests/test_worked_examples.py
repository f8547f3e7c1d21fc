"""The brief's three worked examples reproduce exactly through mappings."""

import pytest

from connector.scoring.engine import score_all
from connector.scoring.frame import from_values

LINEAR = "{type: linear, worst: 0, best: 100}"


def example_mappings(weights: list[int]) -> dict[str, str]:
    inputs = "\n".join(f"  m{i}: {{}}" for i in range(len(weights)))
    metrics = "\n".join(
        f"              m{i}: {{weight: {w}, scheme: {LINEAR}}}" for i, w in enumerate(weights)
    )
    score = f"""
scores:
  health:
    models:
      - name: example
        combine: metrics
        groups:
          usage:
            metrics:
{metrics}
"""
    metric_defs = "\n".join(f"  m{i}: {{input: m{i}}}" for i in range(len(weights)))
    return {"inputs": f"inputs:\n{inputs}\n", "metrics": f"metrics:\n{metric_defs}\n", "health": score}


@pytest.mark.parametrize(
    ("weights", "scores", "expected_raw", "expected"),
    [
        ([3, 1, 2, 1, 3, 1], [20, 50, 10, 30, 15, 70], 25.0, 25),
        ([3, 2, 2, 1, 1], [96, 52, 27, 0, 57], 503 / 9, 56),
        ([1, 3, 1, 3, 1], [50, 81, 67, 90, 92], 722 / 9, 80),
    ],
)
def test_worked_example_reproduces(mappings_from, weights, scores, expected_raw, expected):
    mappings = mappings_from(**example_mappings(weights))
    frame = from_values({f"m{i}": [s] for i, s in enumerate(scores)}, mappings)
    result = score_all(mappings, frame)["health"]
    assert result.computed[0] == pytest.approx(expected_raw)
    assert result.value[0] == expected


def test_worked_example_with_weight_words(mappings_from):
    files = example_mappings([3, 1, 2, 1, 3, 1])
    for number, word in (("3", "high"), ("2", "medium"), ("1", "low")):
        files["health"] = files["health"].replace(f"weight: {number},", f"weight: {word},")
    mappings = mappings_from(**files)
    frame = from_values({f"m{i}": [s] for i, s in enumerate([20, 50, 10, 30, 15, 70])}, mappings)
    assert score_all(mappings, frame)["health"].value[0] == 25
