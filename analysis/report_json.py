"""`report.json`: every number of the report (settings, trials, each comparison and contrast, the arm table, the
judge) and where its tables and figures are, rendered from a `ReportContent`."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from analysis import tables
from analysis.report_content import ReportContent


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """A frame's rows as pandas writes them to JSON (NaN as null, numpy scalars as plain numbers)."""
    return json.loads(frame.to_json(orient="records"))


def _trials(content: ReportContent) -> dict[str, Any]:
    t = content.study.trials
    return {"complete": int((t["status"] == "complete").sum()),
            "not_complete": [{"number": int(r.number), "status": r.status,
                              "reason": r.reason if isinstance(r.reason, str) else None}
                             for r in t[t["status"] != "complete"].itertuples()]}


def _contrasts(content: ReportContent) -> dict[str, Any]:
    contrasts = content.contrasts
    return {
        "factors": [{"name": f.name, "levels": list(f.levels), "reference": f.reference, "numeric": f.numeric}
                    for f in contrasts.factors],
        "families": [{"name": fam.name, "title": fam.title, "kind": fam.kind, "factor": fam.factor, "by": fam.by,
                      "note": fam.note, "rows": _records(tables.contrast_table(content.study, fam)),
                      "refused": [{"a": a, "b": b, "reason": r} for a, b, r in fam.refused]}
                     for fam in contrasts.families],
        "notes": contrasts.notes}


def _judge(content: ReportContent) -> dict[str, Any]:
    if content.judge_pairwise.empty and content.judge_single.empty:
        return {}
    return {"judge": {"pairwise": _records(content.judge_pairwise), "single": _records(content.judge_single)}}


def _provenance(content: ReportContent) -> dict[str, Any]:
    p = content.study.provenance
    if p is None:
        return {}
    return {"commits": list(p.commits), "finished_at": p.finished_at, "experiment": p.experiment, "preset": p.preset,
            "commands": p.commands,
            "config": content.relative(content.config_file) if content.config_file is not None else None}


def report_json(content: ReportContent) -> dict[str, Any]:
    """The whole of report.json."""
    study, s, families = content.study, content.settings, content.families
    return {
        "study": study.name, "path": content.study_dir.name, "project": study.project, "metric": content.metric,
        "baseline": content.baseline, "alpha": s.alpha, "confidence": s.confidence, "level": s.level,
        "n_resamples": s.n_resamples, "seed": s.seed, "price_per_device_hour": content.price_per_device_hour,
        "tolerance": s.tolerance, "tolerance_rule": "a share of each metric's declared range; none for unbounded",
        "holm_families": [{"name": f.name, "title": f.title, "tables": list(f.tables), "m": f.m,
                           "not_counted": f.excluded} for f in content.holm_families],
        "provenance": _provenance(content),
        "trials": _trials(content),
        "comparisons": [{"family": fam.name, **c.to_dict()} for fam in [*families, *content.contrasts.families]
                        for c in fam.comparisons],
        "contrasts": _contrasts(content),
        "refused": [{"family": fam.name, "a": a, "b": b, "reason": r} for fam in families for a, b, r in fam.refused],
        "arms": _records(content.arms),
        "tables": {k: {"csv": content.relative(v.csv), "markdown": content.relative(v.markdown),
                       "latex": content.relative(v.latex),
                       **({"full_markdown": content.relative(v.full_markdown),
                           "full_latex": content.relative(v.full_latex)} if v.full_markdown else {})}
                   for k, v in content.tables.items()},
        "figures": {k: [content.relative(p) for p in v.paths] for k, v in content.all_figures.items() if v},
        "skipped_figures": content.skipped_figures, "notes": [*study.notes, *content.notes],
        "scores": {key: spec.to_dict() for key, spec in content.score_meanings().items()},
        **_judge(content),
    }
