"""The stages a trial can run, as the spec knows them: one file each, registered by `register_stage` and
found by scanning this folder.

A stage declares its YAML section (a pydantic model; `section=None` for the core steps every trial runs),
its cross-section checks, its phase, and the arms and metric blocks it writes; `harness.spec` assembles
the spec from these. What a stage does in a trial is its runner, the file of the same name in
`harness.stages`. Adding a kind of experiment is a file here, its runner there, and an experiment YAML:

    class GRPOSpec(OptimArgs): ...

    register_stage("grpo", Phase.CONTINUE, section="grpo", model=GRPOSpec, example={"max_steps": 1},
                   arms=lambda spec, cfg: {"sft": "stage"}, produces="grpo", after="sft")

These files import no stage runner, so loading a spec never imports torch, TRL or lm-eval.
"""

from __future__ import annotations

import sys
import typing
from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING, Any, Callable

from harness.config.loading import FieldConflict
from harness.discovery import import_modules

if TYPE_CHECKING:
    from harness.spec import ExperimentSpec


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
    """One registered step of a trial, as the spec knows it (its runner is in `harness.stages`)."""

    name: str
    phase: Phase
    section: str | None = None  # the YAML key that enables it; None: enabled by `enabled` (core steps)
    model: Any = None  # the section's pydantic type (a list[...] type for `many`)
    many: bool = False  # the section is a list (contestants): absent means []
    legacy: bool = False  # a section that existed before the registry: always in the spec's fingerprint
    order: int = 50
    method: str | None = None  # TRAIN stages: the `train.method` they implement
    enabled: Callable[["ExperimentSpec"], bool] | None = None
    check: Callable[["ExperimentSpec", Any], None] | None = None  # raises ValueError naming the field
    arms: Callable[["ExperimentSpec", Any], dict[str, ArmRole]] | None = None  # arm name → role it writes
    blocks: tuple[str, ...] = ()  # metrics.json blocks it writes (e.g. "teacher", "forgetting")
    example: Any = None  # a small valid value of its section (docs, and the contract test runs it)
    produces: str | None = None  # training stages: the arm of the model they leave ("tuned", "dpo")
    after: str | None = None  # continuing stages: the arm they start from, compared with theirs ("sft")
    module: str = ""  # the module that registered it

    @property
    def description(self) -> str | None:
        """The first line of the section model's docstring (the spec's description of the section)."""
        model = typing.get_args(self.model)[0] if self.many else self.model
        return ((getattr(model, "__doc__", None) or "").strip().split("\n")[0]) or None

    def config(self, spec: "ExperimentSpec") -> Any:
        """The stage's section of `spec` (None / [] when absent)."""
        return getattr(spec, self.section) if self.section else None

    def is_enabled(self, spec: "ExperimentSpec") -> bool:
        if self.method is not None and spec.train.method != self.method:
            return False
        if self.enabled is not None:
            return self.enabled(spec)
        if self.section is None:
            return True
        cfg = self.config(spec)
        return bool(cfg) if self.many else cfg is not None


_REGISTRY: dict[str, Stage] = {}
_discovered = False


def register_stage(name: str, phase: Phase, **kw: Any) -> Stage:
    """Register stage `name` (see `Stage` for the keywords), called at the top level of its file here."""
    module = sys._getframe(1).f_globals["__name__"]  # the caller's module, found as enum's functional API does
    stage = Stage(name=name, phase=phase, module=module, **kw)
    taken = _REGISTRY.get(name)
    if taken is not None and taken.module != module:
        raise ValueError(f"stage '{name}' is registered twice ({taken.module}, {module})")
    for other in _REGISTRY.values():
        if other.name != name and stage.section and other.section == stage.section:
            raise ValueError(f"section '{stage.section}' is claimed by stages '{other.name}' and '{name}'")
    _REGISTRY[name] = stage
    return stage


def all_stages() -> list[Stage]:
    """Every registered stage in pipeline order (importing each module of this package once)."""
    global _discovered
    if not _discovered:
        import_modules(__name__, __path__)
        _discovered = True
    return sorted(_REGISTRY.values(), key=lambda s: (s.phase, s.order, s.name))


def sections() -> list[Stage]:
    """The stages that own a YAML section."""
    return [s for s in all_stages() if s.section]


def train_methods() -> list[str]:
    return sorted(s.method for s in all_stages() if s.method)


def pipeline(spec: "ExperimentSpec") -> list[tuple[Stage, Any]]:
    """The stages `spec` enables, in the order a trial runs them, each with its section."""
    return [(s, s.config(spec)) for s in all_stages() if s.is_enabled(spec)]


def planned_arms(spec: "ExperimentSpec") -> dict[str, tuple[str, ArmRole]]:
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


def final_arm(spec: "ExperimentSpec") -> str:
    """The arm of the finished model: what the last training stage produces ("tuned" after SFT alone)."""
    produced = [stage.produces for stage, _ in pipeline(spec) if stage.produces]
    return produced[-1] if produced else "tuned"


def stage_pairs(spec: "ExperimentSpec") -> list[tuple[str, str]]:
    """(arm, the arm it continued from) for each continuing stage, e.g. ("dpo", "sft")."""
    return [(stage.produces, stage.after) for stage, _ in pipeline(spec) if stage.produces and stage.after]
