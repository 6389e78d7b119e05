"""The report's tables as a paper takes them: compact tables for the body, full ones for the appendix, LaTeX that
right-aligns numbers, fits the line and keeps two experiments' labels apart."""

from __future__ import annotations

import re
from dataclasses import replace

import pandas as pd

from analysis import tables
from analysis.compare import Comparison
from analysis.synthetic import write_synthetic_study

COMPARISON = Comparison(
    a="tuned-q4", b="tuned", metric="field_accuracy", n=100, n_seeds=3, mean_a=0.6, mean_b=0.62, diff=-0.02,
    ci_low=-0.05, ci_high=0.01, ci_method="paired bootstrap over items", test="Wilcoxon signed-rank", p=0.2,
    p_permutation=0.2, item_test="Wilcoxon signed-rank", p_item_test=0.2, p_adjusted=0.4, effect_size=-0.1,
    effect_size_kind="Cohen's d_z (per-item differences)", mde=0.05, cluster_se=float("nan"), n_clusters=100,
    level="item", verdict="not significant", tolerance=0.02, outcome="inconclusive", items_needed=900,
    seed_diffs=(-0.01, -0.03, -0.02), se=0.015, note="inconclusive: the CI reaches past ±0.02")


def tabular_spec(tex: str) -> str:
    return re.search(r"\\begin\{tabular\}\{([lrc]+)\}", tex).group(1)


def header_cells(tex: str) -> list[str]:
    """The LaTeX header row's cells (the line after \\toprule)."""
    header = tex.split("\\toprule\n", 1)[1].split("\n", 1)[0]
    return [c.strip() for c in header.removesuffix("\\\\").split(" & ")]


def test_latex_right_aligns_numeric_columns_and_left_aligns_text():
    full = tables.display_comparisons([COMPARISON, replace(COMPARISON, a="tuned-q8", counted=False)])
    tex = tables.latex_table(full, caption="x", label="tab:x")
    align = dict(zip(full.columns, tabular_spec(tex)))
    assert len(tabular_spec(tex)) == len(full.columns)
    for numeric in ("Items", "Seeds", "mean A", "Δ = A − B [95% CI]", "Δ per seed", "SE", "p", "adj. p", "d_z", "MDE"):
        assert align[numeric] == "r", numeric  # "adj. p" holds "0.400 (not in m)": still a number
    for text in ("A", "B", "Metric", "Test", "Item test", "Outcome", "Note"):
        assert align[text] == "l", text
    # A column of numbers held as numbers (the CSV-like frames) is right-aligned by its dtype.
    assert tables.column_format(pd.DataFrame({"arm": ["base"], "n": [3], "q": [0.5]})) == "lrr"


def test_latex_is_small_fits_the_line_and_writes_d_z_as_math():
    tex = tables.latex_table(tables.display_comparisons([COMPARISON]), caption="q4: Δ", label="tab:s-headline")
    assert all(rule in tex for rule in (r"\toprule", r"\midrule", r"\bottomrule"))
    assert r"\small" in tex and r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%" in tex
    assert tex.index(r"\resizebox") < tex.index(r"\begin{tabular}") < tex.index(r"\end{tabular}}")
    assert "$d_z$" in header_cells(tex) and r"d\_z" not in tex
    assert tables.tex_escape("field_d_zone") == r"field\_d\_zone"  # the symbol only as a word of its own
    assert r"\caption{q4: $\Delta$}" in tex and "Δ" not in tex and "±" not in tex


def test_labels_are_namespaced_by_study_so_two_experiments_do_not_collide(tmp_path):
    display = tables.compact_comparisons([COMPARISON])
    written = {study: tables.write_table(pd.DataFrame([COMPARISON.to_dict()]), display, tmp_path / study / "headline",
                                         caption=f"{study}: headline", label=tables.table_label(study, "headline"),
                                         full=tables.display_comparisons([COMPARISON]))
               for study in ("quant_delta-cpu", "sft_vs_dpo-cpu")}
    labels = {study: re.findall(r"\\label\{([^}]*)\}", f.latex.read_text() + f.full_latex.read_text())
              for study, f in written.items()}
    assert labels["quant_delta-cpu"] == ["tab:quant_delta-cpu-headline", "tab:quant_delta-cpu-headline-full"]
    assert not set(labels["quant_delta-cpu"]) & set(labels["sft_vs_dpo-cpu"])
    assert tables.table_label("my study/v2", "arms") == "tab:my-study-v2-arms"  # no space or slash in a label


