"""The LLM judge's verdicts across a study's trials (`trial-*/judge/*.jsonl`, `metrics.json` block `judge`):
win rates with bootstrap CIs and a sign test per pair (Holm across the table), rubric grades per arm, and
how far to trust the judge (position flips, ties, failures, cost, self-agreement, agreement with metrics)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.load import Study
from harness.evaluation.metrics.external import JUDGE_GRADE, JUDGE_WIN_RATE
from harness.results import read_json, read_jsonl
from harness.stats.paired import holm, paired_bootstrap_ci


def _trial_dirs(study: Study) -> list[tuple[Path, dict[str, Any]]]:
    """(trial dir, its params) for the complete trials."""
    done = study.trials[study.trials["status"] == "complete"] if not study.trials.empty else study.trials
    out = []
    for row in done.itertuples():
        path = Path(row.path)
        manifest = read_json(path / "manifest.json") if (path / "manifest.json").exists() else {}
        out.append((path, manifest.get("params") or {}))
    return out


def _mean(values: list[float]) -> float:
    clean = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return float(np.mean(clean)) if clean else float("nan")


def _accumulator(**extra: Any) -> dict[str, Any]:
    return {"values": [], "clusters": [], "failed": 0, "unparsed": 0, "cost": 0.0, "self": [], "agreement": {},
            **extra}


def _gather(acc: dict[str, Any], rows: list[dict[str, Any]], value_key: str, summary: dict[str, Any],
            agreement_key: str) -> list[dict[str, Any]]:
    """Add one trial's verdict rows and summary to `acc`; return the rows that have a value (judged items)."""
    judged = []
    for r in rows:
        acc["cost"] += sum(x.get("cost_usd") or 0.0 for x in r.get("asks", []))
        if r[value_key] is None:  # failed or unparsed: counted, never scored
            acc["failed"] += 1
            acc["unparsed"] += r.get("reason") == "unparsed"
            continue
        acc["values"].append(r[value_key])
        acc["clusters"].append(r.get("cluster") or r["item_id"])
        judged.append(r)
    if summary.get("self_agreement") is not None:
        acc["self"].append(summary["self_agreement"])
    for metric, ag in (summary.get("agreement") or {}).items():
        acc["agreement"].setdefault(metric, []).append(ag.get(agreement_key))
    return judged


def _grade_bounds(scale: Any) -> tuple[float, float]:
    """A rubric grade's range: the scale the grades were given on (`[min, max]`, recorded with them), else the
    declared one."""
    if isinstance(scale, (list, tuple)) and len(scale) == 2 and all(isinstance(v, (int, float)) for v in scale):
        return float(scale[0]), float(scale[1])
    return JUDGE_GRADE.range_of((1.0,))


