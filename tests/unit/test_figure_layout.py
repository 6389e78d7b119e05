"""Figures pass a look (tests/support/figure_layout.py): the checker finds overlapping, clipped and covering
text, and the report's figures, drawn from synthetic studies with the shapes that once failed it (long arm
labels, task ids, tiny deltas, a level never run, one seed, a stand-in endpoint), have none of it."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from matplotlib.collections import PolyCollection

from analysis import figures, load_study, quality
from analysis.compare import Comparison, compare
from analysis.contrasts import study_contrasts
from analysis.front import DOMINATED, MIN_CALLS, OPTIMAL, TIED, CostInterval, device_s_interval, front_status
from analysis.labels import parse_label, short_labels
from analysis.synthetic import write_synthetic_grid, write_synthetic_study
from analysis.tables import arm_table
from harness.results import read_json, read_jsonl, write_json, write_jsonl
from tests.support.figure_layout import assert_layout_ok, layout_problems

R = 200  # bootstrap resamples: the layout, not the CI's third decimal, is under test
DELTA = Comparison(
    a="q4_k_m", b="merged", metric="field_accuracy", n=50, n_seeds=1, mean_a=0.4, mean_b=0.41, diff=-0.01,
    ci_low=-0.03, ci_high=0.01, ci_method="paired bootstrap over items", test="Wilcoxon signed-rank", p=0.2,
    p_permutation=0.2, item_test="Wilcoxon signed-rank", p_item_test=0.2, p_adjusted=0.2, effect_size=-0.1,
    effect_size_kind="Cohen's d_z", mde=0.05, cluster_se=float("nan"), n_clusters=50, level="item",
    verdict="not significant", outcome="inconclusive")


def _drawn(out: figures.FigureFiles):
    assert out and out.figure is not None, out.skipped
    return out.figure


# ---------------------------------------------------------------- the checker


def test_the_checker_finds_overlapping_clipped_and_covering_text():
    fig, axes = figures._figure(3.0, 2.0)
    ax = axes[0, 0]
    ax.barh([0], [0.4])
    ax.text(0.5, 0.5, "one label", transform=ax.transAxes)
    ax.text(0.52, 0.52, "another label", transform=ax.transAxes)
    fig.suptitle("a title much too long for a figure only three inches wide, so it runs off both sides")
    ax.legend(["a bar"], loc="center")  # over the bar
    problems = layout_problems(fig)
    assert any("'one label' and 'another label' overlap" in p for p in problems), problems
    assert any("leaves the canvas" in p and "a title much too long" in p for p in problems), problems
    assert any("legend" in p and "covers data" in p for p in problems), problems


def test_the_checker_finds_tick_labels_that_run_together_and_a_repeated_panel():
    fig, axes = figures._figure(6.0, 2.0, ncols=3)
    for ax in axes.flat:
        ax.plot([0, 1], [0.1, 0.2], marker="o")
    axes[0, 2].plot([0, 1], [0.3, 0.1])
    axes[0, 2].set_xticks(np.linspace(0, 1, 12), [f"{v:.4f}" for v in np.linspace(0, 1, 12)])
    problems = layout_problems(fig)
    assert any("'0.0000' and '0.0909' overlap" in p for p in problems), problems
    assert [p for p in problems if "repeats panel" in p] == ["panel 1 repeats panel '0'"], problems


def test_a_clean_figure_passes():
    fig, axes = figures._figure()
    axes[0, 0].plot([0, 1, 2], [0.2, 0.5, 0.4], marker="o", label="tuned")
    axes[0, 0].set(title="quality", xlabel="step", ylabel="score")
    figures._legend_outside(fig, *axes[0, 0].get_legend_handles_labels())
    assert layout_problems(fig) == []


# ---------------------------------------------------------------- names


def test_arm_labels_keep_only_the_params_that_tell_them_apart():
    labels = ["base[model.load_in_4bit=False]", "tuned[lora.r=4,model.load_in_4bit=False]",
              "tuned[lora.r=32,model.load_in_4bit=False]"]
    assert short_labels(labels) == dict(zip(labels, ["base", "tuned r=4", "tuned r=32"]))
    assert short_labels(["tuned[lora.r=4,train.learning_rate=0.0001]", "tuned[lora.r=4,train.learning_rate=0.0002]"]
                        ) == {"tuned[lora.r=4,train.learning_rate=0.0001]": "tuned lr=0.0001",
                              "tuned[lora.r=4,train.learning_rate=0.0002]": "tuned lr=0.0002"}
    # A main contrast's marginal arm beside the cells of a param with one value: shown apart, not in full.
    marginal = ["tuned[lora.r=4]", "tuned[lora.r=32]", *labels]
    assert short_labels(marginal) == dict(zip(marginal, ["tuned r=4", "tuned r=32", "base 4-bit=False",
                                                         "tuned r=4, 4-bit=False", "tuned r=32, 4-bit=False"]))
    assert parse_label('tuned[lora.target=["q","v"],lora.r=8]') == ("tuned", {"lora.target": '["q","v"]',
                                                                             "lora.r": "8"})
    assert figures.metric_name("mmlu_high_school_us_history_local acc") == "mmlu high school us history accuracy"


# ---------------------------------------------------------------- the report's figures


def test_delta_bars_of_long_names_tiny_deltas_and_one_bar_pass_a_look(tmp_path):
    grid = "tuned[lora.r={r},model.load_in_4bit=False,train.learning_rate=0.0002]"
    # The divergence panel's deltas are thousandths: its tick labels once ran together (−0.014−0.012…).
    quant = [replace(DELTA, a=a, metric=m, diff=d * k, ci_low=d * k - 0.005, ci_high=d * k + 0.004)
             for a, d in (("q4_k_m", -0.009), ("q8_0", -0.0013))
             for m, k in (("loglik_delta", 1.0), ("kl", -1.2), ("field_accuracy", 2.0))]
    forgetting = [replace(DELTA, a="tuned", b="base", metric=f"{task}_local acc")
                  for task in ("arc_easy", "piqa", "mmlu_high_school_us_history")]
    cases = {
        "quantization": quant, "forgetting": forgetting,
        "one bar": [replace(DELTA, diff=0.42, ci_low=0.36, ci_high=0.46, outcome="improved")],
        "grid": [replace(DELTA, a=grid.format(r=r), b="base[model.load_in_4bit=False]") for r in (4, 32)]}
    drawn = {k: figures.delta_bars(c, tmp_path, name=k.replace(" ", "_"), title=f"Δ field_accuracy: {k}")
             for k, c in cases.items()}
    assert_layout_ok((k, _drawn(v)) for k, v in drawn.items())
    ticks = [t.get_text() for ax in drawn["grid"].figure.axes for t in ax.get_yticklabels()]
    assert ticks == ["tuned r=4 − base", "tuned r=32 − base"]
    # One pair of arms: named once on the axis, the bars are the metrics.
    assert "tuned − base" in drawn["forgetting"].figure.axes[0].get_xlabel()
    assert drawn["grid"].figure.get_suptitle() == "Δ field accuracy: grid"


@pytest.fixture(scope="module")
def grid_study(tmp_path_factory):
    """Rank × 4-bit, the 4-bit half not run (as without CUDA), 2 seeds."""
    root = tmp_path_factory.mktemp("grid")
    return load_study(write_synthetic_grid(root, {"lora.r": [4, 32], "model.load_in_4bit": [False, True]},
                                           lambda p: 0.15 * (p["lora.r"] == 32), n_items=60,
                                           not_run=lambda p: "4-bit QLoRA needs CUDA" if p["model.load_in_4bit"]
                                           else None))


def test_level_figures_draw_only_levels_with_data_and_no_repeated_panel(grid_study, tmp_path):
    contrasts = study_contrasts(grid_study, "field_accuracy", n_resamples=R)
    by_name = {f.name: f for f in contrasts.factors}
    four_bit = figures.factor_levels(contrasts.level_means, by_name["model.load_in_4bit"], "field_accuracy", tmp_path,
                                     others=contrasts.factors)
    assert not four_bit and "only model.load_in_4bit=False has a complete trial" in four_bit.skipped
    rank = figures.factor_levels(contrasts.level_means, by_name["lora.r"], "field_accuracy", tmp_path,
                                 others=contrasts.factors)
    fig = _drawn(rank)
    assert len([ax for ax in fig.axes if ax.get_visible()]) == 1  # the 4-bit panel would repeat it
    assert_layout_ok([("levels_lora_r", fig)])


def test_categorical_levels_are_points_with_whiskers_not_a_line(tmp_path):
    study = load_study(write_synthetic_grid(tmp_path, {"distill.arm": ["original", "distilled"]},
                                            lambda p: -0.2 * (p["distill.arm"] == "distilled"), n_items=60))
    contrasts = study_contrasts(study, "field_accuracy", n_resamples=R)
    fig = _drawn(figures.factor_levels(contrasts.level_means, contrasts.factors[0], "field_accuracy", tmp_path,
                                       others=contrasts.factors))
    data_lines = [line for line in fig.axes[0].get_lines() if len(line.get_xdata()) == 2 and line.get_marker() == "o"]
    assert data_lines and all(line.get_linestyle() == "None" for line in data_lines)
    assert_layout_ok([("levels_distill_arm", fig)])


def test_quality_vs_rank_has_whiskers_at_each_rank_and_no_band_between(tmp_path):
    study = load_study(write_synthetic_study(tmp_path, ranks=(4, 32), seeds=(0, 1), failed_trial=False))
    qualities = [quality(study, label, "field_accuracy", n_resamples=R) for label in study.arm_labels]
    fig = _drawn(figures.quality_vs_rank(study, qualities, "field_accuracy", tmp_path))
    assert not any(isinstance(c, PolyCollection) for c in fig.axes[0].collections)  # no fill_between
    assert_layout_ok([("quality_vs_rank", fig)])


def test_paired_seeds_show_the_question_per_seed_and_skip_one_seed(tmp_path):
    two = load_study(write_synthetic_study(tmp_path / "two", ranks=(4, 32), seeds=(0, 1), failed_trial=False))
    question = compare(two, [("tuned[lora.r=32]", "tuned[lora.r=4]")], "field_accuracy", n_resamples=R)
    fig = _drawn(figures.paired_seed_dots(two, question, tmp_path))
    ticks = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert ticks == ["tuned r=4", "tuned r=32"] and len(fig.axes[0].get_lines()) == 2  # a line per seed
    assert_layout_ok([("paired_seeds", fig)])
    one = load_study(write_synthetic_study(tmp_path / "one", ranks=(16,), seeds=(0,), failed_trial=False))
    single = figures.paired_seed_dots(one, compare(one, [("tuned", "base")], "field_accuracy", n_resamples=R),
                                      tmp_path)
    assert not single and "one seed" in single.skipped


def _with_stand_in(study_dir, n_items: int) -> None:
    """An endpoint contestant `frontier-standin` beside base and tuned, one item per call, its spec noting that
    it is a local stand-in."""
    trial = next(iter(sorted(study_dir.glob("trial-*"))))
    rows = read_jsonl(trial / "eval" / "base.jsonl")
    rng = np.random.default_rng(3)
    write_jsonl(trial / "eval" / "frontier-standin.jsonl", [
        {**r, "arm": "frontier-standin", "batch": None, "latency_s": float(rng.uniform(0.2, 0.4)),
         "cost_usd": 2e-4} for r in rows[:n_items]])
    manifest = read_json(trial / "manifest.json")
    manifest["spec"]["contestants"] = [{"name": "frontier-standin", "endpoint": {
        "url": "http://127.0.0.1:8080/v1", "model": "smollm2-135m", "note": "A local stand-in for gpt-4.1-mini."}}]
    write_json(trial / "manifest.json", manifest)


def test_the_pareto_front_marks_stand_ins_and_gives_items_per_call(tmp_path):
    study_dir = write_synthetic_study(tmp_path, ranks=(16,), seeds=(0,), n_items=60, failed_trial=False)
    _with_stand_in(study_dir, 60)
    study = load_study(study_dir)
    qualities = [quality(study, label, "field_accuracy", n_resamples=R) for label in study.arm_labels]
    table = arm_table(study, qualities, [], price_per_device_hour=2.5)
    fig = _drawn(figures.pareto_front(study, table, "field_accuracy", tmp_path, price_per_device_hour=2.5))
    notes = [t.get_text() for t in fig.axes[0].texts]
    assert "frontier-standin (stand-in), 1/call" in notes and "tuned, 7.5/call" in notes, notes
    assert "stand-in endpoint" in [t.get_text() for t in fig.legends[0].get_texts()]
    assert_layout_ok([("pareto_front", fig)])


# ---------------------------------------------------------------- the front, against the cost's noise


def _cost(x: float, half: float) -> CostInterval:
    return CostInterval(x, x - half, x + half, calls=10)


def test_a_front_only_where_cost_or_quality_tells_arms_apart():
    # GRPO a little cheaper and better than SFT, both within noise: neither crowned; base clearly worse.
    costs = [_cost(10.0, 1.0), _cost(10.4, 1.0), _cost(10.2, 1.0)]
    quality = [(0.416, 0.39, 0.44), (0.406, 0.38, 0.43), (0.0, 0.0, 0.01)]
    assert front_status(costs, quality) == [TIED, TIED, DOMINATED]
    # Merged as good as tuned (identical answers) and cheaper beyond the noise: tuned is dominated.
    assert front_status([_cost(14.8, 0.5), _cost(20.0, 0.6)], [(0.41, 0.35, 0.46)] * 2) == [OPTIMAL, DOMINATED]
    # Lower is better: the arm with fewer edits at the same cost is not dominated.
    assert front_status([_cost(1.0, 0.1), _cost(1.0, 0.1)], [(2.0, 1.8, 2.2), (5.0, 4.8, 5.2)],
                        higher_is_better=False) == [OPTIMAL, DOMINATED]
    # A cost with unknown noise tells apart from nothing.
    unknown = CostInterval(1.0, float("nan"), float("nan"), calls=1)
    assert front_status([unknown, _cost(5.0, 0.1)], [(0.41, 0.35, 0.46)] * 2) == [TIED, TIED]


def test_the_cost_interval_resamples_whole_calls(tmp_path):
    study = load_study(write_synthetic_study(tmp_path, ranks=(16,), seeds=(0,), n_items=80, failed_trial=False))
    rows = study.rows("tuned")
    d = device_s_interval(rows, n_resamples=500)
    assert d.calls == 10 and d.known and d.low < d.estimate < d.high
    busy = rows.drop_duplicates("batch")["latency_s"].sum()
    assert d.estimate == pytest.approx(busy / len(rows))  # as the arm table counts it
    few = device_s_interval(rows[rows["batch"] < MIN_CALLS - 1])
    assert not few.known and np.isfinite(few.estimate)


def test_the_continuing_stages_diagnostics_come_from_their_logs_labelled_by_the_registry(tmp_path):
    """DPO's and GRPO's logs (as TRL writes them) become one panel per declared value, titled from the stage
    registry, laid out cleanly; a study without such logs draws none."""
    from harness.stages.registry import stage_named

    study_dir = write_synthetic_study(tmp_path, seeds=(0, 1), ranks=(8,), failed_trial=False)
    assert "no continuing stage" in figures.stage_diagnostics(load_study(study_dir), tmp_path / "f0").skipped
    for i, trial in enumerate(sorted(study_dir.glob("trial-*"))):
        write_jsonl(trial / "dpo_log.jsonl", [
            {"step": s, "loss": 0.69 - 0.02 * s - 0.01 * i, "rewards/margins": 0.05 * s, "rewards/accuracies": 0.5 + 0.05 * s,
             "logps/chosen": -40 + s, "logps/rejected": -41 - s, "rewards/chosen": 0.1} for s in range(1, 9)])
    study = load_study(study_dir)
    drawn = figures.stage_diagnostics(study, tmp_path / "f1")
    fig = _drawn(drawn)
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    declared = ["loss", *(k for k, _ in stage_named("dpo").diagnostics)]
    assert len(titles) == len(declared) and all(t.startswith("DPO") for t in titles), titles
    assert any("reward margin" in t for t in titles) and any("chosen ahead" in t.replace("\n", " ") for t in titles)
    assert all(len(ax.lines) == 2 for ax in fig.axes if ax.get_visible())  # one line per trial
    assert_layout_ok([("stage_diagnostics", fig)])


def test_the_dev_curve_draws_each_trials_checkpoints_across_its_trainings(tmp_path):
    """dev_curve.jsonl (the dev split scored every `eval.dev_every_steps`) becomes a line per trial with a marker
    per training stage, steps continuing from SFT into DPO; a study that scored no checkpoints draws none."""
    study_dir = write_synthetic_study(tmp_path, seeds=(0, 1), ranks=(8,), failed_trial=False)
    study = load_study(study_dir)
    assert figures.dev_curve(study, tmp_path / "f0") is None  # the design scored no checkpoints: not asked for
    assert "no trial scored" in figures.dev_curve(replace(study, dev_every_steps=8), tmp_path / "f0").skipped
    trials = sorted(study_dir.glob("trial-*"))
    for i, trial in enumerate(trials):
        write_jsonl(trial / "dev_curve.jsonl", [
            {"stage": "sft" if s <= 40 else "dpo", "step": s, "metric": "field_accuracy", "value": 0.3 + 0.01 * s - 0.02 * i}
            for s in (8, 16, 24, 32, 40, 48)])
    study = load_study(study_dir)
    curve = study.dev_curve
    assert len(curve) == 6 * len(trials) and set(curve["stage"]) == {"sft", "dpo"}
    assert curve["trial"].nunique() == len(trials) and set(curve["status"]) == {"complete"}
    fig = _drawn(figures.dev_curve(study, tmp_path / "f1"))
    ax = fig.axes[0]
    lines = [line for line in ax.lines if line.get_linestyle() != "None"]
    assert len(lines) == len(trials) and all(list(line.get_xdata()) == [8, 16, 24, 32, 40, 48] for line in lines)
    markers = {line.get_marker() for line in ax.lines if line.get_linestyle() == "None"}
    assert len(markers) == 2  # SFT's points and DPO's told apart
    assert "dev split" in ax.get_ylabel() and "step" in ax.get_xlabel()
    assert_layout_ok([("dev_curve", fig)])
