"""Forgetting (lm-eval rows), quantisation (quant_delta folders) and endpoint contestants in the analysis."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from analysis import load_study
from analysis.capabilities import forgetting_comparisons, quantization_comparisons
from analysis.compare import judge, quality
from analysis.synthetic import write_synthetic_forgetting, write_synthetic_quant, write_synthetic_study
from analysis.tables import arm_table
from harness.results import read_jsonl, write_jsonl

N = 500


@pytest.fixture
def study_dir(tmp_path) -> Path:
    return write_synthetic_study(tmp_path, ranks=(8, 16), seeds=(0, 1), failed_trial=False)


def test_forgetting_pools_seeds_per_grid_point_and_pairs_by_doc(study_dir):
    write_synthetic_forgetting(study_dir, tasks=("arc_easy_local",), n_items=200, drop=0.15)
    found, refused = forgetting_comparisons(study_dir, load_study(study_dir).varying_params, n_resamples=N)
    assert refused == []
    assert [(c.a, c.b, c.metric) for c in found] == [("tuned[lora.r=8]", "base", "arc_easy_local acc"),
                                                      ("tuned[lora.r=16]", "base", "arc_easy_local acc")]
    for c in found:
        assert (c.n, c.n_seeds) == (200, 2) and c.ci_method.startswith("hierarchical")
        assert c.diff < 0 and c.ci_high < 0  # the adapters forgot: every seed lost the same items


def test_forgetting_recorded_inside_the_trials_is_found_too(study_dir):
    write_synthetic_forgetting(study_dir, tasks=("piqa_local",), n_items=150, drop=0.2, layout="trial")
    found, refused = forgetting_comparisons(study_dir, ["lora.r"], n_resamples=N)
    assert refused == []
    assert [(c.a, c.metric, c.n_seeds) for c in found] == [("tuned[lora.r=8]", "piqa_local acc", 2),
                                                            ("tuned[lora.r=16]", "piqa_local acc", 2)]
    assert all(c.ci_high < 0 for c in found)


def test_forgetting_refuses_items_that_changed_under_the_same_doc_id(study_dir):
    root = write_synthetic_forgetting(study_dir, tasks=("piqa_local",), n_items=30)
    path = root / "trial-0001" / "lm_eval" / "piqa_local.jsonl"
    rows = read_jsonl(path)
    rows[3]["doc_hash"] = "another item"
    write_jsonl(path, rows)
    found, refused = forgetting_comparisons(study_dir, ["lora.r"], n_resamples=N)
    assert [c.a for c in found] == ["tuned[lora.r=16]"]
    assert refused and "doc_id 3 holds different items" in refused[0][2]


def test_the_report_and_the_regression_gate_pair_forgetting_rows_alike(tmp_path):
    """One seed: the analysis and `harness.capabilities.stats` see the same items, accuracies, difference and
    exact McNemar p, from the same pairing."""
    from harness.capabilities.evaluate import CapabilityResult
    from harness.capabilities.stats import compare_results

    study_dir = write_synthetic_study(tmp_path, ranks=(8, 16), seeds=(0,), failed_trial=False)
    root = write_synthetic_forgetting(study_dir, tasks=("arc_easy_local",), n_items=120, drop=0.1)
    found, refused = forgetting_comparisons(study_dir, ["lora.r"], n_resamples=N)
    assert refused == [] and len(found) == 2
    for c, trial in zip(found, sorted(root.glob("trial-*"))):
        (h,) = compare_results(CapabilityResult.read(root / "base"), CapabilityResult.read(trial))
        assert c.item_test == "McNemar exact" and c.n_seeds == 1
        assert (c.n, c.mean_a, c.mean_b, c.diff) == (h.n, h.candidate_acc, h.baseline_acc, h.diff)
        assert c.p_item_test == h.p_value < 0.05
        assert -1 <= c.ci_low < c.ci_high < 0 and -1 <= h.ci_low < h.ci_high < 0


def test_no_forgetting_folder_means_no_comparisons(study_dir):
    assert forgetting_comparisons(study_dir, ["lora.r"]) == ([], [])


def test_quantization_folders_compare_every_arm_with_the_merged_model(study_dir):
    write_synthetic_quant(study_dir / "trial-0003" / "quant", n_items=120, loss={"q8_0": 0.0, "q4_k_m": 0.2})
    found, refused = quantization_comparisons(load_study(study_dir), "field_accuracy", n_resamples=N)
    assert refused == [("nf4", "merged", "not run: bitsandbytes NF4 needs CUDA; this machine has none")]
    by_arm = {c.a: c for c in found}
    assert set(by_arm) == {"q8_0", "q4_k_m"} and all(c.b == "merged" for c in found)
    assert by_arm["q4_k_m"].ci_high < 0 and by_arm["q4_k_m"].p < 0.001
    assert by_arm["q8_0"].diff == 0 and "no variance: identical answers" in judge(by_arm["q8_0"]).note


def test_quantized_arms_in_the_trials_are_compared_there_with_seeds_pooled(study_dir):
    for trial in sorted(study_dir.glob("trial-*")):  # what harness.trial does with spec `quantize:`
        quant = write_synthetic_quant(trial / "quant", n_items=60)
        for path in (quant / "eval").glob("*.jsonl"):
            write_jsonl(trial / "eval" / path.name, read_jsonl(path))
    found, _ = quantization_comparisons(load_study(study_dir), "field_accuracy", n_resamples=N)
    assert {(c.a, c.b) for c in found} == {(f"{q}[lora.r={r}]", f"merged[lora.r={r}]")
                                           for q in ("q8_0", "q4_k_m") for r in (8, 16)}
    assert all(c.n_seeds == 2 and c.ci_method.startswith("hierarchical") for c in found)


def test_a_quant_folder_loads_as_a_single_trial_and_says_what_did_not_run(tmp_path):
    folder = write_synthetic_quant(tmp_path / "quant")
    study = load_study(folder)
    assert study.arm_labels == ["merged", "q4_k_m", "q8_0"]
    assert list(study.trials["status"]) == ["complete"]
    assert any("'nf4' not run: bitsandbytes NF4 needs CUDA" in n for n in study.notes)


def test_a_quant_folder_with_a_changed_item_set_is_refused(study_dir):
    folder = write_synthetic_quant(study_dir / "trial-0000" / "quant", n_items=40)
    path = folder / "eval" / "q4_k_m.jsonl"
    write_jsonl(path, read_jsonl(path)[:-1])
    found, refused = quantization_comparisons(load_study(study_dir), "field_accuracy", n_resamples=N)
    assert [c.a for c in found] == ["q8_0"]
    assert any(a == "q4_k_m" and "different held-out items" in reason for a, _, reason in refused)


def add_contestant(study_dir: Path, price_per_call: float = 0.002, failures: int = 2) -> None:
    """An endpoint arm in every trial, as harness.trial writes it: cost_usd per call, NaN latency on failure."""
    for trial in sorted(study_dir.glob("trial-*")):
        rows = read_jsonl(trial / "eval" / "tuned.jsonl")
        out = []
        for i, row in enumerate(rows):
            failed = i < failures
            out.append({**row, "arm": "frontier", "batch": i, "cost_usd": 0.0 if failed else price_per_call,
                        "latency_s": float("nan") if failed else 0.5 + i / 100,
                        "error": "HTTP 503" if failed else None})
        write_jsonl(trial / "eval" / "frontier.jsonl", out)


def test_an_endpoint_contestant_is_untuned_priced_per_call_and_its_failures_counted(study_dir):
    add_contestant(study_dir)
    study = load_study(study_dir)
    assert "frontier" in study.arm_labels  # no LoRA rank in its label: it was asked, not trained
    assert "frontier" in study.untuned_arms
    table = arm_table(study, [quality(study, "frontier", "field_accuracy", n_resamples=N)], [],
                      price_per_device_hour=2.5).iloc[0]
    assert table["cost_per_1k_calls"] == pytest.approx(1000 * np.mean([0.0] * 2 + [0.002] * 58))
    assert table["failed_calls"] == 2 * 2  # two failed calls in each of the two seeds
    assert np.isnan(table["train_device_s"])
    assert np.isfinite(table["latency_p50_s"])


def test_batched_and_one_per_call_arms_are_compared_by_time_per_item(study_dir, tmp_path):
    """A batched arm's latency per call is its batch's time: the table says how many items a call answered,
    gives time per item beside it, and the unpriced trade-off figure plots time per item, not latency."""
    from analysis.figures import pareto_front
    from analysis.tables import display_arm_table

    add_contestant(study_dir, failures=0)
    study = load_study(study_dir)
    table = arm_table(study, [quality(study, a, "field_accuracy", n_resamples=N) for a in ("base", "frontier")], [])
    arms = table.set_index("arm")
    rows = study.rows("base")
    calls = rows.drop_duplicates(["trial", "seed", "batch"])
    assert arms.loc["base", "items_per_call"] == pytest.approx(len(rows) / len(calls))
    assert arms.loc["base", "items_per_call"] > 1
    assert arms.loc["frontier", "items_per_call"] == 1
    assert arms.loc["base", "device_s_per_item"] == pytest.approx(calls["latency_s"].sum() / len(rows))
    assert arms.loc["base", "latency_p50_s"] > arms.loc["base", "device_s_per_item"]
    shown = display_arm_table(table, "field_accuracy")
    assert {"items / call", "p50 latency / call (s)", "device-s / item"} <= set(shown.columns)
    figure = pareto_front(study, table, "field_accuracy", tmp_path)
    assert figure and "device-seconds per item" in figure.caption and "items one call answered" in figure.caption


@pytest.mark.parametrize("recorded", ["arm_trainings", "roles only"])
def test_an_arm_evaluated_before_a_later_training_is_not_charged_for_it(study_dir, recorded):
    """sft is evaluated, then DPO continues it: the sft arm's training cost leaves DPO's time and tokens out
    (from the manifest's arm_trainings, or for older trials from the arms' roles)."""
    for trial in sorted(study_dir.glob("trial-*")):
        metrics = json.loads((trial / "metrics.json").read_text())
        metrics["cost"]["device_s"] += 5.0
        metrics["cost"]["tokens_trained"] += 1000
        metrics["training"] = {"dpo": {"device_s": 5.0, "tokens_trained": 1000, "steps": 2}}
        if trial.name == "trial-0000":  # a teacher asked once: the second trial would read the cache
            metrics["teacher"] = {"n": 40, "cached_calls": 0, "input_tokens": 12994.0}
        (trial / "metrics.json").write_text(json.dumps(metrics))
        rows = read_jsonl(trial / "eval" / "tuned.jsonl")
        write_jsonl(trial / "eval" / "sft.jsonl", [{**r, "arm": "sft"} for r in rows])
        manifest = json.loads((trial / "manifest.json").read_text())
        if recorded == "arm_trainings":
            manifest["arm_trainings"] = {"base": [], "sft": ["sft"], "tuned": ["sft", "dpo"]}
        else:
            manifest["arms"] = {"base": "untuned", "sft": "stage", "tuned": "final"}
            manifest["trainings"] = {"dpo": {}, "sft": {}}
        (trial / "manifest.json").write_text(json.dumps(manifest))
    study = load_study(study_dir)
    labels = {arm: next(label for label in study.arm_labels if label.startswith(arm + "[")) for arm in ("sft", "tuned")}
    table = arm_table(study, [quality(study, labels[a], "field_accuracy", n_resamples=N) for a in labels], [])
    sft, tuned = (table.set_index("arm").loc[labels[a]] for a in ("sft", "tuned"))
    assert tuned["train_device_s"] - sft["train_device_s"] == pytest.approx(5.0)
    assert tuned["tokens_trained"] - sft["tokens_trained"] == pytest.approx(1000)
    from analysis.markdown import trials_section  # the report says what the continuing stage did, per trial

    dpo = next(line for line in trials_section(study) if line.startswith("- dpo, per trial"))
    assert "steps 2, 2" in dpo and "device_s 5, 5" in dpo and "tokens_trained 1000, 1000" in dpo
    teacher = next(line for line in trials_section(study) if line.startswith("- teacher"))
    assert teacher.startswith("- teacher, per trial (trials 0000): ")
    assert sorted(teacher.split(": ", 1)[1].split("; ")) == ["cached_calls 0", "input_tokens 12994", "n 40"]


def test_local_arms_are_priced_by_device_time(study_dir):
    study = load_study(study_dir)
    row = arm_table(study, [quality(study, "base", "field_accuracy", n_resamples=N)], [],
                    price_per_device_hour=3.6).iloc[0]
    rows = study.rows("base")
    busy = rows.drop_duplicates(["trial", "seed", "batch"])["latency_s"].sum()
    assert row["cost_per_1k_calls"] == pytest.approx(1000 * busy / len(rows) / 3600 * 3.6)
    assert json.dumps(float(row["cost_per_1k_calls"]))  # a plain float for report.json


def test_the_report_says_which_model_stood_behind_each_endpoint(study_dir):
    """A contestant's name is not enough: the report names its model, URL (loopback said plainly), prices and note."""
    from analysis.markdown import endpoints_section

    for trial in sorted(study_dir.glob("trial-*")):
        manifest = json.loads((trial / "manifest.json").read_text())
        manifest.setdefault("spec", {})["contestants"] = [{"name": "frontier-standin", "endpoint": {
            "url": "http://127.0.0.1:8080/v1", "model": "smollm2", "price_input_per_m": 0.4,
            "price_output_per_m": 1.6, "note": "A LOCAL STAND-IN, not a frontier model."}}]
        manifest["spec"]["distill"] = {"teacher": {"url": "https://api.example.com/v1", "model": "big"}}
        (trial / "manifest.json").write_text(json.dumps(manifest))
    lines = endpoints_section(load_study(study_dir))
    assert lines[0] == "## Endpoints"
    contestant = next(line for line in lines if "frontier-standin" in line)
    assert "`smollm2`" in contestant and "(a server on this machine)" in contestant
    assert "$0.4 / $1.6 per million" in contestant and contestant.endswith("A LOCAL STAND-IN, not a frontier model.")
    teacher = next(line for line in lines if line.startswith("- teacher"))
    assert "api.example.com" in teacher and "this machine" not in teacher
    assert endpoints_section(write_and_load_plain(study_dir.parent / "plain")) == []


