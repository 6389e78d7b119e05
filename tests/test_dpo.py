"""SFT → DPO: pairs mined from the SFT model's own failures, DPO against the SFT policy, users' pair files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from harness.data.example import Example
from harness.spec.stages.dpo import DPOSpec
from harness.stages.dpo import load_preference_pairs, mine_pairs, pairs_from_rows, train_dpo
from harness.errors import DataError, HarnessError, SpecError, SplitError
from harness.evaluation.evaluate import Generation
from harness.evaluation.scoring import score
from harness.spec import LoraSpec, TrainSpec
from harness.backends import HFBackend, NonFiniteLoss


def dev_items(n: int = 6) -> list[Example]:
    return [Example(id=f"d{i}", prompt=[{"role": "user", "content": f"Item {i} as JSON, please."}],
                    reference=json.dumps({"id": i, "name": f"item {i}"}), cluster=f"c{i % 2}",
                    origin=f"dev.jsonl:{i + 1}") for i in range(n)]


def row(ex: Example, prediction: str) -> dict:
    return {"item_id": ex.id, "prediction": prediction, "reference": ex.reference,
            "scores": score(prediction, ex.reference)}


# ---------------------------------------------------------------- spec


def test_spec_defaults_and_validation(tmp_path):
    spec = DPOSpec()
    assert (spec.beta, spec.pairs, spec.fail_below, spec.metric, spec.max_steps) == (
        0.1, "mined", 1.0, "field_accuracy", -1)
    assert DPOSpec(pairs="file", preference_file=tmp_path / "p.jsonl").preference_file == tmp_path / "p.jsonl"
    with pytest.raises(ValueError, match="needs preference_file"):
        DPOSpec(pairs="file")
    with pytest.raises(ValueError, match="only read with pairs: file"):
        DPOSpec(preference_file=tmp_path / "p.jsonl")
    with pytest.raises(ValueError):
        DPOSpec(betta=0.2)  # extra fields are refused
    with pytest.raises(ValueError):
        DPOSpec(beta=0)


# ---------------------------------------------------------------- mining rules


def test_pairs_from_rows_keeps_failures_in_dev_order():
    dev = dev_items(5)
    preds = [dev[0].reference,                   # right: not a failure
             '{"id": 1, "name": "wrong"}',       # half right: field_accuracy 0.5
             "",                                 # empty output: a real failure, kept
             dev[3].reference.upper(),           # wrong keys (metric 0) but the same text normalised: never a pair
             "no json at all"]
    pairs = pairs_from_rows(dev, [row(ex, p) for ex, p in zip(dev, preds)], metric="field_accuracy",
                            fail_below=1.0, max_pairs=10)
    assert [p.id for p in pairs] == ["d1", "d2", "d4"]
    for p in pairs:
        src = dev[int(p.id[1:])]
        assert (p.prompt, p.reference, p.cluster, p.origin) == (src.prompt, src.reference, src.cluster, src.origin)
        assert p.rejected == preds[int(p.id[1:])]
    assert pairs[0].meta["dpo_mined"] == {"metric": "field_accuracy", "score": 0.5}

    # the threshold: only items below it count; the cap keeps the first ones
    strict = pairs_from_rows(dev, [row(ex, p) for ex, p in zip(dev, preds)], metric="field_accuracy",
                             fail_below=0.5, max_pairs=10)
    assert [p.id for p in strict] == ["d2", "d4"]
    capped = pairs_from_rows(dev, [row(ex, p) for ex, p in zip(dev, preds)], metric="field_accuracy",
                             fail_below=1.0, max_pairs=2)
    assert [p.id for p in capped] == ["d1", "d2"]
    # even when every item "fails", a prediction equal to its reference is never a pair
    everything = pairs_from_rows(dev, [row(ex, p) for ex, p in zip(dev, preds)], metric="field_accuracy",
                                 fail_below=2.0, max_pairs=10)
    assert [p.id for p in everything] == ["d1", "d2", "d4"]


def test_pairs_from_rows_refuses_an_unknown_metric_and_misaligned_rows():
    dev = dev_items(2)
    rows = [row(ex, "x") for ex in dev]
    with pytest.raises(SpecError, match="'rouge' is not a score.*field_accuracy"):
        pairs_from_rows(dev, rows, metric="rouge", fail_below=1.0, max_pairs=5)
    with pytest.raises(ValueError, match="out of order"):
        pairs_from_rows(dev, rows[::-1], metric="field_accuracy", fail_below=1.0, max_pairs=5)
    with pytest.raises(ValueError, match="1 scored rows for 2"):
        pairs_from_rows(dev, rows[:1], metric="field_accuracy", fail_below=1.0, max_pairs=5)


def test_mine_pairs_never_mines_a_prediction_equal_to_its_reference(monkeypatch):
    import harness.evaluation.evaluate

    dev = dev_items(3)
    outputs = {dev[0].prompt[0]["content"]: " " + dev[0].reference + "\n",  # the reference, modulo whitespace
               dev[1].prompt[0]["content"]: "{}",
               dev[2].prompt[0]["content"]: dev[2].reference}

    def fake_generate(model, tok, prompts, *, max_new_tokens, batch_size, progress=None):
        return [Generation(outputs[p[0]["content"]], 0.1, 5, 3, 0) for p in prompts]

    monkeypatch.setattr(harness.evaluation.evaluate, "generate", fake_generate)
    pairs = mine_pairs(None, None, dev, score, metric="field_accuracy", fail_below=2.0, max_pairs=10,
                       max_new_tokens=8, batch_size=2)
    assert [(p.id, p.rejected) for p in pairs] == [("d1", "{}")]
    with pytest.raises(DataError, match="dev split, which is empty"):
        mine_pairs(None, None, [], score, metric="field_accuracy", fail_below=1.0, max_pairs=10,
                   max_new_tokens=8, batch_size=2)


# ---------------------------------------------------------------- users' preference files


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_preference_file_loads_as_pairs(tmp_path):
    path = write_jsonl(tmp_path / "prefs.jsonl", [
        {"prompt": "Capital of France?", "chosen": "Paris", "rejected": "Lyon"},
        {"prompt": [{"role": "user", "content": "2+2?"}], "chosen": [{"role": "assistant", "content": "4"}],
         "rejected": [{"role": "assistant", "content": "5"}]},
        {"prompt": "Colour of the sky?", "chosen": "blue", "rejected": "green"},
    ])
    pairs = load_preference_pairs(path, max_pairs=2, system_prompt="Be brief.")
    assert [(p.reference, p.rejected) for p in pairs] == [("Paris", "Lyon"), ("4", "5")]
    assert pairs[0].prompt == [{"role": "system", "content": "Be brief."},
                               {"role": "user", "content": "Capital of France?"}]
    assert pairs[1].origin == f"{path}:2"


def test_preference_file_with_chosen_equal_rejected_is_refused_at_its_line(tmp_path):
    path = write_jsonl(tmp_path / "prefs.jsonl", [
        {"prompt": "a?", "chosen": "yes", "rejected": "no"},
        {"prompt": "b?", "chosen": "same", "rejected": " same "},
    ])
    with pytest.raises(DataError, match=rf"^{path}:2: field 'rejected': same as 'chosen'"):
        load_preference_pairs(path, max_pairs=10)


def test_preference_file_with_missing_fields_is_refused(tmp_path):
    path = write_jsonl(tmp_path / "prefs.jsonl", [
        {"prompt": "a?", "chosen": "yes", "rejected": "no"},
        {"prompt": "b?", "chosen": "yes"},
    ])
    with pytest.raises(DataError, match=rf"^{path}:2: field 'rejected': missing"):
        load_preference_pairs(path, max_pairs=10)
    # a file in this harness's own format is read as it is: rows without `rejected` are no pairs
    native = write_jsonl(tmp_path / "native.jsonl", [
        {"id": "x", "prompt": [{"role": "user", "content": "a?"}], "reference": "yes"}])
    with pytest.raises(DataError, match=rf"^{native}:1: field 'rejected': missing"):
        load_preference_pairs(native, max_pairs=10)


def test_preference_file_may_not_hold_heldout_prompts(tmp_path):
    path = write_jsonl(tmp_path / "prefs.jsonl", [{"prompt": "Item 1 as JSON, please.", "chosen": "{}",
                                                    "rejected": "no"}])
    with pytest.raises(SplitError, match="held-out item"):
        load_preference_pairs(path, max_pairs=10, heldout=dev_items(3))


def test_train_dpo_refuses_bad_input_before_building_a_trainer(tmp_path):
    with pytest.raises(DataError, match="no preference pairs"):
        train_dpo(object(), None, [], DPOSpec(), 0, tmp_path)
    no_rejected = [Example(id="a", prompt=[{"role": "user", "content": "q"}], reference="r")]
    with pytest.raises(DataError, match="no rejected answer"):
        train_dpo(object(), None, no_rejected, DPOSpec(), 0, tmp_path)
    pair = [Example(id="a", prompt=[{"role": "user", "content": "q"}], reference="r", rejected="s")]
    with pytest.raises(HarnessError, match="continues an SFT adapter"):
        train_dpo(object(), None, pair, DPOSpec(), 0, tmp_path)


# ---------------------------------------------------------------- on a real (tiny) model


@pytest.fixture(scope="module")
def tiny(harness_home):
    from harness.models import load_model, resolve_model

    return load_model(resolve_model("random:tiny"))


@pytest.mark.slow
def test_mining_on_random_tiny_pairs_its_own_outputs_with_the_references(tiny):
    from harness.evaluation.evaluate import generate

    model, tok = tiny
    dev = dev_items(5)
    pairs = mine_pairs(model, tok, dev, score, metric="field_accuracy", fail_below=1.0, max_pairs=3,
                       max_new_tokens=8, batch_size=4)
    own = generate(model, tok, [ex.prompt for ex in dev], max_new_tokens=8, batch_size=4)
    assert [p.id for p in pairs] == ["d0", "d1", "d2"]  # random weights fail everything; capped in dev order
    for p, ex, g in zip(pairs, dev, own):
        assert p.reference == ex.reference and p.rejected == g.text and p.prompt == ex.prompt
    again = mine_pairs(model, tok, dev, score, metric="field_accuracy", fail_below=1.0, max_pairs=3,
                       max_new_tokens=8, batch_size=2)
    assert [(p.id, p.rejected) for p in again] == [(p.id, p.rejected) for p in pairs]


def _chosen_logps(model, tok, pairs: list[Example]) -> list[float]:
    """Summed log-probabilities of each pair's chosen answer (the assistant turn as the chat template renders it)."""
    import torch

    out = []
    for ex in pairs:
        prompt = tok.apply_chat_template(ex.prompt, add_generation_prompt=True, tokenize=False)
        full = tok.apply_chat_template([*ex.prompt, {"role": "assistant", "content": ex.reference}], tokenize=False)
        assert full.startswith(prompt)
        p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        ids = tok(full, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0, :-1].float()
        logp = torch.log_softmax(logits, -1).gather(-1, torch.tensor(ids[1:])[:, None]).squeeze(-1)
        out.append(float(logp[len(p_ids) - 1:].sum()))
    return out


