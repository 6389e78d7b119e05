"""An LLM judge on any OpenAI-compatible endpoint: pairwise verdicts (A vs B on the same item) and
single-answer rubric grades, with the measurements that say how far to trust it.

Pairwise judging asks both orders (A first, then B first); a verdict that changes with the order is a
*position flip* and counts as a tie. A reply that does not parse, or a call that failed after its
retries, is recorded per item with the raw reply or the error and never counted as a win or a loss.
With `repeats: k` every question is asked k times (the request's `seed` differs, so each is its own
cached call) and the judge's self-agreement is the share of items whose k verdicts agree.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from typing import Any, Sequence

from harness.evaluation.scoring import first_object
from harness.results import write_jsonl

VERDICT_VALUE = {"a": 1.0, "b": 0.0, "tie": 0.5}  # the first arm's win-rate contribution
_VERDICT_WORD = re.compile(r"\b(?:winner|verdict|answer|better)\b\W{0,4}(?:is\W{0,3})?\"?(A|B|tie)\b", re.IGNORECASE)
_SCORE_WORD = re.compile(r"\bscore\b\W{0,4}(?:is\W{0,3})?(\d+(?:\.\d+)?)", re.IGNORECASE)


def template_fields(template: str) -> set[str]:
    """The `{placeholders}` a prompt template uses."""
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def parse_pairwise(reply: str) -> str | None:
    """"A", "B" or "tie" from a judge's reply (a JSON object with `winner`, or `Winner: A`), else None."""
    found = first_object(reply)
    if found is not None:
        value = found.get("winner", found.get("verdict"))
        if isinstance(value, str) and value.strip().lower() in ("a", "b", "tie"):
            return value.strip().upper() if value.strip().lower() != "tie" else "tie"
        return None
    bare = reply.strip().strip(".\"'*").lower()
    if bare in ("a", "b", "tie"):
        return bare.upper() if bare != "tie" else "tie"
    match = _VERDICT_WORD.search(reply)
    if match:
        word = match.group(1).lower()
        return word.upper() if word != "tie" else "tie"
    return None


def parse_grade(reply: str, low: int, high: int) -> float | None:
    """The rubric score in [low, high] from a reply (`{"score": 4}` or `Score: 4`), else None."""
    found = first_object(reply)
    value: Any = found.get("score") if found is not None else None
    if value is None and found is None:
        match = _SCORE_WORD.search(reply)
        value = match.group(1) if match else (reply.strip() if reply.strip().isdigit() else None)
    try:
        score = float(value)
    except (TypeError, ValueError):
        return None
    return score if low <= score <= high else None


@dataclass
class Ask:
    """One question to the judge and what came back (`parsed` None: unparsed or failed)."""

    order: str  # "ab", "ba" or "single"
    repeat: int
    reply: str | None
    parsed: Any
    error: str | None = None
    cost_usd: float = 0.0
    cached: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"order": self.order, "repeat": self.repeat, "reply": self.reply, "parsed": self.parsed,
                "error": self.error, "cost_usd": self.cost_usd, "cached": self.cached}


def pairwise_verdict(first: Ask, second: Ask) -> tuple[str | None, bool]:
    """(verdict for arm a: "a" / "b" / "tie" / None when either order failed or did not parse, position flip).

    `first` asked with a's answer as A, `second` with b's answer as A."""
    if first.parsed is None or second.parsed is None:
        return None, False
    one = {"A": "a", "B": "b", "tie": "tie"}[first.parsed]
    two = {"A": "b", "B": "a", "tie": "tie"}[second.parsed]
    if one == two:
        return one, False
    return "tie", one != "tie" and two != "tie"  # A then B first (or B then A): the position decided


def self_agreement(verdicts_by_item: Sequence[Sequence[Any]]) -> float | None:
    """Share of items whose repeated verdicts all agree (items with a failed repeat left out); None if none."""
    usable = [v for v in verdicts_by_item if len(v) > 1 and all(x is not None for x in v)]
    return sum(len(set(v)) == 1 for v in usable) / len(usable) if usable else None


def agreement(verdicts: Sequence[str | None], deltas: Sequence[float]) -> tuple[float | None, int]:
    """How often a decisive verdict picks the arm a reference-based metric scores higher, over items where
    both decide (verdict not a tie, metric difference not 0): (rate, items counted)."""
    pairs = [(v, d) for v, d in zip(verdicts, deltas) if v in ("a", "b") and d != 0]
    if not pairs:
        return None, 0
    return sum((v == "a") == (d > 0) for v, d in pairs) / len(pairs), len(pairs)


def win_summary(verdicts: Sequence[str | None], flips: Sequence[bool]) -> dict[str, Any]:
    """Counts and rates of one pair's primary verdicts (failed items excluded from every rate)."""
    judged = [v for v in verdicts if v is not None]
    n = len(judged)
    wins, losses, ties = judged.count("a"), judged.count("b"), judged.count("tie")
    return {"n": n, "wins": wins, "losses": losses, "ties": ties, "failed": len(verdicts) - n,
            "win_rate": (wins + 0.5 * ties) / n if n else None, "tie_rate": ties / n if n else None,
            "position_flip_rate": sum(f for v, f in zip(verdicts, flips) if v is not None) / n if n else None}


