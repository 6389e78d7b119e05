"""Logit distillation (YAML section `kd:`, `train.method: kd`): a fresh LoRA adapter on the base trained to
match a teacher model's next-token distributions with TRL's own `DistillationTrainer` (no loss written here).

The installed TRL's stable trainer is on-policy: the student writes a completion for each training prompt and
the loss is the generalised Jensen-Shannon divergence between the student's and the teacher's token
distributions on it (`beta`: 0 forward KL, 1 reverse KL, 0.5 JSD), at `temperature`. It has no off-policy share
and no SFT-loss mix: `lmbda` (the share of student-written completions) is therefore 1 and anything else is
refused, naming the trainer (TRL's experimental GKD trainer has the off-policy share; it is not used here).

The teacher is a second model in memory beside the base: loaded once per worker and kept across its kd
trials (`TrialContext.keep`), released before a trial that does not distil, counted by `harness plan` (`extra_weight_bytes`), and named with its hash in the manifest (under
`trainings.kd.teacher`). It is any model name `model.base` takes (a local HF directory, a registered alias,
`random:<arch>`) or a finished trial directory of another study (`results/STUDY/trial-0000`): its adapter is
merged into that trial's base once, into this study's folder. It must share the student's tokenizer and
vocabulary; a different one is refused before any trial, and so is a teacher trial trained on the same data
under another frozen split (its training items may be this study's held-out ones). With `evaluate_teacher` the teacher itself answers
the held-out split too (arm `teacher_model`), so a report shows how much of it the student recovered."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import Field

from harness.config import OptimArgs
from harness.errors import DataError, SpecError
from harness.stages.context import TrialContext
from harness.stages.registry import Phase, register_stage

TRAINER = "DistillationTrainer"
TEACHER_ARM = "teacher_model"


class KDSpec(OptimArgs):
    """The `kd:` block: the teacher whose token distributions the student learns, and how it trains."""

    teacher: str = Field(description="a local HF directory, a registered alias, random:<arch>, or a finished "
                                     "trial directory of another study (its adapter merged into its base)")
    temperature: float = Field(1.0, gt=0, description="softens both distributions in the divergence")
    beta: float = Field(0.5, ge=0, le=1, description="generalised JSD: 0 forward KL, 1 reverse KL, 0.5 JSD")
    lmbda: float = Field(1.0, ge=0, le=1, description="share of student-generated completions (the stable "
                                                      "trainer is on-policy only: 1)")
    learning_rate: float = Field(1e-3, gt=0)
    max_completion_length: int = Field(112, gt=0, description="tokens the student writes per prompt")
    max_prompts: int | None = Field(None, gt=0, description="train on the first N training prompts")
    evaluate_teacher: bool = Field(True, description="the teacher answers the held-out split too (arm "
                                                     f"'{TEACHER_ARM}')")
    logging_steps: int = Field(1, gt=0)


# ---------------------------------------------------------------- the teacher

def _trial_dir(name: str) -> Path | None:
    """`name` as a finished trial directory of a study (result.json, manifest.json and adapter/), or None."""
    path = Path(name).expanduser()
    return path if (path / "manifest.json").exists() and (path / "adapter").is_dir() else None


def teacher_base(name: str) -> str:
    """The model name whose tokenizer and config the teacher has: the trial's base for a trial directory."""
    trial = _trial_dir(name)
    if trial is None:
        return name
    manifest = json.loads((trial / "manifest.json").read_text())
    return str(manifest["model"]["name"])


def resolve_teacher(cfg: KDSpec):
    """The teacher's `ResolvedModel` (of its base, for a trial directory); refused naming `kd.teacher`."""
    from harness.errors import ModelError
    from harness.models import resolve_model

    if _trial_dir(cfg.teacher) is None and Path(cfg.teacher).expanduser().is_dir() and \
            not (Path(cfg.teacher).expanduser() / "config.json").exists():
        raise SpecError(f"field 'kd.teacher': '{cfg.teacher}' is neither a model directory (config.json) nor "
                        "a finished trial (manifest.json and adapter/)")
    try:
        return resolve_model(teacher_base(cfg.teacher))
    except (ModelError, KeyError, ValueError) as e:
        raise SpecError(f"field 'kd.teacher': {e}") from e


def teacher_config(resolved):
    """The teacher's transformers config (read, nothing loaded)."""
    from transformers import AutoConfig, LlamaConfig

    from harness.models import ARCHITECTURES, load_tokenizer

    if resolved.kind == "random":
        return LlamaConfig(**{"vocab_size": len(load_tokenizer(resolved)), **ARCHITECTURES[resolved.arch]})
    return AutoConfig.from_pretrained(resolved.path)


