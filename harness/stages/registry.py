"""The stage registry: every step a trial can run, one file each in this package, registered by
`register_stage` at the bottom of its file and found by scanning the package.

A stage file holds everything about its stage: its YAML section (a pydantic model; `section=None` for the
core steps every trial runs), its cross-section checks, its phase, the arms and metric blocks it writes,
what it trains (its TRL trainer and the params that change only how it trains), and `run(ctx, cfg)`, its
step in a trial. `harness.spec` assembles the spec from these declarations; `harness.trial` runs them.
Adding a kind of experiment is one file here and an experiment YAML:

    class GRPOSpec(OptimArgs): ...

    def run(ctx: TrialContext, cfg: GRPOSpec) -> None: ...

    register_stage("grpo", Phase.CONTINUE, section="grpo", model=GRPOSpec, example={"max_steps": 1},
                   arms=lambda spec, cfg: {"sft": "stage"}, produces="grpo", after="sft",
                   trainer="GRPOTrainer", training_only=("grpo.",), run=run)

Loading a spec imports every stage file, so a stage keeps heavy imports (torch, TRL, lm-eval) inside its
functions (`tests/unit/test_architecture.py` checks that loading a spec imports none of them).
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any, Callable

from harness.config.loading import FieldConflict
from harness.discovery import Registry, caller_module

# The assembled spec, `harness.spec.ExperimentSpec`: a layer above, since it is built from these stages.
Spec = Any


class Phase(IntEnum):
    """When a stage runs. Within a phase, stages run by `order`, then name."""

    BEFORE = 10  # arms of the untouched base model
    DATA = 20  # what the first training sees (teacher-written data)
    TRAIN = 30  # the adapter's first training, chosen by `train.method`
    CONTINUE = 40  # training that continues the adapter (DPO, GRPO)
    SELECT = 50  # after all training: save the adapter, the dev objective
    EVALUATE = 60  # the final arm on the frozen held-out split
    PROBE = 70  # more arms and blocks from the final model (quantization, forgetting, contestants)


ArmRole = str  # "untuned" | "stage" | "final" | "derived" | "endpoint"
# Blocks of metrics.json that are not arms; no arm, contestant or stage may take one of these names.
CORE_BLOCKS = ("cost", "training")


@dataclass(frozen=True)
class Stage:
    """One registered step of a trial: what the spec needs to know of it, and its `run`."""

    name: str
    phase: Phase
    section: str | None = None  # the YAML key that enables it; None: enabled by `enabled` (core steps)
    model: Any = None  # the section's pydantic type (a list[...] type for `many`)
    many: bool = False  # the section is a list (contestants): absent means []
    legacy: bool = False  # a section that existed before the registry: always in the spec's fingerprint
    order: int = 50
    method: str | None = None  # TRAIN stages: the `train.method` they implement
    enabled: Callable[[Spec], bool] | None = None
    check: Callable[[Spec, Any], None] | None = None  # raises ValueError naming the field
    arms: Callable[[Spec, Any], dict[str, ArmRole]] | None = None  # arm name → role it writes
    blocks: tuple[str, ...] = ()  # metrics.json blocks it writes (e.g. "teacher", "forgetting")
    example: Any = None  # a small valid value of its section (docs, and the contract test runs it)
    produces: str | None = None  # training stages: the arm of the model they leave ("tuned", "dpo")
    after: str | None = None  # continuing stages: the arm they start from, compared with theirs ("sft")
    trainer: str | None = None  # training stages: the TRL trainer class its runner fits ("DPOTrainer")
    loss: str | None = None  # training stages: what the loss in its log is (a loss-curve axis reads it)
    # Continuing stages: the trial file its training log is written to, and the logged values a report plots
    # per step besides the loss (what DPO's rewards and GRPO's groups did), as (key, what it is) pairs.
    log_file: str | None = None
    diagnostics: tuple[tuple[str, str], ...] = ()
    # Dotted param prefixes that change only how this stage trains ("dpo."): an untuned arm, which no
    # training touches, is one arm across their levels (analysis reads these from each trial's manifest).
    training_only: tuple[str, ...] = ()
    # DATA stages that replace the training examples: how many the first training sees, of `n` training
    # pairs (`harness plan` counts the tokens a trial trains from it).
    train_size: Callable[[Spec, Any, int], int] | None = None
    # DATA stages whose section decides which TRAIN stage trains (a grid level that trains differently, e.g.
    # `distill.arm: logits` trains with `kd`): the method, or None for `train.method` as written.
    chooses_method: Callable[[Spec, Any], str | None] | None = None
    # Stages that hold a second model beside the base while training (a KD teacher): its weight bytes, which
    # `harness plan` adds to the memory estimate.
    extra_weight_bytes: Callable[[Spec, Any], int] | None = None
    # Comparisons of the experiment's question the stage adds beside each arm vs the baseline: (A, B) arm pairs
    # (a few-shot base: the final arm against it). Continuing stages' (produces, after) pairs come on their own.
    pairs: Callable[[Spec, Any], list[tuple[str, str]]] | None = None
    run: Callable[[Any, Any], None] | None = None  # its step in a trial: run(TrialContext, its section)
    preflight: Callable[[Spec, Any], None] | None = None  # before any trial: reachable services
    module: str = ""  # the module that registered it

    @property
    def description(self) -> str | None:
        """The first line of the section model's docstring (the spec's description of the section)."""
        model = typing.get_args(self.model)[0] if self.many else self.model
        return ((getattr(model, "__doc__", None) or "").strip().split("\n")[0]) or None

    def config(self, spec: Spec) -> Any:
        """The stage's section of `spec` (None / [] when absent)."""
        return getattr(spec, self.section) if self.section else None

    def is_enabled(self, spec: Spec) -> bool:
        if self.method is not None and train_method(spec) != self.method:
            return False
        if self.enabled is not None:
            return self.enabled(spec)
        if self.section is None:
            return True
        cfg = self.config(spec)
        return bool(cfg) if self.many else cfg is not None