# ---------------------------------------------------------------- asking


@dataclass
class _Question:
    key: tuple  # ("pair", a, b, item, order, repeat) or ("single", arm, item, repeat)
    messages: list[dict[str, str]]
    repeat: int


def _prompt_text(example) -> str:
    """The request as the judge sees it: the item's user turns (the system prompt is the task's, not the judge's)."""
    return "\n\n".join(m["content"] for m in example.prompt if m["role"] == "user")


def _ask_all(cfg, questions: list[_Question], cache_dir) -> dict[tuple, Ask]:
    from harness.evaluation.endpoint import Completion, Endpoint, run_many
    from harness.progress import item_progress

    with Endpoint(cfg.endpoint, cache_dir) as endpoint, item_progress("judge", len(questions)) as advance:
        def call(ep: Endpoint, q: _Question) -> Completion:
            try:  # a different seed per repeat: each repeat is its own request (and cache entry)
                return ep.chat(q.messages, extra={"seed": q.repeat} if q.repeat else None)
            finally:
                advance(1)

        answers = run_many(endpoint, questions, call, workers=cfg.workers)
    scale = cfg.rubric.scale
    out = {}
    for q, a in zip(questions, answers):
        order = q.key[4] if q.key[0] == "pair" else "single"
        if not isinstance(a, Completion):
            out[q.key] = Ask(order, q.repeat, None, None, error=str(a))
            continue
        parsed = parse_pairwise(a.text) if order != "single" else parse_grade(a.text, scale.min, scale.max)
        out[q.key] = Ask(order, q.repeat, a.text, parsed, cost_usd=a.cost_usd, cached=a.cached)
    return out


def _reference_deltas(row_a: dict[str, Any], row_b: dict[str, Any], exclude: tuple[str, ...]) -> dict[str, float]:
    return {k: float(v) - float(row_b["scores"][k]) for k, v in row_a["scores"].items()
            if k in row_b["scores"] and not k.startswith(exclude)}


def judge_trial(cfg, arms: dict[str, list[dict[str, Any]]], heldout, pairs: list[tuple[str, str]],
                graded: list[str], cache_dir, *, exclude_metrics: tuple[str, ...] = ()
                ) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """Judge `pairs` of arms and grade the `graded` arms item by item: (metrics block, {file name: rows}).

    `cfg` is a `JudgeSpec`; `arms` the trial's per-item rows; `heldout` the examples (for the prompts).
    """
    examples = {ex.id: ex for ex in heldout}
    by_item = {arm: {r["item_id"]: r for r in rows if r["item_id"] in examples} for arm, rows in arms.items()}
    asks = _ask_all(cfg, _questions(cfg, by_item, examples, pairs, graded), cache_dir)
    block: dict[str, Any] = {"endpoint": {"url": cfg.endpoint.url, "model": cfg.endpoint.model}, "mode": cfg.mode,
                             "repeats": cfg.repeats, "calls": len(asks),
                             "cached_calls": sum(a.cached for a in asks.values()),
                             "failed_calls": sum(a.error is not None for a in asks.values()),
                             "unparsed_replies": sum(a.error is None and a.parsed is None for a in asks.values()),
                             "cost_usd": sum(a.cost_usd for a in asks.values()), "pairwise": {}, "single": {}}
    files: dict[str, list[dict[str, Any]]] = {}
    for a, b in pairs:
        block["pairwise"][f"{a}_vs_{b}"], files[f"{a}_vs_{b}"] = _pairwise(cfg, asks, by_item, a, b, exclude_metrics)
    for arm in graded:
        block["single"][arm], files[f"single_{arm}"] = _graded(cfg, asks, by_item[arm], arm, exclude_metrics)
    return block, files


def _questions(cfg, by_item: dict[str, dict[str, dict[str, Any]]], examples: dict[str, Any],
               pairs: list[tuple[str, str]], graded: list[str]) -> list[_Question]:
    """Every call the judge gets: each pair of answers in both orders, and each graded answer, `repeats` times."""
    rubric, questions = cfg.rubric, []
    for a, b in pairs:
        for item, row_a in by_item[a].items():
            row_b = by_item[b].get(item)
            if row_b is None:
                continue
            base = {"prompt": _prompt_text(examples[item]), "reference": row_a["reference"], "rubric": rubric.text}
            for r in range(cfg.repeats):
                for order, (first, second) in (("ab", (row_a, row_b)), ("ba", (row_b, row_a))):
                    text = cfg.pairwise_prompt.format(**base, answer_a=first["prediction"],
                                                      answer_b=second["prediction"])
                    questions.append(_Question(("pair", a, b, item, order, r), [{"role": "user", "content": text}], r))
    for arm in graded:
        for item, row in by_item[arm].items():
            for r in range(cfg.repeats):
                text = cfg.single_prompt.format(prompt=_prompt_text(examples[item]), reference=row["reference"],
                                                rubric=rubric.text, answer=row["prediction"],
                                                scale_min=rubric.scale.min, scale_max=rubric.scale.max)
                questions.append(_Question(("single", arm, item, r), [{"role": "user", "content": text}], r))
    return questions