@pytest.mark.slow
def test_dpo_continues_the_sft_adapter_against_the_sft_policy(tiny, tmp_path):
    import torch

    base, tok = tiny
    backend = HFBackend()
    model = backend.add_adapter(base, LoraSpec(r=4))
    try:
        dev = dev_items(4)
        sft = backend.train_sft(model, tok, dev, TrainSpec(learning_rate=2e-2, max_steps=2, batch_size=2,
                                                           max_length=128, logging_steps=1), tmp_path / "sft")
        pairs = mine_pairs(model, tok, dev, score, metric="field_accuracy", fail_below=1.0, max_pairs=2,
                           max_new_tokens=8, batch_size=4)
        assert len(pairs) == 2

        model.eval()
        sft_logps = _chosen_logps(model, tok, pairs)
        with model.disable_adapter():
            base_logps = _chosen_logps(model, tok, pairs)
        spec = DPOSpec(beta=0.1, learning_rate=1e-3, max_steps=2, batch_size=2, max_length=128)
        # what step 1 would log if the reference were the adapter-free base instead of the SFT policy
        base_ref_reward = spec.beta * (sum(sft_logps) - sum(base_logps)) / len(pairs)
        assert abs(base_ref_reward) > 1e-2

        before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}
        out = train_dpo(model, tok, pairs, spec, seed=0, out_dir=tmp_path / "dpo")

        first = out.log[0]
        assert first["step"] == 1
        # Step 1's metrics come from the forward before the first update: policy == SFT. A zero reward
        # means the reference is the SFT policy too; against the base it would be `base_ref_reward`.
        assert first["logps/chosen"] == pytest.approx(sum(sft_logps) / len(pairs), rel=1e-4)
        for key in ("rewards/chosen", "rewards/rejected", "rewards/margins"):
            assert abs(first[key]) < 1e-5, key
        assert first["loss"] == pytest.approx(math.log(2), abs=1e-5)
        assert {"rewards/accuracies", "rewards/margins", "logps/rejected"} <= set(out.log[-1])
        assert out.log[-1]["rewards/margins"] != 0.0  # the policy moved away from the reference

        assert out.steps == 2 and len(out.log) == 2
        assert math.isfinite(out.final_loss) and out.tokens_trained > 0 and out.runtime_s > 0
        assert out.trainable_params == sft.trainable_params
        changed = [n for n, p in model.named_parameters() if "lora_" in n and not torch.equal(p, before[n])]
        assert changed and all(".default." in n for n in changed)
        # TRL's frozen reference copy is gone: the model is as train_sft left it, ready to evaluate and save
        assert list(model.peft_config) == ["default"] and model.active_adapter == "default"
        assert all(p.requires_grad == ("lora_" in n) for n, p in model.named_parameters())
    finally:
        backend.remove_adapter(model)


