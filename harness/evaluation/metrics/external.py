"""Scores that reach the analysis without a per-item metric of this folder: what they mean, declared here.

- lm-eval (the forgetting check, `harness.capabilities`): each benchmark item's `acc` (0/1) and
  `acc_norm`, compared per task as "<task> acc" (`analysis.capabilities`).
- The LLM judge (`harness.evaluation.judge`): `judge`, an item's rubric grade rescaled to [0, 1] (a
  score in the eval rows when a stage mines or selects by it); `judge.win_rate`, a pairwise verdict of
  A against B (1 win, 0.5 tie, 0 loss; 0.5 is no preference); `judge.grade`, the raw rubric grade,
  whose range is the rubric's scale, recorded with the grades (`analysis.judging` reads it there).
"""

from __future__ import annotations

import math

from harness.evaluation.metrics import HIGHER, ScoreSpec, declare_scores

LM_EVAL_ACC = ScoreSpec("* acc", "{} accuracy", HIGHER)
JUDGE_WIN_RATE = ScoreSpec("judge.win_rate", "judge win rate (A over B)", HIGHER)
JUDGE_GRADE = ScoreSpec("judge.grade", "judge rubric grade", HIGHER, -math.inf, math.inf)

declare_scores([LM_EVAL_ACC, ScoreSpec("* acc_norm", "{} accuracy (length-normalised)", HIGHER)],
               by="lm-eval (harness.capabilities)")
declare_scores([ScoreSpec("judge", "judge grade (0-1)", HIGHER), JUDGE_WIN_RATE, JUDGE_GRADE],
               by="the LLM judge (harness.evaluation.judge)")
