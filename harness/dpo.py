"""SFT → DPO: preference tuning on top of an SFT adapter, with pairs mined from the SFT model's own failures.

The recipe (see `experiments/sft_vs_dpo`): train SFT; generate with the SFT model on the *dev* split
(carved from the training side, never the frozen held-out split); every dev item it gets wrong becomes
a preference pair, chosen = the dev reference, rejected = the model's own output (`mine_pairs`); then
continue the same LoRA adapter with TRL's `DPOTrainer` (`train_dpo`), the SFT policy as the reference.
Users may bring their own pairs instead (`pairs: file`, a prompt/chosen/rejected file read by
`harness.data.formats`, see `load_preference_pairs`).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Callable, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from harness.data.example import Example
from harness.errors import DataError, HarnessError, SpecError
from harness.scoring import normalise_text
from harness.train import LogCallback, TrainOutcome, forward_restored, guarded_trainer_class

# The name TRL 1.15 gives the frozen copy of the adapter it trains (see `DPOTrainer.__init__`).
REF_ADAPTER = "ref"
POLICY_ADAPTER = "default"


class DPOSpec(BaseModel):
    """The `dpo:` block: where the pairs come from and how DPO continues the SFT adapter."""

    model_config = ConfigDict(extra="forbid")

    beta: float = Field(0.1, gt=0, description="DPO temperature: higher keeps the policy closer to the SFT reference")
    max_pairs: int = Field(256, gt=0, description="at most this many pairs (the first ones, in dev/file order)")
    learning_rate: float = Field(5e-5, gt=0, description="LoRA DPO; full-model DPO uses ~1e-6")
    epochs: float = Field(1.0, gt=0)
    max_steps: int = Field(-1, description="-1: run the epochs")
    batch_size: int = Field(4, gt=0, description="pairs per step (each is two sequences)")
    grad_accum: int = Field(1, gt=0)
    max_length: int = Field(512, gt=0, description="prompt + answer tokens; longer pairs are truncated")
    logging_steps: int = Field(1, gt=0, description="DPO runs are short: log rewards/margins every step")
    pairs: Literal["mined", "file"] = Field(
        "mined", description="mined: the SFT model's failures on the dev split; file: preference_file")
    preference_file: Path | None = Field(None, description="prompt/chosen/rejected pairs (pairs: file)")
    fail_below: float = Field(1.0, gt=0, description="a dev item is a failure when its metric is below this")
    metric: str = Field("field_accuracy", description="the per-item score mining reads")

    @model_validator(mode="after")
    def _source(self) -> "DPOSpec":
        if self.pairs == "file" and self.preference_file is None:
            raise ValueError("pairs: file needs preference_file (a prompt/chosen/rejected file)")
        if self.pairs == "mined" and self.preference_file is not None:
            raise ValueError("preference_file is only read with pairs: file (the pairs are mined otherwise)")
        return self


# ---------------------------------------------------------------- pairs


def pairs_from_rows(dev: list[Example], rows: list[dict[str, Any]], *, metric: str, fail_below: float,
                    max_pairs: int) -> list[Example]:
    """Preference pairs from already scored dev rows (`harness.evaluate.score_items`, same order as `dev`).

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
               batch_size: int) -> list[Example]:
    """Generate greedily with `model` on `dev` and turn its failures into preference pairs (`pairs_from_rows`).

    `dev` must come from the training side: mining on the frozen held-out split would train on it.
    Greedy decoding makes the result deterministic for a given model.
    """
    from harness.evaluate import generate, score_items

    if not dev:
        raise DataError("DPO mines its pairs from the dev split, which is empty: set data.dev_size "
                        "(or use dpo.pairs: file)")
    gens = generate(model, tokenizer, [ex.prompt for ex in dev], max_new_tokens=max_new_tokens,
                    batch_size=batch_size)
    rows = score_items("dpo-mining", dev, gens, scorer)
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


# ---------------------------------------------------------------- training


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


def dpo_config(spec: DPOSpec, seed: int, out_dir: Path):
    """The `trl.DPOConfig` for a spec (CPU-friendly; no checkpoints, no reporting)."""
    import torch
    from trl import DPOConfig

    cuda = torch.cuda.is_available()
    return DPOConfig(
        output_dir=str(out_dir), num_train_epochs=spec.epochs, max_steps=spec.max_steps,
        per_device_train_batch_size=spec.batch_size, gradient_accumulation_steps=spec.grad_accum,
        learning_rate=spec.learning_rate, lr_scheduler_type="linear", seed=seed, data_seed=seed,
        beta=spec.beta, loss_type=["sigmoid"], max_length=spec.max_length, truncation_mode="keep_start",
        # The reference is the frozen copy of the SFT adapter, run every step (see `train_dpo`): no
        # precomputation (it would cache reference log-probs on disk, keyed by a hash of the model),
        # and no TR-DPO syncing (not supported with PEFT).
        precompute_ref_log_probs=False, sync_ref_model=False,
        logging_steps=spec.logging_steps, save_strategy="no", report_to="none",
        # DPOConfig defaults gradient checkpointing and bf16 on; neither suits CPU (nor a small LoRA run).
        bf16=cuda, use_cpu=not cuda, gradient_checkpointing=False,
        dataloader_num_workers=0, dataset_num_proc=None, disable_tqdm=False,
    )


