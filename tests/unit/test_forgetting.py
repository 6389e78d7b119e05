"""General-capability checks: local lm-eval tasks, per-item evaluation, and the regression gate."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from harness.errors import HarnessError
from tests.support.ci import require
from tests.support.forgetting import HAVE_BENCHMARKS, WHY, trial_files

# Items per file, as the benchmarks README lists them.
EXPECTED_DOCS = {
    "arc_easy_local": 500, "arc_challenge_local": 500, "piqa_local": 500, "winogrande_local": 500,
    "commonsenseqa_local": 500, "truthfulqa_mc1_local": 500, "hellaswag_local": 100,
    "mmlu_high_school_us_history_local": 204, "mmlu_college_biology_local": 144, "mmlu_astronomy_local": 152,
    "mmlu_high_school_mathematics_local": 270,
}


@pytest.fixture(scope="module")
def ds_cache(tmp_path_factory) -> Path:
    """`datasets` caches the parsed JSON here rather than in the user's ~/.cache/huggingface."""
    return tmp_path_factory.mktemp("datasets-cache")


def _row(**kw) -> str:
    base = {"centerpiece": "Which is a fruit?", "options": ["apple", "rock", "car", "shoe"],
            "correct_options": ["A"], "correct_options_literal": ["apple"], "correct_options_idx": [0]}
    return json.dumps({**base, **kw}) + "\n"


def test_every_yaml_is_a_known_local_task():
    from harness.capabilities.lm_tasks import TASKS_DIR, local_task_names

    assert local_task_names() == sorted(EXPECTED_DOCS)
    for name in local_task_names():
        text = (TASKS_DIR / f"{name}.yaml").read_text()
        assert "shared" not in text and "/work" not in text, f"{name}: the data root must not be written in"


@pytest.mark.parametrize("name", sorted(EXPECTED_DOCS))
def test_local_task_loads_through_task_manager(name, ds_cache):
    require(HAVE_BENCHMARKS, WHY)
    from lm_eval.tasks import TaskManager

    from harness.capabilities.lm_tasks import TASKS_DIR, task_config

    manager = TaskManager(include_path=str(TASKS_DIR), include_defaults=False)
    assert name in manager.all_tasks  # the folder indexes as lm-eval task configs
    task = manager.load([task_config(name, cache_dir=ds_cache)])["tasks"][name]
    assert task.OUTPUT_TYPE == "multiple_choice"
    assert len(task.eval_docs) == EXPECTED_DOCS[name]
    task.build_all_requests(limit=7)
    docs = {inst.doc_id for inst in task.instances}
    assert docs == set(range(7))
    n_choices = sum(len(task.doc_to_choice(task.eval_docs[i])) for i in range(7))
    assert len(task.instances) == n_choices  # one loglikelihood request per choice
    gold = task.doc_to_text(task.eval_docs[0]) if task.multiple_input else task.doc_to_target(task.eval_docs[0])
    assert gold == task.eval_docs[0]["correct_options_idx"][0]


def test_winogrande_is_partial_evaluation(ds_cache):
    """Each option fills the blank in the context; the same rest of the sentence is scored after each."""
    require(HAVE_BENCHMARKS, WHY)
    from lm_eval.tasks import TaskManager

    from harness.capabilities.lm_tasks import TASKS_DIR, task_config

    task = TaskManager(include_path=str(TASKS_DIR), include_defaults=False).load(
        [task_config("winogrande_local", cache_dir=ds_cache)])["tasks"]["winogrande_local"]
    task.build_all_requests(limit=1)
    doc = task.eval_docs[0]
    before, after = doc["centerpiece"].split("_")
    contexts = [inst.arguments[0] for inst in task.instances]
    continuations = {inst.arguments[1] for inst in task.instances}
    assert contexts == [before + opt for opt in doc["options"]]
    assert continuations == {" " + after.strip()}
    assert task.multiple_input == 2


def test_data_root_comes_from_the_environment(tmp_path, monkeypatch):
    from lm_eval.tasks import TaskManager

    from harness.capabilities.lm_tasks import TASKS_DIR, task_config

    (tmp_path / "arc-easy").mkdir()
    (tmp_path / "arc-easy" / "test.jsonl").write_text(_row() * 3)
    monkeypatch.setenv("HARNESS_BENCHMARKS", str(tmp_path))
    cfg = task_config("arc_easy_local", cache_dir=tmp_path / "cache")
    assert cfg["dataset_kwargs"]["data_files"] == {"test": str(tmp_path / "arc-easy" / "test.jsonl")}
    task = TaskManager(include_path=str(TASKS_DIR), include_defaults=False).load([cfg])["tasks"]["arc_easy_local"]
    assert len(task.eval_docs) == 3


