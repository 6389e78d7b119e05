"""The divergence scores (`harness.evaluation.divergence`: kl, top1_agree, loglik_delta) as paired comparisons.

In eval rows (quantisation arms) they are score columns like any other, the reference arm's own rows at
0 / 1 / 0, and pair through `analysis.compare.paired_scores`. The forgetting check keeps them beside its
lm-eval rows (`harness.capabilities.divergence`), one row per item for the tuned model only: the base
is the reference, so its side of each pair is the reference's value.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from analysis.compare import PairedScores
from analysis.errors import UnpairedItemsError
from harness.capabilities.divergence import divergence_path
from harness.evaluation.divergence import DIVERGENCE_SCORES, REFERENCE_SCORES
from harness.evaluation.metrics import score_spec
from harness.results import read_jsonl


def divergence_metrics(metric: str, present: Sequence[str]) -> list[str]:
    """`metric`, then the divergence scores among `present` (the metrics a quantisation pair is compared on)."""
    return [metric, *[m for m in DIVERGENCE_SCORES if m in present and m != metric]]


def forgetting_divergence(label: str, folders: Sequence[Path], seeds: Sequence[int],
                          reference: str = "base") -> list[PairedScores]:
    """Tuned (`label`, one folder per seed) vs its base on each divergence score; [] where none was measured."""
    paths = [divergence_path(f) for f in folders]
    if not any(p.exists() for p in paths):
        return []
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise UnpairedItemsError(f"divergence rows measured for some seeds only (missing: {', '.join(missing)})")
    by_seed = [{str(r["item_id"]): r for r in read_jsonl(p)} for p in paths]
    item_ids = sorted(by_seed[0])
    if any(sorted(rows) != item_ids for rows in by_seed[1:]):
        raise UnpairedItemsError(f"'{label}': the seeds' divergence rows are over different texts; "
                                 "measure every seed on the same forgetting.divergence_text and limit")
    out = []
    for metric in DIVERGENCE_SCORES:
        a = np.array([[float(rows[i][metric]) for i in item_ids] for rows in by_seed])
        out.append(PairedScores(label, reference, metric, a, np.full_like(a, REFERENCE_SCORES[metric]),
                                tuple(seeds), tuple(item_ids), None, score_spec(metric).range_of((1.0, -1.0))))
    return out