def train_dpo(model, tokenizer, pairs: list[Example], spec: DPOSpec, seed: int, out_dir: Path,
              on_log: Callable[[dict[str, Any]], None] | None = None,
              on_step: Callable[[int], None] | None = None) -> TrainOutcome:
    """Continue the SFT LoRA adapter of `model` (a PEFT model) with DPO on `pairs`, in place.

    The reference policy is the SFT model as it is when this is called (see below). On return the
    model holds only its trained adapter, as `train_sft` left it, so it can be evaluated, saved and
    unloaded as usual. `on_log` gets each logged row (loss, rewards/chosen, rewards/rejected,
    rewards/margins, rewards/accuracies, logps/*, ...); `on_step` is called after every optimiser step.
    """
    _check_pairs(pairs)
    if not _is_peft_model(model):
        raise HarnessError("DPO continues an SFT adapter: pass the PEFT model that train_sft trained")
    if REF_ADAPTER in model.peft_config:
        raise HarnessError(f"the model already has an adapter named '{REF_ADAPTER}' (a DPO run not cleaned up?)")
    if model.active_adapter != POLICY_ADAPTER:
        raise HarnessError(f"the SFT adapter must be the active '{POLICY_ADAPTER}' adapter, "
                           f"not '{model.active_adapter}'")

    from harness.prompting import ensure_chat_template

    ensure_chat_template(tokenizer)
    log: list[dict[str, Any]] = []

    # The reference model. DPO's implicit reward is β·log(π/π_ref) and must be measured against the SFT
    # policy we start from, not the adapter-free base. Given a PeftModel and no `ref_model`, TRL 1.15's
    # DPOTrainer copies the trained "default" adapter into a second adapter "ref" (same LoraConfig,
    # weights copied at construction, requires_grad=False) and computes the reference log-probs by
    # switching to it under no_grad (`use_adapter(model, "ref")`). So the reference is exactly the SFT
    # policy, frozen, at the cost of one LoRA-sized copy and one no-grad forward per step: no second
    # base model in memory (a merged deep copy would double it) and nothing cached on disk
    # (`precompute_ref_log_probs` would save the per-step reference forward, but writes a datasets cache
    # file keyed by a model hash; the forward is cheap next to the policy's forward and backward).
    # The alternatives are wrong here: the base model plus a `peft_config` would train a fresh adapter
    # against the base, and a plain model would make TRL load a second reference from its config path;
    # hence the PeftModel check above.
    with forward_restored(model):
        trainer = None
        try:
            trainer = guarded_trainer_class("DPOTrainer")(
                model=model, args=dpo_config(spec, seed, out_dir), train_dataset=_dataset(pairs),
                processing_class=tokenizer, callbacks=[LogCallback(log, on_log, on_step)])
            if REF_ADAPTER not in model.peft_config:  # a TRL that stopped making the copy would train against the base
                raise HarnessError(f"TRL did not create the frozen '{REF_ADAPTER}' adapter; the DPO reference "
                                   "would not be the SFT policy")
            if len(trainer.train_dataset) == 0:
                raise DataError(f"every preference pair's prompt fills dpo.max_length ({spec.max_length} tokens): "
                                "nothing left to train on; raise max_length")
            t0 = time.perf_counter()
            result = trainer.train()
            runtime = time.perf_counter() - t0
        finally:
            _drop_reference(model)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    # TRL counts the policy's tokens (attention mask, chosen + rejected, all epochs) as it trains.
    tokens = getattr(trainer, "_total_train_tokens", None)
    if tokens is None:  # an estimate from the tokenized pairs, should a TRL version drop the counter
        data = trainer.train_dataset
        per_epoch = sum(2 * len(p) + len(c) + len(r)
                        for p, c, r in zip(data["prompt_ids"], data["chosen_ids"], data["rejected_ids"]))
        tokens = per_epoch * (trainer.state.epoch or spec.epochs)
    return TrainOutcome(steps=trainer.state.global_step, tokens_trained=int(tokens),
                        runtime_s=runtime, final_loss=float(result.training_loss), log=log,
                        trainable_params=trainable)


def _is_peft_model(model) -> bool:
    peft = sys.modules.get("peft")  # not imported: then `model` cannot be a PeftModel (and we skip the import)
    return peft is not None and isinstance(model, peft.PeftModel)


def _drop_reference(model) -> None:
    """Remove TRL's frozen reference adapter, leaving the trained one active and trainable."""
    if REF_ADAPTER in model.peft_config:
        model.delete_adapter(REF_ADAPTER)
    model.set_adapter(POLICY_ADAPTER)