def test_missing_data_names_the_root_and_the_variable(tmp_path, monkeypatch):
    from harness.capabilities.lm_tasks import task_config

    monkeypatch.setenv("HARNESS_BENCHMARKS", str(tmp_path))
    with pytest.raises(HarnessError, match="HARNESS_BENCHMARKS") as e:
        task_config("piqa_local")
    assert str(tmp_path / "piqa" / "test.jsonl") in str(e.value)


def test_unknown_task_offline_lists_local_tasks():
    from harness.capabilities.lm_tasks import local_task_names
    from harness.capabilities.tasks import resolve_tasks

    require(HAVE_BENCHMARKS, WHY)  # without the data, piqa_local is refused for that (tested above)
    with pytest.raises(HarnessError) as e:
        resolve_tasks(["arc_easy", "piqa_local"])
    message = str(e.value)
    assert "cannot be resolved offline" in message and "HF_HUB_OFFLINE" in message
    assert "arc_easy -> arc_easy_local" in message
    for name in local_task_names():
        assert name in message
    with pytest.raises(HarnessError, match="no_such_task.*cannot be resolved offline"):
        resolve_tasks(["no_such_task"])


def test_bad_task_fails_before_any_model_loads(tmp_path, monkeypatch, harness_home):
    import harness.capabilities.refs as refs
    from harness.capabilities.regress import regress_command

    def boom(*a, **k):
        raise AssertionError("a model was loaded before the task names were checked")

    monkeypatch.setattr(refs, "_load_base", boom)
    t0 = time.perf_counter()
    assert regress_command("random:tiny", "random:tiny", "arc_easy_local,mmlu", out=tmp_path / "r") == 2
    assert regress_command("random:tiny", "no/such/model/here", "arc_easy_local", out=tmp_path / "r") == 2
    assert regress_command("random:tiny", "random:tiny", " , ", out=tmp_path / "r") == 2
    assert time.perf_counter() - t0 < 30
    assert not (tmp_path / "r").exists()


def test_parse_model_ref(tmp_path, harness_home):
    from harness.capabilities.refs import parse_model_ref

    trial = trial_files(tmp_path / "study", 1)
    (trial / "adapter").mkdir()
    (trial / "adapter" / "adapter_config.json").write_text("{}")
    ref = parse_model_ref(str(trial))
    assert (ref.base, ref.dtype, ref.adapter) == ("random:tiny", "float32", (trial / "adapter").resolve())
    assert parse_model_ref(str(trial / "adapter")).trial_dir == trial.resolve()
    assert parse_model_ref("random:tiny").adapter is None
    (trial / "adapter" / "adapter_config.json").unlink()
    with pytest.raises(HarnessError, match="no adapter"):
        parse_model_ref(str(trial))
    (trial / "result.json").unlink()
    with pytest.raises(HarnessError, match="never finished"):
        parse_model_ref(str(trial))
    failed = trial_files(tmp_path / "study", 2, status="failed")
    with pytest.raises(HarnessError, match="failed"):
        parse_model_ref(str(failed))
    with pytest.raises(HarnessError):
        parse_model_ref(str(tmp_path / "nothing-here"))


def _result(task: str, correct: list[int], hashes: list[str] | None = None):
    from harness.capabilities.evaluate import CapabilityResult

    hashes = hashes or [None] * len(correct)
    rows = [{"task": task, "doc_id": i, "correct": c, "correct_norm": c, "doc_hash": hashes[i]}
            for i, c in enumerate(correct)]
    return CapabilityResult(tasks={task: {"acc": sum(correct) / len(correct)}}, rows=rows)