_STAGES: Registry[Stage] = Registry("stage", __name__.rpartition(".")[0], [str(Path(__file__).parent)],
                                    skip={"registry", "context"})


def register_stage(name: str, phase: Phase, **kw: Any) -> Stage:
    """Register stage `name` (see `Stage` for the keywords, `run` among them), at the bottom of its file."""
    module = caller_module()
    stage = Stage(name=name, phase=phase, module=module, **kw)
    if not callable(stage.run):
        raise ValueError(f"stage '{name}' ({module}) is registered without its run(ctx, cfg)")
    for other in _STAGES.registered.values():
        if other.name != name and stage.section and other.section == stage.section:
            raise ValueError(f"section '{stage.section}' is claimed by stages '{other.name}' and '{name}'")
    return _STAGES.add(name, stage, module)


def all_stages() -> list[Stage]:
    """Every registered stage in pipeline order (importing each stage file of this package once)."""
    return sorted(_STAGES.entries().values(), key=lambda s: (s.phase, s.order, s.name))


def sections() -> list[Stage]:
    """The stages that own a YAML section."""
    return [s for s in all_stages() if s.section]


def train_method(spec: Spec) -> str:
    """The TRAIN stage's method for `spec`: the one a DATA stage's section chooses, else `train.method`."""
    for stage in all_stages():
        cfg = stage.config(spec)
        if stage.chooses_method is not None and cfg is not None:
            chosen = stage.chooses_method(spec, cfg)
            if chosen is not None:
                return chosen
    return spec.train.method


def extra_weight_bytes(spec: Spec) -> int:
    """Bytes of the models the enabled stages hold beside the base (teachers), for the memory estimate."""
    return sum(stage.extra_weight_bytes(spec, cfg) for stage, cfg in pipeline(spec) if stage.extra_weight_bytes)


def stage_named(name: str) -> Stage | None:
    """The registered stage `name` (None for a name no stage has, e.g. a study written by older code)."""
    return _STAGES.entries().get(name)


def train_methods() -> list[str]:
    return sorted(s.method for s in all_stages() if s.method)


def training_only_prefixes() -> tuple[str, ...]:
    """Every registered stage's `training_only` prefixes, in pipeline order without repeats."""
    return tuple(dict.fromkeys(p for s in all_stages() for p in s.training_only))


def pipeline(spec: Spec) -> list[tuple[Stage, Any]]:
    """The stages `spec` enables, in the order a trial runs them, each with its section."""
    return [(s, s.config(spec)) for s in all_stages() if s.is_enabled(spec)]


def planned_arms(spec: Spec) -> dict[str, tuple[str, ArmRole]]:
    """Arm name → (stage that writes it, role), refusing two writers of one name or an arm named like a block.

    Raises ValueError naming both writers: a contestant called `cost` or `base`, or DPO and GRPO both
    snapshotting `sft`, would otherwise overwrite each other's results."""
    owners: dict[str, str] = {block: f"the metrics block '{block}' every trial writes" for block in CORE_BLOCKS}
    for stage, cfg in pipeline(spec):
        for block in stage.blocks:
            if block in owners:
                raise ValueError(f"metrics block '{block}' of stage '{stage.name}' collides with {owners[block]}")
            owners[block] = f"the metrics block '{block}' of stage '{stage.name}'"
    arms: dict[str, tuple[str, ArmRole]] = {}
    for stage, cfg in pipeline(spec):
        loc = (stage.section,) if stage.section else ()
        for i, (arm, role) in enumerate((stage.arms(spec, cfg) if stage.arms else {}).items()):
            where = (*loc, i, "name") if stage.many else loc  # a list section: the entry that names the arm
            if arm in arms and arms[arm][0] != stage.name:
                raise FieldConflict(f"arm '{arm}' is written by both stage '{arms[arm][0]}' and stage "
                                    f"'{stage.name}'", where)
            if arm in owners:
                raise FieldConflict(f"arm '{arm}' of stage '{stage.name}' collides with {owners[arm]}", where)
            arms[arm] = (stage.name, role)
    return arms


def final_arm(spec: Spec) -> str:
    """The arm of the finished model: what the last training stage produces ("tuned" after SFT alone)."""
    produced = [stage.produces for stage, _ in pipeline(spec) if stage.produces]
    return produced[-1] if produced else "tuned"


def stage_pairs(spec: Spec) -> list[tuple[str, str]]:
    """The arm pairs the report compares beside vs-baseline: (arm, the arm it continued from) for each
    continuing stage, e.g. ("dpo", "sft"), then those a stage declares, e.g. ("tuned", "base_fewshot")."""
    pairs = [(stage.produces, stage.after) for stage, _ in pipeline(spec) if stage.produces and stage.after]
    return pairs + [pair for stage, cfg in pipeline(spec) if stage.pairs for pair in stage.pairs(spec, cfg)]
