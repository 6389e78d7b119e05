"""SFT → DPO: preference tuning on top of an SFT adapter, with pairs mined from the SFT model's own failures
(or the user's own pairs): the `dpo:` section and its checks."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from harness.config import OptimArgs
from harness.config.loading import FieldConflict
from harness.spec.stages import Phase, register_stage


class DPOSpec(OptimArgs):
    """The `dpo:` block: where the pairs come from and how DPO continues the SFT adapter."""

    beta: float = Field(0.1, gt=0, description="DPO temperature: higher keeps the policy closer to the SFT reference")
    max_pairs: int = Field(256, gt=0, description="at most this many pairs (the first ones, in dev/file order)")
    learning_rate: float = Field(5e-5, gt=0, description="LoRA DPO; full-model DPO uses ~1e-6")
    batch_size: int = Field(4, gt=0, description="pairs per step (each is two sequences)")
    max_length: int = Field(512, gt=0, description="prompt + answer tokens; longer pairs are truncated")
    logging_steps: int = Field(1, gt=0, description="DPO runs are short: log rewards/margins every step")
    pairs: Literal["mined", "file"] = Field(
        "mined", description="mined: the SFT model's failures on the dev split; file: preference_file")
    preference_file: Path | None = Field(None, description="prompt/chosen/rejected pairs (pairs: file)")
    fail_below: float = Field(1.0, gt=0, description="a dev item is a failure when its metric is below this")
    metric: str = Field("field_accuracy", description="the per-item score mining reads; 'judge': the judge "
                                                        "section's rubric grade, scaled to 0-1")

    @model_validator(mode="after")
    def _source(self) -> "DPOSpec":
        if self.pairs == "file" and self.preference_file is None:
            raise ValueError("pairs: file needs preference_file (a prompt/chosen/rejected file)")
        if self.pairs == "mined" and self.preference_file is not None:
            raise ValueError("preference_file is only read with pairs: file (the pairs are mined otherwise)")
        return self


def _mined_needs_dev(spec, cfg: DPOSpec) -> None:
    if cfg.pairs == "mined" and spec.data.dev_size == 0:
        raise FieldConflict("dpo.pairs: mined needs data.dev_size (pairs come from the SFT model's dev failures)",
                            ("dpo", "pairs"))
    if cfg.pairs == "mined" and cfg.metric == "judge" and (spec.judge is None or spec.judge.rubric.scale is None):
        raise FieldConflict("dpo.metric: judge grades the dev answers with the judge section's rubric: "
                            "add judge: with an endpoint and rubric.scale", ("dpo", "metric"))


register_stage("dpo", Phase.CONTINUE, section="dpo", model=DPOSpec, legacy=True, check=_mined_needs_dev,
               example={"max_pairs": 2, "max_steps": 1, "batch_size": 2},
               arms=lambda spec, cfg: {"sft": "stage"}, produces="dpo", after="sft")