def test_judge_needs_a_large_and_significant_drop():
    from harness.capabilities.stats import compare_results, judge

    base = _result("t", [1] * 30 + [0] * 10)
    worse = _result("t", [0] * 20 + [1] * 10 + [0] * 10)  # 20 lost, none gained
    slightly = _result("t", [0] * 1 + [1] * 29 + [0] * 10)  # 1 lost
    (c,) = judge(compare_results(base, worse), tolerance=0.02, alpha=0.05)
    assert c.regression and c.diff == pytest.approx(-0.5) and c.baseline_only == 20 and c.candidate_only == 0
    assert c.ci_high < 0 and c.p_value < 1e-5 and c.outcome == "regressed" and c.verdict == "REGRESSION"
    (c,) = judge(compare_results(base, slightly), tolerance=0.02, alpha=0.05)
    # Not significant, and the CI still allows a loss past the tolerance: no pass, and what would decide.
    assert not c.regression and c.outcome == "inconclusive" and c.items_needed > c.n
    (c,) = judge(compare_results(base, worse), tolerance=0.7, alpha=0.05)
    assert not c.regression and c.outcome == "equivalent" and "smaller than the tolerance" in c.reason
    (c,) = judge(compare_results(worse, base), tolerance=0.02, alpha=0.05)  # the candidate is better
    assert not c.regression and c.outcome == "improved"


def _simulated(n: int, p: float, flip: float, seed: int):
    """A reference's 0/1 answers on `n` items and a candidate that flips a share `flip` of them either way
    (the same true accuracy: a candidate equal to the reference, up to item-level noise)."""
    rng = np.random.default_rng(seed)
    ref = (rng.random(n) < p).astype(int)
    flips = rng.random(n) < flip
    return ref, np.where(flips, 1 - ref, ref)


def test_a_candidate_equal_to_the_reference_is_equivalent_at_a_generous_tolerance_and_inconclusive_at_a_tiny_one():
    from harness.capabilities.stats import compare_results, judge

    ref, cand = _simulated(400, 0.6, 0.1, seed=1)
    comparisons = lambda: compare_results(_result("t", list(ref)), _result("t", list(cand)))  # noqa: E731
    (c,) = judge(comparisons(), tolerance=0.1, alpha=0.05)
    assert c.outcome == "equivalent" and -0.1 <= c.ci_low and c.ci_high <= 0.1
    (c,) = judge(comparisons(), tolerance=0.005, alpha=0.05)
    assert c.outcome == "inconclusive" and not c.regression
    # The items that would decide, from the data's own paired variance (SD of the differences); both bounds
    # must clear the tolerance at 80% power: z_0.975 + z_0.9.
    sd = np.std(cand - ref, ddof=1)
    assert c.items_needed == pytest.approx(((1.960 + 1.282) * sd / 0.005) ** 2, rel=0.01) and c.items_needed > 400


def test_a_planted_drop_is_regressed():
    from harness.capabilities.stats import compare_results, judge

    ref, _ = _simulated(400, 0.6, 0.0, seed=2)
    cand = ref.copy()
    cand[np.flatnonzero(ref == 1)[:40]] = 0  # 40 of the right answers lost: a 10-point drop
    (c,) = judge(compare_results(_result("t", list(ref)), _result("t", list(cand))), tolerance=0.02, alpha=0.05)
    assert c.outcome == "regressed" and c.regression and c.diff == pytest.approx(-0.1)


@pytest.mark.parametrize("bad", [0, -0.02, 1.0, 1.5, float("nan"), "0.02", "two"])
def test_bad_tolerance_values_are_clear_errors_naming_the_field(bad):
    from harness.capabilities.stats import judge
    from harness.stages.forgetting import ForgettingSpec

    with pytest.raises(HarnessError, match=r"--tolerance: .*tolerance"):
        judge([], tolerance=bad, alpha=0.05, where="--tolerance")
    with pytest.raises(ValueError, match=r"forgetting\.tolerance: .*tolerance"):
        ForgettingSpec(tasks=["arc_easy_local"], tolerance=bad)


def test_holm_across_tasks():
    from harness.capabilities.stats import TaskComparison, judge

    comps = [TaskComparison(task=f"t{i}", n=50, baseline_acc=0.5, candidate_acc=0.4, diff=-0.1, ci_low=-0.2,
                            ci_high=-0.01, baseline_only=8, candidate_only=3, p_value=0.03) for i in range(3)]
    assert not any(c.regression for c in judge(comps, tolerance=0.02, alpha=0.05))  # 3 x 0.03 > 0.05
    assert all(c.regression for c in judge(comps, tolerance=0.02, alpha=0.05, correction="none"))