@pytest.mark.slow
def test_a_non_finite_dpo_loss_stops_at_its_step(tiny, tmp_path):
    import torch

    base, tok = tiny
    backend = HFBackend()
    model = backend.add_adapter(base, LoraSpec(r=4))
    try:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.fill_(float("nan"))
        pairs = [Example(id="a", prompt=[{"role": "user", "content": "q?"}], reference="yes", rejected="no")]
        with pytest.raises(NonFiniteLoss) as err:
            train_dpo(model, tok, pairs, DPOSpec(max_steps=2, batch_size=1, max_length=64), 0, tmp_path)
        assert err.value.step == 1 and math.isnan(err.value.value)
        assert list(model.peft_config) == ["default"]  # cleaned up on the way out
    finally:
        backend.remove_adapter(model)


@pytest.mark.slow
def test_reference_log_probs_computed_once_train_the_same_as_a_reference_forward_per_step(tiny, tmp_path):
    import torch

    base, tok = tiny
    backend = HFBackend()
    pairs = [Example(id=f"p{i}", prompt=ex.prompt, reference=ex.reference, rejected=f"not {i}, nor {i + 1}")
             for i, ex in enumerate(dev_items(6))]
    logs, calls = {}, {}
    for precompute in (False, True):
        torch.manual_seed(1)
        model = backend.add_adapter(base, LoraSpec(r=4))
        try:
            with torch.no_grad():  # an adapter that is not the identity: the reference is not the base
                for name, p in model.named_parameters():
                    if "lora_B" in name:
                        p.normal_(0, 0.05)
            ref_forwards = []
            hook = model.get_base_model().model.norm.register_forward_hook(
                lambda module, args, out: ref_forwards.append(torch.is_grad_enabled()))
            spec = DPOSpec(beta=0.1, learning_rate=1e-3, max_steps=3, batch_size=2, max_length=128)
            logs[precompute] = train_dpo(model, tok, pairs, spec, seed=0, out_dir=tmp_path / str(precompute),
                                         precompute_reference=precompute).log
            hook.remove()
            calls[precompute] = ref_forwards
        finally:
            backend.remove_adapter(model)
    # no-grad forwards: one per step before, one per batch of pairs up front now; the policy's are the same
    assert calls[False].count(False) == 3 and calls[True].count(False) == 3 and \
        calls[False].count(True) == calls[True].count(True) == 3
    assert [row["step"] for row in logs[True]] == [1, 2, 3]
    for key in ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen", "logps/rejected"):
        assert [row[key] for row in logs[True]] == pytest.approx([row[key] for row in logs[False]], rel=1e-4,
                                                                  abs=1e-6), key
    assert logs[True][-1]["rewards/margins"] != 0.0  # the policy moved away from the reference
