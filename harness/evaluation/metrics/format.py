"""`format`: the spec's declared length and format rules (`eval.format`), one 0/1 score per rule.

Each rule has a name and any of: `must_match` / `must_not_match` (Python regular expressions, searched
anywhere; put flags like `(?m)` in the pattern) and `min_words` / `max_words` (whitespace-separated words).
Scores: `format.<name>` per rule and `format_ok` (1 when every rule passes).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from harness.evaluation.metrics import HIGHER, ScoreSpec, register_metric


@lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern:
    return re.compile(pattern)


def passes(rule: Any, text: str) -> bool:
    """Whether `text` satisfies one `FormatRule`."""
    if rule.must_match is not None and not _compiled(rule.must_match).search(text):
        return False
    if rule.must_not_match is not None and _compiled(rule.must_not_match).search(text):
        return False
    words = len(text.split())
    if rule.min_words is not None and words < rule.min_words:
        return False
    return rule.max_words is None or words <= rule.max_words


def _needs_rules(options: Any) -> None:
    if not getattr(options, "format", None):
        raise ValueError("eval.metrics names 'format' but eval.format declares no rules "
                         "(e.g. - {name: no_exclamation, must_not_match: '!'})")


@register_metric("format", "the declared eval.format rules: format.<rule> (0/1) each and format_ok (all pass)",
                 scores=[ScoreSpec("format_ok", "all format rules pass", HIGHER),
                         ScoreSpec("format.*", "format rule {}", HIGHER)],
                 check=_needs_rules)
def format_rules(prediction: str, reference: str, options: Any) -> dict[str, float]:
    rules = getattr(options, "format", None) or []
    out = {f"format.{rule.name}": float(passes(rule, prediction)) for rule in rules}
    out["format_ok"] = float(all(out.values()))
    return out
