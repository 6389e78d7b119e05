"""`chrf`: character n-gram F-score (Popović 2015) as sacrebleu computes it, per item, scaled to 0-1."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from harness.evaluation.metrics import HIGHER, ScoreSpec, register_metric


@lru_cache(maxsize=1)
def _chrf():
    from sacrebleu.metrics import CHRF

    return CHRF()  # sacrebleu's defaults: character 6-grams, no word n-grams, beta 2 (the chrF of WMT)


@register_metric("chrf", "chrF (sacrebleu, default chrF: char 6-grams, beta 2) against the reference, 0-1",
                 scores=[ScoreSpec("chrf", "chrF", HIGHER)])  # the mean of sentence chrF, not corpus chrF
def chrf(prediction: str, reference: str, options: Any) -> dict[str, float]:
    return {"chrf": _chrf().sentence_score(prediction, [reference]).score / 100.0}