def test_compact_comparisons_have_the_listed_columns_and_the_full_table_keeps_every_statistic(tmp_path):
    compact = tables.compact_comparisons([COMPARISON])
    assert list(compact.columns) == ["Comparison (A − B)", "Metric", "Δ [95% CI]", "adj. p", "MDE", "Items × seeds",
                                     "Outcome"]
    row = compact.iloc[0]
    assert row["Comparison (A − B)"] == "tuned-q4 − tuned" and row["Items × seeds"] == "100 × 3"
    assert row["Δ [95% CI]"] == "−0.020 [−0.050, +0.010]" and row["adj. p"] == "0.400" and row["MDE"] == "0.050"
    assert row["Outcome"].startswith("inconclusive (±0.02); ~900 items would decide")
    files = tables.write_table(pd.DataFrame([COMPARISON.to_dict()]), compact, tmp_path / "headline", caption="c",
                               full=tables.display_comparisons([COMPARISON]))
    assert files.markdown.read_text().splitlines()[0].count("|") == len(compact.columns) + 1
    assert "| Note |" in files.full_markdown.read_text() and "Note" not in files.markdown.read_text()
    assert "se_seeds" in pd.read_csv(files.csv).columns  # the CSV keeps every number
    # A slope is read against 0: its row names the slope alone.
    assert tables.compact_comparisons([replace(COMPARISON, a="tuned[slope per doubling of lora.r]", b="0")]
                                      ).iloc[0]["Comparison (A − B)"] == "tuned[slope per doubling of lora.r]"


def test_compact_arm_table_keeps_size_quality_delta_outcome_and_time_per_item(tmp_path):
    from analysis import compare, load_study, quality

    study = load_study(write_synthetic_study(tmp_path, ranks=(16,), seeds=(0, 1), n_items=30, failed_trial=False))
    (c,) = compare(study, [("tuned", "base")], "field_accuracy", n_resamples=200)
    arms = tables.arm_table(study, [quality(study, a, "field_accuracy", n_resamples=200) for a in ("base", "tuned")],
                            [c])
    compact = tables.compact_arm_table(arms, "field_accuracy")
    assert list(compact.columns) == ["Arm", "Items × seeds", "field accuracy [95% CI]", "Δ vs baseline [95% CI]",
                                     "Outcome", "device-s / item"]
    tuned = compact.set_index("Arm").loc["tuned"]
    assert tuned["Items × seeds"] == "30 × 2" and tuned["Outcome"] == c.outcome
    assert tuned["Δ vs baseline [95% CI]"].startswith(f"{c.diff:+.3f}".replace("-", "−"))
    assert compact.set_index("Arm").loc["base", "Outcome"] == tables.DASH
    assert len(tables.display_arm_table(arms, "field_accuracy").columns) > 2 * len(compact.columns)


def test_an_inconclusive_outcome_says_what_would_decide_it():
    assert tables.outcome_text(COMPARISON) == "inconclusive (±0.02); ~900 items would decide"
    seeds_bound = replace(COMPARISON, items_needed=None, se_seeds=0.03)  # the seeds' variance alone is too wide
    assert tables.outcome_text(seeds_bound) == "inconclusive (±0.02); more seeds would decide, not more items"
    assert tables.outcome_text(replace(seeds_bound, se_seeds=0.0)) == "inconclusive (±0.02)"
    assert tables.outcome_text(replace(COMPARISON, outcome="equivalent", items_needed=40)) == "equivalent (±0.02)"


def test_numbers_written_are_stable_past_the_last_bit_noise_of_another_cpu():
    import numpy as np
    import pandas as pd

    from analysis.tables import stable_csv, stable_numbers

    x = 0.0247944035818487
    y = np.nextafter(x, 1.0)  # the same sum, vectorised another way: a last bit apart
    assert x != y and stable_numbers(x) == stable_numbers(y) == 0.02479440358
    frame = lambda v: pd.DataFrame({"se": [v], "seeds": [(v, v)], "n": [3], "nan": [float("nan")]})  # noqa: E731
    assert stable_csv(frame(x)) == stable_csv(frame(y)) == "se,seeds,n,nan\n0.02479440358,\"(0.02479440358, 0.02479440358)\",3,\n"
    assert stable_numbers({"a": [x, {"b": y}], "flag": True, "k": 2}) == {"a": [0.02479440358, {"b": 0.02479440358}],
                                                                        "flag": True, "k": 2}
