"""What one report holds, gathered from a store and the loaded mappings (no HTML here)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ..config.mappings import CompiledScore, Mappings
from ..scoring.frame import from_store, iso
from ..store import Store
from . import metrics, operations, scores
from .palette import status_colours
from .prediction import Prediction, predictions


@dataclass
class ScoreView:
    """Everything the report shows about one named score."""

    score: CompiledScore
    segments: list[scores.Segment]
    unscored: dict[str, int]
    sub_scores: list[scores.SegmentSubScores]
    metrics: list[metrics.SegmentMetrics]
    movers: scores.Movers
    prediction: Prediction | None = None  # weighted scores only: does it predict churn?

    @property
    def name(self) -> str:
        return self.score.name

    @property
    def label(self) -> str:
        return self.score.definition.label or self.score.name

    @property
    def colours(self) -> dict[str, str]:
        return status_colours(self.score.definition)


@dataclass
class Report:
    header: operations.Header
    scores: list[ScoreView]
    issues: operations.MatchIssues
    runs: list[operations.RunRow]


def gather(store: Store, mappings: Mappings, now: datetime, movers_days: int) -> Report:
    """Read everything the report shows; `now` anchors the movers window."""
    frame = from_store(store, mappings, now)  # loaded once: every score's metrics come from it
    predicted = predictions(store, mappings, now)
    views = [
        ScoreView(
            score=score,
            segments=scores.segments(store, score),
            unscored=scores.unscored(store, score),
            sub_scores=scores.sub_scores(store, score),
            metrics=metrics.segment_metrics(store, mappings, score, now, frame=frame),
            movers=scores.movers(store, score, now, movers_days),
            prediction=predicted.get(score.name),
        )
        for score in sorted(mappings.scores.values(), key=lambda s: s.definition.kind != "weighted")
    ]
    return Report(
        header=operations.header(store, mappings, iso(now)),
        scores=views,
        issues=operations.match_issues(store),
        runs=operations.runs(store),
    )
