"""SFT → DPO: preference tuning on top of an SFT adapter, with pairs mined from the SFT model's own failures.

The recipe (see `experiments/sft_vs_dpo`): train SFT; generate with the SFT model on the *dev* split
(carved from the training side, never the frozen held-out split); every dev item it gets wrong becomes
a preference pair, chosen = the dev reference, rejected = the model's own output (`mine_pairs`); then
continue the same LoRA adapter with TRL's `DPOTrainer` (`train_dpo`), the SFT policy as the reference.
Users may bring their own pairs instead (`pairs: file`, a prompt/chosen/rejected file read by
`harness.data.formats`, see `load_preference_pairs`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable, Literal

from pydantic import Field, model_validator

from harness.backends import REF_ADAPTER, HFBackend, TrainingBackend, TrainOutcome, drop_adapter
from harness.config import OptimArgs
from harness.config.loading import FieldConflict
from harness.data.example import Example
from harness.errors import DataError, HarnessError, SpecError
from harness.evaluation.scoring import normalise_text
from harness.results import write_jsonl
from harness.stages.context import TrialContext
from harness.stages.registry import Phase, register_stage


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


LOG_FILE = "dpo_log.jsonl"
TRAINER = "DPOTrainer"
POLICY_ADAPTER = "default"


def pairs_from_rows(dev: list[Example], rows: list[dict[str, Any]], *, metric: str, fail_below: float,
                    max_pairs: int) -> list[Example]:
    """Preference pairs from already scored dev rows (`harness.evaluation.evaluate.score_items`, same order as `dev`).

    An item becomes a pair when its `metric` is below `fail_below` and its prediction differs from the
    reference after normalisation (case, whitespace): chosen (`reference`) = the dev reference, `rejected`
    = the model's own output, which may be empty. Dev order is kept; the first `max_pairs` are returned.
    """
    if len(rows) != len(dev):
        raise ValueError(f"{len(rows)} scored rows for {len(dev)} dev items")
    pairs: list[Example] = []
    for ex, row in zip(dev, rows):
        if row["item_id"] != ex.id:
            raise ValueError(f"scored row {row['item_id']} is not dev item {ex.id} (rows out of order)")
        scores = row["scores"]
        if metric not in scores:
            raise SpecError(f"field 'dpo.metric': '{metric}' is not a score of this task's items "
                            f"(item {ex.id} has: {', '.join(sorted(scores))})")
        value = float(scores[metric])
        prediction = row["prediction"]
        if not value < fail_below or normalise_text(prediction) == normalise_text(ex.reference):
            continue
        pairs.append(Example(
            id=ex.id, prompt=ex.prompt, reference=ex.reference, rejected=prediction, cluster=ex.cluster,
            origin=ex.origin, meta={**ex.meta, "dpo_mined": {"metric": metric, "score": value}}))
        if len(pairs) == max_pairs:
            break
    return pairs


def mine_pairs(model, tokenizer, dev: list[Example], scorer: Callable[[str, str], dict[str, float]], *,
               metric: str, fail_below: float, max_pairs: int, max_new_tokens: int,
               batch_size: int, rescore: Callable[[list[dict[str, Any]]], None] | None = None) -> list[Example]:
    """Generate greedily with `model` on `dev` and turn its failures into preference pairs (`pairs_from_rows`).

    `dev` must come from the training side: mining on the frozen held-out split would train on it.
    Greedy decoding makes the result deterministic for a given model. `rescore` may add scores to the
    rows before mining reads `metric` (the LLM judge's grade, `metric: judge`).
    """
    from harness.evaluation.evaluate import generate, score_items

    if not dev:
        raise DataError("DPO mines its pairs from the dev split, which is empty: set data.dev_size "
                        "(or use dpo.pairs: file)")
    gens = generate(model, tokenizer, [ex.prompt for ex in dev], max_new_tokens=max_new_tokens,
                    batch_size=batch_size)
    rows = score_items("dpo-mining", dev, gens, scorer)
    if rescore is not None:
        rescore(rows)
    return pairs_from_rows(dev, rows, metric=metric, fail_below=fail_below, max_pairs=max_pairs)


def load_preference_pairs(path: Path, *, max_pairs: int, system_prompt: str | None = None,
                          heldout: list[Example] | None = None) -> list[Example]:
    """A user's prompt/chosen/rejected file as pairs (the first `max_pairs`).

    Bad rows (missing fields, chosen == rejected, ...) raise `DataError` at file:line (see
    `harness.data.formats`). Pass the data spec's `system_prompt` so prompts render as in SFT, and the
    frozen `heldout` split to refuse pairs whose prompts are held-out items.
    """
    from harness.data.formats import load_examples
    from harness.data.split import check_leakage

    pairs = load_examples(Path(path), format="preference", system_prompt=system_prompt)
    for ex in pairs:  # a file this harness wrote is read as it is, and may lack `rejected`
        if ex.rejected is None:
            raise DataError("field 'rejected': missing (a preference pair needs chosen and rejected)",
                            where=ex.origin or path)
    if heldout:
        check_leakage(pairs, heldout, where=path)
    return pairs[:max_pairs]


def _check_pairs(pairs: list[Example]) -> None:
    if not pairs:
        raise DataError("no preference pairs to train DPO on (no dev failures were mined, or the file is empty)")
    for ex in pairs:
        if ex.rejected is None:
            raise DataError(f"pair {ex.id} has no rejected answer", where=ex.origin or None)
        if normalise_text(ex.rejected) == normalise_text(ex.reference):
            raise DataError(f"pair {ex.id}: rejected is the same as chosen", where=ex.origin or None)


def _dataset(pairs: list[Example]):
    from datasets import Dataset

    # Conversational preference format: TRL renders prompt + answer with the tokenizer's chat template,
    # exactly as SFT rendered prompt + completion, and puts the loss on the assistant turn only.
    return Dataset.from_list([
        {"prompt": ex.prompt,
         "chosen": [{"role": "assistant", "content": ex.reference}],
         "rejected": [{"role": "assistant", "content": ex.rejected}]}
        for ex in pairs
    ])


def dpo_config(spec: DPOSpec) -> dict[str, Any]:
    """DPO's own fields of `trl.DPOConfig` (the shared ones come from `TrainingBackend.fit`)."""
    return dict(
        lr_scheduler_type="linear", beta=spec.beta, loss_type=["sigmoid"], max_length=spec.max_length,
        truncation_mode="keep_start", dataset_num_proc=None,
        # The reference is the frozen copy of the SFT adapter, its log-probs computed once by `train_dpo`
        # (TRL's own precomputation would hash every weight of the model for a cache key), and no
        # TR-DPO syncing (not supported with PEFT).
        precompute_ref_log_probs=False, sync_ref_model=False,
    )


def train_dpo(model, tokenizer, pairs: list[Example], spec: DPOSpec, seed: int, out_dir: Path,
              on_log: Callable[[dict[str, Any]], None] | None = None,
              on_step: Callable[[int], None] | None = None, backend: TrainingBackend | None = None,
              precompute_reference: bool = True) -> TrainOutcome:
    """Continue the SFT LoRA adapter of `model` (a PEFT model) with DPO on `pairs`, in place.

    The reference policy is the SFT model as it is when this is called (see below). On return the
    model holds only its trained adapter, as `train_sft` left it, so it can be evaluated, saved and
    unloaded as usual. `on_log` gets each logged row (loss, rewards/chosen, rewards/rejected,
    rewards/margins, rewards/accuracies, logps/*, ...); `on_step` is called after every optimiser step.
    `precompute_reference=False` runs the reference forward in every step instead of once up front
    (the same values, at a third more compute per step).
    """
    _check_pairs(pairs)
    if not _is_peft_model(model):
        raise HarnessError("DPO continues an SFT adapter: pass the PEFT model that train_sft trained")
    if REF_ADAPTER in model.peft_config:
        raise HarnessError(f"the model already has an adapter named '{REF_ADAPTER}' (a DPO run not cleaned up?)")
    if model.active_adapter != POLICY_ADAPTER:
        raise HarnessError(f"the SFT adapter must be the active '{POLICY_ADAPTER}' adapter, "
                           f"not '{model.active_adapter}'")

    from harness.evaluation.prompting import ensure_chat_template

    ensure_chat_template(tokenizer)

    # The reference model. DPO's implicit reward is β·log(π/π_ref) and must be measured against the SFT
    # policy we start from, not the adapter-free base. Given a PeftModel and no `ref_model`, TRL 1.15's
    # DPOTrainer copies the trained "default" adapter into a second adapter "ref" (same LoraConfig,
    # weights copied at construction, requires_grad=False) and computes the reference log-probs by
    # switching to it under no_grad (`use_adapter(model, "ref")`). So the reference is exactly the SFT
    # policy, frozen, at the cost of one LoRA-sized copy: no second base model in memory (a merged deep
    # copy would double it). Being frozen, its log-probs are computed once for every pair before the
    # first step (`_precompute_reference`) instead of by a no-grad forward inside every step.
    # The alternatives are wrong here: the base model plus a `peft_config` would train a fresh adapter
    # against the base, and a plain model would make TRL load a second reference from its config path;
    # hence the PeftModel check above.
    def check(trainer) -> None:
        if REF_ADAPTER not in model.peft_config:  # a TRL that stopped making the copy would train against the base
            raise HarnessError(f"TRL did not create the frozen '{REF_ADAPTER}' adapter; the DPO reference "
                               "would not be the SFT policy")
        if len(trainer.train_dataset) == 0:
            raise DataError(f"every preference pair's prompt fills dpo.max_length ({spec.max_length} tokens): "
                            "nothing left to train on; raise max_length")
        if precompute_reference:
            _precompute_reference(trainer)

    def tokens(trainer, epochs: float) -> int:
        # TRL counts the policy's tokens (attention mask, chosen + rejected, all epochs) as it trains.
        counted = getattr(trainer, "_total_train_tokens", None)
        if counted is not None:
            return int(counted)
        data = trainer.train_dataset  # an estimate from the tokenized pairs, should a TRL version drop the counter
        return int(sum(2 * len(p) + len(c) + len(r) for p, c, r in
                       zip(data["prompt_ids"], data["chosen_ids"], data["rejected_ids"])) * epochs)

    try:
        return (backend or HFBackend()).fit(
            TRAINER, model, tokenizer, _dataset(pairs), spec, out_dir, seed=seed, config=dpo_config(spec),
            tokens_per_step=2 * spec.batch_size * spec.max_length, on_log=on_log, on_step=on_step,
            before_train=check, tokens=tokens)
    finally:
        drop_adapter(model, REF_ADAPTER, keep=POLICY_ADAPTER)


def _precompute_reference(trainer) -> None:
    """Every pair's reference log-probs, once, as the dataset columns TRL's DPOTrainer reads instead of
    running the reference in each step.

    What `DPOConfig(precompute_ref_log_probs=True)` does, with TRL's own `compute_ref_log_probs` on its
    own collated batches, minus its cache key: that option hashes every weight of the model
    (`trl.trainer.utils.hash_module`), which for a large base costs more than the forwards it saves."""
    import torch
    from torch.utils.data import DataLoader

    if not hasattr(trainer, "precompute_ref_logps") or not hasattr(trainer, "compute_ref_log_probs"):
        raise HarnessError("this TRL's DPOTrainer has no precomputed-reference path "
                           "(precompute_ref_logps, compute_ref_log_probs); the harness is written for TRL 1.15")
    data = trainer.train_dataset
    loader = DataLoader(data, batch_size=trainer.args.per_device_train_batch_size, shuffle=False,
                        collate_fn=trainer.data_collator)
    device = trainer.accelerator.device
    chosen, rejected = [], []
    for batch in loader:
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        c, r = trainer.compute_ref_log_probs(trainer.model, batch)
        chosen.append(c.float().cpu())
        rejected.append(r.float().cpu())
    trainer.train_dataset = (data.add_column("ref_chosen_logps", torch.cat(chosen).tolist())
                             .add_column("ref_rejected_logps", torch.cat(rejected).tolist()))
    trainer.precompute_ref_logps = True


def _is_peft_model(model) -> bool:
    peft = sys.modules.get("peft")  # not imported: then `model` cannot be a PeftModel (and we skip the import)
    return peft is not None and isinstance(model, peft.PeftModel)


def _judge_grades(ctx: TrialContext) -> Callable[[list[dict[str, Any]]], None]:
    """Add the judge's rubric grade, scaled to 0-1, as score `judge` of each dev row (NaN when the judge
    failed or its reply did not parse: such an item is neither a failure nor mined)."""
    from harness.evaluation.judge import grade_rows

    def rescore(rows: list[dict[str, Any]]) -> None:
        grade_rows(ctx.spec.judge, rows, ctx.data.dev, ctx.study_dir / "judge-cache", ctx.trial_dir / "dpo_judge.jsonl")

    return rescore


def run(ctx: TrialContext, cfg: DPOSpec) -> None:
    """Continue the SFT adapter with DPO on the SFT model's own dev failures (or the user's pairs)."""
    ctx.snapshot_arm("sft", adapter_dir="adapter-sft")  # evaluated and saved before DPO changes it
    spec = ctx.spec
    if cfg.pairs == "mined":  # the dev split is training-side: the held-out split is never mined
        pairs = mine_pairs(ctx.peft_model, ctx.tok, ctx.data.dev, ctx.scorer, metric=cfg.metric,
                           fail_below=cfg.fail_below, max_pairs=cfg.max_pairs,
                           max_new_tokens=spec.eval.max_new_tokens, batch_size=spec.eval.batch_size,
                           rescore=_judge_grades(ctx) if cfg.metric == "judge" else None)
    else:
        pairs = load_preference_pairs(cfg.preference_file, max_pairs=cfg.max_pairs,
                                      system_prompt=spec.data.system_prompt, heldout=ctx.data.heldout)
    write_jsonl(ctx.trial_dir / "dpo_pairs.jsonl", [{**p.to_json(), "rejected": p.rejected} for p in pairs])  # "" is a real answer
    outcome = train_dpo(ctx.peft_model, ctx.tok, pairs, cfg, seed=spec.train.seed, out_dir=ctx.scratch("dpo-checkpoints"),
                        on_log=ctx.log_rows("dpo"), on_step=ctx.dev_checkpoints("dpo"), backend=ctx.backend)
    ctx.add_training("dpo", outcome, LOG_FILE, pairs=len(pairs))


register_stage("dpo", Phase.CONTINUE, section="dpo", model=DPOSpec, legacy=True, check=_mined_needs_dev,
               example={"max_pairs": 2, "max_steps": 1, "batch_size": 2},
               arms=lambda spec, cfg: {"sft": "stage"}, produces="dpo", after="sft",
               trainer=TRAINER, loss="DPO loss, −log σ(β · reward margin)", training_only=("dpo.",),
               log_file=LOG_FILE, diagnostics=(("rewards/margins", "reward margin, chosen − rejected"),
                                               ("rewards/accuracies", "share of pairs with chosen ahead"),
                                               ("logps/chosen", "log-prob of chosen"),
                                               ("logps/rejected", "log-prob of rejected")), run=run)