def write_and_load_plain(path: Path):
    return load_study(write_synthetic_study(path, ranks=(8,), seeds=(0,), failed_trial=False))


def test_a_killed_trial_is_named_by_its_grid_point_and_its_rerun(tmp_path):
    """`kill -9` mid-trial leaves a directory without a record: the report names its grid point from the
    Optuna study beside it, says which trial ran that point again, and the arm labels stay as they were."""
    import shutil

    import optuna

    from analysis.markdown import trials_section

    root = write_synthetic_study(tmp_path, ranks=(8, 16), seeds=(0,), failed_trial=False)  # trials 0 and 1
    killed = root / "trial-0002"
    killed.mkdir()
    (killed / "train_log.jsonl").write_text('{"step": 1, "loss": 2.0}\n')
    shutil.copytree(root / "trial-0001", root / "trial-0003")  # the resumed run redoes r=16, seed 0
    for name in ("result.json", "manifest.json"):
        record = json.loads((root / "trial-0003" / name).read_text())
        record["number" if name == "result.json" else "trial"] = 3
        (root / "trial-0003" / name).write_text(json.dumps(record))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=root.name, storage=f"sqlite:///{root / 'study.db'}")
    for number, (rank, state) in enumerate([(8, "COMPLETE"), (16, "COMPLETE"), (16, "FAIL"), (16, "COMPLETE")]):
        study.add_trial(optuna.trial.create_trial(
            state=optuna.trial.TrialState[state], value=0.5 if state == "COMPLETE" else None,
            user_attrs={"params": {"lora.r": rank, "train.seed": 0}}))
    loaded = load_study(root)
    assert loaded.varying_params == ["lora.r"]
    assert loaded.arm_labels == ["base", "tuned[lora.r=8]", "tuned[lora.r=16]"]
    line = next(x for x in trials_section(loaded) if x.startswith("- trial 0002"))
    assert "(lora.r=16, seed 0): incomplete" in line and "run again as trial 0003" in line