def judge_tables(study: Study, *, alpha: float = 0.05, confidence: float = 0.95, n_resamples: int = 2000,
                 seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(pairwise table, single-grade table); empty frames when no trial ran a judge.

    Pairwise: per pair of arm labels, items of all seeds pooled (a verdict is 1 / 0.5 / 0 for a win / tie /
    loss of A); the win rate's CI is the percentile bootstrap over items (whole clusters when items share a
    source); the test is the exact two-sided sign (binomial) test of wins against losses, ties dropped;
    p-values are Holm-adjusted across the table. Failed or unparsed verdicts are counted, never scored.
    """
    pair_rows: dict[tuple[str, str], dict[str, Any]] = {}
    single_rows: dict[str, dict[str, Any]] = {}
    for path, params in _trial_dirs(study):
        block = (read_json(path / "metrics.json") if (path / "metrics.json").exists() else {}).get("judge")
        if not block:
            continue
        for key, summary in (block.get("pairwise") or {}).items():
            a, b = study.label_for(summary["a"], params), study.label_for(summary["b"], params)
            acc = pair_rows.setdefault((a, b), _accumulator(flips=0, wins=0, losses=0, ties=0))
            for r in _gather(acc, read_jsonl(path / "judge" / f"{key}.jsonl"), "value", summary, "rate"):
                acc["flips"] += bool(r["position_flip"])
                acc[{"a": "wins", "b": "losses", "tie": "ties"}[r["verdict"]]] += 1
        for arm, summary in (block.get("single") or {}).items():
            acc = single_rows.setdefault(study.label_for(arm, params), _accumulator(scale=summary.get("scale")))
            _gather(acc, read_jsonl(path / "judge" / f"single_{arm}.jsonl"), "score", summary, "spearman")

    from scipy.stats import binomtest

    rows = []
    for (a, b), acc in pair_rows.items():
        n = len(acc["values"])
        values = np.asarray(acc["values"], dtype=float)
        low, high = (paired_bootstrap_ci(values, clusters=acc["clusters"], confidence=confidence,
                                         n_resamples=n_resamples, seed=seed, bounds=JUDGE_WIN_RATE.range_of((1.0,)))
                     if n > 1 else (float("nan"),) * 2)
        decisive = acc["wins"] + acc["losses"]
        p = binomtest(acc["wins"], decisive, 0.5).pvalue if decisive else float("nan")
        rows.append({"a": a, "b": b, "n": n, "wins": acc["wins"], "losses": acc["losses"], "ties": acc["ties"],
                     "win_rate": float(values.mean()) if n else float("nan"), "ci_low": low, "ci_high": high,
                     "p_sign": p, "tie_rate": acc["ties"] / n if n else float("nan"),
                     "position_flip_rate": acc["flips"] / n if n else float("nan"),
                     "failed": acc["failed"], "unparsed": acc["unparsed"], "cost_usd": acc["cost"],
                     "self_agreement": _mean(acc["self"]),
                     **{f"agree.{m}": _mean(v) for m, v in sorted(acc["agreement"].items())}})
    pairwise = pd.DataFrame(rows)
    if not pairwise.empty:
        pairwise["p_adjusted"] = holm(pairwise["p_sign"].to_numpy())
        pairwise["verdict"] = [
            ("A preferred" if r.win_rate > 0.5 else "B preferred")
            if r.p_adjusted < alpha and not (r.ci_low <= 0.5 <= r.ci_high) else "no detectable preference"
            for r in pairwise.itertuples()]
    singles = []
    for label, acc in single_rows.items():
        scores = np.asarray(acc["values"], dtype=float)
        low, high = (paired_bootstrap_ci(scores, clusters=acc["clusters"], confidence=confidence,
                                         n_resamples=n_resamples, seed=seed, bounds=_grade_bounds(acc["scale"]))
                     if len(scores) > 1 else (float("nan"),) * 2)
        singles.append({"arm": label, "n": len(scores), "mean_grade": float(scores.mean()) if len(scores) else
                        float("nan"), "ci_low": low, "ci_high": high, "scale": acc["scale"], "failed": acc["failed"],
                        "unparsed": acc["unparsed"], "cost_usd": acc["cost"], "self_agreement": _mean(acc["self"]),
                        **{f"spearman.{m}": _mean(v) for m, v in sorted(acc["agreement"].items())}})
    return pairwise, pd.DataFrame(singles)


def _f(x: Any, digits: int = 3) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def judge_markdown(pairwise: pd.DataFrame, single: pd.DataFrame, *, confidence: float) -> list[str]:
    """The report's "LLM judge" section (empty when no judge ran)."""
    if pairwise.empty and single.empty:
        return []
    md = ["## LLM judge", ""]
    if not pairwise.empty:
        agree = [c for c in pairwise.columns if c.startswith("agree.")]
        md += [f"| A | B | items | W/L/T | win rate [{confidence:.0%} CI] | sign-test p | adj. p | position flips | "
               "ties | failed (unparsed) | self-agreement | cost $ | " + " | ".join(
                   f"agrees with {c[6:]}" for c in agree) + (" |" if agree else "") + " verdict |",
               "|" + "---|" * (12 + len(agree))]
        for r in pairwise.to_dict("records"):
            md.append(f"| {r['a']} | {r['b']} | {r['n']} | {r['wins']}/{r['losses']}/{r['ties']} | "
                      f"{_f(r['win_rate'])} [{_f(r['ci_low'])}, {_f(r['ci_high'])}] | {_f(r['p_sign'], 3)} | "
                      f"{_f(r['p_adjusted'], 3)} | {_f(r['position_flip_rate'])} | {_f(r['tie_rate'])} | "
                      f"{r['failed']} ({r['unparsed']}) | {_f(r['self_agreement'])} | {r['cost_usd']:.4g} | "
                      + "".join(f"{_f(r[c])} | " for c in agree) + f"{r['verdict']} |")
        md += ["", "Each item is judged in both orders; a verdict that changes with the order is a position flip "
               "and counts as a tie. Win rate = (wins + ties/2) / items judged; the CI is a bootstrap over items "
               "(clusters), the test the exact sign test of wins vs losses; p Holm-adjusted across this table. "
               "Failed calls and unparsed replies are counted, never scored. 'Agrees with' is the share of "
               "decisive verdicts that pick the arm the metric scores higher (items where the metric differs).", ""]
    if not single.empty:
        rho = [c for c in single.columns if c.startswith("spearman.")]
        md += [f"| arm | items | mean grade [{confidence:.0%} CI] | scale | failed (unparsed) | " +
               " | ".join(f"ρ with {c[9:]}" for c in rho) + (" |" if rho else ""),
               "|" + "---|" * (5 + len(rho))]
        for r in single.to_dict("records"):
            md.append(f"| {r['arm']} | {r['n']} | {_f(r['mean_grade'])} [{_f(r['ci_low'])}, {_f(r['ci_high'])}] | "
                      f"{r['scale']} | {r['failed']} ({r['unparsed']}) | " + "".join(f"{_f(r[c])} | " for c in rho))
        md += [""]
    return md