def teacher_weight_bytes(spec: Any, cfg: KDSpec) -> int:
    """The teacher's weights in memory: its parameters (a meta-device model) at 2 bytes each, as the plan
    counts the base."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(teacher_config(resolve_teacher(cfg)))
    return 2 * sum(p.numel() for p in model.parameters())


def check_same_vocabulary(spec: Any, cfg: KDSpec) -> None:
    """Refuse a teacher whose tokenizer or vocabulary differs from the student's, naming both."""
    from harness.models import load_tokenizer, resolve_model

    student = resolve_model(spec.model.base)
    teacher = resolve_teacher(cfg)
    s_tok, t_tok = load_tokenizer(student), load_tokenizer(teacher)
    s_size = teacher_config(student).get_text_config().vocab_size
    t_size = teacher_config(teacher).get_text_config().vocab_size
    if s_tok.get_vocab() != t_tok.get_vocab() or s_size != t_size:
        raise SpecError(f"field 'kd.teacher': teacher '{cfg.teacher}' (tokenizer of {len(t_tok)} tokens, vocab_size "
                        f"{t_size}) and student '{spec.model.base}' (tokenizer of {len(s_tok)} tokens, vocab_size "
                        f"{s_size}) do not share a vocabulary: logit distillation compares their distributions token "
                        "by token")


def check_teacher_memory(spec: Any, cfg: KDSpec, device_bytes: int | None, headroom: float = 0.85) -> None:
    """Refuse a teacher that, beside the base, leaves no room on the device (`device_bytes`; None: a CPU,
    whose host memory the plan does not model)."""
    from harness.backends.memory_plan import GIB, ModelShape, plan_checkpointing

    if device_bytes is None:
        return
    from harness.models import resolve_model

    student = teacher_config(resolve_model(spec.model.base))
    t_bytes = teacher_weight_bytes(spec, cfg)
    s_params = _params(student)
    plan = plan_checkpointing(True, ModelShape.of(student.get_text_config()), weight_bytes=2 * s_params + t_bytes,
                              trainable_params=0, tokens_per_step=cfg.batch_size * (spec.train.max_length
                                                                                      + cfg.max_completion_length),
                              device_bytes=device_bytes, headroom=headroom)
    if plan.estimated_peak_gib * GIB > device_bytes * headroom:
        raise SpecError(f"field 'kd.teacher': teacher '{cfg.teacher}' ({t_bytes / GIB:.1f} GiB of weights) beside the "
                        f"student needs about {plan.estimated_peak_gib:.1f} GiB even with every layer recomputed, "
                        f"more than {headroom:.0%} of the device's {device_bytes / GIB:.1f} GiB: choose a smaller "
                        "teacher or a larger device")


def _params(config) -> int:
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return sum(p.numel() for p in AutoModelForCausalLM.from_config(config).parameters())


def check(spec: Any, cfg: KDSpec) -> None:
    """What the stable trainer cannot do, refused at validation."""
    from harness.config.loading import FieldConflict

    if cfg.lmbda != 1.0:
        raise FieldConflict(f"lmbda {cfg.lmbda}: the installed TRL's {TRAINER} trains on the student's own "
                            "completions only (lmbda = 1); an off-policy share needs TRL's experimental GKD trainer, "
                            "which this stage does not use", ("kd", "lmbda"))


def check_teacher_split(cfg: KDSpec, source: str, split_hash: str) -> str:
    """A teacher trial trained on this study's data must have held out the same frozen split: else its
    training items may be this study's held-out items (leakage through the teacher). Returns what was found."""
    trial = _trial_dir(cfg.teacher)
    if trial is None:
        return "not a trial: no split to check"
    manifest = json.loads((trial / "manifest.json").read_text())
    theirs, their_hash = (manifest.get("data") or {}).get("source"), manifest.get("split_hash")
    if theirs != source:
        return f"trained on other data ({theirs}): no shared held-out split"
    if their_hash != split_hash:
        raise SpecError(f"field 'kd.teacher': teacher trial {trial} was trained on {source} with held-out split "
                        f"{str(their_hash)[:12]}…, this study holds out {split_hash[:12]}…: the teacher's training "
                        "items may be this study's held-out items. Train the teacher on this study's frozen split")
    return "same frozen held-out split"


def preflight(spec: Any, cfg: KDSpec) -> None:
    """Before any trial: the teacher resolves, shares the student's vocabulary, fits beside it, and (a trial)
    held out this study's frozen split."""
    from harness.backends.memory_plan import device_memory_bytes
    from harness.data.prepare import prepare_data
    from harness.models import harness_home

    check_same_vocabulary(spec, cfg)
    check_teacher_memory(spec, cfg, device_memory_bytes())
    if _trial_dir(cfg.teacher) is not None:
        data = prepare_data(spec.data, harness_home() / "data", freeze=False)
        check_teacher_split(cfg, data.source, data.split.split_hash)