def test_the_base_arm_is_one_arm_across_training_only_params():
    """distill.arm (like dpo.beta, lora.r) changes what is trained, not the base model: one base arm, not one
    per level; a model.* param does change the base."""
    from analysis.load import arm_label

    varying = ["distill.arm", "dpo.beta", "grpo.learning_rate", "model.load_in_4bit"]
    params = {"distill.arm": "original", "dpo.beta": 0.1, "grpo.learning_rate": 1e-5, "model.load_in_4bit": False}
    assert arm_label("base", params, varying, ("base",)) == "base[model.load_in_4bit=False]"
    assert arm_label("tuned", params, varying, ("base",)).startswith("tuned[distill.arm=original,dpo.beta=0.1,")


@pytest.mark.parametrize("tuned_cost, says", [(0.05, "Use tuned: it is better on field_accuracy and no dearer"),
                                              (1.6, "dearer per call at these prices: use it where the gain is "
                                                    "worth 6.4x the cost")])
def test_when_to_use_says_what_a_better_arm_costs_not_that_it_saves(tuned_cost, says):
    """A tuned arm that is better but dearer per call must not be advertised as a saving."""
    from types import SimpleNamespace

    import pandas as pd

    from analysis.advice import when_to_use

    arms = pd.DataFrame([{"arm": "tuned", "cost_per_1k_calls": tuned_cost, "latency_p50_s": 33.0,
                          "items_per_call": 12.5, "device_s_per_item": 2.3},
                         {"arm": "frontier", "cost_per_1k_calls": 0.25, "latency_p50_s": 3.3,
                          "items_per_call": 1.0, "device_s_per_item": 3.2}])
    c = SimpleNamespace(a="tuned", b="frontier", diff=0.41, ci_low=0.36, ci_high=0.47, p_adjusted=0.0002, n=50,
                        verdict="better", mde=0.08)
    (paragraph,) = when_to_use([c], arms, "field_accuracy", 0.95)
    assert says in paragraph and "saves" not in paragraph
    assert "12.5 vs 1 items per call" in paragraph and "0.72x the time per item" in paragraph