def _pairwise(cfg, asks: dict, by_item: dict[str, dict[str, dict[str, Any]]], a: str, b: str,
              exclude_metrics: tuple[str, ...]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One pair's summary (wins, flips, agreement with the metrics) and its per-item rows."""
    k = cfg.repeats
    rows, verdicts, flips, repeats, deltas = [], [], [], [], []
    for item, row_a in by_item[a].items():
        if item not in by_item[b]:
            continue
        per_repeat = [pairwise_verdict(asks[("pair", a, b, item, "ab", r)], asks[("pair", a, b, item, "ba", r)])
                      for r in range(k)]
        item_asks = [asks[("pair", a, b, item, o, r)] for r in range(k) for o in ("ab", "ba")]
        verdict, flip = per_repeat[0]
        verdicts.append(verdict)
        flips.append(flip)
        repeats.append([v for v, _ in per_repeat])
        deltas.append(_reference_deltas(row_a, by_item[b][item], exclude_metrics))
        reason = None
        if verdict is None:
            reason = "failed" if any(x.error for x in item_asks[:2]) else "unparsed"
        rows.append({"item_id": item, "a": a, "b": b, "cluster": row_a.get("cluster"), "verdict": verdict,
                     "value": VERDICT_VALUE.get(verdict) if verdict else None, "position_flip": flip,
                     "repeat_verdicts": [v for v, _ in per_repeat], "reason": reason,
                     "asks": [x.to_json() for x in item_asks]})
    summary = win_summary(verdicts, flips)
    summary.update(a=a, b=b, unparsed=sum(r["reason"] == "unparsed" for r in rows),
                   failed_calls=sum(r["reason"] == "failed" for r in rows))
    summary["agreement"] = {}
    for m in sorted({m for d in deltas for m in d}):
        rate, n = agreement(verdicts, [d.get(m, 0.0) for d in deltas])
        summary["agreement"][m] = {"rate": rate, "n": n}
    if k > 1:
        summary["self_agreement"] = self_agreement(repeats)
    return summary, rows


def _graded(cfg, asks: dict, rows_by_item: dict[str, dict[str, Any]], arm: str,
            exclude_metrics: tuple[str, ...]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One graded arm's summary (mean grade, agreement with the metrics) and its per-item rows."""
    k = cfg.repeats
    rows, grades = [], []
    for item, row in rows_by_item.items():
        item_asks = [asks[("single", arm, item, r)] for r in range(k)]
        grade = item_asks[0].parsed
        grades.append((grade, row["scores"]))
        rows.append({"item_id": item, "arm": arm, "cluster": row.get("cluster"), "score": grade,
                     "repeat_scores": [x.parsed for x in item_asks],
                     "reason": None if grade is not None else ("failed" if item_asks[0].error else "unparsed"),
                     "asks": [x.to_json() for x in item_asks]})
    scored = [g for g, _ in grades if g is not None]
    summary = {"n": len(scored), "failed": len(grades) - len(scored),
               "unparsed": sum(r["reason"] == "unparsed" for r in rows),
               "mean": sum(scored) / len(scored) if scored else None,
               "scale": [cfg.rubric.scale.min, cfg.rubric.scale.max], "agreement": _grade_agreement(grades, exclude_metrics)}
    if k > 1:
        summary["self_agreement"] = self_agreement([r["repeat_scores"] for r in rows])
    return summary, rows


def _grade_agreement(grades: list[tuple[float | None, dict[str, float]]], exclude: tuple[str, ...]) -> dict[str, Any]:
    """Spearman's rho between the judge's grades and each reference-based metric, over graded items."""
    from scipy.stats import spearmanr

    usable = [(g, s) for g, s in grades if g is not None]
    out: dict[str, Any] = {}
    for m in sorted({m for _, s in usable for m in s if not m.startswith(exclude)}):
        x, y = [g for g, _ in usable], [float(s.get(m, 0.0)) for _, s in usable]
        rho = spearmanr(x, y).statistic if len(set(x)) > 1 and len(set(y)) > 1 else float("nan")
        out[m] = {"spearman": None if rho != rho else float(rho), "n": len(usable)}
    return out


def grade_rows(cfg, rows: list[dict[str, Any]], examples, cache_dir, log_path=None) -> None:
    """Grade `rows` (one arm's scored rows) on the rubric and add score `judge` in 0-1 to each, in place
    (NaN where the judge failed or did not parse); the verdict rows go to `log_path` when given."""
    graded_cfg = cfg.model_copy(update={"repeats": 1})
    _, files = judge_trial(graded_cfg, {"_": rows}, examples, [], ["_"], cache_dir)
    low, high = cfg.rubric.scale.min, cfg.rubric.scale.max
    by_item = {r["item_id"]: r["score"] for r in files["single__"]}
    for row in rows:
        grade = by_item.get(row["item_id"])
        row["scores"]["judge"] = float("nan") if grade is None else (grade - low) / (high - low)
    if log_path is not None:
        write_jsonl(log_path, files["single__"])
