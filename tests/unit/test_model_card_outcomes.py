"""The model card says which of the three outcomes each quantized form and forgetting task got, never a bare
"no difference": regressed, equivalent within the spec's tolerance, or inconclusive with the items needed."""

from __future__ import annotations

from analysis.synthetic import write_synthetic_quant
from harness.export.publish import _forgetting_section, _quant_section
from harness.results import write_json


def test_the_card_calls_an_unchanged_quant_equivalent_and_a_planted_loss_regressed(tmp_path):
    write_synthetic_quant(tmp_path / "quant", n_items=400, loss={"q8_0": 0.0, "q4_k_m": 0.2})
    text = _quant_section(tmp_path, {"quantize": {"tolerance": 0.03}}, "field_accuracy")
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
    assert "equivalent within ±0.03" in rows["q8_0"] and "**regressed**" in rows["q4_k_m"]
    assert "not run" in rows["nf4"] and "quantize.tolerance" in text


def test_the_card_never_passes_an_inconclusive_forgetting_task(tmp_path):
    write_json(tmp_path / "metrics.json", {"forgetting": {
        "arc_easy_local": {"base_acc": 0.49, "tuned_acc": 0.48, "diff": -0.01, "ci": [-0.07, 0.05], "p": 0.8,
                           "p_adjusted": 1.0, "n": 100, "regression": False, "outcome": "inconclusive",
                           "tolerance": 0.02, "items_needed": 4300},
        # A trial recorded before the outcome was: decided again from its CI and adjusted p.
        "piqa_local": {"base_acc": 0.65, "tuned_acc": 0.65, "diff": 0.0, "ci": [-0.05, 0.05], "p": 1.0,
                       "p_adjusted": 1.0, "n": 100, "regression": False}}})
    text = _forgetting_section(tmp_path, {"forgetting": {"tolerance": 0.02}})
    assert "about 4,300 items would decide" in text and text.count("inconclusive") == 2
    assert "equivalent" not in text and "pass" not in text