def test_the_report_shows_each_arms_score_per_answer_field(study_dir):
    """Field accuracy averages the fields: the report also says which fields each arm gets right."""
    from analysis.markdown import field_table

    study = load_study(study_dir)
    lines = field_table(study)
    fields = [m[len("field."):] for m in study.score_metrics if m.startswith("field.")]
    assert fields and lines[0] == "### Per field"
    header = next(line for line in lines if line.startswith("| Arm |"))
    assert header == "| Arm | " + " | ".join(fields) + " |"
    base = next(line for line in lines if line.startswith("| base |"))
    want = study.rows("base")[f"score.field.{fields[0]}"].mean()
    assert base.split(" | ")[1] == f"{want:.3f}"


def test_delta_bars_put_metrics_on_panels_by_their_declared_range(tmp_path):
    """Scores declared in [0, 1] share an axis; a word count (even one whose Δ and CI lie within ±1, which the old
    |Δ| ≤ 1 rule put beside the scores) and a score nobody declared each get their own."""
    from types import SimpleNamespace

    from analysis.figures import UNIT_PANEL, delta_bars, delta_panels

    def c(metric, diff, lo, hi):
        return SimpleNamespace(a="tuned", b="base", metric=metric, diff=diff, ci_low=lo, ci_high=hi, verdict="better",
                               outcome="improved")

    scores = [c("rouge_l", 0.82, 0.80, 0.85), c("arc_easy_local acc", -0.02, -0.06, 0.01)]
    words, kl = c("words", 0.4, -0.2, 0.9), c("kl_to_base", 0.3, 0.1, 0.5)
    panels = delta_panels([words, scores[0], kl, c("words", -9.1, -25.2, 8.6), scores[1]])
    assert list(panels) == [UNIT_PANEL, "words", "kl_to_base"]
    assert [x.metric for x in panels[UNIT_PANEL]] == ["rouge_l", "arc_easy_local acc"]
    assert [x.diff for x in panels["words"]] == [0.4, -9.1]
    assert list(delta_panels(scores)) == [UNIT_PANEL] and list(delta_panels([words])) == ["words"]
    mixed = delta_bars([*scores, words], tmp_path, name="mixed")
    alone = delta_bars(scores, tmp_path, name="alone")
    assert "share a panel" in mixed.caption and "share a panel" not in alone.caption
    assert all(p.exists() for p in (*mixed.paths, *alone.paths))


