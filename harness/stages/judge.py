"""An LLM judge over the trial's arms: asks the `judge:` section's endpoint, writes the verdicts and grades
per item under `judge/` and the `judge` block of metrics.json (see `harness.evaluation.judge`)."""

from __future__ import annotations

from harness.errors import SpecError
from harness.results import write_jsonl
from harness.spec.stages.judge import JudgeSpec, judged_pairs
from harness.stages import register_runner
from harness.stages.context import TrialContext

# Per-item scores that are not a comparison with the reference: left out of the judge's agreement figures.
_NOT_REFERENCE_BASED = ("field.", "format", "words", "json_valid")


def _preflight(spec, cfg: JudgeSpec) -> None:
    """A required judge must answer one short call before any trial trains."""
    if not cfg.required:
        return
    from harness.evaluation.endpoint import Endpoint, EndpointError

    quick = cfg.endpoint.model_copy(update={"max_retries": min(cfg.endpoint.max_retries, 1), "max_tokens": 1})
    try:
        with Endpoint(quick) as endpoint:
            endpoint.chat([{"role": "user", "content": "Reply with OK."}])
    except EndpointError as e:
        raise SpecError(f"the judge endpoint does not answer ({e}); start it, fix judge.endpoint, or set "
                        "judge.required: false to record the judge's failures per item instead",
                        where=f"experiment {spec.name}, field 'judge.endpoint'") from e


@register_runner("judge", preflight=_preflight)
def run(ctx: TrialContext, cfg: JudgeSpec) -> None:
    """Ask an LLM judge to compare arms pairwise and grade them on the rubric, item by item."""
    from harness.evaluation.judge import judge_trial

    pairs = judged_pairs(ctx.spec, cfg) if cfg.pairwise else []
    graded = (cfg.arms if cfg.arms is not None else list(ctx.arms)) if cfg.single else []
    block, files = judge_trial(cfg, ctx.arms, ctx.heldout, pairs, graded, ctx.study_dir / "judge-cache",
                               exclude_metrics=_NOT_REFERENCE_BASED)
    for name, rows in files.items():
        write_jsonl(ctx.trial_dir / "judge" / f"{name}.jsonl", rows)
    ctx.add_block("judge", block)
