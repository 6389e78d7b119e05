"""An LLM judge over the trial's arms (the `judge:` section): any OpenAI-compatible endpoint compares the
arms pairwise and grades them on a rubric; the verdicts and grades go per item under `judge/` and into the
`judge` block of metrics.json (the judging is `harness.evaluation.judge`). The analysis report turns them
into win rates with CIs and tests."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from harness.config.endpoint import EndpointSpec
from harness.config.loading import FieldConflict
from harness.config.sections import _Strict
from harness.errors import SpecError
from harness.evaluation.judge import template_fields
from harness.results import write_jsonl
from harness.stages.context import TrialContext
from harness.stages.registry import Phase, final_arm, planned_arms, register_stage

# What both prompts show the judge before the answers.
_CONTEXT = """Request:
{prompt}

Reference answer:
{reference}

Rubric:
{rubric}
"""


PAIRWISE_PROMPT = """You compare two answers to the same request. The reference answer shows what is wanted.

""" + _CONTEXT + """
Answer A:
{answer_a}

Answer B:
{answer_b}

Which answer follows the rubric better? Reply with JSON only: {{"winner": "A"}}, {{"winner": "B"}} or {{"winner": "tie"}}."""


SINGLE_PROMPT = """You grade an answer to a request. The reference answer shows what is wanted.

""" + _CONTEXT + """
Answer:
{answer}

Grade the answer on the rubric from {scale_min} (worst) to {scale_max} (best). Reply with JSON only: {{"score": <number>}}."""


PAIRWISE_FIELDS, SINGLE_FIELDS = {"prompt", "reference", "rubric", "answer_a", "answer_b"}, \
    {"prompt", "reference", "rubric", "answer", "scale_min", "scale_max"}


class Scale(_Strict):
    min: int = Field(1, description="the worst grade")
    max: int = Field(5, description="the best grade")

    @model_validator(mode="after")
    def _ordered(self) -> "Scale":
        if self.min >= self.max:
            raise ValueError(f"scale min ({self.min}) must be below max ({self.max})")
        return self


class Rubric(_Strict):
    text: str = Field(min_length=1, description="what a good answer does (shown to the judge)")
    scale: Scale | None = Field(None, description="the grade range single-answer grading uses")


class JudgeSpec(_Strict):
    """The `judge:` block: an LLM judge comparing and grading the trial's arms on the held-out items."""

    endpoint: EndpointSpec
    rubric: Rubric
    mode: Literal["pairwise", "single", "both"] = "pairwise"
    pairs: list[tuple[str, str]] | None = Field(
        None, description="(a, b) arm pairs to judge; default: the final arm against every untuned, stage and "
                          "endpoint arm")
    arms: list[str] | None = Field(None, description="arms to grade (single); default: every arm")
    repeats: int = Field(1, ge=1, le=10, description="ask each question k times (self-agreement)")
    required: bool = Field(True, description="preflight fails when the endpoint does not answer")
    workers: int = Field(1, ge=1, le=32, description="concurrent judge calls")
    pairwise_prompt: str = Field(PAIRWISE_PROMPT, description=f"placeholders: {', '.join(sorted(PAIRWISE_FIELDS))}")
    single_prompt: str = Field(SINGLE_PROMPT, description=f"placeholders: {', '.join(sorted(SINGLE_FIELDS))}")

    @model_validator(mode="after")
    def _consistent(self) -> "JudgeSpec":
        if self.mode != "pairwise" and self.rubric.scale is None:
            raise ValueError(f"judge.rubric has no scale: mode {self.mode} grades single answers "
                             "(give rubric.scale, e.g. {min: 1, max: 5})")
        for key, allowed, needed in (("pairwise_prompt", PAIRWISE_FIELDS, {"answer_a", "answer_b"}),
                                     ("single_prompt", SINGLE_FIELDS, {"answer"})):
            try:
                used = template_fields(getattr(self, key))
            except ValueError as e:
                raise ValueError(f"judge.{key} is not a valid template ({e}); write literal braces as {{{{ }}}}")
            if used - allowed:
                raise ValueError(f"judge.{key} uses unknown placeholders {sorted(used - allowed)} "
                                 f"(known: {', '.join(sorted(allowed))})")
            if needed - used:
                raise ValueError(f"judge.{key} must show {', '.join(sorted(needed - used))}")
        return self

    @property
    def pairwise(self) -> bool:
        return self.mode in ("pairwise", "both")

    @property
    def single(self) -> bool:
        return self.mode in ("single", "both")


def judged_pairs(spec, cfg: JudgeSpec) -> list[tuple[str, str]]:
    """The pairs the judge compares: the configured ones, or the final arm against the others it can face."""
    if cfg.pairs is not None:
        return [tuple(p) for p in cfg.pairs]
    final = final_arm(spec)
    return [(final, arm) for arm, (_, role) in planned_arms(spec).items()
            if arm != final and role in ("untuned", "stage", "endpoint")]


def _check(spec, cfg: JudgeSpec) -> None:
    arms = set(planned_arms(spec))
    for a, b in cfg.pairs or []:
        for arm in (a, b):
            if arm not in arms:
                raise FieldConflict(f"judge.pairs: no arm '{arm}' in this trial (arms: {', '.join(sorted(arms))})",
                                    ("judge", "pairs"))
        if a == b:
            raise FieldConflict(f"judge.pairs: ('{a}', '{b}') compares an arm with itself", ("judge", "pairs"))
    for arm in cfg.arms or []:
        if arm not in arms:
            raise FieldConflict(f"judge.arms: no arm '{arm}' in this trial (arms: {', '.join(sorted(arms))})",
                                ("judge", "arms"))
    if cfg.pairwise and not judged_pairs(spec, cfg):
        raise FieldConflict("judge: pairwise judging has no pair of arms (set eval.compare_base or judge.pairs)",
                            ("judge", "mode"))


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


register_stage("judge", Phase.PROBE, order=90, section="judge", model=JudgeSpec, blocks=("judge",), check=_check,
               example={"endpoint": {"url": "http://127.0.0.1:8080/v1", "model": "judge", "max_tokens": 12},
                        "rubric": {"text": "Closer to the reference in content and form.",
                                   "scale": {"min": 1, "max": 5}}, "mode": "both", "required": False}, run=run, preflight=_preflight)