def test_pairing_refuses_different_items():
    from harness.capabilities.stats import compare_results

    with pytest.raises(HarnessError, match="different items"):
        compare_results(_result("t", [1, 0], ["a", "b"]), _result("t", [1, 0], ["a", "c"]))


def test_pairing_refuses_different_item_sets_and_unscored_items():
    """Pairing part of the items would hide what the others did: both models must answer the same ones."""
    from harness.capabilities.stats import UnpairedRowsError, compare_results

    with pytest.raises(UnpairedRowsError, match=r"answered different items \(1 only by the baseline, 0 only"):
        compare_results(_result("t", [1, 0, 1]), _result("t", [1, 0]))
    unscored = _result("t", [1, 0, 1])
    unscored.rows[1]["correct"] = None
    with pytest.raises(UnpairedRowsError, match="the candidate has no 'correct' on 1 items"):
        compare_results(_result("t", [1, 0, 1]), unscored)


def test_render_table_states_the_test():
    from rich.console import Console

    from harness.capabilities.regress import RegressionReport, compare_results, judge, render_table

    comps = judge(compare_results(_result("t", [1] * 20), _result("t", [0] * 20)), tolerance=0.02, alpha=0.05)
    report = RegressionReport(baseline="a", candidate="b", tolerance=0.02, alpha=0.05, correction="holm",
                              limit=20, comparisons=comps)
    console = Console(record=True, width=250)
    console.print(render_table(report))
    text = console.export_text()
    assert "REGRESSION" in text and "two-sided exact McNemar" in text and "Holm" in text
    assert report.exit_code == 1


def _report(comparisons):
    from harness.capabilities.regress import RegressionReport

    return RegressionReport(baseline="a", candidate="b", tolerance=0.02, alpha=0.05, correction="holm", limit=None,
                            comparisons=comparisons)


def test_regress_exit_codes_are_0_equivalent_1_regressed_3_inconclusive():
    """Exit 0 only where equivalence is shown; "no significant drop" alone is exit 3, with the items needed."""
    from harness.capabilities.regress import compare_results, judge, outcome_lines

    same = [1] * 200 + [0] * 200
    equivalent = judge(compare_results(_result("t", same), _result("t", same)), tolerance=0.02, alpha=0.05)
    assert _report(equivalent).exit_code == 0 and _report(equivalent).outcome == "equivalent"
    ref, cand = _simulated(60, 0.6, 0.15, seed=3)
    inconclusive = judge(compare_results(_result("t", list(ref)), _result("t", list(cand))), tolerance=0.02,
                         alpha=0.05)
    report = _report(inconclusive)
    assert report.exit_code == 3 and report.to_dict()["inconclusive_tasks"] == ["t"]
    text = " ".join(outcome_lines(report))
    assert "inconclusive" in text and "not a pass" in text and f"about {inconclusive[0].items_needed}" in text
    regressed = judge(compare_results(_result("t", [1] * 40), _result("t", [0] * 40)), tolerance=0.02, alpha=0.05)
    assert _report(regressed + inconclusive).exit_code == 1
    assert _report([]).exit_code == 3  # no task compared: nothing is shown


def test_regress_refuses_a_bad_tolerance_before_any_model_loads(tmp_path, monkeypatch, harness_home, capsys):
    import harness.capabilities.refs as refs
    from harness.capabilities.regress import regress_command

    monkeypatch.setattr(refs, "_load_base", lambda *a, **k: pytest.fail("a model was loaded"))
    for bad in (0.0, 1.0, float("nan")):
        assert regress_command("random:tiny", "random:tiny", "arc_easy_local", tolerance=bad, out=None) == 2
        assert "--tolerance" in capsys.readouterr().err


def test_local_task_without_its_data_offline_says_both_ways_to_get_it(tmp_path, monkeypatch):
    from harness.capabilities.tasks import resolve_tasks

    monkeypatch.setenv("HARNESS_BENCHMARKS", str(tmp_path))
    with pytest.raises(HarnessError) as e:
        resolve_tasks(["arc_easy_local", "piqa_local"])
    message = " ".join(str(e.value).split())
    assert "Two ways" in message and "HARNESS_BENCHMARKS" in message and str(tmp_path) in message
    assert "arc_easy_local -> arc_easy" in message and "piqa_local -> piqa" in message
    assert "HF_HUB_OFFLINE unset" in message