def test_lm_eval_accuracies_are_drawn_against_each_tasks_chance(study_dir, tmp_path):
    from analysis import figures
    from analysis.capabilities import task_chance
    from tests.support.figure_layout import layout_problems

    write_synthetic_forgetting(study_dir, tasks=("arc_easy_local", "piqa_local"), n_items=120, drop=0.1)
    varying = load_study(study_dir).varying_params
    chance = task_chance(study_dir, varying)
    assert chance == {"arc_easy_local acc": 0.25, "piqa_local acc": 0.5}  # 4 and 2 choices per item
    found, _ = forgetting_comparisons(study_dir, varying, n_resamples=N)
    drawn = figures.capability_levels(found, chance, tmp_path / "figs")
    assert drawn and layout_problems(drawn.figure) == []
    ax = drawn.figure.axes[0]
    marks = sorted({round(float(x), 6) for line in ax.lines if line.get_linestyle() == "--" for x in line.get_xdata()})
    assert marks == [0.25, 0.5]
    assert not figures.capability_levels(found, {}, tmp_path / "none")  # no choices known: no figure, and why


def test_each_arm_is_charged_its_own_trainings_peak_and_its_own_models_memory(study_dir):
    """A trial records each stage's own peak and each arm's model size: sft's arm is charged sft's peak, the
    tuned arm the worse of sft and dpo, a GGUF arm its file and no more; the base its weights, no training."""
    for trial in sorted(study_dir.glob("trial-*")):
        metrics = json.loads((trial / "metrics.json").read_text())
        metrics["cost"].update(peak_mem_gb=9.0, stage_peak_mem_gb={"sft": 2.0, "dpo": 3.0, "quantize": 9.0})
        (trial / "metrics.json").write_text(json.dumps(metrics))
        rows = read_jsonl(trial / "eval" / "tuned.jsonl")
        for arm in ("sft", "q4_k_m"):
            write_jsonl(trial / "eval" / f"{arm}.jsonl", [{**r, "arm": arm} for r in rows])
        manifest = json.loads((trial / "manifest.json").read_text())
        manifest["arm_trainings"] = {"base": [], "sft": ["sft"], "tuned": ["sft", "dpo"], "q4_k_m": ["sft", "dpo"]}
        manifest["arm_model_bytes"] = {"base": 2**30, "sft": 2**30 + 2**20, "tuned": 2**30 + 2**20,
                                       "q4_k_m": 2**28}
        (trial / "manifest.json").write_text(json.dumps(manifest))
    study = load_study(study_dir)
    labels = {arm: next(label for label in study.arm_labels if label == arm or label.startswith(arm + "["))
              for arm in ("base", "sft", "tuned", "q4_k_m")}
    table = arm_table(study, [quality(study, labels[a], "field_accuracy", n_resamples=N) for a in labels], [])
    got = {a: table.set_index("arm").loc[labels[a]] for a in labels}
    assert {a: got[a]["peak_mem_gb"] for a in ("sft", "tuned", "q4_k_m")} == {"sft": 2.0, "tuned": 3.0,
                                                                              "q4_k_m": 3.0}
    assert np.isnan(got["base"]["peak_mem_gb"])  # it trained nothing; the quantize stage's 9 GB is nobody's
    assert got["q4_k_m"]["model_gb"] == pytest.approx(0.25) and got["base"]["model_gb"] == pytest.approx(1.0)
    assert got["tuned"]["model_gb"] == pytest.approx(1 + 2**-10)


def test_a_trial_from_before_stage_peaks_is_charged_its_own_peak(study_dir):
    study = load_study(study_dir)
    label = next(label for label in study.arm_labels if label.startswith("tuned["))
    table = arm_table(study, [quality(study, label, "field_accuracy", n_resamples=N)], [])
    assert table["peak_mem_gb"].iloc[0] == pytest.approx(float(study.costs[study.costs["trial"].isin(
        study.rows(label)["trial"].unique())]["peak_mem_gb"].max()))
    assert np.isnan(table["model_gb"].iloc[0])  # not recorded: a dash, never a guess
