"""`rouge_l`: ROUGE-L F-measure (longest common subsequence of words) by Google's `rouge-score`."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from harness.evaluation.metrics import HIGHER, ScoreSpec, register_metric


@lru_cache(maxsize=1)
def _scorer():
    from rouge_score.rouge_scorer import RougeScorer

    # rougeLsum splits on newlines (summary-level LCS): multi-line answers are scored line-aware.
    return RougeScorer(["rougeL", "rougeLsum"], use_stemmer=True)


@register_metric("rouge_l", "ROUGE-L and ROUGE-Lsum F-measure (rouge-score, Porter stemmer), 0-1",
                 scores=[ScoreSpec("rouge_l", "ROUGE-L", HIGHER), ScoreSpec("rouge_lsum", "ROUGE-Lsum", HIGHER)])
def rouge_l(prediction: str, reference: str, options: Any) -> dict[str, float]:
    scores = _scorer().score(reference, prediction)  # (target, prediction)
    return {"rouge_l": scores["rougeL"].fmeasure, "rouge_lsum": scores["rougeLsum"].fmeasure}
