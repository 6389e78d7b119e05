"""What the divergence scores mean (`harness.evaluation.divergence`): a candidate model against its reference on
the same text, per item, written into the candidate's eval rows (the reference's own rows at 0 / 1 / 0).

- `kl`: mean per-token KL(reference ‖ candidate) in nats; lower is closer, 0 the same model.
- `top1_agree`: share of positions whose most likely next token both models share; higher is closer.
- `loglik_delta`: mean per-token log-likelihood of the text under the candidate minus under the reference;
  higher is better (below 0: the candidate finds the reference text less likely).
"""

from __future__ import annotations

import math

from harness.evaluation.metrics import HIGHER, LOWER, ScoreSpec, declare_scores

DIVERGENCE_SPECS = (
    ScoreSpec("kl", "KL(ref ‖ model) per token", LOWER, 0.0, math.inf),
    ScoreSpec("top1_agree", "top-1 agreement with ref", HIGHER),
    ScoreSpec("loglik_delta", "Δ log-lik per token vs ref", HIGHER, -math.inf, math.inf),
)

declare_scores(DIVERGENCE_SPECS, by="divergence from the reference model (harness.evaluation.divergence)")