def teacher_hash(path: Path) -> str:
    """sha256 over the teacher's weight files (sorted by name)."""
    digest = hashlib.sha256()
    for f in sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")):
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def load_teacher(ctx: TrialContext, cfg: KDSpec):
    """(model, record) of the teacher in eval mode, loaded once per worker; a trial directory's adapter is
    merged once into this study's folder (`teachers/<trial>`), so every trial of the study loads the same
    weights."""
    split = check_teacher_split(cfg, ctx.data.source, ctx.data.split.split_hash)
    model, record = ctx.keep("kd", f"{cfg.teacher}|{ctx.spec.model.dtype}|{ctx.study_dir}",
                             lambda: _load_teacher(ctx, cfg))
    return model, {**record, "split": split}


def _load_teacher(ctx: TrialContext, cfg: KDSpec):
    from harness.models import ResolvedModel, load_model

    resolved = resolve_teacher(cfg)
    trial = _trial_dir(cfg.teacher)
    if trial is not None:
        from harness.export.merge import merge_adapter

        merged = ctx.study_dir / "teachers" / f"{trial.parent.name}-{trial.name}"
        if not (merged / "config.json").exists():
            merge_adapter(resolved.name, trial / "adapter", merged)
        resolved = ResolvedModel(cfg.teacher, "local", str(merged))
    model, _ = load_model(resolved, ctx.spec.model.dtype)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    digest = (f"random:{resolved.arch}:seed0" if resolved.kind == "random" else teacher_hash(Path(resolved.path)))
    return model, {"name": cfg.teacher, "kind": resolved.kind, "path": resolved.path, "sha256": digest}


# ---------------------------------------------------------------- the stage

def run(ctx: TrialContext, cfg: KDSpec) -> None:
    """Train a fresh adapter on the teacher's distributions over the student's own completions to the training
    prompts; then, with `evaluate_teacher`, the teacher answers the held-out split (arm `teacher_model`)."""
    import gc

    from datasets import Dataset

    from harness.evaluation.prompting import ensure_chat_template

    examples = ctx.training_examples[: cfg.max_prompts] if cfg.max_prompts else ctx.training_examples
    if not examples:
        raise DataError("kd has no training prompts")
    ensure_chat_template(ctx.tok)
    ctx.peft_model = ctx.backend.add_adapter(ctx.model, ctx.spec.lora)
    teacher, record = load_teacher(ctx, cfg)
    try:
        dataset = Dataset.from_list([{"prompt": ex.prompt} for ex in examples])
        config = dict(temperature=cfg.temperature, beta=cfg.beta, max_completion_length=cfg.max_completion_length,
                      lr_scheduler_type=ctx.spec.train.lr_scheduler, shuffle_dataset=True)
        outcome = ctx.backend.fit(
            TRAINER, ctx.peft_model, ctx.tok, dataset, cfg, ctx.scratch("kd-checkpoints"), seed=ctx.spec.train.seed,
            config=config, checkpointing=ctx.spec.train.gradient_checkpointing,
            tokens_per_step=cfg.batch_size * (ctx.spec.train.max_length + cfg.max_completion_length),
            trainer_kwargs={"teacher_model": teacher}, on_log=ctx.log_rows("train", at_step=True),
            on_step=ctx.dev_checkpoints("kd"),
            tokens=lambda trainer, epochs: int(trainer.state.num_input_tokens_seen),
            settings={"teacher": record, "temperature": cfg.temperature, "beta": cfg.beta, "lmbda": cfg.lmbda})
        # The first training's log is train_log.jsonl: the report draws its (KD) loss curve like SFT's.
        ctx.add_training("kd", outcome, "train_log.jsonl", prompts=len(examples), teacher=record["name"],
                         teacher_sha256=record["sha256"])
        if cfg.evaluate_teacher:
            ctx.add_arm(TEACHER_ARM, ctx.evaluate(TEACHER_ARM, model=teacher), "untuned", model=teacher)
    finally:
        del teacher  # the worker keeps it for its next kd trial (`TrialContext.keep`)
        gc.collect()


register_stage("kd", Phase.TRAIN, section="kd", model=KDSpec, method="kd", produces="tuned", trainer=TRAINER,
               loss="generalised JSD to the teacher, nats/token",
               example={"teacher": "random:tiny", "max_steps": 1, "batch_size": 2, "max_completion_length": 4,
                        "max_prompts": 2, "evaluate_teacher": False},
               arms=lambda spec, cfg: {TEACHER_ARM: "untuned"} if cfg.evaluate_teacher else {},
               check=check, preflight=preflight, extra_weight_bytes=teacher_weight_bytes,
               training_only=("kd.", "lora.", "train."), run=run)
